"""Pre-training the Influence Encoder on simulated deletion requests (UnlearnRec spec §4).

The backbone is trained and frozen. Every ``redraw_every`` epochs a simulated request is drawn — a uniform
random fraction ``ρ ~ U[request_ratio_min, request_ratio_max]`` of the training edges — with its ``Â_Δ`` and
residual graph ``Â_r``; BPR triples come from the residual edges only. Per batch, with ``ê`` the unlearned
model's final embeddings (``Ẽ0`` propagated over ``Â_r``):

``L = L_M + λ_u L_U + λ_p L_P + λ_c L_C`` (the backbone's own loss on ``Â_r``; −log σ(−ŷ) over every request
edge; in-batch log-softmax preservation against the original ``Ē``; InfoNCE between ``H^l`` and its
edge-dropped counterpart). Adam trains ``H0`` and ``W_η`` (and the MLP only if ``freeze_mlp`` is off).

Checkpoint selection uses a *held-out* simulated request (``holdout_ratio`` of the training edges, drawn
once with ``holdout_seed``; never the request that will be evaluated). After every ``select_every`` epochs
the encoder unlearns it zero-shot and the unlearned model, serving on the held-out residual graph, is scored

``score = recall@20_valid / recall@20_valid(original) − select_forget_weight · |auc_excess / auc_excess(original)|``

``auc_excess`` (see :class:`~unlearnrec.unlearning.unlearnrec.unlearn.RequestProbe`) is the held-out request
edges' rank percentile against user-matched random non-edges minus that of the same users' validation edges:
the retrain proxy (a model retrained without a random request ranks the deleted edges like the user's unseen
true items). It is scale-free, so shrinking every embedding cannot fake forgetting (a mean-score difference
could be). ``|auc_excess / auc_excess(original)|`` is 1 for a model that forgot nothing, 0 for retrain-like
forgetting, and grows again when the edges are pushed *below* the retrain level (over-unlearning, which makes
the deletion detectable). The first term keeps utility; "original" is the backbone before deletion on the full
graph. The best-scoring epoch's tables are restored (epoch 0, the untrained encoder, is a candidate).
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
    unlearning_loss,
)
from unlearnrec.unlearning.unlearnrec.idm import dropped_idm, influence_dependency_matrix
from unlearnrec.unlearning.unlearnrec.unlearn import _head, build_probe, final_embeddings


def simulate_request(graph: Graph, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """A uniform random ``ratio`` of ``graph``'s edges (at least one), sorted."""
    n = graph.n_edges
    k = int(min(n, max(1, round(ratio * n))))
    idx = np.sort(rng.choice(n, size=k, replace=False))
    return graph.edges[idx]


def selection_score(m: dict[str, float], ref: dict[str, float], forget_weight: float) -> float:
    """Held-out checkpoint score (module docstring): utility ratio minus weighted residual excess."""
    util = m["recall@20"] / ref["recall@20"] if ref["recall@20"] > 0 else 0.0
    denom = ref["auc_excess"] if abs(ref["auc_excess"]) > 1e-4 else 1.0
    return float(util - forget_weight * abs(m["auc_excess"] / denom))


def pretrain_encoder(
    model: Recommender,
    graph: Graph,
    data: Interactions,
    config: UnlearnRecConfig | None = None,
    progress: bool | None = None,
    encoder: InfluenceEncoder | None = None,
    callbacks: list[Callable[[dict], Any]] | None = None,
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
    opt = torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    frozen = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(False)

    with torch.no_grad():
        e0 = model.embedding.detach().clone()
        e_bar = final_embeddings(model, graph)

    # Held-out simulated request (selection only), drawn once with its own seed.
    hold_rng = np.random.default_rng([config.holdout_seed, 1])
    hold_edges = simulate_request(graph, config.holdout_ratio, hold_rng)
    hold_residual = graph.without(hold_edges)
    hold_idm = influence_dependency_matrix(hold_edges, model.n_users, model.n_items, device)
    probe = build_probe(data, graph, hold_residual, hold_edges, config.n_probe, hold_rng, config.ks)
    reference = probe.with_graph(graph).measure(model, e0)  # the original model on the full graph: nothing forgotten

    def select(epoch: int) -> dict[str, Any]:
        encoder.eval()
        with torch.no_grad():
            out = encoder(hold_idm, e0, e_bar)
        m = probe.measure(model, out.e0)
        return {**m, "score": selection_score(m, reference, config.select_forget_weight)}

    ts = time.perf_counter()
    first = select(0)
    select_seconds = time.perf_counter() - ts
    best_score, best_epoch = first["score"], 0
    best_state = copy.deepcopy(encoder.state_dict())
    log: list[dict[str, Any]] = [{"epoch": 0, "holdout": first, "select_seconds": select_seconds}]
    for cb in callbacks or ():
        cb(log[0])

    req_rng = np.random.default_rng([config.seed, 101])
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(range(1, config.pretrain_epochs + 1), desc=f"pretrain IE ({model.name})", disable=not show, leave=False)
    train_seconds = 0.0
    request = residual = idm = sampler = None
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
                req_u = torch.from_numpy(request[:, 0]).to(device)
                req_i = torch.from_numpy(request[:, 1]).to(device)
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
                out = encoder(idm, e0, e_bar)
                emb = model.propagate(residual, out.e0)
                lm, _ = backbone_loss(model, batch, residual, out.e0, emb)
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
                if sel["score"] > best_score:
                    best_score, best_epoch = sel["score"], epoch
                    best_state = copy.deepcopy(encoder.state_dict())
                bar.set_postfix(
                    loss=f"{record.get('loss', 0):.3f}", score=f"{sel['score']:.3f}", best=best_epoch
                )
            log.append(record)
            for cb in callbacks or ():
                cb(record)
    finally:
        bar.close()
        for p, f in zip(model.parameters(), frozen, strict=False):
            p.requires_grad_(f)
        model.train(was_training)
    kept = best_epoch
    if config.select_checkpoint:
        encoder.load_state_dict(best_state)
    else:
        kept = config.pretrain_epochs
    encoder.set_mlp_trainable(False)
    encoder.eval()
    best = next(r["holdout"] for r in log if r["epoch"] == best_epoch)
    report = {
        "model": model.name,
        "config": config.model_dump(mode="json"),
        "selected_epoch": best_epoch,
        "kept_epoch": kept,
        "selection": {"score": best_score, **best},
        "reference": reference,
        "holdout": {"ratio": config.holdout_ratio, "seed": config.holdout_seed, "edges": int(len(hold_edges))},
        "train_seconds": train_seconds,
        "select_seconds": select_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "epochs": log,
    }
    return encoder, report


__all__ = ["pretrain_encoder", "selection_score", "simulate_request"]
