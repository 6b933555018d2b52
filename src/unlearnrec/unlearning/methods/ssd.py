"""Selective Synaptic Dampening (Foster, Schoepf, Brintrup, AAAI 2024), adapted to embedding-table recommenders.

SSD needs no retraining: it compares, entry by entry, how important each parameter is to the forget set and to the
whole training set, by the diagonal of the (empirical) Fisher information, i.e. mean squared gradients of the
training loss,

    I_D = mean over batches of D   of (∂L/∂θ)²        I_f = mean over batches of D_f of (∂L/∂θ)²,

and dampens the entries that are disproportionately important to the forget set:

    θ_k ← β_k θ_k  where  I_f,k > α · I_D,k,  with  β_k = min(λ · I_D,k / I_f,k, 1);  the other entries unchanged.

Here ``D`` is every training edge (the request included, as in the paper), ``D_f`` the request edges, each a BPR
triple with a freshly drawn negative, and ``L`` the backbone's own training loss (:meth:`Recommender.loss`, the
contrastive term of SGL/SimGCL included), so SSD applies to all four backbones. The parameters are the layer-0
embedding table ``E0``: its entries are (row, dimension) pairs, so dampening shrinks single coordinates of the
users' and items' embeddings (in practice those of the request's users and items, whose gradients the request
dominates). Any other trainable parameter of a backbone is treated the same way.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field

from unlearnrec.config import YamlConfig
from unlearnrec.data.interactions import as_pairs
from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch, Recommender
from unlearnrec.sampling import BPRSampler
from unlearnrec.unlearning.base import Context, Outcome, Unlearner, copy_model, register

__all__ = ["SSD", "SSDConfig", "dampen", "fisher_diagonal"]


class SSDConfig(YamlConfig):
    selection_weight: float = Field(10.0, gt=0.0)
    """``α``: an entry is selected when its forget-set importance exceeds ``α`` times its training-set one
    (paper default 10)."""
    dampening: float = Field(1.0, gt=0.0)
    """``λ``: a selected entry is multiplied by ``min(λ · I_D / I_f, 1)`` (paper default 1)."""
    batch_size: int | None = Field(None, gt=0)
    """Triples per gradient for both importances (default: the recipe's training batch size)."""
    seed: int = 0
    """Seed of the negatives, the batch order and the contrastive views/noise of SGL/SimGCL."""


def _batches(pairs: np.ndarray, sampler: BPRSampler, batch_size: int, rng: np.random.Generator,
             device) -> list[Batch]:
    """``pairs`` in a random order, each with a fresh negative outside the user's training positives."""
    pairs = as_pairs(pairs)
    order = rng.permutation(len(pairs))
    users, pos = pairs[order, 0], pairs[order, 1]
    neg = sampler.negatives(users, rng)
    u, p, n = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (users, pos, neg))
    return [Batch(u[s:s + batch_size], p[s:s + batch_size], n[s:s + batch_size])
            for s in range(0, len(pairs), batch_size)]


