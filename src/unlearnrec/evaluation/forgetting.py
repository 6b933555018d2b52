"""Forgetting measures: the one place they are computed.

Given the model before unlearning (serving on the graph ``E``) and after (serving on the residual graph
``E_r = E \\ E_Δ``), :func:`forgetting_report` measures how far the request edges ``E_Δ`` were forgotten.
Scores are raw ``ŷ(u, i) = ē_uᵀ ē_i``; ``P = σ(ŷ)``.

* **Mean scores** (raw ŷ and mean σ(ŷ)), before and after, of three pair sets:
  ``request`` (all of ``E_Δ``); ``non_edges`` (``n_samples`` uniform random pairs that are in no split of
  the data, no edge of ``E`` and not in the request, drawn without replacement; the same sample is scored
  before and after); ``remaining`` (``n_samples`` uniform random training edges of ``E`` not in the request,
  or all of them if fewer).
* **MI-BF** ``= mean P_before(E_Δ) / mean P_after(E_Δ)`` (higher: more forgotten; 1: unchanged).
* **MI-NG** ``= mean P_after(non-edges) / mean P_after(E_Δ)`` (> 1: the forgotten edges now score below
  random non-edges). These are the spec's §7 reading of the paper's measures (exact formulas not recovered).
  ``mi_ng_before`` is the same ratio for the model before unlearning, for reference.
* **gap** ``= mean ŷ(non-edges) − mean ŷ(E_Δ)`` before and after (spec §5's fine-tuning criterion).
* **Rank of each forgotten item in its user's full ranking** over all items, ``rank = 1 + #{candidate items
  j ≠ i with ŷ(u, j) > ŷ(u, i)}`` (1 = top; ties resolved in the item's favour), where the candidates are
  the items the serving system would show ``u``:

  - *before*: every item except ``u``'s training items in ``E``, **but keeping the forgotten item ``i``
    itself** (its other training items, forgotten ones included, stay masked);
  - *after*: every item except ``u``'s *remaining* training items ``E_r`` (so ``i`` and ``u``'s other
    forgotten items are candidates, as they are for the unlearned model in serving).

  ``n_candidates`` counts the candidates (``i`` included); the **rank percentile** is
  ``(rank − 1) / (n_candidates − 1)`` (0 = top, 1 = bottom; 0 when ``i`` is the only candidate). Reported as
  mean/median rank and mean/median percentile; the per-edge arrays come back with ``per_edge=True``.
  Ranks are computed in user batches of dense score blocks: one ``(B, n_items)`` matrix product, the mask
  set to ``−inf``, and a count of strictly higher scores per request edge.

"Before" and "after" models are given as a :class:`~unlearnrec.models.Recommender` plus an optional
replacement layer-0 table (``e0``), or directly as a ``(user_emb, item_emb)`` pair of final embeddings, so
an unlearned model can be the same backbone run on a new ``E0`` over the residual graph.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import expit

from unlearnrec.data.interactions import Interactions, as_pairs, pair_keys, user_item_matrix
from unlearnrec.graph import Graph

__all__ = [
    "final_embeddings",
    "forgetting_report",
    "item_ranks",
    "pair_scores",
    "percentile_of_rank",
    "random_non_edges",
    "rank_stats",
    "report_jsonable",
    "score_stats",
    "scores_of_pairs",
    "summarize_scores",
]

_BLOCK = 1 << 22  # score entries compared at once in the rank computation


# ------------------------------------------------------------------------------- scoring
def final_embeddings(model, graph: Graph | None, e0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(user_emb, item_emb)`` of ``model`` served on ``graph`` (optionally with a replacement ``e0``).

    ``model`` is a :class:`~unlearnrec.models.Recommender` (anything with ``embeddings(graph, e0)``) or
    already a ``(user_emb, item_emb)`` pair of tensors/arrays (then ``graph`` is ignored and ``e0`` must be
    ``None``).
    """
    if isinstance(model, (tuple, list)):
        if len(model) != 2:
            raise TypeError("embeddings must be a (user_emb, item_emb) pair")
        if e0 is not None:
            raise ValueError("e0 given together with precomputed embeddings")
        u, i = (torch.as_tensor(x).detach() for x in model)
        if not u.is_floating_point():
            u, i = u.float(), i.float()
        return u, i
    if hasattr(model, "embeddings"):
        u, i = model.embeddings(graph, e0)
        return u.detach(), i.detach()
    raise TypeError(f"expected a Recommender or a (user_emb, item_emb) pair, got {type(model).__name__}")


