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
#: one tiny grid: synthetic LightGCN, one random request, two retrain references
GRID = dict(
    name="t",
    datasets=["synthetic"],
    backbones=["lightgcn"],
    scenarios=[{"kind": "random", "ratio": 0.02}],
    recipe=TINY,
    measures={"n_samples": 300, "plot_samples": 100, "reference_seed_offsets": [1, 2]},
    progress=False,
    plots=False,
)


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
    grid = dict(GRID, out=str(tmp_path / "grid"))
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


def test_a_dataset_missing_from_the_data_root_is_one_error_line(tmp_path, monkeypatch, table):
    (tmp_path / "grid" / "cells").mkdir(parents=True)
    monkeypatch.setenv("UNLEARNREC_DATA", str(tmp_path / "empty"))
    cfg = tmp_path / "all.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "datasets": ["ml-1m"], "out": str(tmp_path / "grid")}))
    monkeypatch.setattr(sys, "argv", ["baselines15_table.py", str(cfg)])
    with pytest.raises(SystemExit) as exc:
        table.main()
    msg = str(exc.value)
    assert msg.startswith("error: ") and "ml-1m" in msg and "data root" in msg and "\n" not in msg


def test_an_earlier_sessions_rows_fill_the_cells_of_the_same_keys_only(tmp_path, monkeypatch, table):
    """A new machine has no cells of an earlier session: ``--earlier`` carries that session's recorded rows over
    for the cells whose settings, scenario, recipe and measures are this grid's, and for no other."""
    grid = dict(GRID)
    methods = {"retrain": {}, "edgedrop": {}, "finetune": {"epochs": 1}}
    earlier_cfg = tmp_path / "earlier.yaml"
    earlier_cfg.write_text(yaml.safe_dump({**grid, "methods": methods, "out": str(tmp_path / "g1")}, sort_keys=False))
    run_bench(BenchConfig(**grid, methods=methods, out=str(tmp_path / "g1")))
    monkeypatch.setattr(sys, "argv", ["baselines15_table.py", str(earlier_cfg), "--name", "old"])
    table.main()
    before = json.loads((tmp_path / "results" / "old.json").read_text())["results"]["rows"]

    # a later session on a new machine: a fresh grid folder, where only retrain and edgedrop have run
    run_bench(BenchConfig(**grid, methods={"retrain": {}, "edgedrop": {}}, out=str(tmp_path / "g2")))
    for finetune, carried in (({"epochs": 1}, 1), ({"epochs": 2}, 0)):
        cfg = tmp_path / "all.yaml"
        spec = {**grid, "methods": {**methods, "finetune": finetune}, "out": str(tmp_path / "g2")}
        cfg.write_text(yaml.safe_dump(spec, sort_keys=False))
        argv = ["baselines15_table.py", str(cfg), "--name", "tab", "--earlier", str(tmp_path / "results" / "old")]
        monkeypatch.setattr(sys, "argv", argv)
        table.main()
        out = json.loads((tmp_path / "results" / "tab.json").read_text())["results"]
        assert (out["cells_done"], out["cells_carried_over"]) == (2 + carried, carried)
        assert [m["method"] for m in out["missing"]] == ([] if carried else ["finetune"])
        rows = {r["method"]: r for r in out["rows"]}
        if carried:
            assert rows["finetune"] == next(r for r in before if r["method"] == "finetune")
            assert "old.json" in next(o for o in out["origin"] if o["method"] == "finetune")["created"]
        else:
            assert "finetune" not in rows
        assert rows["edgedrop"]["recall@20"] > 0, rows
        assert list(rows) == ["retrain (reference)", "retrain", "edgedrop",
                                                                     *(["finetune"] if carried else [])]

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**grid, "methods": methods, "out": str(tmp_path / "g2"),
                                     "measures": {**grid["measures"], "n_samples": 301}}, sort_keys=False))
    argv = ["baselines15_table.py", str(other), "--earlier", str(tmp_path / "results" / "old")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="ran another grid"):
        table.main()


def test_a_tuning_file_of_two_backbones_labels_each_grid_with_its_own_choice(tmp_path, table):
    chosen = [
        {"dataset": "ml-1m", "backbone": "sgl", "method": "ssd", "label": "ssd a5 l5"},
        {"dataset": "ml-1m", "backbone": "simgcl", "method": "ssd", "label": "ssd a100 l1"},
    ]
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({"results": {"chosen": chosen}}))
    assert table._chosen([path], ["sgl"])["ssd"]["label"] == "ssd a5 l5"
    assert table._chosen([path], ["simgcl"])["ssd"]["label"] == "ssd a100 l1"
