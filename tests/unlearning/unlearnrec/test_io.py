"""The encoder checkpoint is bound to its model's weights and its data."""

from __future__ import annotations

import json

import pytest
import torch

from unlearnrec.checkpoint import CheckpointError
from unlearnrec.config import ModelConfig
from unlearnrec.models import build_model
from unlearnrec.unlearning.unlearnrec import (
    InfluenceEncoder,
    UnlearnRecConfig,
    load_encoder,
    model_fingerprint,
    save_encoder,
)

DATA_FP = "a" * 64


def _model(seed=0, name="lightgcn", d=8):
    torch.manual_seed(seed)
    return build_model(20, 15, ModelConfig(name=name, embedding_size=d, n_layers=2))


def _encoder(model):
    enc = InfluenceEncoder.for_model(model, UnlearnRecConfig(hbar="last", gamma=0.2))
    with torch.no_grad():
        enc.h0.normal_()
        enc.w_eta.uniform_()
        enc.mlp[0].bias.fill_(0.5)
    return enc


def test_round_trip(tmp_path):
    model = _model()
    enc = _encoder(model)
    save_encoder(tmp_path / "ie", enc, model, DATA_FP, report={"selected_epoch": 3, "epochs": [1, 2]})
    meta = json.loads((tmp_path / "ie" / "meta.json").read_text())
    assert meta["data_fingerprint"] == DATA_FP and meta["model_fingerprint"] == model_fingerprint(model)
    assert meta["model"] == "lightgcn" and meta["pretrain"] == {"selected_epoch": 3}
    back = load_encoder(tmp_path / "ie", model, DATA_FP)
    assert back.config == enc.config and back.n_layers == enc.n_layers
    for k, v in enc.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


def test_other_data_is_refused_naming_both_fingerprints(tmp_path):
    model = _model()
    save_encoder(tmp_path / "ie", _encoder(model), model, DATA_FP)
    with pytest.raises(CheckpointError) as err:
        load_encoder(tmp_path / "ie", model, "b" * 64)
    assert DATA_FP in str(err.value) and "b" * 64 in str(err.value)


def test_other_model_weights_are_refused_naming_both_fingerprints(tmp_path):
    model, other = _model(0), _model(1)
    save_encoder(tmp_path / "ie", _encoder(model), model, DATA_FP)
    with pytest.raises(CheckpointError) as err:
        load_encoder(tmp_path / "ie", other, DATA_FP)
    msg = str(err.value)
    assert model_fingerprint(model) in msg and model_fingerprint(other) in msg


def test_other_backbone_kind_or_size_is_refused(tmp_path):
    model = _model()
    save_encoder(tmp_path / "ie", _encoder(model), model, DATA_FP)
    with pytest.raises(CheckpointError, match="lightgcn"):
        load_encoder(tmp_path / "ie", _model(name="mf"), DATA_FP)
    with pytest.raises(CheckpointError, match="d=16"):
        load_encoder(tmp_path / "ie", _model(d=16), DATA_FP)


def test_not_an_encoder_directory(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CheckpointError, match="not an encoder directory"):
        load_encoder(tmp_path / "x", _model(), DATA_FP)
