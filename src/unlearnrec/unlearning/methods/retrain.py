"""Exact unlearning by retraining on the residual graph: the gold standard every method is compared with.

* ``retrain``: from a fresh initialisation, with the original recipe (same model, optimiser, batch size and
  seed) and early stopping on validation recall@20 (Bourtoule et al., S&P 2021, call it the naive exact
  baseline). Its cost is the cost every other method must beat.
* ``retrain-warm``: the same training, started from the current weights instead of a fresh initialisation
  (a common cheaper variant; exact only in the limit, since the start point still carries the request).

Both train data-parallel on ``nproc`` local ranks when asked (``torch.distributed``, see
:mod:`unlearnrec.training`): the same steps on the whole batch, so the same retrain up to float summation order.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field

from unlearnrec.config import YamlConfig
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import Trainer, fit_data_parallel
from unlearnrec.unlearning.base import Context, Unlearner, copy_model, register


class RetrainConfig(YamlConfig):
    """Overrides of the original recipe (``None`` keeps it)."""

    max_seconds: float | None = Field(None, gt=0)
    """Wall-clock budget of the retraining (the best validation epoch so far is kept)."""
    epochs: int | None = Field(None, ge=1)
    seed: int | None = None
    """Initialisation and sampling seed (default: the recipe's; another seed gives the retrain noise floor)."""
    nproc: int = Field(1, ge=1)
    """Data-parallel ranks of the retrain on this machine (gloo on CPU, NCCL with one GPU per rank)."""


def train_on(ctx: Context, graph: Graph, model=None, *, epochs: int | None = None, max_seconds: float | None = None,
             seed: int | None = None, patience: int | None = None, eval_every: int | None = None,
             learning_rate: float | None = None, mask_graph: Graph | None = None, nproc: int = 1):
    """Train ``model`` (default: a freshly initialised backbone of the recipe) on ``graph`` with the recipe.

    ``mask_graph``: the graph whose edges validation masks (default: ``graph``); a shard sub-model passes the
    full training graph (see :class:`~unlearnrec.training.Trainer`'s ``mask_edges``).
    ``nproc``: data-parallel ranks (:func:`~unlearnrec.training.fit_data_parallel`); 1 trains in this process.
    Returns ``(model, TrainResult)``; the model holds the best validation epoch's weights.
    """
    updates = {k: v for k, v in dict(epochs=epochs, max_seconds=max_seconds, seed=seed, patience=patience,
                                       eval_every=eval_every, learning_rate=learning_rate).items() if v is not None}
    tcfg = ctx.config.train.model_copy(update=updates)
    if model is None:
        model = build_model(ctx.data.n_users, ctx.data.n_items, ctx.config.model)
        model.reset_parameters(torch.Generator().manual_seed(tcfg.seed))
    mask = None if mask_graph is None else mask_graph.edges
    if nproc > 1:
        return model, fit_data_parallel(nproc, model, ctx.data, tcfg, graph, mask)
    trainer = Trainer(model, ctx.data, tcfg, graph=graph, progress=ctx.progress, mask_edges=mask)
    result = trainer.fit()
    trainer.restore_best()
    return model, result


@register
class Retrain(Unlearner):
    """Retrain from scratch on the residual graph with the original recipe and validation early stopping."""

    name = "retrain"
    paper = "exact baseline (retraining from scratch; Bourtoule et al., IEEE S&P 2021, 'naive retraining')"
    Config = RetrainConfig
    warm = False

    def _prepare(self, ctx: Context) -> None:
        pass

    def _unlearn(self, request: np.ndarray, residual: Graph):
        ctx = self._require()
        c = self.config
        t0 = time.perf_counter()
        start = copy_model(ctx.model) if self.warm else None
        model, res = train_on(ctx, residual, start, epochs=c.epochs, max_seconds=c.max_seconds, seed=c.seed,
                              nproc=c.nproc)
        log = {"best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "stopped_early": res.stopped_early,
               "best_valid": res.best_valid}
        return self._outcome(model, residual, request, log, train_seconds=time.perf_counter() - t0)


@register
class RetrainWarm(Retrain):
    """Retrain on the residual graph starting from the current weights (same recipe, validation early stopping)."""

    name = "retrain-warm"
    paper = "warm-started retraining (continue training from the current weights on the residual graph)"
    warm = True
