"""benchmarks/select_baselines15.py: issue 15's tuning protocol, picking each method's setting off tuning grids."""

from __future__ import annotations

import json
import sys

import pytest

from unlearnrec.bench.config import BenchConfig

from .conftest import REPO


@pytest.fixture
def sel(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("select_baselines15", None)
    import select_baselines15

    return select_baselines15


def _run(tmp_path, name: str, methods: dict, scenarios: list[dict], cells: dict[tuple[str, str], tuple]) -> object:
    """A finished grid folder: ``cells[(label, scenario)] = (valid recall, gap closed)``; originals at 0.2."""
    cfg = BenchConfig(name=name, datasets=["ml-1m"], backbones=["lightgcn"], methods=methods, scenarios=scenarios)
    rows = []
    for spec in cfg.scenarios:
        rows.append(
            {
                "dataset": "ml-1m",
                "backbone": "lightgcn",
                "method": "original",
                "scenario": spec.label,
                "seed": 0,
                "valid recall@20": 0.2,
                "gap closed": 0.0,
            }
        )
    for (label, sc), (valid, gap) in cells.items():
        rows.append(
            {
                "dataset": "ml-1m",
                "backbone": "lightgcn",
                "method": label,
                "scenario": sc,
                "seed": 0,
                "valid recall@20": valid,
                "gap closed": gap,
                "per-request s": 1.0,
            }
        )
    run = tmp_path / name
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"rows": rows, "config": cfg.model_dump(mode="json")}))
    return run


def _choose(sel, runs, guard=0.98):
    pts = sel.points(runs)
    summary, chosen = sel.select(pts, guard, sel.planned(runs))
    return {c["method"]: c for c in chosen}, {s["label"]: s for s in summary}


def test_a_point_is_judged_on_the_requests_its_grid_planned_for_it(tmp_path, sel):
    # CEU-like: "x a" runs on both grids' requests; "x b" (closer to retraining) only where its scenario lists it
    a = _run(
        tmp_path,
        "a",
        {"x a": {"method": "x", "k": 1}, "x b": {"method": "x", "k": 2}},
        [{"kind": "random", "ratio": 0.01, "seed": 1}, {"kind": "users", "n": 10, "seed": 2}],
        {
            ("x a", "random-1pct-s1"): (0.2, 0.3),
            ("x a", "users-random-n10-s2"): (0.2, 0.3),
            ("x b", "random-1pct-s1"): (0.2, 0.9),
            ("x b", "users-random-n10-s2"): (0.2, 0.9),
        },
    )
    b = _run(
        tmp_path,
        "b",
        {"x a": {"method": "x", "k": 1}, "x b": {"method": "x", "k": 2}},
        [{"kind": "adversarial", "methods": ["x a"]}, {"kind": "random", "ratio": 0.05, "seed": 3}],
        {
            ("x a", "adversarial-100pct"): (0.2, 0.3),
            ("x a", "random-5pct-s3"): (0.2, 0.3),
            ("x b", "random-5pct-s3"): (0.2, 0.9),
        },
    )
    chosen, points = _choose(sel, [a, b])
    assert chosen["x"]["label"] == "x b" and chosen["x"]["params"] == {"k": 2} and chosen["x"]["guard_met"]
    assert (points["x a"]["planned"], points["x b"]["planned"]) == (4, 3) and points["x b"]["admissible"]


def test_a_point_missing_a_planned_request_or_under_the_guard_is_not_chosen(tmp_path, sel):
    scen = [{"kind": "random", "ratio": 0.01, "seed": 1}, {"kind": "users", "n": 10, "seed": 2}]
    run = _run(
        tmp_path,
        "a",
        {"y a": {"method": "y"}, "y b": {"method": "y", "k": 2}, "y c": {"method": "y", "k": 3}},
        scen,
        {
            ("y a", "random-1pct-s1"): (0.2, 0.4),
            ("y a", "users-random-n10-s2"): (0.199, 0.4),
            ("y b", "random-1pct-s1"): (0.2, 1.0),  # its second planned request did not finish
            ("y c", "random-1pct-s1"): (0.15, 1.0),
            ("y c", "users-random-n10-s2"): (0.2, 1.0),
        },
    )
    chosen, points = _choose(sel, [run])
    assert not points["y b"]["complete"] and not points["y c"]["admissible"]
    assert chosen["y"]["label"] == "y a" and chosen["y"]["guard_met"]
    # nothing passes a stricter guard: the best worst-case validation ratio is taken, flagged
    chosen, _ = _choose(sel, [run], guard=0.999)
    assert chosen["y"]["label"] == "y a" and not chosen["y"]["guard_met"]


def test_a_folder_without_results_is_one_error_line(tmp_path, sel):
    with pytest.raises(SystemExit, match="results.json not found"):
        sel.points([tmp_path])
