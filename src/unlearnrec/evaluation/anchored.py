"""Retrain-anchored forgetting measures: how close an unlearned model serves to the retrained reference.

Exact unlearning is defined by the model retrained without the request; a method forgot well when its served
recommendations are *indistinguishable* from that reference's, not merely when the request scores dropped.
Each model is served on its own graph (the unlearned model on its residual graph, the reference on the one
it was retrained on), and each masks its own serving graph's training edges when ranking, exactly as the
serving system would. Per request, over the request's users ``U`` (or a caller-given set):

* **Top-k Jaccard** ``J_u = |R_u^a ∩ R_u^b| / |R_u^a ∪ R_u^b|`` of the two models' top-``k`` lists (``k = 20``
  by default; 1 = same items, order ignored; 0 = disjoint). A list holds only candidate (unmasked) items, so it
  is shorter than ``k`` when a user has fewer candidates; two empty lists count as identical (``J = 1``).
  Ties at the cut-off are broken by :func:`torch.topk`.
* **Jensen–Shannon divergence** between the models' per-user distributions over candidate items,
  ``p_u(i) = softmax_{i ∈ C_u}(ŷ(u, i) / T)`` with ``C_u`` all items minus ``u``'s masked (serving-graph
  training) items of that model, and ``p_u(i) = 0`` for masked items; ``T = 1`` by default (the softmax of the
  raw dot-product scores, the distribution a softmax recommender would read from them).
  ``JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m)``, ``m = ½(p + q)``, in **nats** (0 = same distribution, bounded by
  ``ln 2``). Computed in float64, in user batches of dense ``(B, n_items)`` score blocks; a user with no
  candidate item under either model has ``JS = nan`` and is left out of the mean (counted in ``n_js_nan``).
* **Rank percentile of the forgotten items** ``(u, i) ∈ E_Δ`` in ``u``'s full ranking under each model, with the
  definitions of :mod:`unlearnrec.evaluation.forgetting` (:func:`~unlearnrec.evaluation.forgetting.item_ranks`,
  candidates = items not in the model's own serving graph for ``u``, plus ``i``; 0 = top, 1 = bottom), and the
  difference unlearned − reference (> 0: the unlearned model pushes the forgotten items further down than
  retraining does, itself a signal — the "Streisand effect" of over-forgetting).
* Mean raw score of the request edges under both models (:func:`~unlearnrec.evaluation.forgetting.score_stats`).
* **Retained-items Jaccard** (``jaccard_retained``): the top-``k`` Jaccard with the request pairs masked in both
  models' lists, i.e. the overlap of what each model recommends among the items the user keeps as candidates
  either way. The plain Jaccard mixes two things: where the forgotten items land (a retrained model still lists
  some of them, the original served on its own graph none) and how training on them reordered everything else.
  The retained-items Jaccard measures only the second, so a method that moves the request items and nothing
  else (EdgeDrop) scores here about what the untouched original scores.

:func:`noise_floor` computes the same measures between two retrainings with different seeds: what a *perfect*
unlearner would show (retraining is not deterministic across seeds, so Jaccard < 1 and JS > 0 even for exact
unlearning); an unlearned model is as good as exact when its anchored measures are within that floor.

**Several references.** The references must not share the original model's seed: a retrain from the original's
initial embeddings stays close to the original whatever it forgot, and the untouched original would then look
like exact unlearning. With retrains ``R_1..R_n`` (seeds other than the original's, all on the residual graph):

* a model's anchored measures are the mean (and sample sd) over the references of its :func:`anchored_report`
  against each (:func:`aggregate_reports`);
* the floor is the set of pairwise reports ``R_i`` vs ``R_j``, ``i < j`` (:func:`pairwise_floor`), summarised by
  mean, sample sd (``ddof = 1``), min and max over the pairs;
* a model is **in the floor** when its mean Jaccard@k over the references is at least floor mean − 2 · floor sd
  (:func:`in_floor`; undecided, ``None``, with fewer than 2 pairs, i.e. fewer than 3 references). The pairs
  share models, so the sd is a spread, not an independent-sample error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from unlearnrec.data.interactions import Interactions, as_pairs
from unlearnrec.evaluation.forgetting import (
    final_embeddings,
    item_ranks,
    percentile_of_rank,
    rank_stats,
    scores_of_pairs,
    summarize_scores,
)
from unlearnrec.graph import Graph

__all__ = [
    "aggregate_reports",
    "anchored_report",
    "floor_band",
    "in_floor",
    "noise_floor",
    "pairwise_floor",
    "softmax_js",
    "spread",
    "topk_jaccard",
]


# ------------------------------------------------------------------------------ helpers
def _served(model, graph: Graph | None) -> tuple[torch.Tensor, torch.Tensor, sp.csr_matrix | None]:
    """Final embeddings of ``model`` on ``graph`` and the items it masks (``graph``'s edges, or none)."""
    u, i = final_embeddings(model, graph)
    mask = graph.user_items() if graph is not None else None
    return u, i, mask


def _check_pair(a, b) -> None:
    (ua, ia), (ub, ib) = a[:2], b[:2]
    if ua.shape[0] != ub.shape[0] or ia.shape[0] != ib.shape[0]:
        raise ValueError(
            f"the models cover different sizes: {ua.shape[0]} x {ia.shape[0]} vs {ub.shape[0]} x {ib.shape[0]}"
        )


def _users(users, n_users: int) -> np.ndarray:
    u = np.unique(np.asarray(users, dtype=np.int64).reshape(-1))
    if len(u) and (u[0] < 0 or u[-1] >= n_users):
        raise ValueError("users contains indices outside 0..n_users-1")
    return u


def _mask_entries(scores: torch.Tensor, mask: sp.csr_matrix | None, bu: np.ndarray) -> torch.Tensor:
    """``scores`` (rows: users ``bu``) with the entries ``mask`` holds for those users set to ``−inf``."""
    if mask is None:
        return scores
    block = mask[bu]
    rows = np.repeat(np.arange(len(bu), dtype=np.int64), np.diff(block.indptr))
    if not len(rows):
        return scores
    dev = scores.device
    idx = (torch.from_numpy(rows).to(dev), torch.from_numpy(block.indices.astype(np.int64)).to(dev))
    return scores.index_put(idx, torch.tensor(-math.inf, dtype=scores.dtype, device=dev))


def _masked_block(
    user_emb: torch.Tensor, item_emb: torch.Tensor, mask: sp.csr_matrix | None, bu: np.ndarray
) -> torch.Tensor:
    """``(B, n_items)`` float64 scores of users ``bu`` (float64 embeddings) with masked items set to ``−inf``."""
    scores = user_emb[torch.from_numpy(bu).to(user_emb.device)] @ item_emb.t()
    return _mask_entries(scores, mask, bu)


def _jaccard_rows(sa: torch.Tensor, sb: torch.Tensor, k: int) -> torch.Tensor:
    k = min(int(k), sa.shape[1])
    va, ia = torch.topk(sa, k, dim=1)
    vb, ib = torch.topk(sb, k, dim=1)
    oka, okb = torch.isfinite(va), torch.isfinite(vb)
    same = (ia[:, :, None] == ib[:, None, :]) & oka[:, :, None] & okb[:, None, :]
    inter = same.sum((1, 2)).double()
    union = oka.sum(1).double() + okb.sum(1).double() - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def _js_rows(sa: torch.Tensor, sb: torch.Tensor, temperature: float) -> torch.Tensor:
    lp = torch.log_softmax(sa / temperature, dim=1)
    lq = torch.log_softmax(sb / temperature, dim=1)
    lm = torch.logaddexp(lp, lq) - math.log(2.0)  # log of the mixture, -inf only where p = q = 0
    zero = torch.zeros((), dtype=sa.dtype, device=sa.device)
    kl_p = torch.where(torch.isfinite(lp), lp.exp() * (lp - lm), zero).sum(1)
    kl_q = torch.where(torch.isfinite(lq), lq.exp() * (lq - lm), zero).sum(1)
    js = (0.5 * (kl_p + kl_q)).clamp(min=0.0)
    ok = torch.isfinite(sa).any(1) & torch.isfinite(sb).any(1)
    return torch.where(ok, js, torch.full_like(js, math.nan))


@torch.no_grad()
def _compare_lists(
    a, b, users: np.ndarray, k: int | None, temperature: float | None, batch_size: int,
    also_without: sp.csr_matrix | None = None,
):
    """Per-user Jaccard@k and JS over ``users`` in one pass of user batches (either may be skipped).

    ``also_without``: pairs to mask in both lists for a second Jaccard on the same score blocks (the
    retained-items Jaccard), returned third (``None`` when not asked).
    """
    (ua, ia, ma), (ub, ib, mb) = a, b
    ua, ia, ub, ib = ua.double(), ia.double(), ub.double(), ib.double()  # scores in float64 throughout
    jac = np.zeros(len(users), np.float64)
    js = np.zeros(len(users), np.float64)
    kept = np.zeros(len(users), np.float64) if also_without is not None else None
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if kept is not None and k is None:
        raise ValueError("also_without needs k")
    for lo in range(0, len(users), batch_size):
        bu = users[lo : lo + batch_size]
        sa = _masked_block(ua, ia, ma, bu)
        sb = _masked_block(ub, ib, mb, bu).to(sa.device)
        if k is not None:
            jac[lo : lo + len(bu)] = _jaccard_rows(sa, sb, k).cpu().numpy()
        if temperature is not None:
            js[lo : lo + len(bu)] = _js_rows(sa, sb, float(temperature)).cpu().numpy()
        if kept is not None:
            sa, sb = _mask_entries(sa, also_without, bu), _mask_entries(sb, also_without, bu)
            kept[lo : lo + len(bu)] = _jaccard_rows(sa, sb, k).cpu().numpy()
    return jac, js, kept


# ------------------------------------------------------------------------ public measures
def topk_jaccard(
    model_a, graph_a: Graph | None, model_b, graph_b: Graph | None, users, k: int = 20, batch_size: int = 256
) -> np.ndarray:
    """Per-user Jaccard overlap of the two models' top-``k`` lists (aligned with ``np.unique(users)``).

    Each model is a Recommender served on its graph, or a ``(user_emb, item_emb)`` pair; each masks its own
    graph's edges (``graph=None``: no mask). See the module docstring for the conventions.
    """
    a, b = _served(model_a, graph_a), _served(model_b, graph_b)
    _check_pair(a, b)
    jac, _, _ = _compare_lists(a, b, _users(users, a[0].shape[0]), k, None, batch_size)
    return jac


def softmax_js(
    model_a,
    graph_a: Graph | None,
    model_b,
    graph_b: Graph | None,
    users,
    temperature: float = 1.0,
    batch_size: int = 256,
) -> np.ndarray:
    """Per-user Jensen–Shannon divergence (nats) between the models' softmax distributions over candidates.

    ``p_u = softmax(ŷ(u, ·) / temperature)`` over the items not masked by the model's own graph; aligned with
    ``np.unique(users)``; ``nan`` for a user with no candidate under either model.
    """
    a, b = _served(model_a, graph_a), _served(model_b, graph_b)
    _check_pair(a, b)
    _, js, _ = _compare_lists(a, b, _users(users, a[0].shape[0]), None, temperature, batch_size)
    return js


def _nanmean(x: np.ndarray) -> float:
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def anchored_report(
    unlearned,
    unlearned_graph: Graph | None,
    reference,
    reference_graph: Graph | None,
    request,
    data: Interactions | None = None,
    k: int = 20,
    users=None,
    *,
    temperature: float = 1.0,
    batch_size: int = 256,
    per_user: bool = False,
    per_edge: bool = False,
) -> dict[str, Any]:
    """Retrain-anchored measures of one request (definitions in the module docstring).

    Args:
        unlearned: the unlearned model (anything with ``embeddings(graph)``, e.g. ``Outcome.model``) or a
            ``(user_emb, item_emb)`` pair.
        unlearned_graph: the graph it serves on (``Outcome.graph``); its edges are masked in its rankings.
        reference: the retrained reference (same kinds).
        reference_graph: the graph the reference serves on (normally the same residual graph).
        request: the request edges ``E_Δ`` (``(n, 2)`` pairs or a ``DeletionRequest``).
        data: the dataset, only to check the models' sizes against; optional.
        k: list length of the Jaccard overlap.
        users: the users whose lists are compared (default: the request's users).
        temperature: softmax temperature ``T`` of the JS divergence.
        batch_size: users per dense score block.
        per_user: also return the per-user arrays under ``"per_user"``.
        per_edge: also return the per-request-edge ranks/percentiles/scores under ``"per_edge"``.

    Returns:
        ``n_users``, ``n_request``, ``k``, ``temperature``, ``jaccard`` (mean over users), ``jaccard_retained``
        (the same with the request pairs masked in both lists; module docstring), ``js`` (mean, nats),
        ``n_js_nan``, ``rank`` (``unlearned``/``reference``: mean, median, mean_percentile, median_percentile;
        ``percentile_diff`` = mean percentile unlearned − reference, ``abs_percentile_diff`` = mean over edges
        of ``|p_unlearned − p_reference|``), ``score`` (``unlearned``/``reference`` score statistics of the
        request edges), and ``per_user`` / ``per_edge`` when asked.
    """
    req = as_pairs(getattr(request, "edges", request))
    if not len(req):
        raise ValueError("empty request: nothing to measure")
    req = np.unique(req, axis=0)
    a, b = _served(unlearned, unlearned_graph), _served(reference, reference_graph)
    _check_pair(a, b)
    n_users, n_items = a[0].shape[0], a[1].shape[0]
    if data is not None and (data.n_users, data.n_items) != (n_users, n_items):
        raise ValueError(f"models cover {n_users} x {n_items}, data {data.n_users} x {data.n_items}")
    if req[:, 0].max() >= n_users or req[:, 1].max() >= n_items or req.min() < 0:
        raise ValueError("request edges outside the models' users/items")
    us = _users(req[:, 0] if users is None else users, n_users)
    req_mask = sp.csr_matrix((np.ones(len(req)), (req[:, 0], req[:, 1])), shape=(n_users, n_items))
    jac, js, jac_kept = _compare_lists(a, b, us, k, temperature, batch_size, also_without=req_mask)

    ra, ca = item_ranks(a[0], a[1], req, a[2], batch_size)
    rb, cb = item_ranks(b[0], b[1], req, b[2], batch_size)
    pa, pb = percentile_of_rank(ra, ca), percentile_of_rank(rb, cb)
    sa, sb = scores_of_pairs(a[0], a[1], req), scores_of_pairs(b[0], b[1], req)
    report: dict[str, Any] = {
        "n_users": int(len(us)),
        "n_request": int(len(req)),
        "k": int(k),
        "temperature": float(temperature),
        "jaccard": float(jac.mean()) if len(us) else float("nan"),
        "jaccard_retained": float(jac_kept.mean()) if len(us) else float("nan"),
        "js": _nanmean(js),
        "n_js_nan": int((~np.isfinite(js)).sum()),
        "rank": {
            "unlearned": rank_stats(ra, pa),
            "reference": rank_stats(rb, pb),
            "percentile_diff": float(pa.mean() - pb.mean()),
            "abs_percentile_diff": float(np.abs(pa - pb).mean()),
        },
        "score": {"unlearned": summarize_scores(sa), "reference": summarize_scores(sb)},
    }
    if per_user:
        report["per_user"] = {"users": us, "jaccard": jac, "jaccard_retained": jac_kept, "js": js}
    if per_edge:
        report["per_edge"] = {
            "edges": req, "rank_unlearned": ra, "rank_reference": rb, "n_candidates_unlearned": ca,
            "n_candidates_reference": cb, "percentile_unlearned": pa, "percentile_reference": pb,
            "score_unlearned": sa, "score_reference": sb,
        }
    return report


def noise_floor(
    retrained_a,
    graph_a: Graph | None,
    retrained_b,
    graph_b: Graph | None,
    request,
    data: Interactions | None = None,
    k: int = 20,
    users=None,
    **kwargs,
) -> dict[str, Any]:
    """The anchored measures between two retrainings on the residual graph with different seeds.

    This is what a *perfect* (exact) unlearner shows against the reference: retraining itself varies with
    the seed, so the floor has Jaccard < 1, JS > 0 and a non-zero percentile difference. Compare
    :func:`anchored_report` of an unlearned model with it (same ``request``, ``k``, ``users`` and keyword
    arguments). The caller trains the two models (e.g. ``train_on(ctx, residual, seed=s)`` for two seeds);
    ``retrained_a`` takes the place of the unlearned model in the report.
    """
    rep = anchored_report(retrained_a, graph_a, retrained_b, graph_b, request, data, k, users, **kwargs)
    rep["noise_floor"] = True
    return rep


# ------------------------------------------------------------------------ several references
#: The scalar measures of a report that :func:`aggregate_reports` summarises, as ``(name, path in the report)``.
_AGGREGATED = (("jaccard", ("jaccard",)), ("jaccard_retained", ("jaccard_retained",)), ("js", ("js",)),
               ("percentile_diff", ("rank", "percentile_diff")),
               ("abs_percentile_diff", ("rank", "abs_percentile_diff")))


def spread(values) -> dict[str, Any]:
    """``n``, ``mean``, sample ``sd`` (``ddof = 1``; ``None`` below 2 values), ``min`` and ``max`` of the finite
    ``values`` (all ``None`` when there is none)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": int(len(v)), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
            "min": float(v.min()), "max": float(v.max())}


def aggregate_reports(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`spread` over ``reports`` (e.g. one model against each reference) of ``jaccard``,
    ``jaccard_retained``, ``js``, ``percentile_diff`` and ``abs_percentile_diff``."""
    out = {}
    for name, path in _AGGREGATED:
        vals = []
        for r in reports:
            x: Any = r
            for key in path:
                x = x.get(key) if isinstance(x, dict) else None
            vals.append(x)
        out[name] = spread(vals)
    return out


def pairwise_floor(
    retrained: list[tuple[Any, Graph | None]], request, data: Interactions | None = None, k: int = 20, users=None,
    *, z: float = 2.0, **kwargs,
) -> dict[str, Any]:
    """The noise floor of several retrainings: :func:`anchored_report` of every pair ``i < j``.

    Args:
        retrained: ``(model, graph)`` of each retrain on the residual graph (different seeds, none of them the
            original's); a model may be a ``(user_emb, item_emb)`` pair.
        request, data, k, users, kwargs: as in :func:`anchored_report`.
        z: width of the band in floor sds (:func:`in_floor`).

    Returns:
        ``pairs`` (index pairs), ``reports`` (one per pair), ``n_pairs``, the :func:`aggregate_reports`
        spreads (``jaccard``, ``js``, ``percentile_diff``, ``abs_percentile_diff``) and ``band``
        (:func:`floor_band`).
    """
    if len(retrained) < 2:
        raise ValueError(f"a noise floor needs at least 2 retrainings, got {len(retrained)}")
    served = [(tuple(t.detach() for t in final_embeddings(m, g)), g) for m, g in retrained]
    pairs, reports = [], []
    for i in range(len(served)):
        for j in range(i + 1, len(served)):
            (a, ga), (b, gb) = served[i], served[j]
            reports.append(anchored_report(a, ga, b, gb, request, data, k, users, **kwargs))
            pairs.append((i, j))
    agg = aggregate_reports(reports)
    return {"pairs": pairs, "reports": reports, "n_pairs": len(pairs), **agg, "band": floor_band(agg, z)}


def floor_band(floor: dict[str, Any], z: float = 2.0) -> dict[str, Any]:
    """``jaccard_low`` = floor mean − z · sd of the Jaccard (the in-floor threshold) and ``js_high`` = mean + z · sd
    of the JS divergence, from :func:`aggregate_reports` spreads; ``None`` with fewer than 2 pairs."""
    jac, js = floor.get("jaccard") or {}, floor.get("js") or {}
    ok = (jac.get("n") or 0) >= 2 and jac.get("sd") is not None
    return {"z": float(z), "n_pairs": int(jac.get("n") or 0),
            "jaccard_low": jac["mean"] - z * jac["sd"] if ok else None,
            "js_high": js["mean"] + z * js["sd"] if (js.get("n") or 0) >= 2 and js.get("sd") is not None else None}


def in_floor(jaccard: float | None, floor: dict[str, Any] | None, z: float = 2.0) -> bool | None:
    """Whether a mean Jaccard@k over the references lies within the noise floor: ``jaccard >= mean − z · sd`` of
    the floor's pairwise Jaccards (a :func:`pairwise_floor` / :func:`aggregate_reports` result or its
    ``band``). ``None`` when undecidable (no Jaccard, or fewer than 2 floor pairs)."""
    if jaccard is None or floor is None or not math.isfinite(float(jaccard)):
        return None
    band = floor if "jaccard_low" in floor and "jaccard" not in floor else floor_band(floor, z)
    low = band.get("jaccard_low")
    return None if low is None else bool(float(jaccard) >= low)
