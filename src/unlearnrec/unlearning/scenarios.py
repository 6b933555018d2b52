"""Deletion scenarios. The paper's adversarial protocol (UnlearnRec, SIGIR 2025, spec §7 (a)).

Protocol:

1. Train a backbone on the clean data (its training graph ``E``).
2. With that clean model, for **every user** ``u`` inject its *least-likely* item
   ``argmin_i ŷ(u, i)`` and for **every item** ``i`` its least-likely user ``argmin_u ŷ(u, i)``. Candidates
   exclude every pair the data already holds -- training, validation **and test** -- so an injected edge
   never collides with held-out truth (nor duplicates a real edge). The user side and the item side are
   chosen independently (both from the clean model's scores) and their union is taken, so a pair picked
   by both sides appears once. Users (items) with no candidate left are skipped.
   With ``ratio < 1`` only a seeded random ``round(ratio * n_users)`` users and ``round(ratio * n_items)``
   items inject (the paper's "random 50%" variant is ``ratio=0.5``).
3. Train the backbone on the attacked graph ``E ∪ E_inj`` (:func:`attacked_dataset`): these edges are noise
   the model fits, and they are the request to unlearn (``E_Δ = E_inj``). A successful unlearner brings
   them back below random non-edges (MI-NG >= 1), as retraining on ``E`` does.

Scores are computed in user (item) batches as dense ``(B, n_items)`` blocks on the model's device; the
pairs to exclude are set to ``+inf`` and ``torch.topk(k=1, largest=False)`` takes the minimum. There is no
Python loop over users or items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from unlearnrec.data.interactions import Interactions, as_pairs, pair_keys, user_item_matrix
from unlearnrec.evaluation.forgetting import final_embeddings
from unlearnrec.graph import Graph
from unlearnrec.unlearning.requests import DeletionRequest

__all__ = ["AdversarialScenario", "ScenarioError", "adversarial_edges", "adversarial_scenario", "attacked_dataset"]


class ScenarioError(ValueError):
    """A scenario that cannot be built (e.g. injected pairs colliding with held-out pairs)."""


def _subset(n: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    if ratio >= 1.0:
        return np.arange(n, dtype=np.int64)
    k = int(round(ratio * n))
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


@torch.no_grad()
def _argmin_rows(
    a: torch.Tensor, b: torch.Tensor, exclude: sp.csr_matrix, rows: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each row index ``r`` in ``rows``: ``argmin_c a[r] · b[c]`` over columns not in ``exclude[r]``.

    Returns ``(rows kept, argmin column)``; rows whose every column is excluded are dropped.
    """
    dev = a.device
    bt = b.t()
    out_r, out_c = [], []
    inf = torch.tensor(math.inf, dtype=a.dtype, device=dev)
    for lo in range(0, len(rows), batch_size):
        br = rows[lo : lo + batch_size]
        scores = a[torch.from_numpy(br).to(dev)] @ bt
        block = exclude[br]
        r = np.repeat(np.arange(len(br), dtype=np.int64), np.diff(block.indptr))
        if len(r):
            idx = (torch.from_numpy(r).to(dev), torch.from_numpy(block.indices.astype(np.int64)).to(dev))
            scores = scores.index_put(idx, inf)
        val, col = torch.topk(scores, 1, dim=1, largest=False)
        ok = torch.isfinite(val[:, 0]).cpu().numpy()
        out_r.append(br[ok])
        out_c.append(col[:, 0].cpu().numpy().astype(np.int64)[ok])
    if not out_r:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_r), np.concatenate(out_c)


def known_pairs_matrix(data: Interactions, graph: Graph | None = None) -> sp.csr_matrix:
    """Binary ``n_users x n_items`` matrix of every pair in train, valid, test (and ``graph``'s edges)."""
    parts = [data.train, data.valid, data.test]
    if graph is not None:
        parts.append(graph.edges)
    return user_item_matrix(np.concatenate(parts), data.n_users, data.n_items)