@torch.no_grad()
def scores_of_pairs(
    user_emb: torch.Tensor, item_emb: torch.Tensor, pairs: np.ndarray, chunk: int = 1 << 16
) -> np.ndarray:
    """Raw scores (float64) of ``pairs`` from precomputed final embeddings, in chunks of ``chunk`` pairs."""
    pairs = as_pairs(pairs)
    out = np.empty(len(pairs), np.float64)
    dev = user_emb.device
    for lo in range(0, len(pairs), chunk):
        p = torch.tensor(pairs[lo : lo + chunk], device=dev)  # a copy: request edges are read-only
        out[lo : lo + len(p)] = (user_emb[p[:, 0]] * item_emb[p[:, 1]]).sum(-1).double().cpu().numpy()
    return out


def pair_scores(model, graph: Graph | None, pairs, e0: torch.Tensor | None = None) -> np.ndarray:
    """Raw scores ``ŷ(u, i)`` (float64) of ``pairs`` for ``model`` on ``graph`` (see :func:`final_embeddings`)."""
    u, i = final_embeddings(model, graph, e0)
    return scores_of_pairs(u, i, pairs)


def summarize_scores(scores: np.ndarray) -> dict[str, float]:
    """``n``, ``mean``, ``std``, ``median``, ``min``, ``max`` and ``sigmoid_mean`` of raw scores (``nan`` if empty)."""
    if not len(scores):
        nan = float("nan")
        return {"n": 0, "mean": nan, "std": nan, "median": nan, "min": nan, "max": nan, "sigmoid_mean": nan}
    return {
        "n": int(len(scores)),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "median": float(np.median(scores)),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "sigmoid_mean": float(expit(scores).mean()),
    }


def score_stats(model, graph: Graph | None, pairs, e0: torch.Tensor | None = None) -> dict[str, float]:
    """``n``, ``mean``, ``std``, ``median``, ``min``, ``max`` of the raw scores of ``pairs`` and
    ``sigmoid_mean`` (mean σ(ŷ)); the statistics are ``nan`` for no pairs."""
    return summarize_scores(pair_scores(model, graph, pairs, e0))


# ------------------------------------------------------------------------------ sampling
def _keys_of(obj, n_items: int) -> np.ndarray:
    if obj is None:
        return np.zeros(0, np.int64)
    if hasattr(obj, "edges") and not isinstance(obj, np.ndarray):  # DeletionRequest, Graph
        obj = obj.edges
    if isinstance(obj, (list, tuple)) and obj and all(
        hasattr(o, "edges") or (isinstance(o, np.ndarray) and o.ndim == 2) for o in obj
    ):
        return np.concatenate([_keys_of(o, n_items) for o in obj])
    pairs = as_pairs(obj)
    return pair_keys(pairs, n_items)


