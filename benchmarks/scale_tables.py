"""LightGCN tables row-wise sharded with TorchRec on ``--nproc`` gloo ranks vs the in-memory model (issue 16).

A LightGCN (``--dim``, ``--layers``; weights seeded at random: timings and equalities do not depend on training)
on ``--dataset``'s training graph is saved as a checkpoint and sharded from it (each rank reads its rows). On
each rank, one torch thread each, median of ``--repeats``:

* ``build``: ``DistributedModelParallel`` set-up plus loading the rows from the checkpoint;
* ``lookup``: ``--seeds`` random layer-0 rows through TorchRec's all-to-all;
* ``embed``: their final embeddings over their ``L``-hop subgraph (sampling + lookup + propagation), and the
  max abs difference to the in-memory model's full-graph embeddings;
* ``train_step``: one fused row-wise-Adagrad BPR step on a ``--batch`` triple batch per rank;
* ``write``: unlearning writes: the fresh rows of ``--erase`` users, and every row (what an encoder pass with
  its global offset writes), each with the optimizer-state reset.

In-memory reference, in this process with one thread: a full-graph propagation and one BPR forward+backward
on the ranks' combined batch. Ratios are side by side in one run; the load average is recorded.

    UNLEARNREC_DATA=../shared/data nice -n 5 python benchmarks/scale_tables.py --dataset ml-1m --name scale_tables_ml1m

``--smoke``: a small synthetic dataset (checks the script; writes under ``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, record

from unlearnrec import api
from unlearnrec.checkpoint import save_checkpoint
from unlearnrec.config import DataConfig, ModelConfig, RunConfig
from unlearnrec.distributed import launch
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.models.base import Batch
from unlearnrec.report import format_table
from unlearnrec.sampling import BPRSampler


def _median_time(fn, repeats: int, barrier=None) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        if barrier:
            barrier()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _rank(ctx, ckpt, edges, n_users, n_items, seeds, batches, erase, repeats):
    from unlearnrec.scale.tables import ShardedLightGCN

    graph = Graph(edges, n_users, n_items)
    t0 = time.perf_counter()
    import torchrec.distributed.model_parallel  # noqa: F401 - timed apart from the build

    ctx.barrier()
    t1 = time.perf_counter()
    tables = ShardedLightGCN.from_checkpoint(ctx, ckpt)
    ctx.barrier()
    out = {"import_s": t1 - t0, "build_s": time.perf_counter() - t1, "load_start": os.getloadavg()[0]}
    s = torch.as_tensor(seeds[ctx.rank])
    out["lookup_s"], _ = _median_time(lambda: tables.lookup(s), repeats, ctx.barrier)
    out["embed_s"], emb = _median_time(lambda: tables.embed(graph, s).detach(), repeats, ctx.barrier)
    out["embed"] = emb.numpy()
    from unlearnrec.scale.subgraph import sample_subgraph

    out["subgraph_nodes"] = len(sample_subgraph(graph, s, tables.n_layers))
    u, p, n = (torch.as_tensor(a) for a in batches[ctx.rank])
    out["train_step_s"], _ = _median_time(lambda: tables.train_step(graph, Batch(u, p, n)), repeats, ctx.barrier)
    fresh = torch.randn(len(erase), tables.dim) * 0.1
    out["write_erase_s"], out["erase_written"] = _median_time(lambda: tables.write_rows(erase, fresh), repeats)
    every = torch.arange(n_users + n_items)
    rows = torch.randn(len(every), tables.dim) * 0.1
    out["write_all_s"], out["all_written"] = _median_time(lambda: tables.write_rows(every, rows), repeats)
    out["load_end"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=2048, help="BPR triples per rank")
    ap.add_argument("--erase", type=int, default=10, help="users whose fresh rows are written")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.dataset, a.dim, a.layers, a.seeds, a.batch, a.erase, a.repeats = "synthetic", 16, 2, 64, 128, 4, 1
    torch.set_num_threads(1)
    data = api.load_data(RunConfig(data=DataConfig(dataset=a.dataset)))
    graph = Graph(data.train, data.n_users, data.n_items)
    torch.manual_seed(a.seed)
    mc = ModelConfig(name="lightgcn", embedding_size=a.dim, n_layers=a.layers)
    model = build_model(data.n_users, data.n_items, mc)
    rng = np.random.default_rng(a.seed)
    n_nodes = data.n_users + data.n_items
    seeds = [np.sort(rng.choice(n_nodes, size=min(a.seeds, n_nodes), replace=False)) for _ in range(a.nproc)]
    sampler = BPRSampler(graph.edges, data.n_items)
    batches = []
    for _ in range(a.nproc):
        pos = graph.edges[rng.choice(graph.n_edges, size=a.batch)]
        batches.append((pos[:, 0], pos[:, 1], sampler.negatives(pos[:, 0], rng)))
    erase = np.sort(rng.choice(data.n_users, size=a.erase, replace=False))

    full_s, full = _median_time(lambda: model.propagate(graph).detach(), a.repeats)
    combined = Batch(*(torch.as_tensor(np.concatenate([b[k] for b in batches])) for k in range(3)))

    def step():
        model.zero_grad()
        loss, _ = model.loss(combined, graph)
        loss.backward()

    step_s, _ = _median_time(step, a.repeats)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        ckpt = Path(tmp) / "lgn"
        save_checkpoint(
            ckpt, model, RunConfig(data=DataConfig(dataset=a.dataset), model=mc), data.fingerprint(), data.stats()
        )
        t0 = time.perf_counter()
        ranks = launch(
            _rank,
            a.nproc,
            str(ckpt),
            graph.edges,
            data.n_users,
            data.n_items,
            seeds,
            batches,
            erase,
            a.repeats,
            threads=1,
            timeout_s=1800,
        )
        launch_s = time.perf_counter() - t0
    diffs = [float(np.abs(r.pop("embed") - full[torch.as_tensor(seeds[k])].numpy()).max()) for k, r in enumerate(ranks)]
    slowest = {
        k: max(r[k] for r in ranks)
        for k in ("import_s", "build_s", "lookup_s", "embed_s", "train_step_s", "write_erase_s", "write_all_s")
    }
    results = {
        "dataset": a.dataset,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "train_edges": graph.n_edges,
        "dim": a.dim,
        "layers": a.layers,
        "nproc": a.nproc,
        "seeds_per_rank": a.seeds,
        "batch_per_rank": a.batch,
        "erase_users": a.erase,
        "repeats": a.repeats,
        "threads_per_rank": 1,
        "in_memory": {"full_propagate_s": full_s, "bpr_step_combined_batch_s": step_s},
        "ranks": ranks,
        "slowest_rank": slowest,
        "launch_total_s": launch_s,
        "embed_max_abs_diff_vs_in_memory": max(diffs),
        "ratios": {
            "embed_over_full_propagate": slowest["embed_s"] / full_s,
            "sharded_step_over_in_memory_step": slowest["train_step_s"] / step_s,
        },
        "load_average_before_launch": list(load0),
        "load_average_after": list(os.getloadavg()),
    }
    rows = [
        ["import torchrec", f"{slowest['import_s']:.2f}", "-"],
        ["build (DMP + checkpoint rows)", f"{slowest['build_s']:.2f}", "-"],
        [f"lookup {a.seeds} rows", f"{slowest['lookup_s']:.4f}", "-"],
        [
            f"embed {a.seeds} seeds ({max(r['subgraph_nodes'] for r in ranks)}/{n_nodes} subgraph nodes)",
            f"{slowest['embed_s']:.3f}",
            f"{full_s:.3f} (full propagate)",
        ],
        [f"BPR step, {a.batch}/rank", f"{slowest['train_step_s']:.3f}", f"{step_s:.3f} (combined batch)"],
        [f"write {a.erase} erased users' rows", f"{slowest['write_erase_s']:.5f}", "-"],
        [f"write all {n_nodes} rows", f"{slowest['write_all_s']:.4f}", "-"],
    ]
    cols = ["operation", f"sharded, {a.nproc} ranks x 1 thread (s, slowest rank)", "in memory, 1 thread (s)"]
    md = (
        format_table([dict(zip(cols, r, strict=True)) for r in rows], cols)
        + f"\n\nembed max abs diff vs in-memory: {max(diffs):.2e}; load average before/after: "
        f"{load0[0]:.2f} / {os.getloadavg()[0]:.2f}\n"
    )
    print(md)
    name = a.name or f"scale_tables_{a.dataset}{'_smoke' if a.smoke else ''}"
    out = Path(a.out) if a.out else (Path(tempfile.mkdtemp(prefix="scale-smoke-")) if a.smoke else RESULTS)
    print(record(name, results, md, out))


if __name__ == "__main__":
    main()
