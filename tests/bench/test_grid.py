"""The benchmark harness: config round trip and validation, a tiny resumable grid, references with their own
seeds and the noise floor between them, method aliases sharing a prepare step, the prepared-state cache,
provenance, scenario builders, NDCG gap."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml
from pydantic import ValidationError

from unlearnrec.bench import (
    BenchConfig,
    BenchConfigError,
    ScenarioSpec,
    run_bench,
    validate_config,
)
from unlearnrec.config import YamlConfig
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.unlearning.base import UNLEARNERS, Unlearner, register
from unlearnrec.unlearning.scenarios import (
    ScenarioError,
    activity_gap,
    item_degrees,
    items_request,
    ndcg_activity_gap,
    random_edges_request,
    select_by_activity,
    sequential_requests,
    unlearn_sequentially,
    user_degrees,
    users_request,
)

TINY_RECIPE = {"inline": {"model": {"embedding_size": 8, "n_layers": 2},
                          "train": {"epochs": 3, "batch_size": 2048, "eval_every": 1, "ks": [20]}}}


def tiny_config(out, **kw) -> BenchConfig:
    base = dict(
        name="tiny", datasets=["synthetic"], backbones=["lightgcn"],
        methods={"retrain": {}, "edgedrop": {}, "finetune": {"epochs": 1}},
        scenarios=[{"kind": "random", "ratio": 0.02}, {"kind": "sequential", "ratio": 0.01, "rounds": 2}],
        seeds=[0], recipe=TINY_RECIPE,
        measures={"n_samples": 500, "plot_samples": 200, "reference_seed_offsets": [1, 2, 3],
                  "membership": {"enabled": True, "n_shadow": 1, "epochs": 1, "max_audit_pairs": 300},
                  "relearning": {"enabled": True, "steps": 2, "batch_size": 128},
                  "quantization": {"enabled": True, "modes": ["fp32", "int8"]}},
        out=str(out), progress=False,
    )
    base.update(kw)
    return BenchConfig.model_validate(base)


# ------------------------------------------------------------------------------ config
def test_config_round_trips_through_yaml(tmp_path):
    cfg = tiny_config(tmp_path / "o", scenarios=[
        {"kind": "random", "ratio": 0.01}, {"kind": "users", "selection": "most-active", "ratio": 0.05},
        {"kind": "items", "selection": "least_active", "n": 3}, {"kind": "adversarial"},
        {"kind": "sequential", "ratio": 0.01, "rounds": 3, "name": "seq"}],
        methods={"edgedrop": {}, "finetune 2": {"method": "finetune", "epochs": 2}, "finetune": None})
    again = BenchConfig.from_yaml(cfg.to_yaml())
    assert again == cfg
    assert [again.method_of(m) for m in again.methods] == ["edgedrop", "finetune", "finetune"]
    assert again.method_params("finetune 2") == {"epochs": 2} and again.method_params("finetune") == {}
    assert [s.label for s in again.scenarios] == [
        "random-1pct", "users-most_active-5pct", "items-least_active-n3", "adversarial-100pct", "seq"]
    # a base recipe next to the config file, then inline < overrides < max_seconds < backbone overrides < grid
    (tmp_path / "recipe.yaml").write_text("model: {embedding_size: 32}\ntrain: {epochs: 7, learning_rate: 0.01}\n")
    (tmp_path / "bench.yaml").write_text(
        "datasets: [synthetic]\nbackbones: [mf, lightgcn]\nmethods: [edgedrop]\n"
        "recipe:\n  base: recipe.yaml\n  inline: {train: {epochs: 9}}\n  overrides: {train.patience: 2}\n"
        "  max_seconds: 50\n  backbone_overrides: {mf: {train.max_seconds: 20}}\n")
    cfg = BenchConfig.load(tmp_path / "bench.yaml")
    assert cfg.methods == {"edgedrop": {}}
    rc = cfg.run_config("synthetic", "mf", 3)
    assert (rc.model.name, rc.model.embedding_size, rc.train.epochs, rc.train.learning_rate) == ("mf", 32, 9, 0.01)
    assert (rc.train.patience, rc.train.max_seconds, rc.train.seed) == (2, 20, 3)
    assert cfg.run_config("synthetic", "lightgcn", 0).train.max_seconds == 50
    assert BenchConfig.from_yaml(cfg.to_yaml()).model_dump() == cfg.model_dump()


@pytest.mark.parametrize("spec, message", [
    ({"kind": "random"}, "needs ratio"),
    ({"kind": "random", "ratio": 0.1, "n": 3}, "does not take n"),
    ({"kind": "users", "ratio": 0.1, "n": 3}, "exactly one of n"),
    ({"kind": "users", "n": 3, "selection": "popular"}, "most_active"),
    ({"kind": "sequential", "ratio": 0.01}, "needs rounds"),
    ({"kind": "adversarial", "rounds": 2}, "does not take rounds"),
    ({"kind": "random", "ratio": 1.5}, "less than or equal to 1"),
    ({"kind": "deletion", "ratio": 0.1}, "random"),
])
def test_bad_scenario_specs_are_refused(spec, message):
    with pytest.raises(ValidationError, match=message):
        ScenarioSpec.model_validate(spec)


def test_bad_configs_fail_before_any_training(tmp_path, monkeypatch):
    from unlearnrec import api

    def no_training(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("training started")

    monkeypatch.setattr(api, "train", no_training)
    bad = [
        ({"methods": {"nope": {}}}, "unknown unlearning method 'nope'"),
        ({"methods": {"my alias": {"method": "nope"}}}, "unknown unlearning method 'nope' \\(entry 'my alias'\\)"),
        ({"methods": {"ft": {"method": "finetune", "epochs": 0}}}, "method ft: invalid hyper-parameters"),
        ({"methods": {"finetune": {"epochs": 0}}}, "method finetune: invalid hyper-parameters"),
        ({"datasets": ["nope"]}, "unknown dataset 'nope'"),
        ({"recipe": {"overrides": {"train.lr": 1}}}, "unknown config key 'train.lr'"),
        ({"scenarios": [{"kind": "sequential", "ratio": 0.5, "rounds": 3}]}, "exceed"),
        ({"scenarios": [{"kind": "random", "ratio": 0.02, "methods": ["edgedrop", "nope"]}]},
         "scenario random-2pct: methods nope are not entries of methods"),
    ]
    for kw, message in bad:
        cfg = tiny_config(tmp_path / "never", **kw)
        with pytest.raises(BenchConfigError, match=message):
            run_bench(cfg)
    with pytest.raises(ValidationError, match="more than once"):
        tiny_config(tmp_path, seeds=[0, 0])
    with pytest.raises(ValidationError, match="share the label"):
        tiny_config(tmp_path, scenarios=[{"kind": "random", "ratio": 0.01}, {"kind": "random", "ratio": 0.01}])
    for methods, message in [({"a b": {}, "a_b": {}}, "same file name"), ({"original": {}}, "reserved"),
                             ({"_x": {}}, "reserved"), ({"x": {"method": 3}}, "must name a registered method")]:
        with pytest.raises(ValidationError, match=message):
            tiny_config(tmp_path, methods=methods)
    (tmp_path / "b.yaml").write_text("scenarios: [{kind: users}]\n")
    with pytest.raises(BenchConfigError, match="scenarios.0"):
        BenchConfig.load(tmp_path / "b.yaml")
    assert not (tmp_path / "never").exists()


def test_a_scenario_can_restrict_its_methods(tmp_path):
    from unlearnrec.bench.grid import validate_config

    cfg = tiny_config(tmp_path / "o", scenarios=[
        {"kind": "random", "ratio": 0.02}, {"kind": "random", "ratio": 0.01, "methods": ["retrain", "finetune"]}])
    assert BenchConfig.from_yaml(cfg.to_yaml()) == cfg
    cells = {(c.label, c.method) for c in validate_config(cfg).cells}
    assert cells == {("random-2pct", "retrain"), ("random-2pct", "edgedrop"), ("random-2pct", "finetune"),
                     ("random-1pct", "retrain"), ("random-1pct", "finetune")}
    with pytest.raises(ValidationError, match="must not be empty"):
        ScenarioSpec.model_validate({"kind": "random", "ratio": 0.1, "methods": []})


def test_a_restricted_scenario_shares_its_cells_with_the_whole_grid(tmp_path):
    """A pass that runs some methods of a scenario writes the cells the full grid reads: which methods a scenario
    lists changes none of its numbers, so it is not part of any key."""
    scenario = {"kind": "random", "ratio": 0.02}
    kw = dict(scenarios=[{**scenario, "methods": ["retrain", "edgedrop"]}],
              measures={"n_samples": 300, "plot_samples": 100, "reference_seed_offsets": [1], "noise_floor": False},
              plots=False)
    first = run_bench(tiny_config(tmp_path / "o", **kw), log=lambda m: None)
    assert (first.computed, first.reused) == (2, 0)
    whole = run_bench(tiny_config(tmp_path / "o", **{**kw, "scenarios": [scenario]}), log=lambda m: None)
    assert (whole.computed, whole.reused, whole.trainings) == (1, 2, 0)  # only finetune ran; nothing retrained


@pytest.mark.parametrize("measures, message", [
    ({"reference_seed_offsets": [0, 1]}, "must not contain 0: that is the original model's seed"),
    ({"reference_seed_offsets": [1, 1, 2]}, "more than once"),
    ({"reference_seed_offsets": [1]}, "noise_floor needs at least 2 references"),
    ({"reference_seed_offsets": []}, "at least 1"),
    ({"noise_floor_seed_offset": 1000}, "replaced by reference_seed_offsets"),
])
def test_reference_seed_offsets_are_validated(tmp_path, measures, message):
    with pytest.raises(ValidationError, match=message):
        tiny_config(tmp_path, measures=measures)
    ok = tiny_config(tmp_path, measures={"reference_seed_offsets": [5], "noise_floor": False})
    assert ok.measures.reference_seed_offsets == [5]


# ------------------------------------------------------------------------------ the grid
@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    cfg = tiny_config(out)
    first = run_bench(cfg, log=lambda m: None)
    return cfg, out, first


def _cells(out):
    return sorted(out.glob("cells/**/*.json"))


def test_grid_writes_tables_cells_and_plots(grid):
    _, out, res = grid
    assert not res.failures, res.failures
    assert res.trainings == 7  # original + 3 retrain references x 2 scenarios
    assert res.computed == 6 and res.reused == 0
    names = {p.name for p in _cells(out)}
    assert names == {"_reference-seed0.json", "retrain-seed0.json", "edgedrop-seed0.json", "finetune-seed0.json"}
    assert len(_cells(out)) == 8
    # one row per cell plus the original, the mean of the references and the noise floor of each scenario
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * (1 + 1 + 3 + 1)
    for col in ("dataset", "backbone", "method", "scenario", "seed", "recall@20", "ndcg@20", "ndcg@20 gap", "MI-BF",
                "MI-NG", "request score", "request rank pct", "rank pct sd", "gap closed", "Jaccard@20", "Jaccard sd",
                "Jaccard@20 retained", "JS", "in floor", "attack AUC", "one-off s", "per-request s", "speedup", "note"):
        assert col in rows[0], col
    assert [r["method"] for r in rows[:6]] == [
        "original", "retrain (reference)", "retrain", "edgedrop", "finetune", "noise floor"]
    by = {(r["scenario"], r["method"]): r for r in rows}
    # edgedrop on LightGCN: same parameters, the request no longer propagates; speedup over the reference
    ed = by[("random-2pct", "edgedrop")]
    assert float(ed["speedup"]) > 1 and 0 <= float(ed["Jaccard@20"]) <= 1 and float(ed["JS"]) >= 0
    assert 0 <= float(ed["Jaccard@20 retained"]) <= 1
    assert 0 < float(by[("random-2pct", "noise floor")]["Jaccard@20 retained"]) <= 1
    assert 0 <= float(ed["attack AUC"]) <= 1
    mean = by[("random-2pct", "retrain (reference)")]
    assert mean["Jaccard@20"] == "" and float(mean["speedup"]) == 1.0 and float(mean["rank pct sd"]) >= 0
    assert float(mean["gap closed"]) == pytest.approx(1.0) and float(by[("random-2pct", "original")]["gap closed"]) == 0
    # the retrain method reuses the first reference (seed 1), measured against the two others
    assert by[("random-2pct", "retrain")]["note"] == "= reference seed 1"
    assert 0 <= float(by[("random-2pct", "retrain")]["Jaccard@20"]) <= 1
    assert by[("random-2pct", "original")]["per-request s"] == ""
    # validation recall, what tuning grids select on (never test), for every row
    assert 0 < float(ed["valid recall@20"]) <= 1 and 0 < float(by[("random-2pct", "original")]["valid recall@20"])
    assert by[("random-2pct", "noise floor")]["note"].startswith("3 pair(s), band >= ")
    summary = json.loads((out / "results.json").read_text())
    assert summary["cells_done"] == summary["cells_planned"] == 6 and len(summary["rows"]) == 12
    assert [r["method"] for r in summary["reference_rows"][:3]] == [f"retrain (seed {s})" for s in (1, 2, 3)]
    assert len(summary["floors"]) == 2 and summary["floors"][0]["reference_seeds"] == [1, 2, 3]
    fl = summary["floors"][0]
    assert fl["n_pairs"] == 3 and fl["pairs"] == [[1, 2], [1, 3], [2, 3]] and fl["jaccard"]["sd"] > 0
    assert fl["band"]["jaccard_low"] == pytest.approx(fl["jaccard"]["mean"] - 2 * fl["jaccard"]["sd"])
    assert set(summary["provenance"]) >= {"commit", "dirty", "describe"}
    assert "| edgedrop" in (out / "results.md").read_text()
    # sequential: 2 rounds through apply, each timed
    seq = json.loads(next(out.glob("cells/**/sequential-2x1pct/finetune-seed0.json")).read_text())
    assert len(seq["timings"]["request_seconds"]) == 2 and len(seq["outcome"]["rounds"]) == 2
    assert seq["request"]["n_edges"] == 2 * seq["request"]["rounds"][0]["n_edges"]
    # the arrays the plots need are in the cell
    assert {"scores", "rank_pct", "roc"} <= set(seq["plot"])
    assert {"request", "non_edges", "remaining"} <= set(seq["plot"]["scores"])
    assert "relearning" in seq["measures"] and "quantization" in seq["measures"]
    kinds = sorted(p.name.split("_")[0] for p in res.plots)
    assert kinds == sorted(["scores", "tradeoff", "roc", "rankshift"] * 2)
    assert all(p.is_file() and p.stat().st_size > 1000 for p in res.plots)


def test_rerun_skips_finished_cells_and_redoes_only_missing_ones(grid):
    cfg, out, _ = grid
    before = {p: p.stat().st_mtime_ns for p in _cells(out)}
    again = run_bench(cfg, plots=False, log=lambda m: None)
    assert (again.trainings, again.computed, again.reused) == (0, 0, 6)
    assert {p: p.stat().st_mtime_ns for p in _cells(out)} == before
    # an interrupted run: one cell never written
    victim = next(out.glob("cells/**/random-2pct/finetune-seed0.json"))
    victim.unlink()
    again = run_bench(cfg, plots=False, log=lambda m: None)
    assert (again.trainings, again.computed, again.reused) == (0, 1, 5)  # models come from the cache
    after = {p: p.stat().st_mtime_ns for p in _cells(out)}
    assert victim.is_file() and [p for p in after if after[p] != before.get(p)] == [victim]
    # a changed hyper-parameter re-does exactly that method's cells
    cfg2 = cfg.model_copy(update={"methods": {**cfg.methods, "finetune": {"epochs": 2}}})
    again = run_bench(cfg2, plots=False, log=lambda m: None)
    assert (again.trainings, again.computed) == (0, 2)


def test_a_cell_another_run_wrote_meanwhile_is_not_computed_again(grid, monkeypatch):
    """Two runs on one results folder (say, two scenario subsets side by side): a cell that is pending when a
    run starts but on disk by the time the run reaches it is read, not computed a second time."""
    from unlearnrec.bench.grid import BenchRunner

    cfg, out, _ = grid
    run_bench(cfg, plots=False, log=lambda m: None)  # every cell current for cfg (another test changes some)
    first = next(out.glob("cells/**/random-2pct/edgedrop-seed0.json"))
    second = next(out.glob("cells/**/random-2pct/finetune-seed0.json"))
    saved = second.read_bytes()
    first.unlink()
    second.unlink()
    compute = BenchRunner._compute_cell
    computed = []

    def other_run_writes_the_second(self, env, c, ref):
        computed.append(c.method)
        second.write_bytes(saved)  # what the other run writes while this one computes its first cell
        return compute(self, env, c, ref)

    monkeypatch.setattr(BenchRunner, "_compute_cell", other_run_writes_the_second)
    again = run_bench(cfg, plots=False, log=lambda m: None)
    assert computed == ["edgedrop"] and (again.computed, again.reused) == (1, 5)
    assert first.is_file() and second.read_bytes() == saved


def test_references_are_retrained_with_seeds_other_than_the_original(grid):
    _, out, _ = grid
    ref = json.loads(next(out.glob("cells/**/random-2pct/_reference-seed0.json")).read_text())
    orig, refs = ref["trained"]["original"], ref["trained"]["references"]
    assert orig["seed"] == 0 and [r["seed"] for r in refs] == [1, 2, 3] and [r["offset"] for r in refs] == [1, 2, 3]
    for r in refs:  # the cached checkpoints themselves: the recipe with the reference's seed, on the residual graph
        meta = json.loads((Path(r["cache"]) / "meta.json").read_text())
        assert yaml.safe_load((Path(r["cache"]) / "config.yaml").read_text())["train"]["seed"] == r["seed"]
        assert meta["bench"]["n_edges"] == 8434 - ref["request"]["n_edges"] and not meta["bench"]["clean_train"]
    assert len({orig["cache"], *(r["cache"] for r in refs)}) == 4
    # the floor: every pair of references, mean and sd over the pairs
    assert ref["floor"]["n_pairs"] == 3 and ref["floor"]["jaccard"]["n"] == 3
    assert ref["rows"]["retrain"]["per-request s"] == pytest.approx(np.mean([r["seconds"] for r in refs]))
    assert ref["provenance"] is not None and "commit" in ref["provenance"]


# ------------------------------------------------------------------------------ the floor discriminates
# a fixed 25 epochs (evaluated once, at the end): enough for retrains with different seeds to agree (pairwise
# Jaccard@20 ~0.64, sd ~0.013 over 6 pairs), still far from a memorised original
TRAINED_RECIPE = {"inline": {"model": {"embedding_size": 32, "n_layers": 2},
                             "train": {"epochs": 25, "batch_size": 1024, "learning_rate": 0.01, "eval_every": 25,
                                       "ks": [20]}}}


def test_floor_tells_a_no_op_from_retraining(tmp_path):
    """Half the edges deleted and models trained until references agree: the untouched original and EdgeDrop
    (parameters unchanged) fall below the floor band, a retrain measured as a method lies inside it."""
    cfg = tiny_config(
        tmp_path / "o", methods={"retrain": {}, "edgedrop": {}, "retrain seed 7": {"method": "retrain", "seed": 7}},
        scenarios=[{"kind": "random", "ratio": 0.5}], recipe=TRAINED_RECIPE, plots=False,
        measures={"n_samples": 500, "plot_samples": 50, "reference_seed_offsets": [1, 2, 3, 4]})
    res = run_bench(cfg, log=lambda m: None)
    assert not res.failures, res.failures
    by = {r["method"]: r for r in res.rows}
    floor = json.loads((tmp_path / "o" / "results.json").read_text())["floors"][0]
    assert floor["reference_seeds"] == [1, 2, 3, 4] and 0 not in floor["reference_seeds"]
    low = floor["band"]["jaccard_low"]
    assert floor["n_pairs"] == 6 and 0 < floor["jaccard"]["sd"] and low < floor["jaccard"]["mean"]
    for name in ("original", "edgedrop"):
        assert by[name]["in floor"] is False and by[name]["Jaccard@20"] < low, (name, by[name]["Jaccard@20"], low)
    for name in ("retrain", "retrain seed 7"):
        assert by[name]["in floor"] is True and by[name]["Jaccard@20"] >= low, (name, by[name]["Jaccard@20"], low)
    assert by["original"]["Jaccard@20"] < by["edgedrop"]["Jaccard@20"] < by["retrain seed 7"]["Jaccard@20"]
    assert by["original"]["gap closed"] == 0 and by["retrain (reference)"]["gap closed"] == pytest.approx(1.0)
    assert by["retrain seed 7"]["gap closed"] == pytest.approx(1.0, abs=0.5)
    assert by["noise floor"]["Jaccard@20"] == pytest.approx(floor["jaccard"]["mean"])


# ------------------------------------------------------------------------------ aliases and prepared state
class FakeConfig(YamlConfig):
    prep: int = 0
    """Changes what prepare computes."""
    scale: float = 0.0
    """Used per request only."""


class FakePrep(Unlearner):
    """EdgeDrop with a prepared token, counting its preparations and loads."""

    name = "test-fake-prep"
    Config = FakeConfig
    calls = 0
    loads = 0

    @classmethod
    def prepare_fields(cls) -> set[str]:
        return {"prep"}

    def _prepare(self, ctx) -> None:
        type(self).calls += 1
        self.token = f"prep{self.config.prep}-call{type(self).calls}"
        FAKE_GIT["commit"] = "after" + "0" * 35  # the checkout moves on while the run goes on

    def _unlearn(self, request, residual):
        return self._outcome(self._require().model, residual, request, {"token": self.token,
                                                                          "scale": self.config.scale})

    def save_prepared(self, directory) -> bool:
        (Path(directory) / "token.txt").write_text(self.token)
        return True

    def load_prepared(self, ctx, directory) -> bool:
        path = Path(directory) / "token.txt"
        if not path.is_file():
            return False
        self.token = path.read_text()
        type(self).loads += 1
        return True


FAKE_GIT: dict = {}


@pytest.fixture
def fake_method(monkeypatch):
    from unlearnrec import provenance

    register(FakePrep)
    FakePrep.calls = FakePrep.loads = 0
    FAKE_GIT.clear()
    FAKE_GIT.update({"commit": "before" + "0" * 34, "dirty": True, "describe": "x-dirty"})
    monkeypatch.setattr(provenance, "git_state", lambda path=None: dict(FAKE_GIT))
    yield FakePrep
    UNLEARNERS.pop(FakePrep.name, None)


def test_aliases_share_one_prepare_and_the_prepared_state_is_cached(tmp_path, fake_method):
    methods = {"fake a": {"method": fake_method.name}, "fake b": {"method": fake_method.name, "scale": 1.0},
               "fake c": {"method": fake_method.name, "prep": 1}}
    cfg = tiny_config(tmp_path / "o1", methods=methods, cache_dir=str(tmp_path / "cache"), plots=False,
                      scenarios=[{"kind": "random", "ratio": 0.02}, {"kind": "sequential", "ratio": 0.01, "rounds": 2}],
                      measures={"n_samples": 300, "plot_samples": 50, "reference_seed_offsets": [1],
                                "noise_floor": False})
    res = run_bench(cfg, log=lambda m: None)
    assert not res.failures, res.failures
    # a and b differ only in a per-request field: one prepare for both, for both scenarios (the sequential one
    # works on a copy); c has its own
    assert fake_method.calls == 2 and res.prepares == 2 and res.prepared_loads == 0
    cells = {p.name: json.loads(p.read_text()) for p in (tmp_path / "o1").glob("cells/**/random-2pct/fake*.json")}
    assert set(cells) == {"fake_a-seed0.json", "fake_b-seed0.json", "fake_c-seed0.json"}
    a, b, c = (cells[f"fake_{x}-seed0.json"] for x in "abc")
    assert (a["method"], a["registered"], b["method_config"]) == ("fake a", fake_method.name, {"scale": 1.0})
    assert a["outcome"]["log"]["token"] == b["outcome"]["log"]["token"] != c["outcome"]["log"]["token"]
    assert (a["outcome"]["log"]["scale"], b["outcome"]["log"]["scale"]) == (0.0, 1.0)
    assert a["prepared"]["source"] == "prepared" and b["prepared"]["source"] == "shared"
    assert a["timings"]["one_off_seconds"] == b["timings"]["one_off_seconds"]
    # provenance: taken when the run started, although the checkout "moved" during it
    summary = json.loads((tmp_path / "o1" / "results.json").read_text())
    files = [json.loads(p.read_text()) for p in (tmp_path / "o1").glob("cells/**/*.json")]
    assert summary["provenance"]["commit"].startswith("before") and res.provenance["dirty"] is True
    assert all(f["provenance"]["commit"].startswith("before") for f in files) and len(files) == 8
    assert {c["registered"] for c in summary["cells"]} == {fake_method.name}
    assert all(r["in floor"] is None for r in summary["rows"])  # one reference: no floor
    # the prepared state on disk: one folder per prepare config, its key and one-off time recorded
    dirs = sorted((tmp_path / "cache" / "prepared").iterdir())
    assert len(dirs) == 2 and all(d.name.startswith(fake_method.name + "-") for d in dirs)
    meta = json.loads((dirs[0] / "bench_prepared.json").read_text())
    assert meta["method"] == fake_method.name and meta["prepare_fields"] == ["prep"]
    # another run on the same cache: models and prepared states are loaded, nothing is trained or prepared
    res2 = run_bench(cfg.model_copy(update={"out": str(tmp_path / "o2")}), log=lambda m: None)
    assert not res2.failures and res2.trainings == 0
    assert fake_method.calls == 2 and fake_method.loads == 2 and res2.prepares == 0 and res2.prepared_loads == 2
    a2 = json.loads(next((tmp_path / "o2").glob("cells/**/random-2pct/fake_a-seed0.json")).read_text())
    assert a2["prepared"]["source"] == "loaded" and a2["outcome"]["log"]["token"] == a["outcome"]["log"]["token"]
    assert a2["timings"]["one_off_seconds"] == pytest.approx(a["timings"]["one_off_seconds"])


def test_adversarial_injection_uses_the_scenario_seed(tmp_path):
    from unlearnrec.bench.grid import BenchRunner, _Env
    from unlearnrec.unlearning.scenarios import adversarial_edges

    cfg = tiny_config(tmp_path / "o", methods={"edgedrop": {}}, plots=False, scenarios=[
        {"kind": "adversarial", "ratio": 0.5, "seed": 5}, {"kind": "adversarial", "ratio": 0.5}])
    assert [s.label for s in cfg.scenarios] == ["adversarial-50pct-s5", "adversarial-50pct"]
    runner = BenchRunner(validate_config(cfg), tmp_path / "o", tmp_path / "cache", "cpu", log=lambda m: None)
    own, cells = _Env(runner, "synthetic", "lightgcn", 0, 0), _Env(runner, "synthetic", "lightgcn", 0, 1)
    clean = own.clean
    assert (own.request_seed, cells.request_seed) == (5, 0)
    for env, seed in ((own, 5), (cells, 0)):
        want = adversarial_edges(clean.model, clean.graph, own.data, ratio=0.5, seed=seed)
        assert np.array_equal(env.injected, want) and np.array_equal(env.request, want)
        assert f"(seed {seed})" in env.rounds[0].description
    assert not np.array_equal(own.injected, cells.injected)
    assert own.original.key != cells.original.key  # different attacked graphs, different originals


# ------------------------------------------------------------------------------ scenarios
def hand_graph() -> Graph:
    # user degrees 5, 1, 3, 0, 2 ; item degrees 3, 3, 2, 2, 1
    pairs = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0), (2, 0), (2, 1), (2, 2), (4, 1), (4, 3)]
    return Graph(np.array(pairs), 5, 5)


def test_user_and_item_selection_by_activity():
    g = hand_graph()
    assert user_degrees(g).tolist() == [5, 1, 3, 0, 2] and item_degrees(g).tolist() == [3, 3, 2, 2, 1]
    assert select_by_activity(user_degrees(g), "most_active", n=2).tolist() == [0, 2]
    assert select_by_activity(user_degrees(g), "least_active", n=2).tolist() == [1, 4]  # user 3 has no edge
    assert select_by_activity(user_degrees(g), "least-active", fraction=0.25).tolist() == [1]
    # ties go to the lower index
    assert select_by_activity(item_degrees(g), "most_active", n=1).tolist() == [0]
    assert select_by_activity(item_degrees(g), "least_active", n=2).tolist() == [2, 4]
    r1 = select_by_activity(user_degrees(g), "random", n=2, seed=3)
    assert np.array_equal(r1, select_by_activity(user_degrees(g), "random", n=2, seed=3)) and 3 not in r1
    req = users_request(g, "most_active", n=1)
    assert req.kind == "users" and req.edges.tolist() == [[0, i] for i in range(5)]
    req = items_request(g, "least_active", n=1)
    assert req.kind == "items" and req.edges.tolist() == [[0, 4]]
    assert users_request(g, "least_active", fraction=0.5).edges[:, 0].tolist() == [1, 4, 4]
    with pytest.raises(ScenarioError, match="only 4 users"):
        users_request(g, "random", n=5)
    with pytest.raises(ScenarioError, match="exactly one"):
        users_request(g, "random", n=1, fraction=0.5)
    with pytest.raises(ScenarioError, match="unknown selection"):
        users_request(g, "popular", n=1)


def test_random_and_sequential_requests_have_the_right_sizes():
    data = make_synthetic()
    g = Graph(data.train, data.n_users, data.n_items)
    assert len(random_edges_request(g, 0.01, seed=1)) == round(0.01 * g.n_edges)
    users = users_request(g, "most_active", fraction=0.05)
    assert len(users.users_touched) == round(0.05 * 600)
    top = np.sort(user_degrees(g))[::-1]
    assert len(users) == top[:30].sum()  # the 30 most active users' edges
    rounds = sequential_requests(g, 0.02, 3, seed=4)
    size = round(0.02 * g.n_edges)
    assert [len(r) for r in rounds] == [size] * 3
    allk = np.concatenate([r.keys(g.n_items) for r in rounds])
    assert len(np.unique(allk)) == 3 * size and g.contains(np.concatenate([r.edges for r in rounds])).all()
    residual = g
    for r in rounds:  # each round is a request of the graph left by the rounds before
        residual = r.residual(residual)
    with pytest.raises(ScenarioError, match="need more"):
        sequential_requests(g, 0.5, 3)

    from unlearnrec.config import RunConfig
    from unlearnrec.models import build_model
    from unlearnrec.unlearning.base import Context, build_unlearner

    cfg = RunConfig().with_overrides({"model.embedding_size": 4})
    model = build_model(data.n_users, data.n_items, cfg.model)
    unl = build_unlearner("edgedrop").prepare(Context(model, g, data, cfg, progress=False))
    seen = []
    outs = unlearn_sequentially(unl, rounds, callback=lambda r, o: seen.append((r, o.graph.n_edges)))
    assert seen == [(1, g.n_edges - size), (2, g.n_edges - 2 * size), (3, g.n_edges - 3 * size)]
    assert np.array_equal(outs[-1].graph.keys, residual.keys)


def test_ndcg_gap_of_the_most_active_users_on_a_hand_case():
    degrees = np.array([10, 1, 2, 3])
    gap = activity_gap([1.0, 0.2, 0.4, 0.6], [0, 1, 2, 3], degrees, top_fraction=0.25)
    assert gap["n_active"] == 1 and gap["active"] == 1.0 and gap["inactive"] == pytest.approx(0.4)
    assert gap["gap"] == pytest.approx(0.6)
    gap = activity_gap([1.0, 0.2, 0.4, 0.6], [0, 1, 2, 3], degrees, top_fraction=0.5)  # users 0 and 3
    assert gap["active"] == pytest.approx(0.8) and gap["inactive"] == pytest.approx(0.3)
    # from a ranking: 3 users, 2 items; user 0 (most active) ranks its test item first, the others last
    u = torch.tensor([[1.0], [-1.0], [-1.0]])
    i = torch.tensor([[1.0], [0.5]])
    truth = sp.csr_matrix(np.array([[1, 0], [1, 0], [1, 0]], dtype=np.float32))
    res = evaluate_ranking(u, i, truth, None, ks=(1,))
    g = ndcg_activity_gap(res, np.array([5, 1, 1]), k=1, top_fraction=0.05)  # ceil(0.05 * 3) = 1 active user
    assert (g["active"], g["inactive"], g["gap"], g["n_inactive"]) == (1.0, 0.0, 1.0, 2)


def test_model_cache_keys_of_registered_data_ignore_the_own_data_field():
    """`data.source` (own files) is left out of the recipe key when unset, so models cached before it existed
    keep their keys; set, it is part of the key."""
    from unlearnrec.bench.grid import _recipe_dump
    from unlearnrec.config import RunConfig

    assert "source" not in _recipe_dump(RunConfig())["data"]
    own = RunConfig().with_overrides({"data.source": {"path": "x.csv"}})
    assert _recipe_dump(own)["data"]["source"]["path"] == "x.csv"
