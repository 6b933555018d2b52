"""Pre-training the Influence Encoder on simulated deletion requests (UnlearnRec spec §4).

The backbone is trained and frozen. Every ``redraw_every`` epochs a simulated request is drawn — a uniform
random fraction ``ρ ~ U[request_ratio_min, request_ratio_max]`` of the training edges — with its ``Â_Δ`` and
residual graph ``Â_r``; BPR triples come from the residual edges only. Per batch, with ``ê`` the unlearned
model's final embeddings (``Ẽ0`` propagated over ``Â_r``):

``L = L_M + λ_u L_U + λ_p L_P + λ_c L_C`` (the backbone's own loss on ``Â_r``; the unlearning term; in-batch
log-softmax preservation against the original ``Ē``; InfoNCE between ``H^l`` and its edge-dropped
counterpart). The unlearning term is the paper's ``−log σ(−ŷ)`` over every request edge
(``pretrain_loss="spec"``) or the retrain proxy (``"proxy"``, :func:`~.encoder.proxy_unlearning_loss`: the
request edges, relative to their users' remaining positives, pulled down to where the same users'
validation edges sit). Adam trains ``H0`` and ``W_η`` (and the MLP only if ``freeze_mlp`` is off), at
``learning_rate`` times the backbone's ``learning_rate_scale`` (1 unless the config lists it).

Epoch selection uses *held-out* simulated requests (``holdout_ratios``: random requests of real sizes, drawn
once with ``holdout_seed``; never the request that will be evaluated). Every ``select_every`` epochs the
encoder unlearns each of them zero-shot and the unlearned model, serving on that request's residual graph, is
measured (:class:`~unlearnrec.unlearning.unlearnrec.unlearn.RequestProbe`). An epoch is eligible when its
validation recall@20 is at least ``select_min_recall_ratio`` × that of the original served on the held-out
residual graph (the utility before unlearning) on every held-out request;
among the eligible, ``select_rule="gap"`` keeps the largest mean ``gap`` (non-edge minus request-edge mean
score, the paper's criterion) and ``"proxy"`` the smallest mean ``|auc_excess / auc_excess(original)|``
(scale-free: shrinking every score cannot fake it). Both reward forgetting, so an encoder that learned
something beats the untrained one (epoch 0, always a candidate) unless it costs utility; when epoch 0 is
kept all the same, the report says so under ``warning`` and a warning is printed.

Measured (ML-1M LightGCN, ``shared/docs/unlearnrec-method.md`` §9): with 2 simulated requests (10 epochs,
a new one every 5) and selection on the validation level of one 2 % request, the untrained encoder was kept
and "UnlearnRec zero-shot" was EdgeDrop; a new request every epoch for 40 epochs made the encoder push the
adversarial edges below random non-edges at 99 % of the original's recall.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unlearnrec.data.interactions import Interactions
from unlearnrec.graph import Graph
from unlearnrec.models.base import Recommender
from unlearnrec.sampling import BPRSampler
from unlearnrec.training import epoch_rng, resolve_device
from unlearnrec.unlearning.unlearnrec.config import UnlearnRecConfig
from unlearnrec.unlearning.unlearnrec.encoder import (
    InfluenceEncoder,
    backbone_loss,
    contrastive_loss,
    preservation_loss,
    proxy_unlearning_loss,
    unlearning_loss,
)
from unlearnrec.unlearning.unlearnrec.idm import dropped_idm, influence_dependency_matrix
from unlearnrec.unlearning.unlearnrec.unlearn import ProxyPairs, _head, build_probe, final_embeddings


def simulate_request(graph: Graph, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """A uniform random ``ratio`` of ``graph``'s edges (at least one), sorted."""
    n = graph.n_edges
    k = int(min(n, max(1, round(ratio * n))))
    idx = np.sort(rng.choice(n, size=k, replace=False))
    return graph.edges[idx]


def selection_score(measures: list[dict[str, float]], refs: list[dict[str, float]], befores: list[dict[str, float]],
                    rule: str, min_recall_ratio: float) -> tuple[float, bool]:
    """``(score, eligible)`` of one epoch from its held-out measurements (module docstring); higher is better.

    ``refs``: the original on the full graph (nothing forgotten); ``befores``: the original served on each
    held-out residual graph (the utility before unlearning, which the recall floor is relative to)."""
    eligible = all(m["recall@20"] >= min_recall_ratio * b["recall@20"] for m, b in zip(measures, befores, strict=True))
    if rule == "gap":
        score = float(np.mean([m["gap"] for m in measures]))
    else:
        ratios = [abs(m["auc_excess"] / (r["auc_excess"] if abs(r["auc_excess"]) > 1e-4 else 1.0))
                  for m, r in zip(measures, refs, strict=True)]
        score = -float(np.mean(ratios))
    return score, eligible


