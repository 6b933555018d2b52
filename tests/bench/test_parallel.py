"""``unlearnrec bench --jobs N``: the grid's full models trained in worker processes first, the same models (same
cache keys and measures) as a sequential run, and a scenario's graph known before its original is trained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.bench import run_bench, validate_config
from unlearnrec.bench.grid import BenchRunner, _Env
from unlearnrec.bench.parallel import plan_models

from .test_grid import tiny_config


def _config(out, **kw):
    return tiny_config(out, methods={"edgedrop": {}}, plots=False, threads=1,
                       scenarios=[{"kind": "random", "ratio": 0.02}, {"kind": "adversarial", "ratio": 0.5}],
                       measures={"n_samples": 300, "reference_seed_offsets": [1, 2]}, **kw)


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_jobs_train_every_model_in_workers_and_match_a_sequential_run(tmp_path, restore_threads):
    seq = run_bench(_config(tmp_path / "seq"), log=lambda m: None)
    logs: list[str] = []
    par = run_bench(_config(tmp_path / "par"), log=logs.append, jobs=2)
    assert not seq.failures and not par.failures, (seq.failures, par.failures)
    # original, attacked original, 2 references of the random request, 2 of the adversarial one (clean retrains)
    assert seq.trainings == 6 and seq.parallel_trainings == 0
    assert par.trainings == 0 and par.parallel_trainings == 6, logs  # the grid itself trained nothing
    assert any("wave 2 of 2" in m for m in logs)
    def names(out):
        return sorted(p.name for p in (out / "cache").iterdir() if (p / "meta.json").is_file())

    assert names(tmp_path / "seq") == names(tmp_path / "par")  # the same trainings (recipe, seed, edges)
    compared = 0
    for a, b in zip(seq.rows, par.rows, strict=True):
        assert (a["scenario"], a["method"]) == (b["scenario"], b["method"])
        for col in ("recall@20", "MI-NG", "rank pct"):
            if isinstance(a.get(col), float):
                assert b[col] == pytest.approx(a[col], rel=1e-6, abs=1e-9), (a["method"], col)
                compared += 1
    assert compared >= 12  # original, reference, edgedrop (and the floor) of both scenarios
    # a second run has nothing left to train
    again = run_bench(_config(tmp_path / "par"), log=lambda m: None, jobs=2)
    assert again.trainings == 0 and again.parallel_trainings == 0 and again.computed == 0


def test_a_scenarios_graph_is_its_originals_and_references_need_no_original(tmp_path, restore_threads):
    cfg = _config(tmp_path / "o")
    runner = BenchRunner(validate_config(cfg), tmp_path / "o", tmp_path / "cache", "cpu", log=lambda m: None)
    rand, adv = _Env(runner, "synthetic", "lightgcn", 0, 0), _Env(runner, "synthetic", "lightgcn", 0, 1)
    rand.reference_model(0)  # before any original
    assert runner.cache.trainings == 1
    assert np.array_equal(rand.graph.keys, rand.original.graph.keys)
    assert np.array_equal(adv.graph.keys, adv.original.graph.keys)  # train + injected
    # cached models are left out: wave 1 (clean originals, non-adversarial references) holds the second random
    # reference only; wave 2 the adversarial references (their request needs the clean original)
    first = plan_models(runner, [(*("synthetic", "lightgcn", 0), i) for i in (0, 1)], adversarial=False)
    assert [(t.group[3], t.role, t.k) for t in first] == [(0, "reference", 1)]
    second = plan_models(runner, [("synthetic", "lightgcn", 0, 1)], adversarial=True)
    assert [(t.role, t.k) for t in second] == [("reference", 0), ("reference", 1)]  # attacked original cached
