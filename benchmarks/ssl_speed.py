"""Seconds per training epoch of SGL and SimGCL against LightGCN, with and without the InfoNCE anchor cap.

Same data (ML-1M RecEraser split, validation carved), same recipe (``configs/ml1m.yaml``: batch 8192, d = 64,
3 layers), one process; the variants' epochs are interleaved (LightGCN, SGL, SGL capped, ...) so machine noise
hits all alike. ``model.ssl_anchors`` scores a random subset of each batch's unique users (items) against all
of them: the same InfoNCE in expectation (tests/models/test_backbones.py checks this), at a fraction of the
n×n logits' cost.

    python benchmarks/ssl_speed.py --threads 1 --repeats 2 --anchors 1024 [key=value overrides]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import record, run_config

from unlearnrec import api
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.report import format_table
from unlearnrec.training import Trainer

CONFIGS = Path(__file__).parent / "configs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=CONFIGS / "ml1m.yaml")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--anchors", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args()
    base = run_config(args)
    data = api.load_data(base)
    graph = Graph(data.train, data.n_users, data.n_items)
    variants = {
        "lightgcn": ["model.name=lightgcn"],
        "sgl": ["model.name=sgl"],
        f"sgl, {args.anchors} anchors": ["model.name=sgl", f"model.ssl_anchors={args.anchors}"],
        "simgcl": ["model.name=simgcl"],
        f"simgcl, {args.anchors} anchors": ["model.name=simgcl", f"model.ssl_anchors={args.anchors}"],
    }
    trainers = {}
    for name, overrides in variants.items():
        cfg = base.with_overrides(overrides)
        model = build_model(data.n_users, data.n_items, cfg.model)
        trainers[name] = Trainer(model, data, cfg.train, graph=graph, progress=False)

    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.train_epoch(r + 1)
            seconds[name].append(time.perf_counter() - t0)
            print(f"repeat {r}: {name} {seconds[name][-1]:.2f} s", flush=True)

    med = {name: statistics.median(s) for name, s in seconds.items()}
    rows = []
    for name in variants:
        plain = name.split(",")[0]
        rows.append({"model": name, "s/epoch": med[name], "x LightGCN": med[name] / med["lightgcn"],
                     "speed-up of the cap": med[plain] / med[name] if plain != name else None})
    table = format_table(rows, floatfmt=".2f", title=(
        f"{base.data.dataset}: batch {base.train.batch_size}, d = {base.model.embedding_size}, "
        f"{base.model.n_layers} layers, median of {args.repeats} epochs, {torch.get_num_threads()} thread(s)"))
    print(table)
    record(f"ssl_speed_{base.data.dataset}", {"epoch_seconds": seconds, "anchors": args.anchors,
                                              "threads": torch.get_num_threads()}, table)


if __name__ == "__main__":
    main()
