"""Collect the test metrics, epochs and times of trained checkpoints into one table (no training).

Used to put backbones trained under the same budget by other benchmark runs side by side:

    python benchmarks/summarize_checkpoints.py --name ml-1m_backbones_900s \
        /work/ckpts_capped/ml-1m-lightgcn /work/ckpts/ml-1m-simgcl /work/ckpts/ml-1m-sgl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import RESULTS, record

from unlearnrec.report import format_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    rows, full = [], {}
    for ck in args.checkpoints:
        res = json.loads((ck / "result.json").read_text())
        tr = res["training"]
        rows.append({
            "model": res["model"], "recall@20": res["test"]["recall@20"], "ndcg@20": res["test"]["ndcg@20"],
            "valid recall@20": res["valid"].get("recall@20"), "best epoch": tr["best_epoch"],
            "epochs run": tr["epochs_run"], "train s": tr["train_seconds"],
            "budget s": res["config"]["train"]["max_seconds"], "batch": res["config"]["train"]["batch_size"],
        })
        full[str(ck)] = {k: res[k] for k in ("config", "test", "valid", "training", "times", "data_fingerprint")}
    table = format_table(rows, title="test metrics at the best validation epoch")
    print(table)
    record(args.name, full, table + ("\n\n" + args.note if args.note else ""), RESULTS)


if __name__ == "__main__":
    main()
