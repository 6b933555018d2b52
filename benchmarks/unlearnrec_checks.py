"""Issue 12's acceptance checks, read off a finished UnlearnRec bench grid (it computes nothing new).

    python benchmarks/unlearnrec_checks.py runs/bench-unlearnrec-ml1m-lightgcn --name unlearnrec_ml1m_lightgcn

For every (backbone, scenario) of the grid: each method's utility against the original and the mean retrain,
MI-NG, the share of the original-to-retrain gap in request rank percentile it closes (``gap closed``) and by
how much it passes the retrained value measured in the retrain-vs-retrain spread (``overshoot / sd``), its
top-20 Jaccard against the references and the floor verdict, the mean non-edge score against the retrained
models' (score scale), per-request seconds and the ratio to a retrain. Writes ``results/<name>.{json,md}`` and
copies the grid's own ``results.md`` beside them as ``<name>_grid.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from _common import RESULTS, record

from unlearnrec.report import format_table


def _nonedge(measures: dict) -> float | None:
    f = measures.get("forgetting") or {}
    return (f.get("score", {}).get("non_edges", {}).get("after") or {}).get("mean")


def checks(out: Path) -> list[dict]:
    summary = json.loads((out / "results.json").read_text())
    rows = []
    for cell in summary["cells"]:
        c = json.loads(Path(cell["path"]).read_text())
        ref = json.loads((Path(cell["path"]).parent / f"_reference-seed{c['seed']}.json").read_text())
        orig, retr = ref["rows"]["original"], ref["rows"]["retrain"]
        refs = ref["rows"]["references"]
        non_refs = [_nonedge(m) for m in ref["measures"]["references"]]
        row, m = c["row"], c["measures"]
        sd = retr.get("rank pct sd")
        over = None
        if sd and row.get("request rank pct") is not None:
            over = (row["request rank pct"] - retr["request rank pct"]) / sd
        non = _nonedge(m)
        outcome = c.get("outcome") or {}
        rounds = outcome.get("rounds") or [outcome]
        enc_s = [r.get("timings", {}).get("encoder_seconds") for r in rounds]
        rows.append({
            "backbone": c["backbone"], "scenario": c["scenario"], "method": c["method"],
            "recall@20": row["recall@20"], "/ original": row["recall@20"] / orig["recall@20"],
            "/ retrain mean": row["recall@20"] / retr["recall@20"],
            "retrain recall sd": float(np.std([r["recall@20"] for r in refs], ddof=1)) if len(refs) > 1 else None,
            "MI-NG": row["MI-NG"], "request score": row["request score"], "rank pct": row["request rank pct"],
            "gap closed": row["gap closed"], "overshoot / sd": over,
            "Jaccard@20": row.get("Jaccard@20"), "in floor": row.get("in floor"),
            "original in floor": orig.get("in floor"),
            "non-edge score": non,
            "/ retrain non-edge": (non / float(np.mean(non_refs))) if non is not None and all(
                x is not None for x in non_refs) else None,
            "per-request s": row["per-request s"],
            "encoder s": float(np.mean([x for x in enc_s if x is not None])) if any(x is not None for x in enc_s)
            else None,
            "retrain s / per-request": row.get("speedup"),
            "note": row.get("note"),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench_out", type=Path, help="the bench grid's output folder")
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    rows = checks(args.bench_out)
    md = format_table(rows, floatfmt=".4g", title=f"{args.name}: issue 12 checks (from {args.bench_out})")
    grid = json.loads((args.bench_out / "results.json").read_text())
    record(args.name, {"checks": rows, "grid_provenance": grid.get("provenance"), "grid_config": grid.get("config"),
                       "floors": grid.get("floors")}, md)
    shutil.copyfile(args.bench_out / "results.md", RESULTS / f"{args.name}_grid.md")
    print(md)


if __name__ == "__main__":
    main()
