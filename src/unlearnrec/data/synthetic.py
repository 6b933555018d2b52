"""A small seeded synthetic dataset with learnable structure: the built-in default.

Users and items belong to planted communities and users mostly pick items of their own
community, with a long-tail (Zipf-like) item popularity on top. A collaborative model can
learn the communities, so it clearly beats popularity, while the default size (600 x 400,
about 12k pairs) trains to convergence in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unlearnrec.data.interactions import Interactions
from unlearnrec.data.splits import split_per_user

__all__ = ["make_synthetic"]

_CHUNK = 1 << 21  # score-matrix entries generated at once, to bound memory for big custom sizes


def make_synthetic(
    n_users: int = 600,
    n_items: int = 400,
    n_communities: int = 8,
    mean_degree: float = 20.0,
    *,
    in_community: float = 0.8,
    zipf_exponent: float = 0.8,
    min_degree: int = 5,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    name: str = "synthetic",
) -> Interactions:
    """Generate a community-structured implicit-feedback dataset, split per user.

    Args:
        n_users, n_items: sizes; every user has between ``min_degree`` and ``n_items // 2`` items.
        n_communities: planted communities; users are assigned at random, items evenly.
        mean_degree: mean items per user (log-normal degrees, so there are heavy users too).
        in_community: probability mass a user's choice puts on its own community's items.
        zipf_exponent: item weight is ``rank ** -zipf_exponent`` over a random ranking (long tail).
        ratios: per-user ``(train, valid, test)`` shares, see :func:`~unlearnrec.data.splits.split_per_user`.
        seed: everything (communities, popularity, degrees, picks, split) follows from it.

    Each user draws its items without replacement with probability proportional to
    ``popularity * boost`` (boost on its own community, sized so that community holds
    ``in_community`` of the weight) by the Gumbel-top-k trick, all in numpy.
    """
    if n_users < 1 or n_items < 2 or not 1 <= n_communities <= n_items:
        raise ValueError("need n_users >= 1, n_items >= 2 and 1 <= n_communities <= n_items")
    if not 0.0 < in_community < 1.0:
        raise ValueError("in_community must be in (0, 1)")
    rng = np.random.default_rng(seed)
    user_comm = rng.integers(0, n_communities, size=n_users)
    item_comm = rng.permutation(np.arange(n_items) % n_communities)
    popularity = (rng.permutation(n_items) + 1.0) ** -zipf_exponent

    max_degree = max(min_degree, n_items // 2)
    sigma = 0.6
    mu = np.log(max(mean_degree, 1.0)) - sigma**2 / 2
    degree = np.clip(np.rint(rng.lognormal(mu, sigma, size=n_users)), min_degree, max_degree).astype(np.int64)

    mass_in = np.bincount(item_comm, weights=popularity, minlength=n_communities)
    mass_out = popularity.sum() - mass_in
    if n_communities == 1:
        boost = np.ones(1)
    else:
        boost = in_community / (1.0 - in_community) * mass_out / mass_in
    log_pop = np.log(popularity)

    rows_per_chunk = max(1, _CHUNK // n_items)
    picked = []
    for start in range(0, n_users, rows_per_chunk):
        uc = user_comm[start : start + rows_per_chunk]
        same = uc[:, None] == item_comm[None, :]
        scores = log_pop[None, :] + np.where(same, np.log(boost)[uc][:, None], 0.0)
        scores += rng.gumbel(size=scores.shape)
        rank = np.argsort(np.argsort(-scores, axis=1), axis=1)
        u, i = np.nonzero(rank < degree[start : start + rows_per_chunk, None])
        picked.append(np.stack([u + start, i], axis=1))
    pairs = np.concatenate(picked).astype(np.int64)

    train, valid, test = split_per_user(pairs, ratios, seed=seed)
    return Interactions(
        name=name,
        n_users=n_users,
        n_items=n_items,
        train=train,
        valid=valid,
        test=test,
        user_ids=np.arange(n_users).astype(str),
        item_ids=np.arange(n_items).astype(str),
    )
