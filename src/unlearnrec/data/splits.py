"""Seeded, vectorised per-user splits.

Two jobs: carve a validation split out of a dataset's training pairs (for published
splits that ship only train/test), and split a single interaction file per user into
train/valid/test. Both shuffle each user's pairs with random keys and a ``lexsort`` by
user, so the result depends only on the input order and the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unlearnrec.data.interactions import Interactions, as_pairs

__all__ = ["carve_validation", "split_labels", "split_per_user"]


def _rank_within_user(users: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each row among its user's rows under ``order``, and each row's user degree."""
    counts = np.bincount(users)
    starts = np.cumsum(counts) - counts
    sorted_users = users[order]
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users), dtype=np.int64) - starts[sorted_users]
    return rank, counts[users]


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5 + 1e-9).astype(np.int64)


def split_labels(
    users: np.ndarray,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2024,
    *,
    timestamps: np.ndarray | None = None,
) -> np.ndarray:
    """Label each row 0 (train), 1 (valid) or 2 (test), per user.

    ``ratios`` is ``(train, valid, test)`` or ``(train, test)``; they are normalised. Each
    user's share is rounded half up on the cumulative boundaries, so the counts add up; a user
    with at least one row always keeps one in train (a user with one row gives nothing else).
    Rows are ordered at random (``seed``) or, with ``timestamps``, by time with random
    tie-breaks, so that the latest interactions become test.
    """
    users = np.asarray(users, dtype=np.int64)
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape not in ((2,), (3,)) or (r < 0).any() or r.sum() <= 0 or r[0] <= 0:
        raise ValueError(f"ratios must be (train, [valid,] test) non-negative with train > 0, got {ratios}")
    if len(r) == 2:
        r = np.array([r[0], 0.0, r[1]])
    r = r / r.sum()
    if len(users) == 0:
        return np.zeros(0, dtype=np.int8)
    if users.min() < 0:
        raise ValueError("user indices must be non-negative")
    keys = np.random.default_rng(seed).random(len(users))
    if timestamps is None:
        order = np.lexsort((keys, users))
    else:
        ts = np.asarray(timestamps, dtype=np.float64)
        if ts.shape != users.shape:
            raise ValueError("timestamps must have one entry per row")
        order = np.lexsort((keys, ts, users))
    rank, deg = _rank_within_user(users, order)
    n_train = np.maximum(_round_half_up(deg * r[0]), 1)
    n_train_valid = np.maximum(_round_half_up(deg * (r[0] + r[1])), n_train)
    labels = np.full(len(users), 2, dtype=np.int8)
    labels[rank < n_train_valid] = 1
    labels[rank < n_train] = 0
    return labels


def split_per_user(
    pairs: np.ndarray,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2024,
    *,
    timestamps: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``(user, item)`` pairs per user into ``(train, valid, test)`` (see :func:`split_labels`).

    Each output keeps the input's relative row order.
    """
    pairs = as_pairs(pairs)
    labels = split_labels(pairs[:, 0], ratios, seed, timestamps=timestamps)
    return pairs[labels == 0], pairs[labels == 1], pairs[labels == 2]


def carve_validation(inter: Interactions, fraction: float = 0.1, seed: int = 2024) -> Interactions:
    """Move a random ``fraction`` of each user's training pairs into ``valid``.

    For published splits without a validation set, so that model selection never looks at
    test. Per user, ``round(n * fraction)`` pairs move (half up), capped so that the user keeps
    at least one training pair; a user with a single pair gives none. Deterministic for
    ``seed`` and the order of ``inter.train``. ``fraction == 0`` returns ``inter`` unchanged.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if len(inter.valid):
        raise ValueError(f"{inter.name} already has a validation split ({len(inter.valid)} pairs)")
    if fraction == 0.0 or len(inter.train) == 0:
        return inter
    users = inter.train[:, 0]
    keys = np.random.default_rng(seed).random(len(users))
    rank, deg = _rank_within_user(users, np.lexsort((keys, users)))
    n_valid = np.minimum(_round_half_up(deg * fraction), deg - 1)
    to_valid = rank < n_valid
    return inter.with_valid(inter.train[~to_valid], inter.train[to_valid])
