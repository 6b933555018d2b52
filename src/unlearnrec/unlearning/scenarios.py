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


# ============================================================================ benchmark scenarios
# Request builders of the evaluation harness (``unlearnrec bench``). The whole-user and whole-item
# selections follow the CURE4Rec protocol (Chen et al., "CURE4Rec: A Benchmark for Recommendation Unlearning
# with Deeper Influence", NeurIPS 2024 Datasets & Benchmarks): the data of the *most active* users (their
# "core data"), of the *least active* users ("edge data"), or of random users. Activity is the number of
# training edges. Everything below is vectorised (no Python loop over users, items or edges).

SELECTIONS: tuple[str, ...] = ("most_active", "least_active", "random")
"""How whole users (items) are chosen: by activity (training degree), descending or ascending, or at random."""


def user_degrees(graph: Graph) -> np.ndarray:
    """Training edges of every user (``n_users`` int64; 0 for users without edges)."""
    return np.bincount(graph.keys // graph.n_items, minlength=graph.n_users).astype(np.int64)


def item_degrees(graph: Graph) -> np.ndarray:
    """Training edges of every item (``n_items`` int64; 0 for items without edges)."""
    return np.bincount(graph.keys % graph.n_items, minlength=graph.n_items).astype(np.int64)


def _how_many(n: int | None, fraction: float | None, pool: int, what: str) -> int:
    if (n is None) == (fraction is None):
        raise ScenarioError(f"give exactly one of n and fraction of the {what} to delete")
    if fraction is not None:
        if not 0.0 < float(fraction) <= 1.0:
            raise ScenarioError(f"fraction must be in (0, 1], got {fraction}")
        k = max(1, int(round(float(fraction) * pool)))
    else:
        k = int(n)
        if k < 1:
            raise ScenarioError(f"n must be >= 1, got {n}")
    if k > pool:
        raise ScenarioError(f"cannot pick {k} {what}: only {pool} {what} have training edges")
    return k


def select_by_activity(
    degrees: np.ndarray, selection: str = "random", *, n: int | None = None, fraction: float | None = None,
    seed: int = 0, what: str = "users",
) -> np.ndarray:
    """Indices (sorted) of ``n`` (or ``fraction`` of the) entries with ``degree > 0``, chosen by ``selection``.

    ``most_active``: the largest degrees; ``least_active``: the smallest; ties go to the lower index in both
    cases (deterministic). ``random``: uniform without replacement, ``numpy.random.default_rng(seed)``.
    ``fraction`` is of the entries that have at least one edge (rounded, at least one).
    """
    sel = str(selection).replace("-", "_")
    if sel not in SELECTIONS:
        raise ScenarioError(f"unknown selection {selection!r}; known: {', '.join(SELECTIONS)}")
    degrees = np.asarray(degrees, np.int64).reshape(-1)
    cand = np.flatnonzero(degrees > 0)
    k = _how_many(n, fraction, len(cand), what)
    if sel == "random":
        pick = np.random.default_rng(seed).choice(cand, size=k, replace=False)
    else:
        key = -degrees[cand] if sel == "most_active" else degrees[cand]
        pick = cand[np.lexsort((cand, key))[:k]]  # primary: activity; secondary: index
    return np.sort(pick).astype(np.int64)


def users_request(
    graph: Graph, selection: str = "random", *, n: int | None = None, fraction: float | None = None, seed: int = 0
) -> DeletionRequest:
    """Every training edge of whole users chosen by activity (:func:`select_by_activity`): CURE4Rec's
    core (``most_active``), edge (``least_active``) or random users."""
    users = select_by_activity(user_degrees(graph), selection, n=n, fraction=fraction, seed=seed, what="users")
    what = f"{n} users" if n is not None else f"{float(fraction) * 100:g}% of users"
    sel = str(selection).replace("-", "_")
    desc = f"users {sel} {what} ({len(users)} users)" + (f" (seed {seed})" if sel == "random" else "")
    req = DeletionRequest.users(graph, users, description=desc)
    return DeletionRequest(req.edges, "users", req.description, graph.n_users, graph.n_items)


def items_request(
    graph: Graph, selection: str = "random", *, n: int | None = None, fraction: float | None = None, seed: int = 0
) -> DeletionRequest:
    """Every training edge of whole items chosen by popularity (training degree), see :func:`users_request`."""
    items = select_by_activity(item_degrees(graph), selection, n=n, fraction=fraction, seed=seed, what="items")
    what = f"{n} items" if n is not None else f"{float(fraction) * 100:g}% of items"
    sel = str(selection).replace("-", "_")
    desc = f"items {sel} {what} ({len(items)} items)" + (f" (seed {seed})" if sel == "random" else "")
    req = DeletionRequest.items(graph, items, description=desc)
    return DeletionRequest(req.edges, "items", req.description, graph.n_users, graph.n_items)


def random_edges_request(graph: Graph, ratio: float, seed: int = 0) -> DeletionRequest:
    """A uniform random ``ratio`` of the training edges (:meth:`DeletionRequest.random_edges`)."""
    return DeletionRequest.random_edges(graph, float(ratio), seed=seed)


def sequential_requests(graph: Graph, ratio: float, rounds: int, seed: int = 0) -> list[DeletionRequest]:
    """``rounds`` disjoint random-edge requests of ``round(ratio * n_edges)`` edges each (at least one).

    ``n_edges`` is the size of ``graph`` (the graph before the first round), so every round deletes the same
    number of edges. Drawing ``rounds * size`` distinct edges at once and cutting them into consecutive blocks
    is the same distribution as drawing each round uniformly from the residual graph left by the rounds before
    it; request ``r`` is therefore an edge set of the residual graph after requests ``1..r-1``.
    """
    if not 0.0 < float(ratio) <= 1.0:
        raise ScenarioError(f"ratio must be in (0, 1], got {ratio}")
    rounds = int(rounds)
    if rounds < 1:
        raise ScenarioError(f"rounds must be >= 1, got {rounds}")
    size = max(1, int(round(float(ratio) * graph.n_edges)))
    if size * rounds > graph.n_edges:
        raise ScenarioError(f"{rounds} rounds of {size} edges need more than the graph's {graph.n_edges} edges")
    rng = np.random.default_rng(seed)
    keys = graph.keys[rng.choice(graph.n_edges, size=size * rounds, replace=False)]
    out = []
    for r, block in enumerate(np.split(keys, rounds), start=1):
        edges = np.stack([block // graph.n_items, block % graph.n_items], axis=1)
        out.append(DeletionRequest(edges, "sequential",
                                   f"sequential round {r}/{rounds}: {float(ratio) * 100:g}% random edges (seed {seed})",
                                   graph.n_users, graph.n_items))
    return out


def unlearn_sequentially(unlearner, requests, callback=None) -> list:
    """Unlearn ``requests`` one after another, adopting each outcome (:meth:`Unlearner.apply`) before the next.

    ``callback(round, outcome)`` (1-based round) is called after each round, e.g. to measure it. Returns the
    list of outcomes; the last one serves the model after every request.
    """
    outcomes = []
    for r, req in enumerate(requests, start=1):
        out = unlearner.unlearn(req)
        unlearner.apply(out)
        outcomes.append(out)
        if callback is not None:
            callback(r, out)
    return outcomes


def activity_gap(values, users, degrees, top_fraction: float = 0.05) -> dict[str, float]:
    """Mean of a per-user metric over the most active users minus its mean over the others (CURE4Rec's view).

    Args:
        values: per-user metric values (e.g. NDCG@20), aligned with ``users``.
        users: the evaluated users (indices).
        degrees: activity of every user (``n_users``, e.g. :func:`user_degrees` of the training graph).
        top_fraction: share of the evaluated users that form the active group: the ``ceil(top_fraction * n)``
            users with the most training edges (ties: lower index first); the rest are the inactive group.

    Returns:
        ``active`` and ``inactive`` (group means, ``nan`` when a group is empty), ``gap`` = active − inactive,
        ``n_active``, ``n_inactive`` and ``top_fraction``.
    """
    if not 0.0 < float(top_fraction) < 1.0:
        raise ValueError(f"top_fraction must be in (0, 1), got {top_fraction}")
    values = np.asarray(values, np.float64).reshape(-1)
    users = np.asarray(users, np.int64).reshape(-1)
    if len(values) != len(users):
        raise ValueError(f"{len(values)} values for {len(users)} users")
    deg = np.asarray(degrees, np.int64)[users]
    n_top = min(len(users), int(math.ceil(float(top_fraction) * len(users))))
    active = np.zeros(len(users), bool)
    active[np.lexsort((users, -deg))[:n_top]] = True
    nan = float("nan")
    a = float(values[active].mean()) if active.any() else nan
    b = float(values[~active].mean()) if (~active).any() else nan
    return {"active": a, "inactive": b, "gap": a - b, "n_active": int(active.sum()),
            "n_inactive": int((~active).sum()), "top_fraction": float(top_fraction)}


def ndcg_activity_gap(result, degrees, k: int = 20, top_fraction: float = 0.05) -> dict[str, float]:
    """:func:`activity_gap` of NDCG@``k`` from a :class:`~unlearnrec.evaluation.ranking.RankingResult`
    (its per-user values): the most active 5% of the evaluated users against the rest."""
    return activity_gap(result.per_user[f"ndcg@{k}"], result.users, degrees, top_fraction)


__all__ += [
    "SELECTIONS",
    "activity_gap",
    "item_degrees",
    "items_request",
    "ndcg_activity_gap",
    "random_edges_request",
    "select_by_activity",
    "sequential_requests",
    "unlearn_sequentially",
    "user_degrees",
    "users_request",
]
