"""Cheap references every unlearning method must beat to matter.

* ``edgedrop``: serve the unchanged model on the residual graph. For a GNN the request edges stop passing
  messages; the parameters (which were fitted to them) do not change. For MF it changes nothing at all.
* ``finetune``: continue training on the residual graph for ``epochs`` epochs (the "fine-tune" baseline of
  Golatkar et al., CVPR 2020, and of the unlearning benchmarks since), keeping the best validation epoch.
* ``neggrad+``: gradient ascent on the request edges together with descent on the retained ones,
  ``β · L(retained batch) − (1 − β) · L(request batch)`` (NegGrad+, Kurmanji et al., "Towards Unbounded
  Machine Unlearning", NeurIPS 2023), for ``epochs`` passes over the residual edges (at least ``min_steps``
  steps each); a request batch's negatives avoid every training item of the user, retained ones included.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field

from unlearnrec.config import YamlConfig
from unlearnrec.data.interactions import as_pairs, pair_keys
from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch
from unlearnrec.sampling import BPRSampler
from unlearnrec.training import epoch_rng
from unlearnrec.unlearning.base import Unlearner, copy_model, register
from unlearnrec.unlearning.methods.retrain import train_on


class EdgeDropConfig(YamlConfig):
    """EdgeDrop has no hyper-parameters."""


@register
class EdgeDrop(Unlearner):
    """Remove the request edges from the propagation graph; leave every parameter as it is."""

    name = "edgedrop"
    paper = "reference: drop the edges from the propagation graph, no parameter change"
    Config = EdgeDropConfig

    def _prepare(self, ctx) -> None:
        pass

    def _unlearn(self, request: np.ndarray, residual: Graph):
        return self._outcome(self._require().model, residual, request)


class FineTuneConfig(YamlConfig):
    epochs: int = Field(3, ge=1)
    """Training epochs on the residual graph (the best validation epoch among them is kept)."""
    learning_rate: float | None = Field(None, gt=0)
    """Default: the recipe's."""


