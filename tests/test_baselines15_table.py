"""benchmarks/baselines15_table.py: the reported table read off a bench grid, planned cells without a result listed."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from unlearnrec.bench import BenchConfig, run_bench

from .conftest import REPO

TINY = {
    "inline": {
        "model": {"embedding_size": 8, "n_layers": 2},
        "train": {"epochs": 2, "batch_size": 2048, "eval_every": 1, "ks": [20]},
    }
}


@pytest.fixture
def table(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    for mod in ("_common", "baselines15_table"):
        sys.modules.pop(mod, None)
    import _common
    import baselines15_table

    monkeypatch.setattr(_common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(baselines15_table, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    return baselines15_table


def test_the_table_holds_the_finished_cells_and_lists_the_planned_ones(tmp_path, monkeypatch, table):
    grid = dict(
        name="t",
        datasets=["synthetic"],
        backbones=["lightgcn"],
        scenarios=[{"kind": "random", "ratio": 0.02}],
        recipe=TINY,
        measures={"n_samples": 300, "plot_samples": 100, "reference_seed_offsets": [1, 2]},
        out=str(tmp_path / "grid"),
        progress=False,
        plots=False,
    )
    run_bench(BenchConfig(**grid, methods={"retrain": {}, "edgedrop": {}}))  # a pass: finetune not run
    cfg = tmp_path / "all.yaml"
    cfg.write_text(
        yaml.safe_dump({**grid, "methods": {"retrain": {}, "edgedrop": {}, "finetune": {"epochs": 1}}}, sort_keys=False)
    )
    monkeypatch.setattr(sys, "argv", ["baselines15_table.py", str(cfg), "--name", "tab"])
    table.main()
    out = json.loads((tmp_path / "results" / "tab.json").read_text())["results"]
    assert (out["cells_done"], out["cells_planned"]) == (2, 3)
    assert [(m["method"], m["reference"]) for m in out["missing"]] == [("finetune", "done")]
    edge = next(r for r in out["rows"] if r["method"] == "edgedrop")
    grid_rows = json.loads((tmp_path / "results" / "tab_grid.json").read_text())["rows"]
    original = next(r for r in grid_rows if r["method"] == "original")
    assert edge["recall@20"] > 0 and edge["/ original"] == pytest.approx(edge["recall@20"] / original["recall@20"])
    assert [s["method"] for s in out["settings"]] == ["retrain", "edgedrop", "finetune"]
    assert (tmp_path / "results" / "tab_grid.md").read_text().startswith("# t")
    assert "| finetune" in (tmp_path / "results" / "tab.md").read_text()


def test_a_config_whose_grid_never_ran_is_one_error_line(tmp_path, monkeypatch, table):
    cfg = tmp_path / "all.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "datasets": ["synthetic"], "out": str(tmp_path / "none")}))
    monkeypatch.setattr(sys, "argv", ["baselines15_table.py", str(cfg)])
    with pytest.raises(SystemExit, match="no grid at"):
        table.main()
