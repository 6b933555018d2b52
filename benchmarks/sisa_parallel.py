"""SISA shards trained serially vs on 2 ``torch.distributed`` workers, side by side in one run (issue 16).

ML-1M LightGCN (the ``ml1m.yaml`` recipe), ``--n-shards`` random user shards (SISA, Bourtoule et al., S&P 2021),
each sub-model capped at ``--epochs`` epochs (early stopping on validation as in the recipe). Rows:

* ``prepare``: all shards, serially in this process (``--serial-threads``, default all cores) and on
  ``--workers`` ranks of one thread each;
* ``request``: one deletion request, every edge of ``--users`` random users (drawn, seeded, from distinct
  shards so the request touches that many shards), retrained serially (``--serial-threads``; and with one
  thread when that is not 1) and on ``--workers`` ranks of one thread each.

On a machine whose cores other jobs also use, a 2-thread serial process can be many times slower than a
1-thread one (its threads wait on each other at every parallel region): a serial 2-thread prepare ran over
11 min where the 2 workers took 102 s (load 2.4-3.8). ``--serial-threads 1`` then gives the fair comparison.

The parallel sub-models are compared with the serial ones: bit-identical at the same thread count (the
one-thread serial row), and the max abs weight difference at different counts. Times include the workers'
start (spawn, imports, rendezvous). No model is selected or tuned on anything here; the test split is not read.

    UNLEARNREC_DATA=../shared/data nice -n 5 python benchmarks/sisa_parallel.py --serial-threads 1 \\
        --config benchmarks/configs/ml1m.yaml --name sisa_parallel_ml1m_lightgcn

``--smoke``: a small synthetic dataset, 4 shards, a few epochs (checks the script; writes under ``--out``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, record

from unlearnrec import api
from unlearnrec.config import RunConfig
from unlearnrec.graph import Graph
from unlearnrec.report import format_table
from unlearnrec.unlearning.base import Context
from unlearnrec.unlearning.methods.sisa import Sisa

SMOKE = {
    "data.dataset": "synthetic",
    "model.embedding_size": 16,
    "model.n_layers": 2,
    "train.batch_size": 256,
    "train.eval_every": 2,
    "train.patience": 2,
    "train.ks": [20],
}


def request_users(sisa: Sisa, n: int, seed: int) -> np.ndarray:
    """``n`` users drawn at random (seeded), one per shard: the first ``n`` of a permutation whose shards differ."""
    home = sisa.state.user_home
    has = np.zeros(len(home), bool)
    has[np.unique(sisa.state.keys // sisa.ctx.graph.n_items)] = True
    chosen, shards = [], set()
    for u in np.random.default_rng(seed).permutation(len(home)):
        if has[u] and int(home[u]) not in shards:
            chosen.append(int(u))
            shards.add(int(home[u]))
        if len(chosen) == n:
            break
    if len(chosen) < n:
        raise SystemExit(f"error: only {len(chosen)} shard(s) have users; --users {n} needs {n}")
    return np.array(sorted(chosen))


def max_diff(models_a, models_b, shards) -> float:
    out = 0.0
    for k in shards:
        sa, sb = models_a[k].state_dict(), models_b[k].state_dict()
        out = max(out, max(float((sa[n] - sb[n]).abs().max()) for n in sa))
    return out


def timed(fn, threads: int):
    """``fn()`` with ``threads`` torch threads in this process; ``(result, seconds, load before, load after)``."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        out = fn()
    finally:
        torch.set_num_threads(before)
    return out, time.perf_counter() - t0, load0, os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=None, help="the recipe (default: the built-in one)")
    ap.add_argument("--n-shards", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30, help="most epochs per sub-model")
    ap.add_argument("--users", type=int, default=4, help="request: all edges of this many users (distinct shards)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--serial-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0, help="seed of the partition and of the request's users")
    ap.add_argument("--no-prepare-serial", action="store_true", help="skip the serial prepare row")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--name", default="sisa_parallel_ml1m_lightgcn")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    args = ap.parse_args()
    if args.workers < 2:
        raise SystemExit(f"error: --workers must be at least 2 to compare with serial, got {args.workers}")
    cfg = RunConfig.load(args.config) if args.config else RunConfig()
    cfg = cfg.with_overrides(SMOKE if args.smoke else {}).with_overrides(args.overrides)
    data = api.load_data(cfg)
    graph = Graph(data.train, data.n_users, data.n_items)
    ctx = Context(None, graph, data, cfg, False)
    base = {"n_shards": args.n_shards, "seed": args.seed, "epochs": args.epochs}
    par_cfg = {**base, "workers": args.workers, "threads": 1}
    print(
        f"{data.name}: {data.n_users} users, {data.n_items} items, {graph.n_edges} training edges; "
        f"{args.n_shards} shards, <= {args.epochs} epochs each",
        flush=True,
    )

    rows, detail = [], {}
    par, t_par, l0, l1 = timed(lambda: Sisa(par_cfg).prepare(ctx), 1)
    rows.append(
        {
            "stage": "prepare",
            "run": f"{args.workers} workers x 1 thread",
            "shards": args.n_shards,
            "seconds": t_par,
            "load_before": l0,
            "load_after": l1,
        }
    )
    print(rows[-1], flush=True)
    detail["prepare_parallel"] = {
        "shard_seconds": par.prepare_log["shard_seconds"],
        "epochs_run": [r["epochs_run"] for r in par.prepare_log["shards"]],
        "workers": par.prepare_log["workers"],
    }
    if not args.no_prepare_serial:
        ser, t_ser, l0, l1 = timed(lambda: Sisa(base).prepare(ctx), args.serial_threads)
        rows.append(
            {
                "stage": "prepare",
                "run": f"serial x {args.serial_threads} threads",
                "shards": args.n_shards,
                "seconds": t_ser,
                "load_before": l0,
                "load_after": l1,
                "ratio_serial_over_parallel": t_ser / t_par,
            }
        )
        print(rows[-1], flush=True)
        detail["prepare_serial_max_abs_diff"] = max_diff(ser.state.models, par.state.models, range(args.n_shards))

    users = request_users(par, args.users, args.seed)
    request = graph.edges[np.isin(graph.edges[:, 0], users)]
    touched = par.touched_shards(request).tolist()
    print(f"request: users {users.tolist()}, {len(request)} edges, shards {touched}", flush=True)
    runs = {
        "parallel": (par.with_config(par_cfg), 1, f"{args.workers} workers x 1 thread"),
        "serial": (par.with_config(base), args.serial_threads, f"serial x {args.serial_threads} threads"),
    }
    if args.serial_threads != 1:
        runs["serial_1"] = (par.with_config({**base, "threads": 1}), 1, "serial x 1 thread")
    outs = {}
    for key, (u, threads, label) in runs.items():
        out, secs, l0, l1 = timed(lambda u=u: u.unlearn(request), threads)
        outs[key] = out
        row = {
            "stage": "request",
            "run": label,
            "shards": len(touched),
            "seconds": secs,
            "train_seconds": out.timings["train_seconds"],
            "load_before": l0,
            "load_after": l1,
        }
        if key != "parallel":
            row["ratio_serial_over_parallel"] = secs / rows_parallel_seconds(rows)
        rows.append(row)
        print(row, flush=True)
        detail[f"request_{key}"] = {
            "shard_seconds": out.log["shard_seconds"],
            "workers": out.log["workers"],
            "epochs_run": {r["shard"]: r["epochs_run"] for r in out.log["shards"]},
        }
    p = outs["parallel"].state.models
    for key in runs.keys() - {"parallel"}:
        detail[f"request_max_abs_diff_vs_{key}"] = max_diff(outs[key].state.models, p, touched)
    untouched = [k for k in range(args.n_shards) if k not in touched]
    detail["untouched_shards_reused"] = all(p[k] is par.state.models[k] for k in untouched)
    results = {
        "dataset": data.name,
        "n_shards": args.n_shards,
        "epochs_cap": args.epochs,
        "workers": args.workers,
        "serial_threads": args.serial_threads,
        "request_users": users.tolist(),
        "request_edges": len(request),
        "touched_shards": touched,
        "rows": rows,
        "detail": detail,
        "config": cfg.model_dump(mode="json"),
    }
    md = format_table(rows) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in detail.items() if not isinstance(v, dict))
    args.out.mkdir(parents=True, exist_ok=True)
    path = record(args.name, results, md, args.out)
    print(md, f"\nrecorded {path}", sep="\n", flush=True)


def rows_parallel_seconds(rows: list[dict]) -> float:
    return next(r["seconds"] for r in rows if r["stage"] == "request" and "workers" in r["run"])


if __name__ == "__main__":
    main()
