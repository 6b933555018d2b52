"""Is the forgetting robust? Relearning and quantization stress tests of an unlearned model.

**Relearning** (:func:`relearning_curve`). Approximate unlearning can hide information rather than remove it:
a few gradient steps on *related, retained* data may bring the forgotten interactions back (the "relearning
attack" of the LLM-unlearning literature, e.g. Hu et al., ICLR 2025, and the relearn-time measure of
Golatkar et al., CVPR 2020). Here a copy of the model is fine-tuned for ``steps`` Adam steps with BPR on the
*remaining training edges of the users the request touches* (the serving graph's edges of those users, the
request edges excluded); negatives are drawn uniformly from the items that are neither retained nor forgotten
for the user, so the forgotten items are never pushed down as negatives. After every ``eval_every`` steps
(and at step 0, before any update) the curve records, for the request edges: the mean raw score, the mean
``σ(ŷ)``, and the mean rank percentile (0 = top) with the definition of
:func:`~unlearnrec.evaluation.forgetting.item_ranks` (candidates: every item not in the user's serving-graph
edges, plus the forgotten item). Run it on the unlearned model and on the retrained reference with the same
settings: a robust unlearner's curve follows the reference's; one whose forgotten items climb back much faster
only masked them.

A backbone (anything with ``loss(batch, graph)`` and parameters, e.g. a
:class:`~unlearnrec.models.Recommender`) is fine-tuned through its own training loss on its serving graph
(``mode="model"``). Anything else (an ensemble, a ``(user_emb, item_emb)`` pair) is fine-tuned on its
*served* embeddings taken as free tables, with plain BPR plus an optional L2 term (``mode="embeddings"``);
force that mode for both models when comparing a backbone with an ensemble.

**Quantization** (:func:`quantization_report`). Served embeddings are often stored in low precision. Each
model's served user and item embeddings are quantized and dequantized, then the forgetting measures of
:func:`~unlearnrec.evaluation.forgetting.forgetting_report` are recomputed (same non-edge sample for every mode):

* ``fp16``: a round trip through IEEE half precision (relative error about ``2^-11`` per entry);
* ``bf16``: the same through bfloat16 (``2^-8``);
* ``int8``: symmetric linear int8, ``q = clamp(round(x / s), −127, 127)``, ``x̂ = s·q`` with ``s = max|x| / 127``
  taken **per row** (one scale per user / item embedding; the default) or **per tensor**
  (``granularity="tensor"``); the error of each entry is at most ``s / 2``. A zero row keeps ``x̂ = 0``.

If the forgetting is real, MI-NG, the request's mean score and its rank percentile barely move; if it relied on
tiny score margins, quantization undoes it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions, as_pairs, pair_keys
from unlearnrec.evaluation.forgetting import (
    final_embeddings,
    forgetting_report,
    item_ranks,
    percentile_of_rank,
    scores_of_pairs,
)
from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch, bpr_loss
from unlearnrec.sampling import BPRSampler

__all__ = ["QUANT_MODES", "quantization_report", "quantize_dequantize", "relearning_curve"]

QUANT_MODES: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")


# ---------------------------------------------------------------------------- quantization
def quantize_dequantize(x, mode: str = "int8", granularity: str = "row") -> torch.Tensor:
    """Quantize ``x`` (a 2-D embedding table) to ``mode`` and back; same dtype and shape as ``x``.

    ``mode``: ``"fp32"`` (unchanged copy), ``"fp16"``, ``"bf16"`` or ``"int8"`` (symmetric, scale
    ``max|x| / 127`` per row with ``granularity="row"``, over the whole table with ``"tensor"``).
    """
    x = torch.as_tensor(x).detach()
    if not x.is_floating_point():
        x = x.float()
    if mode == "fp32":
        return x.clone()
    if mode == "fp16":
        return x.to(torch.float16).to(x.dtype)
    if mode == "bf16":
        return x.to(torch.bfloat16).to(x.dtype)
    if mode != "int8":
        raise ValueError(f"unknown quantization mode {mode!r}; known: {', '.join(QUANT_MODES)}")
    if granularity == "row":
        if x.dim() != 2:
            raise ValueError("per-row int8 quantization needs a 2-D table")
        amax = x.abs().amax(dim=1, keepdim=True)
    elif granularity == "tensor":
        amax = x.abs().max()
    else:
        raise ValueError(f"granularity must be 'row' or 'tensor', got {granularity!r}")
    scale = amax / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / scale).clamp_(-127, 127)
    return (q * scale).to(x.dtype)


def _summary(rep: dict[str, Any], with_before: bool) -> dict[str, float]:
    sc = rep["score"]
    out = {
        "mi_ng": rep["mi_ng"],
        "request_score_mean": sc["request"]["after"]["mean"],
        "request_sigmoid_mean": sc["request"]["after"]["sigmoid_mean"],
        "non_edge_sigmoid_mean": sc["non_edges"]["after"]["sigmoid_mean"],
        "gap": rep["gap_after"],
        "rank_mean_percentile": rep["rank"]["after"]["mean_percentile"],
    }
    if with_before:
        out["mi_bf"] = rep["mi_bf"]
    return out


def quantization_report(
    model,
    graph: Graph,
    request,
    data: Interactions | None = None,
    *,
    model_before=None,
    graph_before: Graph | None = None,
    modes=("fp32", "fp16", "int8"),
    granularity: str = "row",
    n_samples: int = 10_000,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """The forgetting measures of ``model`` (served on ``graph``) after each quantization round trip.

    Args:
        model: the unlearned model (anything with ``embeddings(graph)``) or a ``(user_emb, item_emb)`` pair.
        graph: the graph it serves on (the residual graph; the request edges are not in it).
        request: the request edges.
        data: the dataset (its valid/test pairs stay out of the non-edge sample); optional.
        model_before: the model before unlearning, to report MI-BF as well (quantized the same way).
        graph_before: the graph ``model_before`` serves on (default: ``graph`` plus the request edges).
        modes: quantization modes (see :func:`quantize_dequantize`); ``fp32`` is the unquantized baseline.
        granularity: int8 scale granularity, ``"row"`` or ``"tensor"``.
        n_samples, seed, batch_size: as in :func:`~unlearnrec.evaluation.forgetting.forgetting_report`
            (the same non-edge sample is used for every mode).

    Returns:
        ``granularity``, ``modes`` (per mode: ``mi_ng``, ``request_score_mean``, ``request_sigmoid_mean``,
        ``non_edge_sigmoid_mean``, ``gap``, ``rank_mean_percentile``, ``mi_bf`` when ``model_before`` is given,
        and ``max_abs_score_error`` / ``max_rel_score_error``: the largest change of a request edge's score
        from full precision, absolute and relative to the largest full-precision |score| of the request)
        and ``delta`` (per non-fp32 mode, each measure minus its fp32 value).
    """
    req = np.unique(as_pairs(getattr(request, "edges", request)), axis=0)
    if not len(req):
        raise ValueError("empty request: nothing to measure")
    if graph_before is None:
        graph_before = graph.with_edges(req)
    ua, ia = final_embeddings(model, graph)
    ub, ib = final_embeddings(model_before, graph_before) if model_before is not None else (ua, ia)
    exact = scores_of_pairs(ua, ia, req)
    scale = max(float(np.abs(exact).max()), 1e-12)
    per_mode: dict[str, dict[str, float]] = {}
    for mode in modes:
        qa = (quantize_dequantize(ua, mode, granularity), quantize_dequantize(ia, mode, granularity))
        qb = (quantize_dequantize(ub, mode, granularity), quantize_dequantize(ib, mode, granularity))
        rep = forgetting_report(qb, graph_before, qa, graph, req, data, n_samples, seed, batch_size=batch_size)
        summ = _summary(rep, model_before is not None)
        err = float(np.abs(scores_of_pairs(qa[0], qa[1], req) - exact).max())
        summ["max_abs_score_error"] = err
        summ["max_rel_score_error"] = err / scale
        per_mode[mode] = summ
    delta = {}
    if "fp32" in per_mode:
        base = per_mode["fp32"]
        delta = {m: {k: v - base[k] for k, v in s.items() if not k.startswith("max_")}
                 for m, s in per_mode.items() if m != "fp32"}
    return {"granularity": granularity, "n_request": int(len(req)), "modes": per_mode, "delta": delta}


# ------------------------------------------------------------------------------ relearning
def _trainable(model) -> bool:
    return (
        not isinstance(model, (tuple, list))
        and callable(getattr(model, "loss", None))
        and callable(getattr(model, "parameters", None))
        and any(True for _ in model.parameters())
    )


@torch.no_grad()
def _measures(u_emb: torch.Tensor, i_emb: torch.Tensor, req: np.ndarray, retained: np.ndarray, mask, bs: int):
    s = scores_of_pairs(u_emb, i_emb, req)
    r, c = item_ranks(u_emb, i_emb, req, mask, bs)
    return {
        "score_mean": float(s.mean()),
        "sigmoid_mean": float((1.0 / (1.0 + np.exp(-s))).mean()),
        "rank_mean_percentile": float(percentile_of_rank(r, c).mean()),
        "retained_score_mean": float(scores_of_pairs(u_emb, i_emb, retained).mean()),
    }


def relearning_curve(
    model,
    graph: Graph,
    request,
    *,
    steps: int = 10,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    mode: str = "auto",
    reg: float = 0.0,
    eval_every: int = 1,
    rank_batch_size: int = 256,
) -> dict[str, Any]:
    """Fine-tune a copy of ``model`` on the request users' retained edges and trace the request's measures.

    Args:
        model: the model to stress (unlearned or retrained); never modified.
        graph: the graph it serves on; its edges of the request's users (minus the request) are the
            fine-tuning positives.
        request: the forgotten edges.
        steps: Adam steps.
        lr: Adam learning rate.
        batch_size: positives per step (drawn without replacement within a step).
        seed: seed of the batches and negatives.
        mode: ``"model"`` (the backbone's own loss on ``graph``), ``"embeddings"`` (BPR on the served
            embeddings as free tables) or ``"auto"`` (``model`` when the model has a ``loss`` and parameters).
        reg: L2 weight on the batch's embeddings in ``"embeddings"`` mode (the backbone's own ``reg`` applies in
            ``"model"`` mode).
        eval_every: record the measures every this many steps (step 0 and the last step always).
        rank_batch_size: users per dense score block of the rank computation.

    Returns:
        ``mode``, ``n_request``, ``n_retained``, ``n_users``, ``config``, and the curve: ``step`` (recorded
        steps), ``score_mean``, ``sigmoid_mean``, ``rank_mean_percentile`` (request edges),
        ``retained_score_mean`` (the fine-tuning positives), ``loss`` (mean loss of the steps since the previous
        record; ``nan`` at step 0), and ``delta`` (last minus step 0 of each request measure).
    """
    if steps < 0 or eval_every < 1 or batch_size < 1 or not lr > 0:
        raise ValueError("need steps >= 0, eval_every >= 1, batch_size >= 1 and lr > 0")
    req = np.unique(as_pairs(getattr(request, "edges", request)), axis=0)
    if not len(req):
        raise ValueError("empty request: nothing to measure")
    n_items = graph.n_items
    edges = graph.edges
    touched = np.isin(edges[:, 0], np.unique(req[:, 0]))
    retained = edges[touched & ~np.isin(graph.keys, pair_keys(req, n_items))]
    if not len(retained):
        raise ValueError("the request's users have no retained edge in the serving graph to relearn from")
    if mode == "auto":
        mode = "model" if _trainable(model) else "embeddings"
    if mode not in ("model", "embeddings"):
        raise ValueError(f"mode must be 'auto', 'model' or 'embeddings', got {mode!r}")

    rng = np.random.default_rng(seed)
    negs = BPRSampler(np.concatenate([retained, req]), n_items)  # negatives avoid retained and forgotten items
    mask = graph.user_items()
    if mode == "model":
        if not _trainable(model):
            raise TypeError("mode='model' needs a model with loss(batch, graph) and parameters")
        net = copy.deepcopy(model)
        dev = next(net.parameters()).device
        g = graph.to(dev)
        params = [p for p in net.parameters() if p.requires_grad]
        net.train()
        if hasattr(net, "start_epoch"):
            net.start_epoch(g, np.random.default_rng([seed, 1]))

        def served():
            return final_embeddings(net, g)

        def loss_of(batch: Batch) -> torch.Tensor:
            return net.loss(batch, g)[0]

    else:
        u0, i0 = final_embeddings(model, graph)
        users_t = u0.detach().clone().float().requires_grad_(True)
        items_t = i0.detach().clone().float().requires_grad_(True)
        dev = users_t.device
        params = [users_t, items_t]

        def served():
            return users_t.detach(), items_t.detach()

        def loss_of(batch: Batch) -> torch.Tensor:
            u, p, n = users_t[batch.users], items_t[batch.pos], items_t[batch.neg]
            loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
            if reg:
                loss = loss + reg * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(batch)
            return loss

    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    curve: dict[str, list[float]] = {k: [] for k in
                                     ("step", "score_mean", "sigmoid_mean", "rank_mean_percentile",
                                      "retained_score_mean", "loss")}

    def record(step: int, loss: float) -> None:
        m = _measures(*served(), req, retained, mask, rank_batch_size)
        curve["step"].append(step)
        for k, v in m.items():
            curve[k].append(v)
        curve["loss"].append(loss)

    record(0, math.nan)
    losses: list[float] = []
    b = min(batch_size, len(retained))
    with torch.random.fork_rng(devices=[]):  # dropout/noise of the backbone loss, without touching the caller's RNG
        torch.manual_seed(int(rng.integers(2**62)))
        for step in range(1, steps + 1):
            pick = torch.randperm(len(retained), generator=gen)[:b].numpy()
            pos = retained[pick]
            neg = negs.negatives(pos[:, 0], rng)
            batch = Batch(*(torch.from_numpy(a).to(dev) for a in (pos[:, 0], pos[:, 1], neg)))
            loss = loss_of(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if step % eval_every == 0 or step == steps:
                record(step, float(np.mean(losses)))
                losses = []
    out: dict[str, Any] = {
        "mode": mode,
        "n_request": int(len(req)),
        "n_retained": int(len(retained)),
        "n_users": int(len(np.unique(req[:, 0]))),
        "config": {"steps": int(steps), "lr": float(lr), "batch_size": int(batch_size), "seed": int(seed),
                   "reg": float(reg), "eval_every": int(eval_every)},
        **curve,
    }
    out["delta"] = {k: curve[k][-1] - curve[k][0] for k in ("score_mean", "sigmoid_mean", "rank_mean_percentile")}
    return out
