"""Shard sub-models trained in parallel, one ``torch.distributed`` rank per worker (SISA, RecEraser).

SISA's shards are independent by construction (Bourtoule et al., IEEE S&P 2021, section IV: "each shard's
model is trained in isolation"), so the sub-models of a prepare, or the touched shards of a request, can
train concurrently. :func:`train_shards` deals the shard jobs round-robin to ``workers`` ranks started by the
library's one launcher, :func:`unlearnrec.distributed.launch`, and returns each shard's sub-model, record and
slice checkpoints exactly as the serial :meth:`~unlearnrec.unlearning.methods.sisa.ShardedUnlearner._train_shard`
would: a worker runs that very method with the shard's seed (``recipe seed + k``) on the shard's own edges,
so the result depends on the shard, never on which rank trained it. Bit-identity with the serial run holds
when both use the same number of torch threads (CPU kernels may sum in another order with another count;
the tests pin one thread on both sides).

Transport: the parent writes one safetensors file per job (the shard's edge keys, its slices and slice
checkpoints) into a private temporary folder, and every rank reads only the files of its own shards; a rank
writes each trained sub-model (and its slice checkpoints) as a safetensors file the parent loads, and sends
back only the small JSON-safe training record. Every rank receives the dataset once (it validates on it) and
the full graph's edge keys once (validation masks them); no rank receives the other ranks' shards, and the
parent never holds more than one copy of anything but the returned weights. Files rather than tensors on the
queue: a shared-memory tensor must outlive its sender until the parent has received it, a file does not,
and writing a few MB is negligible next to training.

Why ``torch.distributed`` rather than Ray: no new dependency; one launcher for DDP training, these shard
workers and the TorchRec sharded tables; ``torchrun`` for several machines. Ray's cluster start measured
11-14 s on this machine, and what it would add (scheduling across heterogeneous nodes, task retries) is not
needed for a fixed shard-to-worker mapping.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from unlearnrec.config import RunConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.distributed import DistContext, launch
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import resolve_device
from unlearnrec.unlearning.base import Context


@dataclass
class ShardJob:
    """One sub-model to (re)train: shard ``shard`` on ``graph``; slicing: the slice of each of its edges,
    the stage to start at and the checkpoints before it (see ``ShardedUnlearner._train_shard``)."""

    shard: int
    graph: Graph
    slices: np.ndarray | None = None
    start: int = 0
    checkpoints: list[dict[str, torch.Tensor]] | None = None


@dataclass(frozen=True)
class _Batch:
    """What every rank receives (small: no shard's edges, only the paths of the job files)."""

    method: type
    config: dict[str, Any]
    run_config: RunConfig
    data: Interactions
    full_keys: np.ndarray
    jobs: list[tuple[int, str]]  # (shard, job file), in job order
    assignment: list[list[int]]  # job indices per rank
    folder: str


def deal(n_jobs: int, workers: int) -> list[list[int]]:
    """Job indices of each of ``workers`` ranks, dealt round-robin (rank ``r`` gets jobs ``r, r + W, ...``)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return [list(range(r, n_jobs, workers)) for r in range(workers)]


def _write_job(path: Path, job: ShardJob) -> None:
    tensors = {"keys": torch.from_numpy(np.ascontiguousarray(job.graph.keys, np.int64))}
    if job.slices is not None:
        tensors["slices"] = torch.from_numpy(np.ascontiguousarray(job.slices, np.int64))
    n_ckpt = 0
    if job.checkpoints is not None:
        n_ckpt = len(job.checkpoints)
        for s, state in enumerate(job.checkpoints[: job.start]):
            tensors.update({f"ckpt.{s}.{n}": v.detach().cpu().contiguous() for n, v in state.items()})
    meta = {
        "shard": str(job.shard),
        "start": str(job.start),
        "has_checkpoints": str(job.checkpoints is not None),
        "n_checkpoints": str(n_ckpt),
    }
    save_file(tensors, str(path), metadata=meta)


def _read_job(path: str, n_users: int, n_items: int) -> tuple[int, Graph, np.ndarray | None, int, list | None]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    t = load_file(path)
    graph = Graph._from_keys(t["keys"].numpy(), n_users, n_items, torch.device("cpu"))
    slices = t["slices"].numpy() if "slices" in t else None
    start = int(meta["start"])
    ckpts = None
    if meta["has_checkpoints"] == "True":
        ckpts = [{} for _ in range(start)]
        for name, v in t.items():
            if name.startswith("ckpt."):
                _, s, n = name.split(".", 2)
                ckpts[int(s)][n] = v
    return int(meta["shard"]), graph, slices, start, ckpts


def _rank_main(dctx: DistContext, batch: _Batch) -> list[tuple[int, dict[str, Any], str]]:
    """Train this rank's shards; write each sub-model as a safetensors file; return ``(shard, record, file)``."""
    unlearner = batch.method(batch.config)
    train = batch.run_config.train.model_copy(update={"device": str(dctx.device)})  # GPU r mod count, or CPU
    cfg = batch.run_config.model_copy(update={"train": train})
    n_users, n_items = batch.data.n_users, batch.data.n_items
    full = Graph._from_keys(batch.full_keys, n_users, n_items, torch.device("cpu"))
    ctx = Context(None, full, batch.data, cfg, False)
    out = []
    for j in batch.assignment[dctx.rank]:
        shard, path = batch.jobs[j]
        k, graph, slices, start, ckpts = _read_job(path, n_users, n_items)
        if k != shard:
            raise RuntimeError(f"job file {path} holds shard {k}, expected shard {shard}")
        t0 = time.time()
        model, rec, kept = unlearner._train_shard(ctx, graph, k, full, slices, start=start, checkpoints=ckpts)
        rec["worker"] = {
            "rank": dctx.rank,
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
            "started": t0,
            "finished": time.time(),
        }
        tensors = {f"model.{n}": v.detach().cpu().contiguous() for n, v in model.state_dict().items()}
        for s, state in enumerate(kept or []):
            tensors.update({f"ckpt.{s}.{n}": v.contiguous() for n, v in state.items()})
        res = str(Path(batch.folder) / f"result-{k}.safetensors")
        save_file(tensors, res, metadata={"shard": str(k), "n_checkpoints": str(len(kept or []))})
        out.append((k, rec, res))
    return out


def train_shards(
    unlearner,
    ctx: Context,
    jobs: list[ShardJob],
    full: Graph,
    workers: int,
    threads: int | None = None,
    timeout_s: float = 86_400.0,
) -> dict[int, tuple[Any, dict, list | None]]:
    """``{shard: (sub-model, record, slice checkpoints)}`` for ``jobs``, trained on ``workers`` ranks at once.

    ``full``: the whole training graph (validation masks its edges). ``threads``: torch threads per rank
    (default: the machine's cores split between the ranks). Each record gains ``worker`` (rank, pid, threads,
    start and end wall-clock times). Raises :class:`~unlearnrec.distributed.DistributedError` naming the rank
    that failed.
    """
    shards = [j.shard for j in jobs]
    if len(set(shards)) != len(shards):
        raise ValueError(f"a shard appears twice among the jobs: {shards}")
    nproc = max(1, min(int(workers), len(jobs)))
    device = resolve_device(ctx.config.train.device)
    out: dict[int, tuple[Any, dict, list | None]] = {}
    with tempfile.TemporaryDirectory(prefix="unlearnrec-shards-") as tmp:
        files = []
        for j in jobs:
            path = Path(tmp) / f"job-{j.shard}.safetensors"
            _write_job(path, j)
            files.append((j.shard, str(path)))
        batch = _Batch(
            type(unlearner),
            unlearner.config.model_dump(),
            ctx.config,
            ctx.data,
            full.keys,
            files,
            deal(len(jobs), nproc),
            tmp,
        )
        per_rank = launch(_rank_main, nproc, batch, device=str(device), threads=threads, timeout_s=timeout_s)
        for results in per_rank:
            for k, rec, res in results:
                t = load_file(res)
                model = build_model(ctx.data.n_users, ctx.data.n_items, ctx.config.model)
                model.load_state_dict({n[len("model.") :]: v for n, v in t.items() if n.startswith("model.")})
                model = model.to(device).eval()
                out[k] = (model, rec, _checkpoints(t) or None)
    missing = sorted(set(shards) - set(out))
    if missing:
        raise RuntimeError(f"no sub-model came back for shard(s) {missing}")
    return out


def _checkpoints(t: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    stages: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in t.items():
        if name.startswith("ckpt."):
            _, s, n = name.split(".", 2)
            stages.setdefault(int(s), {})[n] = v
    return [stages[s] for s in sorted(stages)]
