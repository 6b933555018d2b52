"""Epoch time of data-parallel LightGCN training (torch.distributed) at 1 and N processes, side by side.

The ML-1M recipe of ``benchmarks/configs/ml1m.yaml`` (batch 8192, d = 64, 3 layers), the same epochs, blocks
interleaved (1 process, N ranks, 1 process, ...) so that machine noise hits both alike. Each rank replicates the
graph and propagates all of it for its share of every batch, so on one machine data parallelism buys little:
the full-graph propagation, most of an epoch, is done by every rank, and only the per-triple loss is split. The
one-process run is timed with 1 thread and with all the ranks' threads together (the fair comparison).

    python benchmarks/ddp_speed.py --nprocs 1,2 --epochs 3 --repeats 2           # on a quiet machine
    python benchmarks/ddp_speed.py --smoke                                       # 1 epoch, synthetic data
    python benchmarks/ddp_speed.py --device cuda --nprocs 1,2,4 --threads 1      # one GPU per rank (NCCL)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import record

from unlearnrec import api, training
from unlearnrec.config import RunConfig
from unlearnrec.distributed import SINGLE, launch
from unlearnrec.models import build_model
from unlearnrec.report import format_table
from unlearnrec.training import Trainer

CONFIG = Path(__file__).resolve().parent / "configs" / "ml1m.yaml"


def timed_epochs(ctx, cfg: RunConfig, first_epoch: int, epochs: int) -> dict:
    """Train ``epochs`` epochs on this rank; seconds per epoch and the time spent in the gradient all-reduce."""
    data = api.load_data(cfg)
    model = build_model(data.n_users, data.n_items, cfg.model)
    model.reset_parameters(torch.Generator().manual_seed(cfg.train.seed))
    trainer = Trainer(model, data, cfg.train, progress=False, dist=None if ctx is SINGLE else ctx)
    reduce_s = [0.0]
    real = training.all_reduce_sum

    def timed(buffer: torch.Tensor) -> None:
        t0 = time.perf_counter()
        real(buffer)
        reduce_s[0] += time.perf_counter() - t0

    training.all_reduce_sum = timed
    seconds, losses = [], []
    for e in range(first_epoch, first_epoch + epochs):
        ctx.barrier()
        t0 = time.perf_counter()
        losses.append(trainer.train_epoch(e)["loss"])
        seconds.append(time.perf_counter() - t0)
    training.all_reduce_sum = real
    return {
        "epoch_seconds": seconds,
        "allreduce_seconds": reduce_s[0],
        "loss": losses,
        "threads": torch.get_num_threads(),
        "batches": trainer.sampler.n_batches(cfg.train.batch_size),
    }


def run_block(cfg: RunConfig, nproc: int, threads: int, first_epoch: int, epochs: int, device: str) -> dict:
    if nproc == 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return timed_epochs(SINGLE, cfg, first_epoch, epochs)
        finally:
            torch.set_num_threads(before)
    return launch(timed_epochs, nproc, cfg, first_epoch, epochs, device=device, threads=threads)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--nprocs", default="1,2", help="process counts to compare (1 is the baseline)")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per block")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved blocks per setting")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="synthetic data, 1 epoch, 1 repeat (proves it runs)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args()
    nprocs = sorted({int(x) for x in args.nprocs.split(",")} | {1})
    cfg = RunConfig.load(args.config).with_overrides([*args.overrides, f"train.device={args.device}"])
    if args.smoke:
        cfg = cfg.with_overrides({"data.dataset": "synthetic", "train.batch_size": 1024})
        args.epochs, args.repeats = 1, 1
    settings = [(1, args.threads)] + [(n, args.threads) for n in nprocs if n > 1]
    if args.device == "cpu" and max(nprocs) * args.threads > args.threads:
        settings.insert(1, (1, max(nprocs) * args.threads))  # one process with every rank's threads
    times: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    detail: dict[str, list[dict]] = {f"{n}x{t}": [] for n, t in settings}
    epoch = 1
    for r in range(args.repeats):
        for n, t in settings:
            out = run_block(cfg, n, t, epoch, args.epochs, args.device)
            times[n, t] += out["epoch_seconds"]
            detail[f"{n}x{t}"].append(out)
            print(
                f"repeat {r}: {n} process(es) x {t} thread(s): "
                + ", ".join(f"{s:.2f}" for s in out["epoch_seconds"])
                + f" s/epoch (all-reduce "
                f"{out['allreduce_seconds']:.2f} s)",
                flush=True,
            )
        epoch += args.epochs
    base = statistics.median(times[1, args.threads])
    rows = [
        {
            "processes": n,
            "threads per process": t,
            "median s/epoch": statistics.median(v),
            "min s/epoch": min(v),
            "epochs timed": len(v),
            "speed-up vs 1 process x 1 thread": base / statistics.median(v),
            "all-reduce s/epoch (incl. waiting)": sum(d["allreduce_seconds"] for d in detail[f"{n}x{t}"]) / len(v),
        }
        for (n, t), v in times.items()
    ]
    title = (
        f"{cfg.model.name} on {cfg.data.dataset}: epoch time by data-parallel processes (batch "
        f"{cfg.train.batch_size}, d {cfg.model.embedding_size}, {cfg.model.n_layers} layers, {args.device})"
    )
    table = format_table(rows, title=title)
    print(table)
    name = "ddp_speed_smoke" if args.smoke else f"ddp_speed_{cfg.data.dataset.replace('-', '')}_{cfg.model.name}"
    note = (
        "Each rank propagates the whole graph for its share of every batch (the graph is replicated), so the "
        "propagation, most of an epoch, is not divided between ranks; only the per-triple loss and the "
        "sampler's work are. On a machine with C cores, N ranks x 1 thread compete with 1 process x N threads."
    )
    record(
        name,
        {
            "config": cfg.model_dump(mode="json"),
            "settings": rows,
            "blocks": detail,
            "epochs_per_block": args.epochs,
            "repeats": args.repeats,
            "note": note,
        },
        table + "\n\n" + note,
    )
    print(f"recorded benchmarks/results/{name}.json")


if __name__ == "__main__":
    main()
