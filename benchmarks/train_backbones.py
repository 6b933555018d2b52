"""Train backbones on a dataset with one recipe and record test metrics, epochs and time.

Issue 2's accuracy benchmark: ML-1M (RecEraser split) LightGCN must reach test Recall@20 >= 0.225 and
NDCG@20 >= 0.31 within 15 minutes on the 2-core CPU machine; SGL and SimGCL at least LightGCN's.
Model selection uses validation Recall@20 only; test metrics are those of the best validation epoch.

    python benchmarks/train_backbones.py --config benchmarks/configs/ml1m.yaml --models lightgcn,sgl,simgcl
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, record, run_config

from unlearnrec import api
from unlearnrec.report import format_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--models", default="lightgcn,sgl,simgcl")
    ap.add_argument("--max-seconds", type=float, default=None, help="training budget per model")
    ap.add_argument("--name", default=None, help="result file name (default: <dataset>_backbones)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--ckpt-dir", type=Path, default=None, help="keep the checkpoints here")
    ap.add_argument("--refit", action="store_true",
                    help="also retrain on train+valid for the validation-selected number of epochs "
                         "(selection stays on validation; recovers the data the carve held out)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args()

    base = run_config(args)
    name = args.name or f"{base.data.dataset}_backbones"
    data = api.load_data(base)
    rows, full = [], {}
    for model in args.models.split(","):
        cfg = base.with_overrides({"model.name": model})
        first_hit = {}

        def watch(epoch, rec, tr, first_hit=first_hit):
            # when did validation first look good enough? (time only; selection stays on validation)
            if "valid" in rec:
                first_hit.setdefault("trace", []).append(
                    {"epoch": epoch, "seconds": tr.state.seconds,
                     **{k: rec["valid"][k] for k in ("recall@20", "ndcg@20")}}
                )

        t0 = time.perf_counter()
        out = args.ckpt_dir / f"{base.data.dataset}-{model}" if args.ckpt_dir else None
        res = api.train(cfg, out, data=data, callbacks=[watch], progress=False)
        wall = time.perf_counter() - t0
        tr = res["training"]
        row = {
            "model": model,
            "recall@20": res["test"]["recall@20"],
            "ndcg@20": res["test"]["ndcg@20"],
            "valid recall@20": res["valid"].get("recall@20"),
            "best epoch": tr["best_epoch"],
            "epochs run": tr["epochs_run"],
            "train s": tr["train_seconds"],
            "s/epoch": tr["train_seconds"] / max(1, tr["epochs_run"]),
            "wall s": wall,
        }
        if args.refit:
            merged = data.with_valid(np.concatenate([data.train, data.valid]), np.zeros((0, 2), np.int64))
            t1 = time.perf_counter()
            ref = api.train(cfg.with_overrides({"train.epochs": tr["best_epoch"], "train.max_seconds": None}),
                            data=merged, progress=False)
            row["refit recall@20"] = ref["test"]["recall@20"]
            row["refit ndcg@20"] = ref["test"]["ndcg@20"]
            row["refit s"] = time.perf_counter() - t1
        rows.append(row)
        full[model] = {"row": row, "config": cfg.model_dump(mode="json"), "test": res["test"], "valid": res["valid"],
                       "training": tr, "valid_trace": first_hit.get("trace", [])}
        print(format_table([row]), flush=True)
    table = format_table(rows, title=f"{base.data.dataset}: test metrics at the best validation epoch")
    print(table)
    record(name, {"dataset": data.stats(), "fingerprint": data.fingerprint(), "models": full}, table, args.out)


if __name__ == "__main__":
    main()