UNTRAINED_WARNING = (
    "pre-training kept the UNTRAINED encoder (epoch 0): no trained epoch forgot more on the held-out requests "
    "within the utility floor, so the zero-shot encoder adds almost nothing to EdgeDrop. Train longer, redraw "
    "requests more often or lower select_min_recall_ratio."
)


def pretrain_encoder(
    model: Recommender,
    graph: Graph,
    data: Interactions,
    config: UnlearnRecConfig | None = None,
    progress: bool | None = None,
    encoder: InfluenceEncoder | None = None,
    callbacks: list[Callable[[dict], Any]] | None = None,
    retrain: Callable[[Graph, int], Recommender] | None = None,
) -> tuple[InfluenceEncoder, dict[str, Any]]:
    """Pre-train an Influence Encoder for ``model`` (frozen) trained on ``graph``.

    Args:
        model: the trained backbone (MF, LightGCN, SGL or SimGCL); its parameters are not changed.
        graph: the graph the backbone was trained on and serves on.
        data: the dataset (validation split for checkpoint selection; sizes).
        config: hyper-parameters (default :class:`UnlearnRecConfig`).
        progress: progress bar (default: only when stderr is a terminal).
        encoder: continue from this encoder instead of a fresh one.
        callbacks: called with each epoch's log record (epoch 0 = the untrained encoder) as it is written.
        retrain: ``retrain(residual_graph, k)`` trains the backbone's recipe from scratch on a residual graph
            (``k``: which calibration retrain, for its seed); needed when ``config.calibration_retrains > 0``.

    Returns:
        ``(encoder, report)``: the encoder with the selected epoch's tables (``encoder.config`` = ``config``),
        and a JSON-safe report (per-epoch log, selection, held-out request, timings).
    """
    config = config or UnlearnRecConfig()
    device = resolve_device(config.device)
    t_start = time.perf_counter()
    model.to(device)
    graph = graph.to(device)
    if encoder is None:
        encoder = InfluenceEncoder.for_model(model, config)
    encoder.config = config
    encoder.to(device)
    encoder.set_mlp_trainable(not config.freeze_mlp)
    params = [encoder.h0, encoder.w_eta] + ([] if config.freeze_mlp else list(encoder.mlp.parameters()))
    encoder.log_gain.requires_grad_(False)
    learning_rate = config.pretrain_learning_rate(model.name)  # per-backbone scale (config.learning_rate_scale)
    opt = torch.optim.Adam(params, lr=learning_rate, weight_decay=config.weight_decay)
    frozen = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(False)

    with torch.no_grad():
        e0 = model.embedding.detach().clone()
        e_bar = final_embeddings(model, graph)

    # Held-out simulated requests (selection only), drawn once with their own seed.
    hold_rng = np.random.default_rng([config.holdout_seed, 1])
    holdouts = []
    for ratio in config.holdout_ratios:
        edges = simulate_request(graph, ratio, hold_rng)
        residual_h = graph.without(edges)
        idm_h = influence_dependency_matrix(edges, model.n_users, model.n_items, device)
        probe = build_probe(data, graph, residual_h, edges, config.n_probe, hold_rng, config.ks)
        holdouts.append({
            "ratio": float(ratio), "edges": edges, "probe": probe,
            "idm": idm_h,
            "context": encoder.context(idm_h, residual_h, e_bar),
            # the original model on the full graph: nothing forgotten (the auc_excess reference) ...
            "reference": probe.with_graph(graph).measure(model, e0),
            # ... and served on the residual graph (EdgeDrop): the utility before unlearning (the recall floor)
            "before": probe.measure(model, e0),
        })
    refs = [h["reference"] for h in holdouts]
    befores = [h["before"] for h in holdouts]

    def select(epoch: int) -> dict[str, Any]:
        encoder.eval()
        ms = []
        with torch.no_grad():
            for h in holdouts:
                out = encoder(h["idm"], e0, e_bar, h["context"])
                ms.append(h["probe"].measure(model, out.e0))
        score, eligible = selection_score(ms, refs, befores, config.select_rule, config.select_min_recall_ratio)
        return {"score": score, "eligible": eligible, "requests": ms}

    ts = time.perf_counter()
    first = select(0)
    select_seconds = time.perf_counter() - ts
    log: list[dict[str, Any]] = [{"epoch": 0, "holdout": first, "select_seconds": select_seconds}]
    candidates: dict[int, dict[str, Any]] = {0: copy.deepcopy(encoder.state_dict())}
    for cb in callbacks or ():
        cb(log[0])

    sampler_rng = np.random.default_rng([config.seed, 103])
    req_rng = np.random.default_rng([config.seed, 101])
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(range(1, config.pretrain_epochs + 1), desc=f"pretrain IE ({model.name})", disable=not show, leave=False)
    train_seconds = 0.0
    request = residual = idm = sampler = proxy = None
    req_u = req_i = None
    ratio = 0.0
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            if (epoch - 1) % config.redraw_every == 0:
                ratio = float(req_rng.uniform(config.request_ratio_min, config.request_ratio_max))
                request = simulate_request(graph, ratio, req_rng)
                residual = graph.without(request)
                idm = influence_dependency_matrix(request, model.n_users, model.n_items, device)
                sampler = BPRSampler(residual.edges, model.n_items)
                with torch.no_grad():
                    context = encoder.context(idm, residual, e_bar)
                req_u = torch.from_numpy(request[:, 0]).to(device)
                req_i = torch.from_numpy(request[:, 1]).to(device)
                if config.pretrain_loss == "proxy":
                    proxy = ProxyPairs(request, data.valid, sampler, model.n_users, device)
            assert residual is not None and idm is not None and sampler is not None and request is not None
            rng = epoch_rng(config.seed, epoch)
            torch.manual_seed(int(rng.integers(2**62)))
            model.train()
            model.start_epoch(residual, rng)
            encoder.train()
            sums: dict[str, float] = {}
            n = 0
            for batch in sampler.epoch(config.batch_size, rng, device):
                if config.batches_per_epoch is not None and n >= config.batches_per_epoch:
                    break
                out = encoder(idm, e0, e_bar, context)
                emb = model.propagate(residual, out.e0)
                lm, _ = backbone_loss(model, batch, residual, out.e0, emb)
                if proxy is not None:
                    lu = proxy_unlearning_loss(emb, model.n_users, *proxy.draw(sampler_rng))
                else:
                    lu = unlearning_loss(emb, model.n_users, req_u, req_i)
                lp = preservation_loss(emb, e_bar, model.n_users, _head(batch, config.lp_max_pairs), config.tau_p)
                loss = lm + config.lambda_u * lu + config.lambda_p * lp
                parts = {"l_m": float(lm.detach()), "l_u": float(lu.detach()), "l_p": float(lp.detach())}
                if config.lambda_c > 0:
                    dropped = dropped_idm(idm, config.dropout_keep, rng)
                    lc = contrastive_loss(encoder, out.hidden, dropped, batch, config.tau_c)
                    loss = loss + config.lambda_c * lc
                    parts["l_c"] = float(lc.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                parts["loss"] = float(loss.detach())
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
            model.eval()
            record: dict[str, Any] = {
                "epoch": epoch,
                "request_ratio": ratio,
                "request_edges": int(len(request)),
                "batches": n,
                **{k: v / max(1, n) for k, v in sums.items()},
            }
            t1 = time.perf_counter()
            record["train_seconds"] = t1 - t0
            train_seconds += t1 - t0
            if epoch % config.select_every == 0 or epoch == config.pretrain_epochs:
                sel = select(epoch)
                record["holdout"] = sel
                record["select_seconds"] = time.perf_counter() - t1
                select_seconds += record["select_seconds"]
                candidates[epoch] = copy.deepcopy(encoder.state_dict())
                bar.set_postfix(loss=f"{record.get('loss', 0):.3f}", score=f"{sel['score']:.3f}")
            log.append(record)
            for cb in callbacks or ():
                cb(record)
    finally:
        bar.close()
        for p, f in zip(model.parameters(), frozen, strict=False):
            p.requires_grad_(f)
        model.train(was_training)
    measured = [r for r in log if "holdout" in r]
    if config.select_rule == "last":
        best = measured[-1]
    else:
        pool = [r for r in measured if r["holdout"]["eligible"]] or measured
        best = max(pool, key=lambda r: (r["holdout"]["score"], r["epoch"]))
    selected = int(best["epoch"])
    encoder.load_state_dict(candidates[selected])
    encoder.set_mlp_trainable(False)
    encoder.eval()
    calibration = None
    if config.calibrate_gain:
        tc = time.perf_counter()
        retrained = []
        if config.calibration_retrains:
            if retrain is None:
                raise ValueError("calibration_retrains > 0 needs a retrain function (the backbone's recipe)")
            order = sorted(range(len(holdouts)), key=lambda j: -holdouts[j]["ratio"])[: config.calibration_retrains]
            for k, j in enumerate(order):
                h = holdouts[j]
                tr = time.perf_counter()
                r_model = retrain(graph.without(h["edges"]), k)
                with torch.no_grad():
                    h["retrained"] = h["probe"].measure(r_model)
                retrained.append({"ratio": h["ratio"], "seconds": time.perf_counter() - tr, **h["retrained"]})
        calibration = calibrate_gain(encoder, holdouts, e0, e_bar, model, config)
        calibration["retrained"] = retrained
        calibration["seconds"] = time.perf_counter() - tc
        if retrained:  # fine-tuning aims where the retrained held-out requests are, too
            target = float(np.mean([r["auc_excess"] for r in retrained]))
            config = config.with_overrides({"finetune_target_excess": target})
            encoder.config = config
    report: dict[str, Any] = {
        "model": model.name,
        "variant": config.variant,
        "config": config.model_dump(mode="json"),
        "learning_rate": learning_rate,
        "selected_epoch": selected,
        "select_rule": config.select_rule,
        "selection": best["holdout"],
        "untrained_selected": selected == 0 and calibration is None,
        "calibration": calibration,
        "reference": refs,
        "before": befores,
        "holdout": {"ratios": list(config.holdout_ratios), "seed": config.holdout_seed,
                    "edges": [int(len(h["edges"])) for h in holdouts]},
        "train_seconds": train_seconds,
        "select_seconds": select_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "epochs": log,
    }
    if selected == 0 and calibration is None:
        report["warning"] = UNTRAINED_WARNING
        if config.pretrain_epochs > 0:
            print(f"WARNING: {UNTRAINED_WARNING}", file=sys.stderr, flush=True)
    return encoder, report


def calibrate_gain(encoder: InfluenceEncoder, holdouts: list[dict], e0: torch.Tensor, e_bar: torch.Tensor,
                   model: Recommender, config: UnlearnRecConfig) -> dict[str, Any]:
    """Set ``encoder.log_gain`` by bisection on ``log g`` (``UnlearnRecConfig.calibrate_gain``).

    Per held-out request the target ``auc_excess`` and the utility floor come from its retrained model where
    it has one (``holdout["retrained"]``: its own ``auc_excess``; ``calibration_min_recall_ratio`` × its
    recall or EdgeDrop's, whichever is lower), else from the proxy (``gain_target_excess``;
    ``select_min_recall_ratio`` × EdgeDrop's recall).
    The mean distance to the targets falls as ``g`` grows: bisection moves towards 0 (downwards as well when
    a gain breaks a floor), and of the gains tried the one nearest the targets within every floor is kept (the
    starting gain when none is). Returns the search log and the gain kept.
    """
    targets, floors = [], []
    for h in holdouts:
        r = h.get("retrained")
        if r is not None:
            targets.append(r["auc_excess"])
            # never more utility than serving the original on the residual graph has
            floors.append(config.calibration_min_recall_ratio * min(r["recall@20"], h["before"]["recall@20"]))
        else:
            targets.append(config.gain_target_excess)
            floors.append(config.select_min_recall_ratio * h["before"]["recall@20"])

    def measure(log_g: float) -> dict[str, float]:
        with torch.no_grad():
            encoder.log_gain.fill_(log_g)
            ms = [h["probe"].measure(model, encoder(h["idm"], e0, e_bar, h["context"]).e0) for h in holdouts]
        dist = float(np.mean([m["auc_excess"] - t for m, t in zip(ms, targets, strict=True)]))
        ok = all(m["recall@20"] >= f for m, f in zip(ms, floors, strict=True))
        return {"gain": float(np.exp(log_g)), "excess_minus_target": dist, "within_floor": ok,
                "auc_excess": [m["auc_excess"] for m in ms], "recall@20": [m["recall@20"] for m in ms]}

    lo, hi = float(encoder.log_gain), float(np.log(config.gain_search_max))
    log = [measure(lo)]
    for _ in range(config.gain_search_steps):
        mid = 0.5 * (lo + hi)
        m = measure(mid)
        log.append(m)
        if m["excess_minus_target"] > 0 and m["within_floor"]:
            lo = mid  # not forgotten enough yet, and utility allows more
        else:
            hi = mid  # reached the target, or utility would suffer: search below
    ok = [m for m in log if m["within_floor"]]
    kept = min(ok, key=lambda m: abs(m["excess_minus_target"])) if ok else log[0]
    with torch.no_grad():
        encoder.log_gain.fill_(float(np.log(kept["gain"])))
    return {"gain": kept["gain"], "kept": kept, "search": log, "targets": targets, "recall_floors": floors}


__all__ = ["UNTRAINED_WARNING", "calibrate_gain", "pretrain_encoder", "selection_score", "simulate_request"]
