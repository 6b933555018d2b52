"""Training loop: BPR batches, Adam, early stopping on VALIDATION, seeded, resumable.

Model selection never looks at the test split: the monitored metric (``recall@20`` by default) is computed
on the validation split with the user's training items masked, and the best validation epoch's weights
are the ones returned and checkpointed.

Data-parallel mode (a :class:`~unlearnrec.distributed.DistContext` of several ranks, as in PyTorch DDP, Li et al.,
VLDB 2020): the graph is replicated on every rank, every rank draws the same epoch batches (same per-epoch
generator) and computes the loss on its contiguous share of each batch, weighted by its share of the batch's size;
the summed gradients (one all-reduce per step) are exactly those of the single-process step on the whole batch,
uneven last batches included. This is exact for losses that are a mean over the batch's triples (BPR-MF,
LightGCN); the contrastive term of SGL/SimGCL is computed over each rank's share (the usual DDP approximation).
Rank 0 validates and decides early stopping, the time budget and callback stops, and broadcasts the decision;
:func:`run_data_parallel` runs :func:`unlearnrec.api.train` on ranks so that rank 0 alone writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as torch_dist
from tqdm.auto import tqdm

from unlearnrec.config import RunConfig, TrainConfig
from unlearnrec.data.interactions import Interactions, user_item_matrix
from unlearnrec.distributed import SINGLE, DistContext, from_env, launch
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch, Recommender
from unlearnrec.sampling import BPRSampler

EpochCallback = Callable[[int, dict, "Trainer"], Any]
"""Called after every epoch with ``(epoch, record, trainer)``; returning ``True`` stops training."""


def resolve_device(name: str) -> torch.device:
    """``cpu`` (default), ``cuda``/``cuda:N`` or ``auto`` (GPU where one exists)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA GPU is available")
    return dev


_DATA_PARALLEL: list[DistContext] = []


@contextlib.contextmanager
def data_parallel(ctx: DistContext) -> Iterator[DistContext]:
    """Within this block, a :class:`Trainer` built without ``dist`` trains data-parallel on ``ctx``'s group (how
    :func:`unlearnrec.api.train` is run on ranks). Opt-in: ranks that train independent models (partition shards)
    never enter it."""
    _DATA_PARALLEL.append(ctx)
    try:
        yield ctx
    finally:
        _DATA_PARALLEL.pop()


def all_reduce_sum(buffer: torch.Tensor) -> None:
    """Sum ``buffer`` across the ranks, in place (the one collective of a data-parallel step)."""
    torch_dist.all_reduce(buffer, op=torch_dist.ReduceOp.SUM)