def adversarial_edges(
    model,
    graph: Graph | None,
    data: Interactions,
    ratio: float = 1.0,
    seed: int = 0,
    *,
    e0: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """The paper's adversarial injection: each user's least-likely item and each item's least-likely user.

    Args:
        model: a backbone trained on the *clean* data (a :class:`~unlearnrec.models.Recommender`, or a
            ``(user_emb, item_emb)`` pair of final embeddings).
        graph: the clean training graph the model serves on (``None``: ``data.train``).
        data: the clean dataset; its train, validation and test pairs are never injected.
        ratio: share of users and of items that inject, in ``(0, 1]``; a seeded random subset below 1.
        seed: seed of that subset.
        e0: optional replacement layer-0 table for ``model``.
        batch_size: users (items) scored per dense block.

    Returns:
        Sorted unique ``(n, 2)`` int64 ``(user, item)`` pairs, none of them in any split of ``data``.
    """
    if not 0.0 < float(ratio) <= 1.0:
        raise ScenarioError(f"ratio must be in (0, 1], got {ratio}")
    if graph is None:
        graph = Graph(data.train, data.n_users, data.n_items)
    if (graph.n_users, graph.n_items) != (data.n_users, data.n_items):
        raise ScenarioError("graph and data have different sizes")
    user_emb, item_emb = final_embeddings(model, graph, e0)
    exclude = known_pairs_matrix(data, graph)
    rng = np.random.default_rng(seed)
    users = _subset(data.n_users, float(ratio), rng)
    items = _subset(data.n_items, float(ratio), rng)
    u1, i1 = _argmin_rows(user_emb, item_emb, exclude, users, batch_size)
    i2, u2 = _argmin_rows(item_emb, user_emb, exclude.T.tocsr(), items, batch_size)
    pairs = np.concatenate([np.stack([u1, i1], axis=1), np.stack([u2, i2], axis=1)]).astype(np.int64)
    if not len(pairs):
        return np.zeros((0, 2), np.int64)
    return np.unique(pairs, axis=0)


def attacked_dataset(data: Interactions, injected: np.ndarray, name: str | None = None) -> Interactions:
    """``data`` with ``injected`` added to its training split (validation and test unchanged).

    Raises:
        ScenarioError: injected pairs out of range, or colliding with a validation/test pair (or already
            training pairs): they are listed (first 20 and the count). Duplicates collapse.
    """
    injected = as_pairs(injected)
    if not len(injected):
        raise ScenarioError("no injected pair")
    out = (injected < 0).any(axis=1) | (injected[:, 0] >= data.n_users) | (injected[:, 1] >= data.n_items)
    if out.any():
        raise ScenarioError(f"{int(out.sum())} injected pair(s) outside the data's ids: {_fmt(injected[out])}")
    injected = np.unique(injected, axis=0)
    q = pair_keys(injected, data.n_items)
    for split in ("valid", "test", "train"):
        keys = np.unique(pair_keys(getattr(data, split), data.n_items))
        hit = np.isin(q, keys)
        if hit.any():
            raise ScenarioError(
                f"{int(hit.sum())} injected pair(s) collide with {split} pairs of {data.name}: {_fmt(injected[hit])}"
            )
    return data.with_train(np.concatenate([data.train, injected]), name=name or f"{data.name}-attacked")


def _fmt(pairs: np.ndarray) -> str:
    shown = ", ".join(f"({u}, {i})" for u, i in pairs[:20].tolist())
    return shown + (f", ... ({len(pairs) - 20} more)" if len(pairs) > 20 else "")


@dataclass(frozen=True)
class AdversarialScenario:
    """An attacked dataset and the request that removes the attack.

    Attributes:
        data: the attacked dataset (train = clean train + injected).
        graph: its training graph.
        request: the injected edges as a :class:`DeletionRequest` of kind ``"adversarial"`` (validated
            against ``graph``).
        ratio: the ratio used.
        seed: the seed used.
    """

    data: Interactions
    graph: Graph
    request: DeletionRequest
    ratio: float
    seed: int

    @property
    def injected(self) -> np.ndarray:
        return self.request.edges


def adversarial_scenario(
    model, data: Interactions, graph: Graph | None = None, ratio: float = 1.0, seed: int = 0, **kw
) -> AdversarialScenario:
    """Step 2 of the protocol in one call: inject with the clean ``model``, build the attacked data and
    graph, and wrap the injected edges as the request to unlearn. Training on ``scenario.data`` is the
    caller's (step 3)."""
    injected = adversarial_edges(model, graph, data, ratio=ratio, seed=seed, **kw)
    attacked = attacked_dataset(data, injected)
    g = Graph(attacked.train, attacked.n_users, attacked.n_items)
    pct = f"{float(ratio) * 100:g}%"
    request = DeletionRequest.from_pairs(
        g, injected, kind="adversarial", description=f"adversarial {pct} of users and items (seed {seed})"
    )
    return AdversarialScenario(attacked, g, request, float(ratio), int(seed))
