"""SISA (Bourtoule et al., "Machine Unlearning", IEEE S&P 2021) for recommenders, and the shard machinery
RecEraser shares.

* ``prepare``: the users are dealt at random into ``n_shards`` equal shards (seeded); each shard's sub-model
  (the context's backbone) is trained from scratch, with the context's recipe, on the edges of its users
  in ``ctx.graph`` (attacked edges included, in the adversarial scenario); the served model is the
  :class:`~unlearnrec.unlearning.partition.Ensemble` averaging the scores of the sub-models that hold the
  user (with a user partition: the user's own shard).
* ``unlearn``: the shards holding request edges are retrained from scratch on their residual edges (same
  recipe and seed); every other sub-model is reused as is (the very same object). Exact by construction:
  no sub-model ever saw a deleted edge. ``request_seconds`` is the touched shards' cost;
  ``prepare_seconds`` all shards'.

Sub-model ``k`` is initialised and sampled with seed ``recipe seed + k``, so retraining a shard whose data
did not change reproduces it. Slicing (SISA's within-shard checkpoints) is not used: a sub-model is
retrained from its initialisation, not from a checkpoint before the deleted point.

Validation (early stopping and best-epoch selection) is per shard: the validation split restricted to the
users with training edges in the shard (a sub-model has only untrained embeddings for the other users,
whose recall would only add noise to the stopping signal); when that leaves nothing, the full split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field

from unlearnrec.config import YamlConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import resolve_device
from unlearnrec.unlearning.base import Context, Outcome, Unlearner, UnlearnerError, register
from unlearnrec.unlearning.methods.retrain import train_on
from unlearnrec.unlearning.partition import Ensemble, Partition, edge_shards, partition_graph, shard_graphs


class SisaConfig(YamlConfig):
    """SISA settings (``None`` keeps the recipe's)."""

    n_shards: int = Field(10, ge=1)
    """``S``: shards (sub-models); at most the number of users."""
    seed: int = 0
    """Seed of the random user partition."""
    max_seconds: float | None = Field(None, gt=0)
    """Wall-clock budget of each sub-model's training (the best validation epoch so far is kept)."""
    epochs: int | None = Field(None, ge=1)
    """Most epochs per sub-model (default: the recipe's, with its early stopping)."""


@dataclass
class ShardState:
    """Everything a sharded unlearner continues from (an outcome's ``state``).

    Attributes:
        keys: sorted edge keys of the current graph; ``labels``: their shards.
        graphs, models: per-shard graph and sub-model.
        ensemble: the served model.
        user_home: shard of each user for user-based partitions (else ``None``).
        seconds: training seconds of the current sub-model of each shard.
        extra: method-specific state (RecEraser: the aggregator's training record).
    """

    keys: np.ndarray
    labels: np.ndarray
    graphs: list[Graph]
    models: list[Any]
    ensemble: Ensemble
    user_home: np.ndarray | None = None
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def shard_validation(data: Interactions, graph: Graph) -> Interactions:
    """``data`` with its validation split restricted to the users that have edges in ``graph``.

    Falls back to the full split when the restriction leaves no pair (or there is no split at all).
    """
    if not len(data.valid):
        return data
    has = np.zeros(data.n_users, bool)
    has[np.unique(graph.keys // graph.n_items)] = True
    keep = has[data.valid[:, 0]]
    if not keep.any() or keep.all():
        return data
    return data.with_valid(data.train, data.valid[keep])


class ShardedUnlearner(Unlearner):
    """Common machinery of the partition methods: shard training, touched-shard retraining, state."""

    aggregation = "average"

    def __init__(self, config=None):
        super().__init__(config)
        self.state: ShardState | None = None
        self.partition: Partition | None = None
        self.prepare_log: dict[str, Any] = {}

    # ------------------------------------------------------------ subclass hooks
    def _partition(self, ctx: Context) -> Partition:
        raise NotImplementedError

    def _ensemble(
        self, ctx: Context, graphs: list[Graph], models: list, user_home, residual: Graph
    ) -> tuple[Ensemble, dict]:
        """The served model from the sub-models, and a JSON-safe log of building it."""
        return Ensemble(models, graphs, user_home=user_home), {}

    # ------------------------------------------------------------ shard training
    def _shard_seed(self, ctx: Context, k: int) -> int:
        return int(ctx.config.train.seed) + int(k)

    def _train_shard(self, ctx: Context, graph: Graph, k: int) -> tuple[Any, dict[str, Any]]:
        """A sub-model trained from scratch on ``graph`` (shard ``k``) with the recipe; and its record."""
        c = self.config
        seed = self._shard_seed(ctx, k)
        t0 = time.perf_counter()
        if graph.n_edges == 0:  # nothing to learn from: the freshly initialised model
            model = build_model(ctx.data.n_users, ctx.data.n_items, ctx.config.model)
            model.reset_parameters(torch.Generator().manual_seed(seed))
            model = model.to(resolve_device(ctx.config.train.device)).eval()
            return model, {"shard": k, "edges": 0, "epochs_run": 0, "best_epoch": 0,
                           "seconds": time.perf_counter() - t0}
        sctx = Context(ctx.model, graph, shard_validation(ctx.data, graph), ctx.config, ctx.progress)
        model, res = train_on(sctx, graph, epochs=c.epochs, max_seconds=c.max_seconds, seed=seed)
        model.eval()
        monitor = ctx.config.train.monitor
        return model, {"shard": k, "edges": graph.n_edges, "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
                       "best_valid": res.best_valid.get(monitor), "seconds": time.perf_counter() - t0}

    # ------------------------------------------------------------ Unlearner hooks
    def _prepare(self, ctx: Context) -> None:
        t0 = time.perf_counter()
        part = self._partition(ctx)
        t_part = time.perf_counter() - t0
        self.partition = part
        graphs = shard_graphs(ctx.graph, part.edge_labels, part.n_shards)
        models, records = [], []
        for k, g in enumerate(graphs):
            m, rec = self._train_shard(ctx, g, k)
            models.append(m)
            records.append(rec)
        t1 = time.perf_counter()
        ensemble, agg_log = self._ensemble(ctx, graphs, models, part.user_labels, ctx.graph)
        self.state = ShardState(ctx.graph.keys.copy(), part.edge_labels.copy(), graphs, models, ensemble,
                                part.user_labels, [r["seconds"] for r in records], {"aggregator": agg_log})
        self.prepare_log = {
            "partition": {"strategy": part.strategy, "n_shards": part.n_shards, "seconds": t_part, **part.info},
            "shards": records,
            "shard_seconds": [r["seconds"] for r in records],
            "aggregator": agg_log,
            "aggregator_seconds": time.perf_counter() - t1,
        }

    def resume(self, ensemble: Ensemble, ctx: Context) -> ShardedUnlearner:
        """Continue from a saved ensemble (an ensemble checkpoint) instead of preparing: its shard graphs and
        sub-models are the state, so a later request retrains only the shards it touches. ``ctx.graph`` must be
        the union of the shard graphs; ``ctx.model`` may be any of the sub-models (it only sizes things)."""
        keys = np.concatenate([g.keys for g in ensemble.graphs])
        labels = np.concatenate([np.full(g.n_edges, k, dtype=np.int64) for k, g in enumerate(ensemble.graphs)])
        order = np.argsort(keys, kind="stable")
        if not np.array_equal(keys[order], ctx.graph.keys):
            raise UnlearnerError(f"{self.name}: the context's graph is not the ensemble's (union of its shards)")
        self.ctx = ctx
        self.prepare_seconds = 0.0
        self.state = ShardState(keys[order], labels[order], list(ensemble.graphs), list(ensemble.models), ensemble,
                                ensemble.user_home, [0.0] * ensemble.n_shards, {})
        self.prepare_log = {"resumed": {"n_shards": ensemble.n_shards}}
        return self

    @property
    def ensemble(self) -> Ensemble:
        """The served model of the current state (before any deletion: right after :meth:`prepare`)."""
        if self.state is None:
            raise UnlearnerError(f"{self.name}: call prepare(context) first")
        return self.state.ensemble

    def touched_shards(self, request: np.ndarray) -> np.ndarray:
        """Sorted ids of the shards holding edges of ``request``."""
        st = self.state
        return np.unique(edge_shards(st.keys, st.labels, request, self._require().graph.n_items))

    def _unlearn(self, request: np.ndarray, residual: Graph) -> Outcome:
        ctx = self._require()
        st = self.state
        req_labels = edge_shards(st.keys, st.labels, request, residual.n_items)
        touched = np.unique(req_labels)
        graphs, models, seconds = list(st.graphs), list(st.models), list(st.seconds)
        records = []
        t0 = time.perf_counter()
        for k in touched.tolist():
            mine = request[req_labels == k]
            graphs[k] = st.graphs[k].without(mine)
            models[k], rec = self._train_shard(ctx, graphs[k], k)
            seconds[k] = rec["seconds"]
            records.append(rec)
        train_seconds = time.perf_counter() - t0
        keep = np.isin(st.keys, residual.keys, assume_unique=True)
        t1 = time.perf_counter()
        rctx = Context(ctx.model, residual, ctx.data, ctx.config, ctx.progress)
        ensemble, agg_log = self._ensemble(rctx, graphs, models, st.user_home, residual)
        agg_seconds = time.perf_counter() - t1
        state = ShardState(st.keys[keep], st.labels[keep], graphs, models, ensemble, st.user_home, seconds,
                           {"aggregator": agg_log})
        log = {
            "shards_touched": {"count": len(touched), "ids": touched.tolist()},
            "n_shards": len(models),
            "shards": records,
            "shard_seconds": {int(r["shard"]): r["seconds"] for r in records},
            "edges_per_shard": [g.n_edges for g in graphs],
        }
        timings: dict[str, float] = {"train_seconds": train_seconds}
        if agg_log:
            log["aggregator"] = agg_log
            timings["aggregator_seconds"] = agg_seconds
        return self._outcome(ensemble, residual, request, log, state=state, **timings)

    def _apply(self, outcome: Outcome) -> None:
        self.state = outcome.state


@register
class Sisa(ShardedUnlearner):
    """SISA: random user shards, one sub-model each, scores averaged; a request retrains the shards it touches."""

    name = "sisa"
    paper = (
        "SISA (Bourtoule, Chandrasekaran, Choquette-Choo, Jia, Travers, Zhang, Lie, Papernot, 'Machine Unlearning', "
        "IEEE S&P 2021)"
    )
    Config = SisaConfig

    def _partition(self, ctx: Context) -> Partition:
        try:
            return partition_graph(ctx.graph, "random-user", self.config.n_shards, seed=self.config.seed)
        except ValueError as e:
            raise UnlearnerError(f"{self.name}: {e}") from None
