"""SISA (Bourtoule et al., "Machine Unlearning", IEEE S&P 2021) for recommenders, and the shard machinery
RecEraser shares.

* ``prepare``: the users are dealt at random into ``n_shards`` equal shards (seeded); each shard's sub-model
  (the context's backbone) is trained from scratch, with the context's recipe, on the edges of its users
  in ``ctx.graph`` (attacked edges included, in the adversarial scenario); the served model is the
  :class:`~unlearnrec.unlearning.partition.Ensemble` averaging the scores of the sub-models that hold the
  user (with a user partition: the user's own shard).
* ``unlearn``: the shards holding request edges are retrained on their residual edges (same recipe and
  seed); every other sub-model is reused as is (the very same object). Exact by construction: no sub-model
  ever saw a deleted edge. ``request_seconds`` is the touched shards' cost; ``prepare_seconds`` all shards'.

Sub-model ``k`` is initialised and sampled with seed ``recipe seed + k``, so retraining a shard whose data
did not change reproduces it.

Slicing (SISA's section IV-B, ``n_slices = R > 1``): each shard's edges are dealt at random (seeded) into
``R`` slices; the sub-model is trained incrementally in ``R`` stages, stage ``r`` on slices ``1..r`` (a
fresh Adam started from stage ``r − 1``'s weights, the recipe's early stopping, sampling seed derived from
``(shard seed, r)``), and the weights after every stage are checkpointed. A deletion whose earliest edge in
the shard lies in slice ``r`` restarts from the checkpoint after stage ``r − 1`` (the initialisation for the
first slice), which never saw a deleted edge, and retrains stages ``r..R``: a deletion in the last slice
retrains one stage, one in the first all of them. ``R = 1`` (the default) is plain SISA: one stage from the
initialisation. Checkpoints live in memory with the state; a state resumed from an ensemble checkpoint has
none, so its first deletion in a shard retrains that shard from the first slice.

Parallel shards (``workers > 1``): the sub-models of ``prepare``, and the touched shards of a request, train
at once on ``workers`` ranks of one ``torch.distributed`` group, shards dealt round-robin
(:mod:`~unlearnrec.unlearning.methods.sharded_parallel`, which says why ``torch.distributed`` and not Ray).
Each rank runs the same per-shard training with the same per-shard seed, so the sub-models equal the serial
ones (bit for bit at equal torch threads). One job, or ``workers = 1``, trains in this process.

Prepared state on disk (:meth:`ShardedUnlearner.save_prepared`, used by the bench's prepared cache): the
partition, every sub-model's weights and the subclass's aggregation (RecEraser's attention, GraphEraser's LBAggr
weights) as safetensors, the prepare log as JSON; reloaded only for the same graph. Not with slicing (the slice
checkpoints stay in memory).

Validation (early stopping and best-epoch selection) is per shard: the validation split restricted to the
users with training edges in the shard (a sub-model has only untrained embeddings for the other users,
whose recall would only add noise to the stopping signal); when that leaves nothing, the full split. The
items masked when ranking are the user's **full** training items (the whole training graph's, whichever
shard holds them, see :class:`~unlearnrec.training.Trainer`'s ``mask_edges``): with an item- or
interaction-based partition a user's training items in other shards would otherwise be ranked and counted
as misses, biasing early stopping towards under-trained sub-models.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from unlearnrec.config import YamlConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import resolve_device
from unlearnrec.unlearning.base import Context, Outcome, Unlearner, UnlearnerError, register
from unlearnrec.unlearning.methods.retrain import train_on
from unlearnrec.unlearning.methods.sharded_parallel import ShardJob, deal, train_shards
from unlearnrec.unlearning.partition import (
    Ensemble,
    Partition,
    edge_shards,
    partition_graph,
    shard_graphs,
    shard_models,
    shard_tensors,
)


class ShardTrainingConfig(YamlConfig):
    """How each sub-model is trained (``None`` keeps the recipe's); shared by SISA and RecEraser."""

    max_seconds: float | None = Field(None, gt=0)
    """Wall-clock budget of each sub-model's training (per slice stage; the best validation epoch so far is kept)."""
    epochs: int | None = Field(None, ge=1)
    """Most epochs per sub-model (per slice stage; default: the recipe's, with its early stopping)."""
    patience: int | None = Field(None, ge=1)
    """Validation evaluations without improvement before a sub-model stops (default: the recipe's)."""
    eval_every: int | None = Field(None, ge=1)
    """Epochs between a sub-model's validation evaluations (default: the recipe's)."""
    workers: int = Field(1, ge=1)
    """Sub-models trained at once, one ``torch.distributed`` rank each (1: one after another in this process)."""
    threads: int | None = Field(None, ge=1)
    """Torch threads of each worker rank (default: the machine's cores split between the workers)."""
    worker_timeout: float = Field(86_400.0, gt=0)
    """Seconds the worker ranks of one prepare or request may take before the group is stopped."""


class SisaConfig(ShardTrainingConfig):
    """SISA settings (``None`` keeps the recipe's)."""

    n_shards: int = Field(10, ge=1)
    """``S``: shards (sub-models); at most the number of users."""
    seed: int = 0
    """Seed of the random user partition (and of the slices)."""
    n_slices: int = Field(1, ge=1)
    """``R``: slices per shard, trained incrementally with a checkpoint after each (1: no slicing)."""


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
        slices: the slice of each edge (aligned with ``keys``; ``None`` without slicing).
        checkpoints: per shard, the weights after each slice stage (``None`` for a shard without them).
    """

    keys: np.ndarray
    labels: np.ndarray
    graphs: list[Graph]
    models: list[Any]
    ensemble: Ensemble
    user_home: np.ndarray | None = None
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    slices: np.ndarray | None = None
    checkpoints: list[list[dict[str, torch.Tensor]] | None] | None = None


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


def deal_slices(labels: np.ndarray, n_shards: int, n_slices: int, seed: int) -> np.ndarray:
    """Slice of each edge: within every shard its edges are dealt at random into ``n_slices`` slices whose
    sizes differ by at most one (seeded per shard, so a shard's deal does not depend on the others')."""
    slices = np.zeros(len(labels), np.int64)
    if n_slices == 1:
        return slices
    for k in range(n_shards):  # a loop over shards, not edges
        idx = np.flatnonzero(labels == k)
        perm = np.random.default_rng([seed, k, 7]).permutation(len(idx))
        slices[idx[perm]] = np.arange(len(idx), dtype=np.int64) % n_slices
    return slices


def _stage_seed(seed: int, stage: int) -> int:
    """Sampling seed of slice stage ``stage`` (stage 0: the shard seed itself, so ``R = 1`` is plain SISA)."""
    return int(seed) if stage == 0 else int(np.random.SeedSequence([int(seed), int(stage)]).generate_state(1)[0])


_EXECUTION_FIELDS = {"workers", "threads", "worker_timeout"}
_PREPARED_TENSORS, _PREPARED_JSON = "shards.safetensors", "shards.json"


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

    @classmethod
    def prepare_fields(cls) -> set[str]:
        return set(cls.Config.model_fields) - _EXECUTION_FIELDS  # how many workers does not change the result

    @property
    def n_slices(self) -> int:
        return int(getattr(self.config, "n_slices", 1))

    # ------------------------------------------------------------ shard training
    def _shard_seed(self, ctx: Context, k: int) -> int:
        return int(ctx.config.train.seed) + int(k)

    def _train_shard(self, ctx: Context, graph: Graph, k: int, full: Graph, slices: np.ndarray | None = None,
                     start: int = 0, checkpoints: list | None = None) -> tuple[Any, dict[str, Any], list | None]:
        """Sub-model of shard ``k`` trained on ``graph`` with the recipe; its record; its slice checkpoints.

        ``full``: the whole training graph (validation masks its edges, see the module docstring).
        ``slices``: the slice of each of ``graph``'s edges (sorted-key order; slicing only). Training starts
        at stage ``start`` from ``checkpoints[start - 1]`` (the initialisation when ``start == 0``).
        """
        c = self.config
        n_slices = self.n_slices
        seed = self._shard_seed(ctx, k)
        t0 = time.perf_counter()
        model = build_model(ctx.data.n_users, ctx.data.n_items, ctx.config.model)
        model.reset_parameters(torch.Generator().manual_seed(seed))
        model = model.to(resolve_device(ctx.config.train.device))
        start = int(start) if checkpoints is not None else 0
        if start > 0:
            model.load_state_dict(checkpoints[start - 1])
        kept = list(checkpoints[:start]) if checkpoints is not None else []
        if n_slices > 1 and (slices is None or len(slices) != graph.n_edges):
            raise UnlearnerError(f"{self.name}: shard {k} needs the slice of each of its edges")
        edges = graph.edges
        stages: list[dict[str, Any]] = []
        res = None
        for r in range(start, n_slices):
            sg = graph if n_slices == 1 else Graph(edges[slices <= r], graph.n_users, graph.n_items, graph.device)
            new_edges = graph.n_edges if n_slices == 1 else int((slices == r).sum())
            if sg.n_edges and new_edges:  # a slice stage with no new edge keeps the previous weights
                sctx = Context(ctx.model, sg, shard_validation(ctx.data, sg), ctx.config, ctx.progress)
                model, res = train_on(sctx, sg, model, epochs=c.epochs, max_seconds=c.max_seconds,
                                      seed=_stage_seed(seed, r), patience=c.patience, eval_every=c.eval_every,
                                      mask_graph=full)
                stages.append({"slice": r, "edges": sg.n_edges, "epochs_run": res.epochs_run,
                               "best_epoch": res.best_epoch, "stop_reason": res.stop_reason,
                               "best_valid": res.best_valid.get(ctx.config.train.monitor)})
            if n_slices > 1:
                kept.append({n: v.detach().cpu().clone() for n, v in model.state_dict().items()})
        model.eval()
        rec: dict[str, Any] = {"shard": k, "edges": graph.n_edges,
                               "epochs_run": sum(s["epochs_run"] for s in stages),
                               "best_epoch": res.best_epoch if res is not None else 0,
                               "best_valid": res.best_valid.get(ctx.config.train.monitor) if res is not None else None,
                               "stop_reason": res.stop_reason if res is not None else None}
        if n_slices > 1:
            rec.update(first_slice=start, stages_trained=len(stages), stages=stages)
        rec["seconds"] = time.perf_counter() - t0
        return model, rec, (kept if n_slices > 1 else None)

    def _train_jobs(self, ctx: Context, jobs: list[ShardJob], full: Graph) -> dict[int, tuple[Any, dict, list | None]]:
        """``{shard: (sub-model, record, checkpoints)}`` of ``jobs``: in this process one after another
        (``workers = 1`` or a single job), else on ``workers`` ranks at once (see the module docstring)."""
        workers = self.workers
        if workers <= 1 or len(jobs) <= 1:
            return {j.shard: self._train_shard(ctx, j.graph, j.shard, full, j.slices, start=j.start,
                                               checkpoints=j.checkpoints) for j in jobs}
        c = self.config
        return train_shards(self, ctx, jobs, full, workers, threads=c.threads, timeout_s=c.worker_timeout)

    @property
    def workers(self) -> int:
        """Worker ranks (1 for a config without the field, e.g. a subclass's own shard config)."""
        return int(getattr(self.config, "workers", 1))

    def _workers_log(self, jobs: list[ShardJob]) -> dict[str, Any]:
        n = max(1, min(self.workers, len(jobs)))
        return {"count": n, "shards_by_rank": [[jobs[j].shard for j in r] for r in deal(len(jobs), n)]}

    # ------------------------------------------------------------ Unlearner hooks
    def _prepare(self, ctx: Context) -> None:
        t0 = time.perf_counter()
        part = self._partition(ctx)
        t_part = time.perf_counter() - t0
        self.partition = part
        graphs = shard_graphs(ctx.graph, part.edge_labels, part.n_shards)
        slices = deal_slices(part.edge_labels, part.n_shards, self.n_slices, getattr(self.config, "seed", 0))
        jobs = [ShardJob(k, g, slices[part.edge_labels == k]) for k, g in enumerate(graphs)]
        trained = self._train_jobs(ctx, jobs, ctx.graph)
        models = [trained[k][0] for k in range(len(graphs))]
        records = [trained[k][1] for k in range(len(graphs))]
        ckpts = [trained[k][2] for k in range(len(graphs))]
        train_seconds = time.perf_counter() - t0 - t_part
        t1 = time.perf_counter()
        ensemble, agg_log = self._ensemble(ctx, graphs, models, part.user_labels, ctx.graph)
        self.state = ShardState(ctx.graph.keys.copy(), part.edge_labels.copy(), graphs, models, ensemble,
                                part.user_labels, [r["seconds"] for r in records], {"aggregator": agg_log},
                                slices if self.n_slices > 1 else None, ckpts if self.n_slices > 1 else None)
        self.prepare_log = {
            "partition": {"strategy": part.strategy, "n_shards": part.n_shards, "seconds": t_part, **part.info},
            "n_slices": self.n_slices,
            "shards": records,
            "shard_seconds": [r["seconds"] for r in records],
            "train_seconds": train_seconds,
            "workers": self._workers_log(jobs),
            "aggregator": agg_log,
            "aggregator_seconds": time.perf_counter() - t1,
        }

    def _ensemble_tensors(self, ensemble: Ensemble) -> dict[str, torch.Tensor]:
        """What :meth:`_restore_ensemble` needs besides the sub-models (SISA: nothing; see the subclasses)."""
        return {}

    def _restore_ensemble(self, ctx: Context, graphs: list[Graph], models: list, user_home,
                          tensors: dict[str, torch.Tensor]) -> Ensemble:
        """The served model of a saved prepared state (the inverse of :meth:`_ensemble_tensors`)."""
        return Ensemble(models, graphs, user_home=user_home)

    def save_prepared(self, directory) -> bool:
        """Save the prepared state (partition, every sub-model, the aggregation, the prepare log) into
        ``directory`` as safetensors and JSON, so a later run on the same original skips shard training. Not
        with slicing: the slice checkpoints are not saved (``False``: the caller keeps nothing)."""
        st = self.state
        if st is None or st.slices is not None:
            return False
        tensors = {"keys": torch.from_numpy(st.keys.astype(np.int64)),
                   "labels": torch.from_numpy(st.labels.astype(np.int64))}
        if st.user_home is not None:
            tensors["user_home"] = torch.from_numpy(np.asarray(st.user_home, np.int64))
        part = self.partition
        if part is not None and part.item_labels is not None:
            tensors["item_labels"] = torch.from_numpy(np.asarray(part.item_labels, np.int64))
        tensors.update(shard_tensors(st.models))
        for name, v in self._ensemble_tensors(st.ensemble).items():
            tensors[f"ensemble.{name}"] = v.detach().cpu().contiguous()
        save_file(tensors, str(Path(directory) / _PREPARED_TENSORS))
        from unlearnrec.report import to_jsonable

        meta = {"n_shards": len(st.models), "seconds": list(st.seconds), "extra": st.extra,
                "prepare_log": self.prepare_log,
                "partition": None if part is None else {"strategy": part.strategy, "n_shards": part.n_shards,
                                                        "info": part.info}}
        (Path(directory) / _PREPARED_JSON).write_text(json.dumps(to_jsonable(meta)))
        return True

    def load_prepared(self, ctx: Context, directory) -> bool:
        """Restore what :meth:`save_prepared` wrote; ``False`` when it is absent or not for ``ctx``'s graph."""
        path, mpath = Path(directory) / _PREPARED_TENSORS, Path(directory) / _PREPARED_JSON
        if self.n_slices > 1 or not path.is_file() or not mpath.is_file():
            return False
        tensors, meta = load_file(str(path)), json.loads(mpath.read_text())
        keys, labels = tensors["keys"].numpy(), tensors["labels"].numpy()
        n = int(meta["n_shards"])
        if not np.array_equal(keys, ctx.graph.keys) or len(labels) != len(keys):
            return False
        device = resolve_device(ctx.config.train.device)
        models = shard_models(tensors, n, ctx.data.n_users, ctx.data.n_items, ctx.config.model, device)
        home = tensors["user_home"].numpy() if "user_home" in tensors else None
        graphs = shard_graphs(ctx.graph, labels, n)
        ens = {name[len("ensemble."):]: v for name, v in tensors.items() if name.startswith("ensemble.")}
        ensemble = self._restore_ensemble(ctx, graphs, models, home, ens)
        self.state = ShardState(keys.copy(), labels.copy(), graphs, models, ensemble, home,
                                [float(x) for x in meta["seconds"]], dict(meta.get("extra") or {}))
        part = meta.get("partition")
        if part is not None:
            self.partition = Partition(part["strategy"], int(part["n_shards"]), labels.copy(), home,
                                       tensors["item_labels"].numpy() if "item_labels" in tensors else None,
                                       dict(part.get("info") or {}))
        self.prepare_log = dict(meta.get("prepare_log") or {})
        self.ctx = ctx
        return True

    def resume(self, ensemble: Ensemble, ctx: Context) -> ShardedUnlearner:
        """Continue from a saved ensemble (an ensemble checkpoint) instead of preparing: its shard graphs and
        sub-models are the state, so a later request retrains only the shards it touches. ``ctx.graph`` must be
        the union of the shard graphs; ``ctx.model`` may be any of the sub-models (it only sizes things). With
        slicing, the slices are dealt anew and no checkpoint exists: a shard's first retraining starts from
        its first slice."""
        keys = np.concatenate([g.keys for g in ensemble.graphs])
        labels = np.concatenate([np.full(g.n_edges, k, dtype=np.int64) for k, g in enumerate(ensemble.graphs)])
        order = np.argsort(keys, kind="stable")
        if not np.array_equal(keys[order], ctx.graph.keys):
            raise UnlearnerError(f"{self.name}: the context's graph is not the ensemble's (union of its shards)")
        self.ctx = ctx
        self.prepare_seconds = 0.0
        labels = labels[order]
        sliced = self.n_slices > 1
        self.state = ShardState(keys[order], labels, list(ensemble.graphs), list(ensemble.models), ensemble,
                                ensemble.user_home, [0.0] * ensemble.n_shards, {},
                                deal_slices(labels, ensemble.n_shards, self.n_slices, getattr(self.config, "seed", 0))
                                if sliced else None, [None] * ensemble.n_shards if sliced else None)
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
        keep = np.isin(st.keys, residual.keys, assume_unique=True)
        sliced = st.slices is not None
        req_slices = edge_shards(st.keys, st.slices, request, residual.n_items) if sliced else None
        new_slices = st.slices[keep] if sliced else None
        new_labels = st.labels[keep]
        graphs, models, seconds = list(st.graphs), list(st.models), list(st.seconds)
        ckpts = list(st.checkpoints) if sliced else None
        t0 = time.perf_counter()
        jobs = []
        for k in touched.tolist():
            graphs[k] = st.graphs[k].without(request[req_labels == k])
            if sliced:
                first = int(req_slices[req_labels == k].min())
                jobs.append(ShardJob(k, graphs[k], new_slices[new_labels == k], first, st.checkpoints[k]))
            else:
                jobs.append(ShardJob(k, graphs[k]))
        trained = self._train_jobs(ctx, jobs, residual)
        records = []
        for k in touched.tolist():
            models[k], rec, ck = trained[k]
            if sliced:
                ckpts[k] = ck
            seconds[k] = rec["seconds"]
            records.append(rec)
        train_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        rctx = Context(ctx.model, residual, ctx.data, ctx.config, ctx.progress)
        ensemble, agg_log = self._ensemble(rctx, graphs, models, st.user_home, residual)
        agg_seconds = time.perf_counter() - t1
        state = ShardState(st.keys[keep], new_labels, graphs, models, ensemble, st.user_home, seconds,
                           {"aggregator": agg_log}, new_slices, ckpts)
        log = {
            "shards_touched": {"count": len(touched), "ids": touched.tolist()},
            "n_shards": len(models),
            "shards": records,
            "shard_seconds": {int(r["shard"]): r["seconds"] for r in records},
            "edges_per_shard": [g.n_edges for g in graphs],
            "workers": self._workers_log(jobs),
        }
        if sliced:
            log["stages_trained"] = {int(r["shard"]): r["stages_trained"] for r in records}
        timings: dict[str, float] = {"train_seconds": train_seconds}
        if agg_log:
            log["aggregator"] = agg_log
            timings["aggregator_seconds"] = agg_seconds
        return self._outcome(ensemble, residual, request, log, state=state, **timings)

    def _apply(self, outcome: Outcome) -> None:
        self.state = outcome.state


@register
class Sisa(ShardedUnlearner):
    """SISA: random user shards (optionally sliced), one sub-model each, scores averaged; a request retrains the
    shards it touches (from the checkpoint before its earliest slice)."""

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
