"""One end-to-end test per CLI command."""

import json

import pytest
from typer.testing import CliRunner

from unlearnrec.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ckpt"
    r = invoke("train", "--dataset", "synthetic", "--model", "lightgcn", "--out", out,
               "train.epochs=3", "model.embedding_size=8")
    assert r.exit_code == 0, r.output
    return out, r.output


def test_train(trained):
    out, output = trained
    assert "recall" in output and "| 20 |" in output
    res = json.loads((out / "result.json").read_text())
    assert res["config"]["model"]["embedding_size"] == 8
    assert {"recall@20", "ndcg@20"} <= set(res["test"]) and res["data_fingerprint"]
    assert res["times"]["train_seconds"] > 0 and res["versions"]["torch"]


def test_train_with_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: mf\n  embedding_size: 4\ntrain:\n  epochs: 2\n")
    r = invoke("train", "--config", cfg, "--out", tmp_path / "o", "train.epochs=1")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["config"]["model"]["name"] == "mf" and res["training"]["epochs_run"] == 1


def test_train_bad_input_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["train", "--dataset", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown dataset 'nope'" in r.output
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "x"), "train.lr=1"])
    assert r.exit_code == 2 and "unknown config key" in r.output
    assert not (tmp_path / "x").exists()


def test_evaluate(trained, tmp_path):
    out, _ = trained
    r = invoke("evaluate", "--checkpoint", out, "--split", "valid", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "evaluation-valid.json").read_text())["metrics"]["recall@20"] > 0
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no such checkpoint directory" in r.output


def test_data_list_and_info():
    r = invoke("data", "list")
    assert r.exit_code == 0 and "synthetic" in r.output and "ml-1m" in r.output
    r = invoke("data", "info", "synthetic", "--load", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["loaded"]["n_users"] == 600
    r = invoke("data", "info", "synthetic", "--load")
    assert r.exit_code == 0 and "| loaded n_users" in r.output and "600" in r.output
    r = runner.invoke(app, ["data", "info", "nope"])
    assert r.exit_code == 2 and "unknown dataset" in r.output


def test_data_download_from_a_local_mirror(tmp_path, data_root):
    """`data download` against a local HTTP server serving gowalla-tiny's parent files is exercised in
    tests/data/test_download.py; here the CLI path: an unsupported/unknown name fails clearly and a
    dataset already present is verified and skipped without any network."""
    r = runner.invoke(app, ["data", "download", "nope", "--data-root", str(tmp_path)])
    assert r.exit_code == 2 and "unknown dataset" in r.output
    src = data_root / "gowalla-tiny"
    if not src.is_dir():
        pytest.skip("gowalla-tiny absent")
    import shutil

    shutil.copytree(src, tmp_path / "gowalla-tiny")
    r = invoke("data", "download", "gowalla-tiny", "--data-root", tmp_path)
    assert r.exit_code == 0, r.output
    assert "present" in r.output


def test_demo(tmp_path):
    r = invoke("demo", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "demo.json").is_file() and "recall" in r.output


@pytest.fixture(scope="module")
def encoder_dir(trained, tmp_path_factory):
    out, _ = trained
    enc = tmp_path_factory.mktemp("cli-enc") / "ie"
    r = invoke("pretrain-unlearner", "--checkpoint", out, "--out", enc, "pretrain_epochs=2")
    assert r.exit_code == 0, r.output
    return enc


def test_pretrain_unlearner(encoder_dir):
    res = json.loads((encoder_dir / "result.json").read_text())
    assert res["pretrain_seconds"] > 0 and res["config"]["pretrain_epochs"] == 2
    assert (encoder_dir / "meta.json").is_file()


def test_unlearn_random_edges(trained, encoder_dir, tmp_path):
    out, _ = trained
    r = invoke("unlearn", "--checkpoint", out, "--encoder", encoder_dir, "--random-edges", "0.02",
               "--finetune-epochs", "1", "--out", tmp_path / "u")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "u" / "result.json").read_text())
    assert res["request"]["n_edges"] > 0 and res["timings"]["total_seconds"] > 0
    assert {"mi_bf", "mi_ng"} <= set(res["forgetting"])
    # the unlearned model is a checkpoint serving on the residual graph
    from unlearnrec.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "u")
    assert len(ck.edges) == res["unlearn"]["residual_edges"]


def test_unlearn_refuses_bad_requests(trained, encoder_dir, tmp_path):
    out, _ = trained
    bad = tmp_path / "req.csv"
    bad.write_text("user,item\n0,0\nnot-a-user,1\n")
    r = runner.invoke(app, ["unlearn", "--checkpoint", str(out), "--encoder", str(encoder_dir),
                            "--request", str(bad), "--out", str(tmp_path / "u")])
    assert r.exit_code == 2 and "not-a-user" in r.output
    assert not (tmp_path / "u").exists()
    r = runner.invoke(app, ["unlearn", "--checkpoint", str(out), "--encoder", str(encoder_dir),
                            "--out", str(tmp_path / "u")])
    assert r.exit_code == 2 and "exactly one" in r.output


