"""Cheap references every unlearning method must beat to matter.

* ``edgedrop``: serve the unchanged model on the residual graph. For a GNN the request edges stop passing
  messages; the parameters (which were fitted to them) do not change. For MF it changes nothing at all.
* ``finetune``: continue training on the residual graph for ``epochs`` epochs (the "fine-tune" baseline of
  Golatkar et al., CVPR 2020, and of the unlearning benchmarks since), keeping the best validation epoch.
* ``neggrad+``: gradient ascent on the request edges together with descent on the retained ones,
  ``β · L(retained batch) − (1 − β) · L(request batch)`` (NegGrad+, Kurmanji et al., "Towards Unbounded
  Machine Unlearning", NeurIPS 2023), for ``epochs`` passes over the residual edges.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field

from unlearnrec.config import YamlConfig
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
    """Passes over the residual edges."""
    retain_weight: float = Field(0.95, gt=0.0, lt=1.0)
    """``β``: weight of the descent term on retained edges; ``1 − β`` weighs the ascent on request edges."""
    learning_rate: float | None = Field(None, gt=0)
    """Default: the recipe's."""
    forget_batch_size: int = Field(1024, gt=0)
    """Request edges per step (cycled through; fresh negatives every step)."""


@register
class NegGradPlus(Unlearner):
    """NegGrad+: descend on retained edges and ascend on the request edges at once."""

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
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        retain = BPRSampler(graph.edges, ctx.data.n_items)
        forget = BPRSampler(request, ctx.data.n_items)
        history = []
        model.train()
        for epoch in range(1, c.epochs + 1):
            rng = epoch_rng(ctx.config.train.seed + 104_729, epoch)
            torch.manual_seed(int(rng.integers(2**62)))
            model.start_epoch(graph, rng)
            fb = _cycle(forget, c.forget_batch_size, rng, device)
            sums = {"retain": 0.0, "forget": 0.0}
            n = 0
            for batch in retain.epoch(ctx.config.train.batch_size, rng, device):
                lr_loss, _ = model.loss(batch, graph)
                lf_loss, _ = model.loss(next(fb), graph)
                loss = c.retain_weight * lr_loss - (1.0 - c.retain_weight) * lf_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums["retain"] += float(lr_loss.detach())
                sums["forget"] += float(lf_loss.detach())
                n += 1
            history.append({"epoch": epoch, **{k: v / max(1, n) for k, v in sums.items()}})
        model.eval()
        return self._outcome(model, residual, request, {"history": history}, train_seconds=time.perf_counter() - t0)


def _cycle(sampler: BPRSampler, batch_size: int, rng: np.random.Generator, device):
    """Endless BPR batches over ``sampler``'s pairs, reshuffled with fresh negatives on every pass."""
    while True:
        for batch in sampler.epoch(batch_size, rng, device):
            yield Batch(batch.users, batch.pos, batch.neg)
