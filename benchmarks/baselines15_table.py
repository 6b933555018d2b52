"""Issue 15's results table: every method on the same fresh requests, read off a (possibly unfinished) bench grid.

    UNLEARNREC_DATA=../shared/data python benchmarks/baselines15_table.py \
        benchmarks/configs/baselines15_ml1m_lightgcn_all.yaml --name baselines15_ml1m_lightgcn_all \
        --chosen results/baselines15_ml1m_lightgcn_tune.json results/baselines15_ml1m_lightgcn_tune_all.json

It computes nothing: the grid's finished cells (``<out>/cells``, same keys as the config's) are read, the grid's
own ``results.{md,json}`` are rewritten from them (``BenchRunner`` with nothing to run) and copied to
``results/<name>_grid.{md,json}``. ``results/<name>.{json,md}`` hold, per scenario, utility (test Recall@20 and its
share of the original's, validation Recall@20), forgetting against the two retrain references (MI-NG, request rank
percentile, gap closed, Jaccard@20 and the references' own pair as the noise floor), one-off and per-request seconds
and speedup; each method's settings with where they were chosen (``--chosen``: select_baselines15.py outputs);
every planned cell that has no result (not run in the budget, or failed); and where each cell was computed (run
date and commit: cells of earlier grids with the same key are this grid's too, their seconds measured then).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from _common import RESULTS, record

from unlearnrec.bench.config import BenchConfig, BenchConfigError, ScenarioSpec
from unlearnrec.bench.grid import BenchRunner, validate_config
from unlearnrec.report import format_table


def method_table(rows: list[dict], k: int = 20, *, mi_bf: bool = False, floor_label: str = "floor") -> list[dict]:
    """One row per (scenario, method) of a grid's result rows, with its utility against that scenario's original
    and the Jaccard noise floor beside it (``mi_bf``: also the MI-BF column)."""
    orig = {r["scenario"]: r for r in rows if r["method"] == "original"}
    floor = {r["scenario"]: r for r in rows if r["method"] == "noise floor"}
    table = []
    for r in rows:
        if r["method"] in ("original", "noise floor"):
            continue
        o = orig[r["scenario"]]
        row = {
            "scenario": r["scenario"],
            "method": r["method"],
            f"recall@{k}": r[f"recall@{k}"],
            "/ original": r[f"recall@{k}"] / o[f"recall@{k}"],
            f"valid recall@{k}": r.get(f"valid recall@{k}"),
        }
        if mi_bf:
            row["MI-BF"] = r["MI-BF"]
        row.update(
            {
                "MI-NG": r["MI-NG"],
                "rank pct": r["request rank pct"],
                "gap closed": r["gap closed"],
                f"Jaccard@{k}": r.get(f"Jaccard@{k}"),
                floor_label: (floor.get(r["scenario"]) or {}).get(f"Jaccard@{k}"),
                "one-off s": r.get("one-off s"),
                "per-request s": r.get("per-request s"),
                "speedup": r.get("speedup"),
            }
        )
        table.append(row)
    return table


def _chosen(paths: list[Path], backbones: list[str]) -> dict[str, dict]:
    """``method -> chosen entry`` for this grid's backbones (one tuning file may hold several, e.g. SGL and
    SimGCL: an entry of another backbone must not label this grid's row)."""
    out: dict[str, dict] = {}
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"error: {p} not found (a select_baselines15.py result)")
        for c in json.loads(p.read_text())["results"]["chosen"]:
            if c["backbone"] in backbones:
                out[c["method"]] = {**c, "source": p.name}
    return out


