"""Collect the test metrics, epochs and times of trained checkpoints into one table (no training).

Used to put backbones trained under the same budget by other benchmark runs side by side:

    python benchmarks/summarize_checkpoints.py --name ml-1m_backbones_900s \
        /work/ckpts_capped/ml-1m-lightgcn /work/ckpts/ml-1m-simgcl /work/ckpts/ml-1m-sgl

``--paired`` re-evaluates every checkpoint on the test users and reports, for each one after the first, the
mean per-user difference in Recall@20 and NDCG@20 to the first with a 95% normal interval (paired over the
same test users): whether a gap is larger than the test set's own sampling noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import RESULTS, record

from unlearnrec import api
from unlearnrec.report import format_table


def settings(config: dict) -> str:
    """The knobs that tell these runs apart: reg, patience, and the contrastive term of SGL / SimGCL."""
    m, t = config["model"], config["train"]
    out = [f"reg {m['reg']:g}", f"patience {t['patience']}"]
    if m["name"] in ("sgl", "simgcl"):
        out += [f"ssl {m['ssl_weight']:g}", f"tau {m['ssl_temperature']:g}"]
        out += [f"eps {m['noise_eps']:g}"] if m["name"] == "simgcl" else [f"keep {m['edge_keep']:g}"]
        if m.get("ssl_anchors"):
            out.append(f"anchors {m['ssl_anchors']}")
    return ", ".join(out)


def paired_differences(checkpoints: list[Path], metrics=("recall@20", "ndcg@20")) -> list[dict]:
    """Mean per-user test difference of each checkpoint to the first, with a 95% normal interval."""
    per_user = []
    for ck in checkpoints:
        ckpt, data, graph = api.open_checkpoint(ck)
        res = api.rank_model(ckpt.model, graph, data, ks=(20,))
        per_user.append((res.users, res.per_user))
    ref_users, ref = per_user[0]
    rows = []
    for ck, (users, values) in zip(checkpoints[1:], per_user[1:], strict=True):
        if not np.array_equal(users, ref_users):
            raise ValueError(f"{ck}: evaluated on other test users than {checkpoints[0]}")
        row = {"checkpoint": f"{ck.parent.name}/{ck.name}", "users": int(len(users))}
        for m in metrics:
            d = values[m] - ref[m]
            half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
            row[f"{m} diff"], row[f"{m} 95% low"], row[f"{m} 95% high"] = d.mean(), d.mean() - half, d.mean() + half
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--note", default="")
    ap.add_argument("--paired", action="store_true", help="per-user paired differences to the first checkpoint")
    args = ap.parse_args()
    rows, full = [], {}
    for ck in args.checkpoints:
        res = json.loads((ck / "result.json").read_text())
        tr = res["training"]
        rows.append({
            "model": res["model"], "recall@20": res["test"]["recall@20"], "ndcg@20": res["test"]["ndcg@20"],
            "valid recall@20": res["valid"].get("recall@20"), "best epoch": tr["best_epoch"],
            "epochs run": tr["epochs_run"], "train s": tr["train_seconds"],
            "s to best": sum(r["train_seconds"] for r in res["history"] if r["epoch"] <= tr["best_epoch"]),
            "budget s": res["config"]["train"]["max_seconds"], "batch": res["config"]["train"]["batch_size"],
            "settings": settings(res["config"]),
        })
        full[str(ck)] = {k: res[k] for k in ("config", "test", "valid", "training", "times", "data_fingerprint")}
    table = format_table(rows, title="test metrics at the best validation epoch")
    if args.paired:
        paired = paired_differences(args.checkpoints)
        table += "\n\n" + format_table(paired, title=(
            f"paired per-user test differences to {args.checkpoints[0]} (mean and 95% interval)"))
        full["paired"] = paired
    print(table)
    record(args.name, full, table + ("\n\n" + args.note if args.note else ""), RESULTS)


if __name__ == "__main__":
    main()