def test_unlearn_with_another_method(trained, tmp_path):
    out, _ = trained
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("epochs: 1\n")
    r = invoke("unlearn", "--checkpoint", out, "--method", "finetune", "--method-config", cfg,
               "--random-edges", "0.02", "--out", tmp_path / "u")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "u" / "result.json").read_text())
    assert res["method"] == "finetune" and res["method_config"]["epochs"] == 1
    assert res["unlearn"]["log"]["epochs_run"] == 1
    # unknown methods and unlearnrec without an encoder are clear errors, and nothing is written
    r = runner.invoke(app, ["unlearn", "--checkpoint", str(out), "--method", "nope", "--random-edges", "0.02",
                            "--out", str(tmp_path / "v")])
    assert r.exit_code == 2 and "unknown unlearning method 'nope'" in r.output
    r = runner.invoke(app, ["unlearn", "--checkpoint", str(out), "--random-edges", "0.02",
                            "--out", str(tmp_path / "v")])
    assert r.exit_code == 2 and "--encoder" in r.output
    assert not (tmp_path / "v").exists()


def test_methods():
    r = invoke("methods")
    assert r.exit_code == 0
    for name in ("retrain", "edgedrop", "finetune", "neggrad+", "unlearnrec", "unlearnrec-calibrated"):
        assert name in r.output


def test_bench(tmp_path):
    """`bench` runs the tiny synthetic grid end to end (its models trained by two worker processes), prints the
    table and writes the results; a re-run reuses every cell; a bad config is refused before anything is trained
    or written."""
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "bench_synthetic.yaml"
    out = tmp_path / "b"
    r = invoke("bench", "--config", cfg, "--out", out, "--no-plots", "--no-progress", "--device", "cpu", "--jobs", "2")
    assert r.exit_code == 0, r.output
    assert "models trained: 0 (+ 7 in 2 worker processes)" in r.output  # original + 2 x 3 references, in workers
    assert "| edgedrop" in r.output and "users-most_active-2pct" in r.output and "noise floor" in r.output
    assert {p.name for p in out.iterdir()} >= {"results.csv", "results.json", "results.md", "cells", "cache"}
    res = json.loads((out / "results.json").read_text())
    assert res["cells_done"] == res["cells_planned"] == 4 and not res["failures"]
    r = invoke("bench", "--config", cfg, "--out", out, "--no-plots", "--no-progress")
    assert r.exit_code == 0 and "0 computed, 4 reused; models trained: 0" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {nope: {}}\nscenarios: [{kind: random, ratio: 0.01}]\n")
    r = runner.invoke(app, ["bench", "--config", str(bad), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown unlearning method 'nope'" in r.output
    bad.write_text("scenarios: [{kind: users, selection: most_active}]\n")
    r = runner.invoke(app, ["bench", "--config", str(bad), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "exactly one of n" in r.output
    assert not (tmp_path / "x").exists()


def test_calibrated_variant_end_to_end_and_variant_mismatch_refused(trained, tmp_path):
    out, _ = trained
    enc = tmp_path / "ie-cal"
    r = invoke("pretrain-unlearner", "--checkpoint", out, "--out", enc, "--variant", "calibrated")
    assert r.exit_code == 0, r.output
    assert "unlearnrec-calibrated" in r.output and "withdraw gain" in r.output
    res = json.loads((enc / "result.json").read_text())
    assert res["variant"] == "calibrated" and res["report"]["calibration"]["gain"] > 1
    r = invoke("unlearn", "--checkpoint", out, "--encoder", enc, "--method", "unlearnrec-calibrated",
               "--random-edges", "0.02", "--finetune-epochs", "0", "--out", tmp_path / "u")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "u" / "result.json").read_text())["variant"] == "calibrated"
    r = runner.invoke(app, ["unlearn", "--checkpoint", str(out), "--encoder", str(enc), "--random-edges", "0.02",
                            "--out", str(tmp_path / "u2")])
    assert r.exit_code == 2 and "use --method unlearnrec-calibrated" in r.output
    assert not (tmp_path / "u2").exists()


def test_registered_datasets_default_to_their_recorded_recipe(tmp_path):
    """`train --dataset ml-1m --model lightgcn` with no config gets the measured recipe (reg 1e-3, 120 epochs);
    a config file and key=value overrides still win; own data and unmeasured pairs keep the plain defaults."""
    from unlearnrec.cli import _build_config
    from unlearnrec.config import RunConfig

    cfg = _build_config(None, "ml-1m", "lightgcn", None, None, [])
    assert (cfg.model.reg, cfg.train.epochs, cfg.train.eval_every, cfg.data.dataset) == (1e-3, 120, 5, "ml-1m")
    assert _build_config(None, "ml-1m", "sgl", None, None, []).model.ssl_temperature == 0.2
    (tmp_path / "c.yaml").write_text("data: {dataset: ml-1m}\nmodel: {reg: 0.01}\n")
    cfg = _build_config(tmp_path / "c.yaml", None, None, None, None, ["train.epochs=7"])
    assert (cfg.model.reg, cfg.train.epochs, cfg.train.eval_every) == (0.01, 7, 5)
    plain = RunConfig()
    assert _build_config(None, "ml-1m", "mf", None, None, []).model.reg == plain.model.reg
    assert _build_config(None, "synthetic", "lightgcn", None, None, []).train == plain.train
