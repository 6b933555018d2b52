"""Process groups on ``torch.distributed``: one launcher for every multi-process path of the library.

Data-parallel training (DDP), sharded exact unlearning (one shard sub-model per rank) and the TorchRec
sharded tables all run as ``N`` ranks of one ``torch.distributed`` process group: gloo on CPU, NCCL on GPU.
Two ways in:

* :func:`launch` starts ``nproc`` local worker processes itself (``spawn``; file rendezvous in a private
  temporary folder, so no port is chosen and nothing outside the machine is reached), runs ``fn(ctx, *args)``
  in each and returns the per-rank results in rank order. A worker's exception is re-raised here with its
  rank; a worker that dies or overruns ``timeout`` stops the whole group.
* :func:`from_env` joins a group that ``torchrun`` (or any launcher setting ``RANK``, ``WORLD_SIZE``,
  ``MASTER_ADDR``, ``MASTER_PORT``) started, for several machines.

Results travel back through ``multiprocessing`` queues between processes this library started itself: they
are the library's own objects, never data from outside.
"""

from __future__ import annotations

import os
import queue
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class DistributedError(RuntimeError):
    """A rank failed, died or overran its time; the message names the rank and the cause."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in its group."""

    rank: int
    world_size: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one rank that writes checkpoints and results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_initialized()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` from rank ``src`` on every rank (used so that decisions, e.g. early stopping, agree)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]


SINGLE = DistContext(rank=0, world_size=1, backend="none", device=torch.device("cpu"))
"""The context of an ordinary single process."""


def default_backend(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: str | torch.device, rank: int) -> torch.device:
    """Rank ``r`` on a CUDA machine takes GPU ``r mod count``; CPU stays CPU."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", rank % torch.cuda.device_count())
    return dev


def threads_per_rank(nproc: int) -> int:
    """Split this machine's cores between the ranks (at least one each), so ranks do not oversubscribe."""
    return max(1, (os.cpu_count() or 1) // max(1, nproc))


def from_env(device: str | torch.device = "cpu", timeout_s: float = 600.0) -> DistContext:
    """Join the group described by ``torchrun``'s environment variables (single process when unset)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return SINGLE if torch.device(device).type == "cpu" else DistContext(0, 1, "none", torch.device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = rank_device(device, local)
    backend = default_backend(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # NCCL's object collectives use the current device
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank, world, backend, dev)


def _worker(
    rank: int,
    world: int,
    init_file: str,
    backend: str,
    device: str,
    threads: int,
    timeout_s: float,
    fn: Callable,
    args: tuple,
    results: Any,
    collected: Any,
) -> None:
    try:
        torch.set_num_threads(threads)
        dist.init_process_group(
            backend,
            init_method=f"file://{init_file}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout_s),
        )
        ctx = DistContext(rank, world, backend, rank_device(device, rank))
        if ctx.device.type == "cuda":
            torch.cuda.set_device(ctx.device)  # NCCL's object collectives use the current device
        out = fn(ctx, *args)
        results.put((rank, True, out))
        # Tensors in ``out`` travel as shared-memory handles that this process serves until the parent has
        # read them: stay alive until it has collected every rank's result.
        collected.wait(timeout_s)
    except BaseException as exc:  # reported to the parent with the rank, then this process exits
        results.put((rank, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"))
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a peer already gone: nothing left to tear down
                pass


def launch(
    fn: Callable[..., Any],
    nproc: int,
    *args: Any,
    device: str = "cpu",
    backend: str | None = None,
    threads: int | None = None,
    timeout_s: float = 3600.0,
) -> list[Any]:
    """Run ``fn(ctx, *args)`` on ``nproc`` local ranks of one process group and return their results by rank.

    ``fn`` must be importable (a module-level function) because workers are spawned. ``threads``: torch
    threads per rank (default: the machine's cores split between ranks). Raises :class:`DistributedError`
    naming the first failing rank.

    ``args`` are pickled to every rank; ``torch.multiprocessing`` moves torch tensors among them (a module's
    parameters too) into shared memory, so the ranks would all read and write one storage: pass numpy arrays
    (e.g. a state dict as numpy) for anything a rank modifies.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    backend = backend or default_backend(torch.device(device))
    threads = threads or threads_per_rank(nproc)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    collected = ctx.Event()
    with tempfile.TemporaryDirectory(prefix="unlearnrec-rdzv-") as tmp:
        init_file = str(Path(tmp) / "rendezvous")
        procs = [
            ctx.Process(
                target=_worker,
                args=(r, nproc, init_file, backend, device, threads, timeout_s, fn, args, results, collected),
                daemon=False,
            )
            for r in range(nproc)
        ]
        for p in procs:
            p.start()
        out: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        failure: str | None = None
        try:
            while len(out) < nproc and failure is None:
                try:
                    rank, ok, value = results.get(timeout=0.5)
                except queue.Empty:
                    dead = [
                        r
                        for r, p in enumerate(procs)
                        if not p.is_alive() and p.exitcode not in (0, None) and r not in out
                    ]
                    if dead:
                        failure = f"rank {dead[0]} died (exit code {procs[dead[0]].exitcode})"
                    elif time.monotonic() > deadline:
                        failure = f"ranks overran the {timeout_s:.0f} s limit"
                    continue
                if ok:
                    out[rank] = value
                else:
                    failure = f"rank {rank} failed: {value}"
        finally:
            collected.set()
            if failure is not None:
                for p in procs:
                    if p.is_alive():
                        p.terminate()
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
                    p.join()
        if failure is not None:
            raise DistributedError(failure)
    return [out[r] for r in range(nproc)]