def fisher_diagonal(model: Recommender, graph: Graph, pairs: np.ndarray, positives: np.ndarray, *,
                    batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared gradient of ``model.loss`` (the diagonal empirical Fisher), per parameter.

    Batches cover ``pairs`` once, in a seeded random order, each pair with a negative drawn outside the user's
    ``positives``. The model's stochastic parts are seeded too (SGL draws its views with ``seed``; SimGCL's noise
    comes from a forked, seeded torch generator), so the result is deterministic. ``model`` must be a copy the
    caller owns: SGL keeps its views on the model.
    """
    rng = np.random.default_rng(seed)
    device = model.embedding.device
    graph = graph.to(device)
    sampler = BPRSampler(positives, model.n_items)
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    acc = {k: torch.zeros_like(p) for k, p in params.items()}
    batches = _batches(pairs, sampler, batch_size, rng, device)
    was = model.training
    model.train()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(rng.integers(2**62)))
        model.start_epoch(graph, rng)
        for batch in batches:
            loss, _ = model.loss(batch, graph)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (k, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    acc[k].add_(g.detach().pow(2))
    model.train(was)
    n = max(1, len(batches))
    return {k: a / n for k, a in acc.items()}


@torch.no_grad()
def dampen(params: dict[str, torch.Tensor], importance_data: dict[str, torch.Tensor],
           importance_forget: dict[str, torch.Tensor], selection_weight: float, dampening: float) -> dict:
    """SSD's update, in place: where ``I_f > α I_D`` multiply by ``β = min(λ I_D / I_f, 1)``. Returns counts."""
    selected = 0
    total = 0
    rows = 0
    beta_sum = 0.0
    for k, p in params.items():
        i_d, i_f = importance_data[k], importance_forget[k]
        sel = i_f > selection_weight * i_d
        beta = torch.clamp(dampening * i_d / torch.where(sel, i_f, torch.ones_like(i_f)), max=1.0)
        p.mul_(torch.where(sel, beta, torch.ones_like(beta)))
        selected += int(sel.sum())
        total += sel.numel()
        rows += int(sel.reshape(sel.shape[0], -1).any(1).sum()) if sel.dim() > 1 else 0
        beta_sum += float(beta[sel].sum())
    return {"selected_entries": selected, "total_entries": total, "selected_fraction": selected / max(1, total),
            "rows_touched": rows, "mean_beta": beta_sum / selected if selected else None}


@register
class SSD(Unlearner):
    """Selective Synaptic Dampening (Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without Retraining Through
    Selective Synaptic Dampening", AAAI 2024) on the embedding table.

    ``prepare`` computes the training-set importances ``I_D`` (the one-off cost, request-independent); ``unlearn``
    computes the request's importances ``I_f`` and dampens every entry with ``I_f > α·I_D`` by
    ``β = min(λ·I_D/I_f, 1)``; the result is served on the residual graph. Settings: :class:`SSDConfig`
    (``selection_weight`` α = 10 and ``dampening`` λ = 1 as in the paper, the recipe's batch size, a seed). Entries
    are the (row, dimension) coordinates of ``E0``. After :meth:`apply`, ``I_D`` is recomputed for the new model on
    the residual graph at the next request (and counted in that request's time).
    """

    name = "ssd"
    paper = ("SSD (Foster, Schoepf, Brintrup, 'Fast Machine Unlearning Without Retraining Through Selective Synaptic "
             "Dampening', AAAI 2024)")
    Config = SSDConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._importance_data: dict[str, torch.Tensor] | None = None

    def _batch_size(self, ctx: Context) -> int:
        return int(self.config.batch_size or ctx.config.train.batch_size)

    def _prepare(self, ctx: Context) -> None:
        self._importance_data = fisher_diagonal(copy_model(ctx.model), ctx.graph, ctx.graph.edges, ctx.graph.edges,
                                                batch_size=self._batch_size(ctx), seed=self.config.seed)

    def _apply(self, outcome: Outcome) -> None:
        self._importance_data = None  # recomputed for the new state at the next request

    def _unlearn(self, request: np.ndarray, residual: Graph) -> Outcome:
        ctx = self._require()
        c = self.config
        t0 = time.perf_counter()
        if self._importance_data is None:
            self._prepare(ctx)
        data_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        model = copy_model(ctx.model)
        forget = fisher_diagonal(model, ctx.graph, request, ctx.graph.edges, batch_size=self._batch_size(ctx),
                                 seed=c.seed + 1)
        forget_seconds = time.perf_counter() - t1
        params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        log = dampen(params, self._importance_data, forget, c.selection_weight, c.dampening)
        model.eval()
        return self._outcome(model, residual, request, log, importance_data_seconds=data_seconds,
                             importance_forget_seconds=forget_seconds)