def share(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` items (sizes differ by at most one; empty when ``n < world``)."""
    return slice(n * rank // world, n * (rank + 1) // world)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """Per-epoch generator derived from (seed, epoch): runs are reproducible and resumable mid-way."""
    return np.random.default_rng([seed, epoch])


@dataclass
class TrainState:
    """What a resumed run needs besides the weights."""

    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -np.inf
    bad_evals: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict
    epochs_run: int
    seconds: float
    stopped_early: bool
    history: list[dict]
    stop_reason: str = "epoch limit"
    """Why training ended: ``early stop`` (no validation improvement for ``patience`` evaluations),
    ``time budget`` (``max_seconds``), ``callback`` or ``epoch limit``."""

    def to_dict(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            "best_valid": self.best_valid,
            "epochs_run": self.epochs_run,
            "train_seconds": self.seconds,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
        }


def masks_for(data: Interactions, train_pairs: np.ndarray | None = None) -> dict[str, sp.csr_matrix]:
    """Truth and exclusion matrices: validation masks the training items; test masks train and validation."""
    train = data.train if train_pairs is None else train_pairs
    tr = user_item_matrix(train, data.n_users, data.n_items)
    va = user_item_matrix(data.valid, data.n_users, data.n_items)
    te = user_item_matrix(data.test, data.n_users, data.n_items)
    return {"valid_truth": va, "valid_exclude": tr, "test_truth": te, "test_exclude": (tr + va).sign().tocsr()}


class Trainer:
    """Trains a :class:`Recommender` on a graph's edges with early stopping on validation.

    Args:
        model: the backbone (its parameters are trained in place; the best epoch's are restored at the end).
        data: the dataset (validation and test splits, sizes).
        config: optimisation settings.
        graph: the training graph (default: built from ``data.train``); its edges are the BPR positives.
        callbacks: per-epoch hooks.
        progress: show a progress bar (default: only when stderr is a terminal).
        mask_edges: the training pairs masked when ranking for validation and test (default: ``graph``'s
            edges). A model trained on part of the training graph (a partition method's shard) is validated
            like the full model when this is the full training graph's edges: a user's training items held by
            other shards are then neither ranked nor counted as misses.
        dist: the process group to train data-parallel on (default: the enclosing :func:`data_parallel` block's,
            else a single process). Every rank must build its trainer with the same model, data and config.
    """

    def __init__(
        self,
        model: Recommender,
        data: Interactions,
        config: TrainConfig,
        graph: Graph | None = None,
        callbacks: list[EpochCallback] | None = None,
        progress: bool | None = None,
        mask_edges: np.ndarray | None = None,
        dist: DistContext | None = None,
    ):
        self.dist = dist or (_DATA_PARALLEL[-1] if _DATA_PARALLEL else SINGLE)
        self.device = self.dist.device if self.dist.distributed else resolve_device(config.device)
        self.model = model.to(self.device)
        self.data = data
        self.config = config
        self.graph = (graph or Graph(data.train, data.n_users, data.n_items)).to(self.device)
        self.sampler = BPRSampler(self.graph.edges, data.n_items)
        self.masks = masks_for(data, self.graph.edges if mask_edges is None else np.asarray(mask_edges))
        self.callbacks = list(callbacks or [])
        self.progress = (sys.stderr.isatty() if progress is None else progress) and self.dist.is_main
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.state = TrainState()
        self.best_weights: dict[str, torch.Tensor] | None = None

    # ----------------------------------------------------------- evaluation
    def validate(self) -> dict:
        u, i = self.model.embeddings(self.graph)
        return evaluate_ranking(
            u, i, self.masks["valid_truth"], self.masks["valid_exclude"], ks=self.config.ks
        ).metrics

    def test(self) -> dict:
        u, i = self.model.embeddings(self.graph)
        return evaluate_ranking(u, i, self.masks["test_truth"], self.masks["test_exclude"], ks=self.config.ks).metrics

    # ------------------------------------------------------------- training
    def train_epoch(self, epoch: int) -> dict:
        rng = epoch_rng(self.config.seed, epoch)
        torch.manual_seed(int(rng.integers(2**62)))
        self.model.train()
        self.model.start_epoch(self.graph, rng)
        totals: dict[str, float] = {}
        n = 0
        for batch in self.sampler.epoch(self.config.batch_size, rng, self.device):
            if self.dist.distributed:
                loss, parts = self._parallel_step(batch)
                totals["loss"] = totals.get("loss", 0.0) + loss
                for k, v in parts.items():
                    totals[k] = totals.get(k, 0.0) + v
                n += 1
                continue
            loss, parts = self.model.loss(batch, self.graph)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
            n += 1
        return {k: v / max(1, n) for k, v in totals.items()}

    def _parallel_step(self, batch: Batch) -> tuple[float, dict[str, float]]:
        """One data-parallel step: this rank's share of ``batch``, weighted by its size, then one all-reduce of
        the gradients (and the logged loss parts) so that every rank applies the whole batch's gradient."""
        sl = share(len(batch), self.dist.rank, self.dist.world_size)
        weight = (sl.stop - sl.start) / len(batch)
        local = Batch(batch.users[sl], batch.pos[sl], batch.neg[sl]) if weight else batch  # weight 0: zero grads
        loss, parts = self.model.loss(local, self.graph)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        logged = torch.tensor([float(loss.detach()), *parts.values()], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [logged * weight])
        all_reduce_sum(flat)
        start = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[start : start + g.numel()].view_as(g)
            start += g.numel()
        self.optimizer.step()
        summed = flat[start:].tolist()
        return summed[0], dict(zip(parts, summed[1:], strict=True))

    def _sync_from_main(self) -> None:
        """Every rank starts from rank 0's weights, optimiser moments and state (e.g. rank 0 resumed a run)."""
        def cpu(sd: dict) -> dict:
            return {k: v.detach().cpu() for k, v in sd.items()}

        opt = self.optimizer.state_dict()
        opt["state"] = {i: {k: v.cpu() if torch.is_tensor(v) else v for k, v in st.items()}
                        for i, st in opt["state"].items()}
        best = None if self.best_weights is None else cpu(self.best_weights)
        model, opt, state, best = self.dist.broadcast_object((cpu(self.model.state_dict()), opt, self.state, best))
        self.model.load_state_dict(model)
        self.optimizer.load_state_dict(opt)  # moves the moments to the parameters' device
        self.state = state
        self.best_weights = None if best is None else {k: v.to(self.device) for k, v in best.items()}

    def fit(self) -> TrainResult:
        if self.dist.distributed:
            self._sync_from_main()
        cfg, st = self.config, self.state
        if self.best_weights is None:
            self.best_weights = copy.deepcopy(self.model.state_dict())
        stopped, reason = False, "epoch limit"
        start_epoch = st.epoch
        bar = tqdm(
            range(start_epoch + 1, cfg.epochs + 1),
            desc=f"train {self.model.name}",
            disable=not self.progress,
            leave=False,
            initial=start_epoch,
            total=cfg.epochs,
        )
        for epoch in bar:
            t0 = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch)}
            record["train_seconds"] = time.perf_counter() - t0
            if not len(self.data.valid):  # no validation split (e.g. a refit on train+valid): keep the last epoch
                st.best_epoch = epoch
                self.best_weights = None
            elif epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                t1 = time.perf_counter()
                valid = self.dist.broadcast_object(self.validate() if self.dist.is_main else None)
                record["valid"] = valid
                record["eval_seconds"] = time.perf_counter() - t1
                score = valid[cfg.monitor]
                if score > st.best_score:
                    st.best_score, st.best_epoch, st.bad_evals = score, epoch, 0
                    self.best_weights = copy.deepcopy(self.model.state_dict())
                else:
                    st.bad_evals += 1
                bar.set_postfix(loss=f"{record['loss']:.4f}", **{cfg.monitor: f"{score:.4f}"}, best=st.best_epoch)
            st.epoch = epoch
            st.seconds += time.perf_counter() - t0
            st.history.append(record)
            halt = any(cb(epoch, record, self) is True for cb in self.callbacks)
            if self.dist.distributed:  # rank 0's clock and callbacks decide for every rank
                halt, st.seconds = self.dist.broadcast_object((halt, st.seconds))
            if st.bad_evals >= cfg.patience:
                stopped, reason = True, "early stop"
                break
            if halt:
                reason = "callback"
                break
            if cfg.max_seconds is not None and st.seconds >= cfg.max_seconds and epoch < cfg.epochs:
                reason = "time budget"
                break
        bar.close()
        if self.best_weights is None:
            self.best_weights = copy.deepcopy(self.model.state_dict())
        best_valid = next((r["valid"] for r in st.history if r["epoch"] == st.best_epoch and "valid" in r), {})
        return TrainResult(st.best_epoch, best_valid, st.epoch, st.seconds, stopped, st.history, reason)

    def restore_best(self) -> None:
        """Load the best validation epoch's weights into the model."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)


# ------------------------------------------------------------------ resume support
def trainer_state_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Current weights and optimiser moments as flat tensors (for ``train_state.safetensors``)."""
    out = {f"current.{k}": v for k, v in trainer.model.state_dict().items()}
    for idx, st in trainer.optimizer.state_dict()["state"].items():
        for key, val in st.items():
            out[f"optim.{idx}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
    return out


def trainer_state_meta(trainer: Trainer) -> dict:
    st = trainer.state
    return {
        "epoch": st.epoch,
        "best_epoch": st.best_epoch,
        "best_score": st.best_score,
        "bad_evals": st.bad_evals,
        "seconds": st.seconds,
        "history": st.history,
    }


def restore_trainer(
    trainer: Trainer, tensors: dict[str, torch.Tensor], meta: dict, best: dict[str, torch.Tensor]
) -> None:
    """Put a trainer back where :func:`trainer_state_tensors` / :func:`trainer_state_meta` left it."""
    current = {k[len("current.") :]: v for k, v in tensors.items() if k.startswith("current.")}
    trainer.model.load_state_dict(current)
    opt = trainer.optimizer.state_dict()
    state: dict[int, dict] = {}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val.to(trainer.device) if name != "step" else val
    opt["state"] = state
    trainer.optimizer.load_state_dict(opt)
    trainer.best_weights = {k: v.to(trainer.device) for k, v in best.items()}
    trainer.state = TrainState(
        epoch=int(meta["epoch"]),
        best_epoch=int(meta["best_epoch"]),
        best_score=float(meta["best_score"]) if meta["best_score"] is not None else -np.inf,
        bad_evals=int(meta["bad_evals"]),
        seconds=float(meta["seconds"]),
        history=list(meta.get("history", [])),
    )


# ------------------------------------------------------------------ data-parallel runs on local ranks or torchrun
def under_torchrun() -> bool:
    """Whether this process is one rank of a group that ``torchrun`` started (``WORLD_SIZE`` > 1)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _parallel_device(device: str, nproc: int) -> str:
    dev = resolve_device(device)
    if dev.type == "cuda" and torch.cuda.device_count() < nproc:
        raise ValueError(f"nproc {nproc} needs {nproc} GPUs (one per rank), found {torch.cuda.device_count()}")
    return str(dev)


def _numpy_state(model: Recommender) -> dict[str, np.ndarray]:
    """Weights as numpy arrays: they travel between processes by value (a tensor handed to a spawned process is
    moved to shared memory by ``torch.multiprocessing``, and every rank's optimiser would then step the same
    storage)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def run_data_parallel(
    config: RunConfig,
    out: str | Path | None = None,
    nproc: int = 1,
    *,
    data: Interactions | None = None,
    graph_edges: np.ndarray | None = None,
    progress: bool | None = None,
    callbacks: list[EpochCallback] | None = None,
    resume: bool = False,
    force: bool = False,
    threads: int | None = None,
    timeout_s: float = 24 * 3600.0,
) -> dict[str, Any]:
    """:func:`unlearnrec.api.train` data-parallel on ``nproc`` local ranks (gloo on CPU, NCCL with one GPU per
    rank), or on the ranks of the enclosing ``torchrun`` group; ``nproc == 1`` outside torchrun is exactly
    ``api.train``.

    Rank 0 alone writes ``out`` (the usual checkpoint) and runs ``callbacks`` (which must be picklable
    module-level functions when ranks are spawned). Returns rank 0's result; with spawned ranks its
    ``model_object`` is rebuilt here from rank 0's weights and the graph and data objects are left out.
    """
    from unlearnrec import api

    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    if under_torchrun():
        ctx = from_env(str(resolve_device(config.train.device)))
        return _train_rank(ctx, config, out, data, graph_edges, progress, callbacks, resume, force, keep=True)
    if nproc == 1:
        return api.train(config, out, data=data, graph_edges=graph_edges, progress=progress, callbacks=callbacks,
                         resume=resume, force=force)
    if not resume:
        api.check_out(out, force, "a checkpoint")  # refused here, in one line, before any rank starts
    device = _parallel_device(config.train.device, nproc)
    results = launch(_train_rank, nproc, config, out, data, graph_edges, progress, callbacks, resume, force,
                     device=device, threads=threads, timeout_s=timeout_s)
    summary = results[0]
    from unlearnrec.models import build_model

    model = build_model(summary["dataset"]["n_users"], summary["dataset"]["n_items"], config.model)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in summary.pop("state").items()})
    summary["model_object"] = model
    return summary


def _train_rank(ctx: DistContext, config: RunConfig, out, data, graph_edges, progress, callbacks, resume, force,
                keep: bool = False) -> dict[str, Any]:
    """One rank of :func:`run_data_parallel`: ``api.train`` with the checkpoint, callbacks and progress bar on
    rank 0 only; the other ranks start from rank 0's state (a resumed run included)."""
    from unlearnrec import api

    main = ctx.is_main
    if resume and not main and data is None and config.data.source is not None and out is not None:
        from unlearnrec.checkpoint import load_checkpoint

        previous = load_checkpoint(out)  # own files: the data the run started with, as rank 0 reads it
        data = previous.data() if previous.has_data else None
    with data_parallel(ctx):
        res = api.train(config, out if main else None, data=data, graph_edges=graph_edges,
                        progress=bool(progress) and main, callbacks=list(callbacks or []) if main else None,
                        resume=resume and main, force=force)
    res["distributed"] = {"nproc": ctx.world_size, "backend": ctx.backend, "rank": ctx.rank}
    if keep:
        return res
    model = res.pop("model_object")
    res.pop("graph_object", None)
    res.pop("data_object", None)
    res["state"] = _numpy_state(model) if main else None
    return res


def fit_data_parallel(
    nproc: int,
    model: Recommender,
    data: Interactions,
    config: TrainConfig,
    graph: Graph,
    mask_edges: np.ndarray | None = None,
    *,
    threads: int | None = None,
    timeout_s: float = 24 * 3600.0,
) -> TrainResult:
    """``Trainer(model, ...).fit()`` then ``restore_best()``, data-parallel on ``nproc`` local ranks: ``model``
    ends with rank 0's best validation weights (identical on every rank) and rank 0's :class:`TrainResult` is
    returned."""
    device = _parallel_device(config.device, nproc)
    state, result = launch(_fit_rank, nproc, model.config, _numpy_state(model), data, config, graph.edges,
                           mask_edges, device=device, threads=threads, timeout_s=timeout_s)[0]
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(torch.from_numpy(state[k]))
    return result


def _fit_rank(ctx: DistContext, model_config, state, data, config, edges, mask_edges):
    from unlearnrec.models import build_model

    model = build_model(data.n_users, data.n_items, model_config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    trainer = Trainer(model, data, config, graph=Graph(edges, data.n_users, data.n_items), progress=False,
                      mask_edges=mask_edges, dist=ctx)
    result = trainer.fit()
    trainer.restore_best()
    return (_numpy_state(trainer.model), result) if ctx.is_main else (None, None)