def _earlier(prefix: Path, cfg: BenchConfig) -> tuple[list[dict], list[dict], str]:
    """Rows and origins of an earlier session's table of this grid (``<prefix>.json``, its ``<prefix>_grid.json``),
    kept only where that run's settings, scenario, recipe and measures equal ``cfg``'s: the same cell keys. A new
    machine has no ``<out>/cells`` of earlier sessions; their rows are carried over as recorded, never recomputed."""
    rec_path, grid_path = prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + "_grid.json")
    for p in (rec_path, grid_path):
        if not p.is_file():
            raise SystemExit(f"error: {p} not found (--earlier takes the prefix of an earlier table and its _grid)")
    rec, grid = json.loads(rec_path.read_text())["results"], json.loads(grid_path.read_text())
    old = grid["config"]
    now = cfg.model_dump(mode="json")
    for part in ("datasets", "backbones", "seeds", "recipe", "measures"):
        if old[part] != now[part]:
            raise SystemExit(f"error: {grid_path} ran another grid ({part} differs): its rows are not this grid's")
    old_spec = {spec.label: spec.key_dump() for spec in map(ScenarioSpec.model_validate, old["scenarios"])}
    same_sc = {s.label for s in cfg.scenarios if old_spec.get(s.label) == s.key_dump()}
    same_m = {m for m, params in cfg.methods.items() if old["methods"].get(m) == params}
    rows = [r for r in rec["rows"] if r["scenario"] in same_sc and r["method"] in same_m | {"retrain (reference)"}]
    origin = [o for o in rec["origin"] if o["scenario"] in same_sc and o["method"] in same_m]
    return rows, origin, rec_path.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path, help="the reported grid's bench config")
    ap.add_argument("--name", default="baselines15_ml1m_lightgcn_all")
    ap.add_argument("--chosen", type=Path, nargs="*", default=[], help="select_baselines15.py result JSONs")
    ap.add_argument("--notes", type=Path, default=None, help="Markdown appended as the '## Notes' section")
    ap.add_argument("--earlier", type=Path, default=None,
                    help="prefix of an earlier session's table of this grid (PREFIX.json and PREFIX_grid.json): its "
                         "rows fill the cells this machine has not computed")
    args = ap.parse_args()
    try:
        cfg = BenchConfig.load(args.config)
        if not (Path(cfg.out) / "cells").is_dir():
            raise SystemExit(f"error: no grid at {cfg.out} (its `out`; run from the folder the bench ran in)")
        plan = validate_config(cfg)  # e.g. a dataset not under the data root
    except BenchConfigError as exc:
        raise SystemExit("error: " + " ".join(str(exc).split())) from None
    runner = BenchRunner(plan, Path(cfg.out), Path(cfg.cache_dir or Path(cfg.out) / "cache"), cfg.device, plots=False)
    cells, refs = runner.collect()
    rows, files = runner._write_results()  # the grid's tables from its finished cells (nothing is computed)
    cfg.save(Path(cfg.out) / "bench_config.yaml")  # the whole grid's config (a pass may have run a subset)
    k = cfg.measures.k
    table = method_table(rows, k)
    chosen = _chosen(args.chosen, list(cfg.backbones))
    settings = []
    for label, params in cfg.methods.items():
        m = cfg.method_of(label)
        c = chosen.get(m)
        settings.append(
            {
                "method": label,
                "settings": json.dumps(params),
                "chosen on tuning requests": f"{c['label']} ({c['source']})" if c else "-",
            }
        )
    done = {(c["scenario"], c["method"]) for c in cells}
    origin = [
        {
            "scenario": c["scenario"],
            "method": c["method"],
            "created": c.get("created"),
            "commit": ((c.get("provenance") or {}).get("commit") or "")[:10],
        }
        for c in cells
    ]
    carried = 0
    if args.earlier is not None:
        # the reference row of a scenario is this run's where its references were retrained here (the recipe is
        # deterministic on one thread: the same models), else the earlier one's; the same for the method rows
        e_rows, e_origin, source = _earlier(args.earlier, cfg)
        ref_here = {r["scenario"] for r in refs}
        have = {(r["scenario"], r["method"]) for r in table}
        extra = [r for r in e_rows if (r["scenario"], r["method"]) not in have
                 and (r["method"] != "retrain (reference)" or r["scenario"] not in ref_here)]
        carried = sum(r["method"] != "retrain (reference)" for r in extra)
        order = {s.label: i for i, s in enumerate(cfg.scenarios)}
        m_order = {m: i for i, m in enumerate(["retrain (reference)", *cfg.methods])}

        def grid_order(r: dict) -> tuple[int, int]:
            return order[r["scenario"]], m_order.get(r["method"], len(m_order))

        table = sorted(table + extra, key=grid_order)
        e_keys = {(r["scenario"], r["method"]) for r in extra}
        origin += [{**o, "created": f"{o['created']} ({source})"} for o in e_origin
                   if (o["scenario"], o["method"]) in e_keys]
        done |= e_keys
        origin.sort(key=grid_order)
    failed = {f["cell"] for f in runner.failures}
    missing = [
        {
            "scenario": cfg.scenarios[c.scenario].label,
            "method": c.method,
            "reference": "done" if any(r["scenario"] == cfg.scenarios[c.scenario].label for r in refs) else "not",
        }
        for c in plan.cells
        if (cfg.scenarios[c.scenario].label, c.method) not in done
    ]
    n_done = len(cells) + carried
    md = [
        f"Grid: `{args.config}` ({n_done}/{len(plan.cells)} cells done"
        + (f", {carried} of them carried over from `{args.earlier.name}` (an earlier session's run of the same cell "
           "keys)" if carried else "")
        + "; planned cells without a result are listed below). Retrain references: seeds 1 and 2 (the original's "
        "is 0); `floor` is their Jaccard@"
        f"{k} with each other. Seconds were measured on 2 shared, loaded cores, in the run that computed each cell "
        "(see 'Where each cell was computed'): compare within a scenario and read ratios.",
        "",
        format_table(settings, title="## Settings"),
        "",
        format_table(table, floatfmt=".4g", title="## Methods"),
        "",
        format_table(missing, title="## Planned, no result"),
        "",
        format_table(origin, title="## Where each cell was computed"),
    ]
    notes = args.notes.read_text().strip() if args.notes else ""
    if notes:
        md[2:2] = ["## Notes", "", notes, ""]
    record(
        args.name,
        {
            "config": str(args.config),
            "grid": str(cfg.out),
            "cells_done": n_done,
            "cells_carried_over": carried,
            "earlier": str(args.earlier) if args.earlier else None,
            "cells_planned": len(plan.cells),
            "settings": settings,
            "chosen": chosen,
            "rows": table,
            "missing": missing,
            "failed": sorted(failed),
            "origin": origin,
            "notes": notes,
            "grid_provenance": runner.provenance,
        },
        "\n".join(md),
    )
    shutil.copy(files["md"], RESULTS / f"{args.name}_grid.md")
    shutil.copy(files["json"], RESULTS / f"{args.name}_grid.json")
    print(f"{n_done}/{len(plan.cells)} cells ({carried} carried over); {len(missing)} planned without a result")


if __name__ == "__main__":
    main()
