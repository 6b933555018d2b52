import json

import numpy as np
import pytest
import torch

from unlearnrec import api
from unlearnrec.checkpoint import CheckpointError, load_checkpoint
from unlearnrec.config import RunConfig
from unlearnrec.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "lightgcn"
    cfg = RunConfig().with_overrides({"model.embedding_size": 8, "train.epochs": 2, "train.batch_size": 2048})
    res = api.train(cfg, out, progress=False)
    return out, res


def test_checkpoint_layout_and_round_trip(trained):
    out, res = trained
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.yaml", "meta.json", "result.json"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data_fingerprint"] == res["data_fingerprint"] and meta["versions"]["torch"]
    ck = load_checkpoint(out)
    torch.testing.assert_close(ck.model.embedding, res["model_object"].embedding)
    assert ck.config.model.name == "lightgcn"


def test_evaluate_reproduces_training_metrics(trained):
    out, res = trained
    ev = api.evaluate(out)
    assert ev["metrics"]["recall@20"] == pytest.approx(res["test"]["recall@20"])
    assert (out / "evaluation-test.json").is_file()


def test_checkpoint_refuses_other_data(trained):
    out, _ = trained
    ck = load_checkpoint(out)
    other = make_synthetic(seed=5)
    with pytest.raises(CheckpointError, match="fingerprint"):
        ck.check_data(other.fingerprint())
    # both datasets are named: another dataset, or the same name with other content
    with pytest.raises(CheckpointError, match="dataset 'synthetic' .* is 'gowalla' .*another dataset"):
        ck.check_data(other.fingerprint(), name="gowalla")
    with pytest.raises(CheckpointError, match="same name but other content"):
        ck.check_data(other.fingerprint(), name="synthetic")


def test_checkpoint_of_another_model_is_refused(trained, tmp_path):
    out, _ = trained
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    cfg = RunConfig.load(bad / "config.yaml").with_overrides({"model.embedding_size": 16})
    cfg.save(bad / "config.yaml")
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(bad)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        load_checkpoint(tmp_path)


def test_edges_are_stored_when_serving_graph_differs(tmp_path):
    data = make_synthetic()
    edges = data.train[10:]
    cfg = RunConfig().with_overrides({"model.embedding_size": 8, "train.epochs": 1})
    api.train(cfg, tmp_path / "r", data=data, graph_edges=edges, progress=False)
    ck = load_checkpoint(tmp_path / "r")
    assert ck.edges is not None and len(ck.edges) == len(np.unique(edges, axis=0))