def random_non_edges(
    data_or_graph: Interactions | Graph, n: int, seed: int = 0, exclude=None, *, max_rounds: int = 1000
) -> np.ndarray:
    """``n`` distinct uniform random ``(user, item)`` pairs outside every known pair.

    Known pairs: every split (train, valid, test) of an :class:`Interactions`, or the edges of a
    :class:`Graph`; plus ``exclude`` (an ``(m, 2)`` pair array, a request, a graph, or a list of pair
    arrays). Vectorised rejection sampling: candidate keys are drawn in blocks, the known ones rejected by
    a sorted-key lookup, duplicates dropped keeping the first draw, until ``n`` are collected; this is a
    uniform sample without replacement of the free pairs. Returned sorted (user, then item).

    Raises:
        ValueError: fewer than ``n`` free pairs exist.
    """
    n_users, n_items = data_or_graph.n_users, data_or_graph.n_items
    if isinstance(data_or_graph, Interactions):
        known = np.concatenate([data_or_graph.train, data_or_graph.valid, data_or_graph.test])
        keys = pair_keys(known, n_items)
    elif isinstance(data_or_graph, Graph):
        keys = data_or_graph.keys
    else:
        raise TypeError(f"expected Interactions or Graph, got {type(data_or_graph).__name__}")
    forbidden = np.unique(np.concatenate([keys, _keys_of(exclude, n_items)]))
    total = n_users * n_items
    free = total - len(forbidden)
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > free:
        raise ValueError(f"asked for {n} non-edges but only {free} free pairs exist")
    if n == 0:
        return np.zeros((0, 2), np.int64)
    rng = np.random.default_rng(seed)
    if n > free // 2 and total <= 50_000_000:  # dense case: enumerate the free pairs
        pool = np.setdiff1d(np.arange(total, dtype=np.int64), forbidden, assume_unique=True)
        got = np.sort(rng.choice(pool, size=n, replace=False))
    else:
        free_share = free / total
        got = np.zeros(0, np.int64)
        for _ in range(max_rounds):
            need = n - len(got)
            if need <= 0:
                break
            m = int(math.ceil(need / free_share * 1.2)) + 16
            cand = rng.integers(0, total, size=m, dtype=np.int64)
            if len(forbidden):
                pos = np.minimum(np.searchsorted(forbidden, cand), len(forbidden) - 1)
                cand = cand[forbidden[pos] != cand]
            allk = np.concatenate([got, cand])
            _, first = np.unique(allk, return_index=True)
            got = allk[np.sort(first)][:n]
        else:  # pragma: no cover - only for pathological densities
            raise RuntimeError("rejection sampling did not converge")
        got = np.sort(got)
    return np.stack([got // n_items, got % n_items], axis=1)


# --------------------------------------------------------------------------------- ranks
@torch.no_grad()
def item_ranks(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    pairs,
    exclude: sp.csr_matrix | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of item ``i`` in user ``u``'s full ranking, for every ``(u, i)`` in ``pairs``.

    Candidates are all items not in ``exclude[u]``, plus ``i`` itself even when excluded.
    ``rank = 1 + #{candidates j ≠ i : ŷ(u, j) > ŷ(u, i)}`` (1 = top; ties in ``i``'s favour);
    ``n_candidates = n_items − |exclude[u] \\ {i}|``.

    Computed in batches of ``batch_size`` users: one dense ``(B, n_items)`` score block, excluded entries
    set to ``−inf``, and a vectorised count of strictly higher scores for each pair of those users.

    Returns:
        ``(ranks, n_candidates)``, int64 arrays aligned with ``pairs``.
    """
    pairs = as_pairs(pairs)
    n_users, n_items = user_emb.shape[0], item_emb.shape[0]
    ranks = np.zeros(len(pairs), np.int64)
    n_cand = np.full(len(pairs), n_items, np.int64)
    if not len(pairs):
        return ranks, n_cand
    if exclude is not None:
        exclude = sp.csr_matrix(exclude)
        exclude.sum_duplicates()
        exclude.eliminate_zeros()
        if exclude.shape != (n_users, n_items):
            raise ValueError(f"exclude shape {exclude.shape} != {(n_users, n_items)}")
        deg = np.diff(exclude.indptr).astype(np.int64)
        ex_keys = _csr_keys(exclude)
        q = pair_keys(pairs, n_items)
        pos = np.minimum(np.searchsorted(ex_keys, q), max(len(ex_keys) - 1, 0))
        self_excluded = (ex_keys[pos] == q) if len(ex_keys) else np.zeros(len(pairs), bool)
        n_cand = n_items - deg[pairs[:, 0]] + self_excluded.astype(np.int64)
    dev = user_emb.device
    item_t = item_emb.t()
    order = np.argsort(pairs[:, 0], kind="stable")
    sorted_users = pairs[order, 0]
    users = np.unique(sorted_users)
    neg_inf = torch.tensor(-math.inf, dtype=user_emb.dtype, device=dev)
    chunk = max(1, _BLOCK // max(1, n_items))
    for lo in range(0, len(users), batch_size):
        bu = users[lo : lo + batch_size]
        scores = user_emb[torch.from_numpy(bu).to(dev)] @ item_t  # (B, n_items)
        masked = scores
        if exclude is not None:
            block = exclude[bu]
            r = np.repeat(np.arange(len(bu), dtype=np.int64), np.diff(block.indptr))
            if len(r):
                idx = (torch.from_numpy(r).to(dev), torch.from_numpy(block.indices.astype(np.int64)).to(dev))
                masked = scores.index_put(idx, neg_inf)
        e_lo = int(np.searchsorted(sorted_users, bu[0], side="left"))
        e_hi = int(np.searchsorted(sorted_users, bu[-1], side="right"))
        sel = order[e_lo:e_hi]
        local = np.searchsorted(bu, pairs[sel, 0])
        for c in range(0, len(sel), chunk):
            s = sel[c : c + chunk]
            lr = torch.from_numpy(local[c : c + chunk]).to(dev)
            it = torch.from_numpy(pairs[s, 1]).to(dev)
            target = scores[lr, it]  # unmasked: the item's own score
            higher = (masked[lr] > target[:, None]).sum(1)
            ranks[s] = higher.cpu().numpy().astype(np.int64) + 1
    return ranks, n_cand


def _csr_keys(m: sp.csr_matrix) -> np.ndarray:
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return np.sort(rows * m.shape[1] + m.indices.astype(np.int64))


def percentile_of_rank(ranks: np.ndarray, n_cand: np.ndarray) -> np.ndarray:
    """``(rank − 1) / (candidates − 1)``: 0 = top of the list, 1 = bottom (0 where there is one candidate)."""
    denom = np.maximum(n_cand - 1, 1).astype(np.float64)
    return np.where(n_cand > 1, (ranks - 1) / denom, 0.0)


def rank_stats(ranks: np.ndarray, pct: np.ndarray) -> dict[str, float]:
    """Mean and median of 1-based ranks and of their percentiles (``nan`` if empty)."""
    if not len(ranks):
        nan = float("nan")
        return {"mean": nan, "median": nan, "mean_percentile": nan, "median_percentile": nan}
    return {
        "mean": float(ranks.mean()),
        "median": float(np.median(ranks)),
        "mean_percentile": float(pct.mean()),
        "median_percentile": float(np.median(pct)),
    }


def _ratio(a: float, b: float) -> float:
    if b == 0.0:
        return math.inf if a > 0 else float("nan")
    return a / b


# -------------------------------------------------------------------------------- report
def forgetting_report(
    model_before,
    graph_before: Graph,
    model_after=None,
    graph_after: Graph | None = None,
    request_edges=None,
    data: Interactions | None = None,
    n_samples: int = 10_000,
    seed: int = 0,
    e0_before: torch.Tensor | None = None,
    e0_after: torch.Tensor | None = None,
    *,
    per_edge: bool = False,
    ranks: bool = True,
    batch_size: int = 256,
) -> dict[str, Any]:
    """How well the request edges were forgotten (see the module docstring for every definition).

    Args:
        model_before: the model before unlearning (Recommender or ``(user_emb, item_emb)``).
        graph_before: the graph it serves on, ``E`` (the request edges must be edges of it).
        model_after: the model after unlearning (Recommender or embeddings); ``None``: ``model_before``
            (the same backbone, typically with a replacement table ``e0_after``).
        graph_after: the graph the unlearned model serves on; ``None``: ``graph_before`` minus the request.
        request_edges: ``E_Δ``, an ``(n, 2)`` array or a :class:`~unlearnrec.unlearning.DeletionRequest`.
        data: the dataset (its valid/test pairs are excluded from the non-edge sample); optional.
        n_samples: size of the random non-edge sample and of the remaining-positive sample.
        seed: seed of both samples (same seed, same samples: compare models with the same seed).
        e0_before, e0_after: replacement layer-0 tables for the respective models.
        per_edge: also return the per-edge arrays under ``"per_edge"`` (numpy arrays).
        ranks: compute the ranks (one dense pass over the request users' scores).
        batch_size: users per dense score block in the rank computation.

    Returns:
        A dict: ``n`` (set sizes), ``score`` (``request``/``non_edges``/``remaining`` x ``before``/``after``
        score statistics, see :func:`score_stats`), ``mi_bf``, ``mi_ng``, ``mi_ng_before``, ``gap_before``,
        ``gap_after``, ``rank`` (``before``/``after``: mean, median, mean_percentile, median_percentile),
        and ``per_edge`` when asked.
    """
    if request_edges is None:
        raise ValueError("request_edges is required")
    req = as_pairs(getattr(request_edges, "edges", request_edges))
    if not len(req):
        raise ValueError("empty request: nothing to measure")
    req = np.unique(req, axis=0)
    n_items = graph_before.n_items
    in_before = graph_before.contains(req)
    if not in_before.all():
        bad = req[~in_before][:20].tolist()
        raise ValueError(f"{int((~in_before).sum())} request edge(s) are not edges of graph_before: {bad}")
    if graph_after is None:
        graph_after = graph_before.without(req)
    if model_after is None:
        model_after = model_before

    ub, ib = final_embeddings(model_before, graph_before, e0_before)
    ua, ia = final_embeddings(model_after, graph_after, e0_after)
    for name, (u, i) in (("before", (ub, ib)), ("after", (ua, ia))):
        if (u.shape[0], i.shape[0]) != (graph_before.n_users, n_items):
            raise ValueError(
                f"{name} embeddings cover {u.shape[0]} x {i.shape[0]}, graph {graph_before.n_users} x {n_items}"
            )

    rng = np.random.default_rng(seed)
    s_non, s_rem = (int(x) for x in rng.integers(0, 2**62, size=2))
    known = data if data is not None else graph_before
    # a small catalogue may have fewer free pairs than asked for: then take them all
    known_keys = np.unique(np.concatenate([pair_keys(np.concatenate([known.train, known.valid, known.test])
                                                     if isinstance(known, Interactions) else known.edges, n_items),
                                           graph_before.keys, pair_keys(req, n_items)]))
    n_samples = min(int(n_samples), graph_before.n_users * n_items - len(known_keys))
    non_edges = random_non_edges(known, n_samples, seed=s_non, exclude=[graph_before.edges, req])
    req_keys = pair_keys(req, n_items)
    keep = ~np.isin(graph_before.keys, req_keys)
    remaining_all = graph_before.edges[keep]
    k = min(int(n_samples), len(remaining_all))
    pick = np.sort(np.random.default_rng(s_rem).choice(len(remaining_all), size=k, replace=False))
    remaining = remaining_all[pick]

    sc = {
        "request": (scores_of_pairs(ub, ib, req), scores_of_pairs(ua, ia, req)),
        "non_edges": (scores_of_pairs(ub, ib, non_edges), scores_of_pairs(ua, ia, non_edges)),
        "remaining": (scores_of_pairs(ub, ib, remaining), scores_of_pairs(ua, ia, remaining)),
    }
    score = {g: {"before": summarize_scores(b), "after": summarize_scores(a)} for g, (b, a) in sc.items()}
    p = {g: {w: score[g][w]["sigmoid_mean"] for w in ("before", "after")} for g in score}
    report: dict[str, Any] = {
        "n": {"request": int(len(req)), "non_edges": int(len(non_edges)), "remaining": int(len(remaining))},
        "seed": int(seed),
        "score": score,
        "mi_bf": _ratio(p["request"]["before"], p["request"]["after"]),
        "mi_ng": _ratio(p["non_edges"]["after"], p["request"]["after"]),
        "mi_ng_before": _ratio(p["non_edges"]["before"], p["request"]["before"]),
        "gap_before": score["non_edges"]["before"]["mean"] - score["request"]["before"]["mean"],
        "gap_after": score["non_edges"]["after"]["mean"] - score["request"]["after"]["mean"],
    }
    if ranks:
        n_users = graph_before.n_users
        mask_before = user_item_matrix(graph_before.edges, n_users, n_items)
        mask_after = user_item_matrix(remaining_all, n_users, n_items)
        rb, cb = item_ranks(ub, ib, req, mask_before, batch_size)
        ra, ca = item_ranks(ua, ia, req, mask_after, batch_size)
        pb, pa = percentile_of_rank(rb, cb), percentile_of_rank(ra, ca)
        report["rank"] = {"before": rank_stats(rb, pb), "after": rank_stats(ra, pa)}
    if per_edge:
        pe: dict[str, np.ndarray] = {"edges": req, "score_before": sc["request"][0], "score_after": sc["request"][1]}
        if ranks:
            pe.update(
                rank_before=rb, rank_after=ra, n_candidates_before=cb, n_candidates_after=ca,
                percentile_before=pb, percentile_after=pa,
            )
        report["per_edge"] = pe
    return report


def report_jsonable(report: dict[str, Any]) -> dict[str, Any]:
    """A copy safe for strict JSON: arrays become lists, non-finite floats become ``None``."""

    def conv(x):
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, np.ndarray):
            return conv(x.tolist())
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        if isinstance(x, (float, np.floating)):
            return float(x) if math.isfinite(x) else None
        if isinstance(x, np.integer):
            return int(x)
        return x

    return conv(report)