@register
class FineTune(Unlearner):
    """Continue training the current model on the residual graph for a few epochs (validation selects the epoch)."""

    name = "finetune"
    paper = "reference: fine-tuning on the retained data (Golatkar et al., CVPR 2020, 'Fine-tune' baseline)"
    Config = FineTuneConfig

    def _prepare(self, ctx) -> None:
        pass

    def _unlearn(self, request: np.ndarray, residual: Graph):
        ctx = self._require()
        c = self.config
        model, res = train_on(ctx, residual, copy_model(ctx.model), epochs=c.epochs, eval_every=1,
                              patience=c.epochs + 1, learning_rate=c.learning_rate, max_seconds=None)
        log = {"best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "best_valid": res.best_valid}
        return self._outcome(model, residual, request, log, train_seconds=res.seconds)


class NegGradConfig(YamlConfig):
    epochs: int = Field(1, ge=1)
    """Passes over the residual edges (select with ``retain_weight`` on validation, on tuning requests)."""
    retain_weight: float = Field(0.95, gt=0.0, lt=1.0)
    """``β``: weight of the descent term on retained edges; ``1 − β`` weighs the ascent on request edges."""
    learning_rate: float | None = Field(None, gt=0)
    """Default: the recipe's."""
    batch_size: int | None = Field(None, gt=0)
    """Retained edges per step (default: the recipe's batch size)."""
    forget_batch_size: int = Field(1024, gt=0)
    """Request edges per step (cycled through; fresh negatives every pass)."""
    min_steps: int = Field(1, ge=1)
    """At least this many optimizer steps per epoch: an epoch over a residual graph smaller than a few batches
    cycles it (with fresh negatives) until it has taken them."""
    seed: int | None = None
    """Seed of the batch order and negatives (default: the recipe's)."""


@register
class NegGradPlus(Unlearner):
    """NegGrad+ (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023, the NegGrad+ baseline):
    descend on retained edges and ascend on the request edges at once, ``β · L(retained batch) − (1 − β) ·
    L(request batch)`` with the backbone's own loss, for ``epochs`` passes over the residual edges.

    Negatives: a retained batch draws them among the items the user has no *residual* edge with (what retraining
    on the residual graph does); a request batch among the items the user has no training edge with at all
    (request or retained), so that the ascent never raises one of the user's retained positives by using it as a
    negative.
    """

    name = "neggrad+"
    paper = (
        "NegGrad+ (Kurmanji, Triantafillou, Hayes, Triantafillou, 'Towards Unbounded Machine Unlearning', "
        "NeurIPS 2023)"
    )
    Config = NegGradConfig

    def _prepare(self, ctx) -> None:
        pass

    def _unlearn(self, request: np.ndarray, residual: Graph):
        ctx = self._require()
        c = self.config
        t0 = time.perf_counter()
        model = copy_model(ctx.model)
        device = model.embedding.device
        graph = residual.to(device)
        lr = c.learning_rate or ctx.config.train.learning_rate
        batch_size = int(c.batch_size or ctx.config.train.batch_size)
        seed = ctx.config.train.seed if c.seed is None else c.seed
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        retain = BPRSampler(graph.edges, ctx.data.n_items)
        forget = forget_sampler(ctx.graph.edges, request, ctx.data.n_items)
        history = []
        model.train()
        for epoch in range(1, c.epochs + 1):
            rng = epoch_rng(seed + 104_729, epoch)
            torch.manual_seed(int(rng.integers(2**62)))
            model.start_epoch(graph, rng)
            fb = _cycle(forget, c.forget_batch_size, rng, device)
            rb = _cycle(retain, batch_size, rng, device)
            steps = max(c.min_steps, retain.n_batches(batch_size))
            sums = {"retain": 0.0, "forget": 0.0}
            for _ in range(steps):
                lr_loss, _ = model.loss(next(rb), graph)
                lf_loss, _ = model.loss(next(fb), graph)
                loss = c.retain_weight * lr_loss - (1.0 - c.retain_weight) * lf_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums["retain"] += float(lr_loss.detach())
                sums["forget"] += float(lf_loss.detach())
            history.append({"epoch": epoch, "steps": steps, **{k: v / steps for k, v in sums.items()}})
        model.eval()
        return self._outcome(model, residual, request, {"history": history}, train_seconds=time.perf_counter() - t0)


class _ForgetSampler:
    """BPR batches over the request pairs only, negatives outside *all* of the user's training pairs."""

    def __init__(self, sampler: BPRSampler, index: np.ndarray):
        self.sampler, self.index = sampler, index

    def epoch(self, batch_size: int, rng: np.random.Generator, device):
        return self.sampler.epoch_of(self.index, batch_size, rng, device)


def forget_sampler(train_edges: np.ndarray, request: np.ndarray, n_items: int) -> _ForgetSampler:
    """Batches of the ``request`` pairs whose negatives avoid every pair of ``train_edges`` (which hold them)."""
    sampler = BPRSampler(train_edges, n_items)
    keys = pair_keys(sampler.pairs, n_items)
    order = np.argsort(keys, kind="stable")
    want = pair_keys(as_pairs(request), n_items)
    pos = np.searchsorted(keys, want, sorter=order)
    pos = np.minimum(pos, len(keys) - 1)
    index = order[pos]
    if not np.array_equal(keys[index], want):
        raise ValueError("request pairs that are not training edges")
    return _ForgetSampler(sampler, index)


def _cycle(sampler, batch_size: int, rng: np.random.Generator, device):
    """Endless BPR batches over ``sampler``'s pairs, reshuffled with fresh negatives on every pass."""
    while True:
        for batch in sampler.epoch(batch_size, rng, device):
            yield Batch(batch.users, batch.pos, batch.neg)
