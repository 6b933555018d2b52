"""Issue 15's tuning protocol: pick each method's hyper-parameters off finished *tuning* grids (it computes nothing).

    python benchmarks/select_baselines15.py runs/bench-baselines15-ml1m-lightgcn-tune \
        runs/bench-baselines15-ml1m-lightgcn-tune-adv --name baselines15_ml1m_lightgcn_tune

Every grid point of a method is an alias of it in the tuning grids (``ssd a10 l1: {method: ssd, ...}``), run on
tuning requests whose seeds the reported grid never uses. Per method and dataset:

1. **utility guard** (validation only): a point is admissible when on *every* tuning request its grid planned
   for it (a scenario's ``methods:`` list restricts a costly method to some of them; default: every scenario of
   the grid, for each of its seeds) its validation Recall@k is at least ``--guard`` (default 0.98) times the
   original's on that request's graph;
2. **forgetting**: among the admissible points, the one whose request rank percentile lands closest to
   retraining's, i.e. the largest mean over the tuning requests of ``1 − |1 − gap closed|`` (1: where the retrain
   reference ranks the request; 0: where the original does, or twice as far as retraining); ties go to the
   higher mean validation recall. A point with no ``gap closed`` on some request scores 0 there.

If no point passes the guard, the one with the highest worst-case validation ratio is taken and flagged (exact
methods such as GraphEraser rarely reach 98 %: utility decides for them). Test metrics are not read. Any
registered method can be tuned this way (its grid points are aliases); the same label in several runs is one
point (e.g. CEU on the seed-0 tuning requests and on the adversarial one of another original).
Writes ``results/<name>.{json,md}`` with every point's numbers and the chosen settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import record

from unlearnrec.report import format_table


def _load(run: Path) -> tuple[list[dict], dict]:
    path = run / "results.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (not a finished bench grid folder)")
    summary = json.loads(path.read_text())
    return summary["rows"], summary["config"]


def planned(runs: list[Path], scenarios: set[str] | None = None) -> dict[tuple[str, str, str], set]:
    """``(dataset, backbone, label) -> {(run, scenario, seed)}``: the tuning requests each grid point was planned on
    (a scenario's ``methods`` list, default every method; one request per seed of the grid)."""
    from unlearnrec.bench.config import BenchConfig

    out: dict[tuple[str, str, str], set] = {}
    for run in runs:
        _, config = _load(run)
        cfg = BenchConfig.model_validate(config)
        for spec in cfg.scenarios:
            if scenarios is not None and spec.label not in scenarios:
                continue
            for label in spec.methods or list(cfg.methods):
                for ds in cfg.datasets:
                    for bb in cfg.backbones:
                        out.setdefault((ds, bb, label), set()).update((run.name, spec.label, s) for s in cfg.seeds)
    return out


def points(runs: list[Path], k: int = 20, scenarios: set[str] | None = None) -> list[dict]:
    """One entry per (dataset, method label, tuning request) of the tuning grids, with the original's numbers
    (``scenarios``: only these scenario labels, the tuning requests of a grid that also holds reported ones)."""
    out = []
    for run in runs:
        rows, config = _load(run)
        methods = config["methods"]
        originals = {
            (r["dataset"], r["backbone"], r["scenario"], r["seed"]): r for r in rows if r["method"] == "original"
        }
        for r in rows:
            label = r["method"]
            if label not in methods or (scenarios is not None and r["scenario"] not in scenarios):
                continue
            params = dict(methods[label])
            registered = params.pop("method", label)
            o = originals.get((r["dataset"], r["backbone"], r["scenario"], r["seed"]))
            v, vo = r.get(f"valid recall@{k}"), (o or {}).get(f"valid recall@{k}")
            out.append(
                {
                    "run": run.name,
                    "dataset": r["dataset"],
                    "backbone": r["backbone"],
                    "method": registered,
                    "label": label,
                    "params": params,
                    "scenario": r["scenario"],
                    "seed": r["seed"],
                    "valid": v,
                    "valid_original": vo,
                    "valid_ratio": (v / vo) if v is not None and vo else None,
                    "gap_closed": r.get("gap closed"),
                    "rank_pct": r.get("request rank pct"),
                    "MI-NG": r.get("MI-NG"),
                    "jaccard": r.get(f"Jaccard@{k}"),
                    "per_request_s": r.get("per-request s"),
                    "one_off_s": r.get("one-off s"),
                }
            )
    return out


def _score(gap) -> float:
    return 0.0 if gap is None or not np.isfinite(gap) else 1.0 - abs(1.0 - float(gap))


def select(
    pts: list[dict],
    guard: float,
    plan: dict[tuple[str, str, str], set] | None = None,
) -> tuple[list[dict], list[dict]]:
    """``(per-point summary, chosen per (dataset, backbone, method))``. ``plan``: the tuning requests of each
    ``(dataset, backbone, label)`` (:func:`planned`); default: every request found in ``pts`` for every point."""
    by_point: dict[tuple, list[dict]] = {}
    for p in pts:
        by_point.setdefault((p["dataset"], p["backbone"], p["method"], p["label"]), []).append(p)
    requests = {(p["dataset"], p["backbone"]): set() for p in pts}
    for p in pts:
        requests[(p["dataset"], p["backbone"])].add((p["run"], p["scenario"], p["seed"]))
    summary = []
    for (ds, bb, m, label), ps in by_point.items():
        if m in ("edgedrop", "retrain", "retrain-warm"):  # references, nothing to tune
            continue
        ratios = [p["valid_ratio"] for p in ps]
        wanted = plan.get((ds, bb, label), set()) if plan is not None else requests[(ds, bb)]
        done = {(p["run"], p["scenario"], p["seed"]) for p in ps}
        complete = bool(wanted) and wanted <= done and all(r is not None for r in ratios)
        summary.append(
            {
                "dataset": ds,
                "backbone": bb,
                "method": m,
                "label": label,
                "params": ps[0]["params"],
                "requests": len(ps),
                "planned": len(wanted),
                "complete": complete,
                "min valid ratio": min(r for r in ratios if r is not None)
                if any(r is not None for r in ratios)
                else None,
                "mean valid": float(np.mean([p["valid"] for p in ps if p["valid"] is not None])),
                "admissible": complete and min(ratios) >= guard,
                "score": float(np.mean([_score(p["gap_closed"]) for p in ps])),
                "gap closed": {f"{p['scenario']} ({p['run']})": p["gap_closed"] for p in ps},
                "per-request s": float(np.mean([p["per_request_s"] for p in ps if p["per_request_s"] is not None])),
            }
        )
    chosen = []
    for key in sorted({(s["dataset"], s["backbone"], s["method"]) for s in summary}):
        cand = [s for s in summary if (s["dataset"], s["backbone"], s["method"]) == key]
        ok = [s for s in cand if s["admissible"]]
        flagged = not ok
        pool = ok or sorted([s for s in cand if s["complete"]], key=lambda s: -(s["min valid ratio"] or 0))[:1]
        if not pool:
            continue
        best = max(pool, key=lambda s: (s["score"], s["mean valid"]))
        chosen.append(
            {
                "dataset": key[0],
                "backbone": key[1],
                "method": key[2],
                "label": best["label"],
                "params": best["params"],
                "score": best["score"],
                "min valid ratio": best["min valid ratio"],
                "guard_met": not flagged,
                "candidates": len(cand),
                "admissible": len(ok),
            }
        )
    return summary, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished tuning grid folders (their results.json)")
    ap.add_argument("--guard", type=float, default=0.98, help="validation Recall@k floor, share of the original's")
    ap.add_argument("--name", default="baselines15_ml1m_lightgcn_tune")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated scenario labels to select on (default: every scenario of the runs)",
    )
    args = ap.parse_args()
    only = set(args.scenarios.split(",")) if args.scenarios else None
    pts = points(args.runs, args.k, only)
    summary, chosen = select(pts, args.guard, planned(args.runs, only))
    table = [
        {
            "method": s["method"],
            "label": s["label"],
            "requests": f"{s['requests']}/{s['planned']}",
            "min valid ratio": s["min valid ratio"],
            "admissible": s["admissible"],
            "score": s["score"],
            **{f"gap closed {k}": v for k, v in s["gap closed"].items()},
            "per-request s": s["per-request s"],
        }
        for s in sorted(summary, key=lambda s: (s["method"], s["label"]))
    ]
    per_request = [
        {
            k: p[k]
            for k in (
                "method",
                "label",
                "scenario",
                "run",
                "valid",
                "valid_original",
                "valid_ratio",
                "gap_closed",
                "rank_pct",
                "MI-NG",
                "jaccard",
                "per_request_s",
            )
        }
        for p in pts
    ]
    md = [
        f"Guard: validation Recall@{args.k} >= {args.guard:g} x the original's on every tuning request; score: "
        "mean over the tuning requests of 1 - |1 - gap closed| (request rank percentile against retraining's). "
        "Test metrics are not read.",
        "",
        format_table(chosen, floatfmt=".4g", title="## Chosen settings"),
        "",
        format_table(table, floatfmt=".4g", title="## Every grid point"),
        "",
        format_table(per_request, floatfmt=".4g", title="## Per tuning request"),
    ]
    record(
        args.name,
        {
            "guard": args.guard,
            "runs": [str(r) for r in args.runs],
            "scenarios": args.scenarios,
            "chosen": chosen,
            "points": summary,
            "per_request": pts,
        },
        "\n".join(md),
    )
    for c in chosen:
        print(
            f"{c['dataset']}/{c['backbone']} {c['method']}: {c['label']} {c['params']} (score {c['score']:.3f}, "
            f"min valid ratio {c['min valid ratio']:.4f}{'' if c['guard_met'] else ', GUARD NOT MET'})"
        )


if __name__ == "__main__":
    main()
