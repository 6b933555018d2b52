"""The benchmark harness: config round trip and validation, a tiny resumable grid, scenario builders, NDCG gap."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pydantic import ValidationError

from unlearnrec.bench import (
    BenchConfig,
    BenchConfigError,
    ScenarioSpec,
    run_bench,
)
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
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
        measures={"n_samples": 500, "plot_samples": 200,
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
        {"kind": "sequential", "ratio": 0.01, "rounds": 3, "name": "seq"}])
    again = BenchConfig.from_yaml(cfg.to_yaml())
    assert again == cfg
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
        ({"methods": {"finetune": {"epochs": 0}}}, "method finetune: invalid hyper-parameters"),
        ({"datasets": ["nope"]}, "unknown dataset 'nope'"),
        ({"recipe": {"overrides": {"train.lr": 1}}}, "unknown config key 'train.lr'"),
        ({"scenarios": [{"kind": "sequential", "ratio": 0.5, "rounds": 3}]}, "exceed"),
    ]
    for kw, message in bad:
        cfg = tiny_config(tmp_path / "never", **kw)
        with pytest.raises(BenchConfigError, match=message):
            run_bench(cfg)
    with pytest.raises(ValidationError, match="more than once"):
        tiny_config(tmp_path, seeds=[0, 0])
    with pytest.raises(ValidationError, match="share the label"):
        tiny_config(tmp_path, scenarios=[{"kind": "random", "ratio": 0.01}, {"kind": "random", "ratio": 0.01}])
    (tmp_path / "b.yaml").write_text("scenarios: [{kind: users}]\n")
    with pytest.raises(BenchConfigError, match="scenarios.0"):
        BenchConfig.load(tmp_path / "b.yaml")
    assert not (tmp_path / "never").exists()


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
    assert res.trainings == 5  # original + (retrain + noise-floor retrain) x 2 scenarios
    assert res.computed == 6 and res.reused == 0
    names = {p.name for p in _cells(out)}
    assert names == {"_reference-seed0.json", "retrain-seed0.json", "edgedrop-seed0.json", "finetune-seed0.json"}
    assert len(_cells(out)) == 8
    # one row per cell plus the original and the noise floor of each scenario
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * (1 + 3 + 1)
    for col in ("dataset", "backbone", "method", "scenario", "seed", "recall@20", "ndcg@20", "ndcg@20 gap", "MI-BF",
                "MI-NG", "request score", "request rank pct", "Jaccard@20", "JS", "attack AUC", "one-off s",
                "per-request s", "speedup"):
        assert col in rows[0], col
    methods = [r["method"] for r in rows[:5]]
    assert methods[:4] == ["original", "retrain", "edgedrop", "finetune"] and methods[4].startswith("noise floor")
    by = {(r["scenario"], r["method"]): r for r in rows}
    # edgedrop on LightGCN: same parameters, the request no longer propagates; speedup over the reference
    ed = by[("random-2pct", "edgedrop")]
    assert float(ed["speedup"]) > 1 and 0 <= float(ed["Jaccard@20"]) <= 1 and float(ed["JS"]) >= 0
    assert 0 <= float(ed["attack AUC"]) <= 1
    assert by[("random-2pct", "retrain")]["Jaccard@20"] == ""  # the reference itself: nothing to compare
    assert float(by[("random-2pct", "retrain")]["speedup"]) == 1.0
    assert by[("random-2pct", "original")]["per-request s"] == ""
    summary = json.loads((out / "results.json").read_text())
    assert summary["cells_done"] == summary["cells_planned"] == 6 and len(summary["rows"]) == 10
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
