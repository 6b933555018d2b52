from __future__ import annotations

import pytest
from pydantic import ValidationError

from unlearnrec.unlearning.unlearnrec import CalibratedConfig, UnlearnRecConfig, config_for


def test_paper_defaults_follow_the_spec_and_the_authors_runs():
    c = UnlearnRecConfig()
    assert c.variant == "paper"
    assert c.hbar == "sum" and c.gamma == 0.1 and c.w_eta_init == 0.002
    assert c.mlp_layers == 2 and c.leaky_slope == 0.99 and c.freeze_mlp
    # many simulated requests (a new one every epoch), a fixed rho, the authors' loss weights
    assert c.redraw_every == 1 and c.pretrain_epochs >= 40 and c.request_ratio_min == c.request_ratio_max == 0.2
    assert (c.lambda_u, c.lambda_p, c.lambda_c, c.pretrain_loss) == (1.0, 0.02, 1e-3, "spec")
    assert (c.tau_p, c.tau_c, c.dropout_keep, c.learning_rate) == (1.0, 1.0, 0.95, 1e-3)
    # as published: the gap rule, no recall floor, no fresh rows, the whole table fine-tuned
    assert (c.select_rule, c.finetune_select, c.finetune_min_recall_ratio) == ("gap", "gap", 0.0)
    assert not c.reset_isolated and c.finetune_scope == "all"
    # the paper's rate for every backbone unless a per-backbone factor is given (left out of the dump when none)
    assert c.learning_rate_scale == {} and "learning_rate_scale" not in c.model_dump()
    assert c.pretrain_learning_rate("mf") == c.pretrain_learning_rate("lightgcn") == 1e-3
    scaled = UnlearnRecConfig(learning_rate_scale={"mf": 0.3})
    assert scaled.pretrain_learning_rate("mf") == pytest.approx(3e-4) and scaled.pretrain_learning_rate("sgl") == 1e-3
    assert UnlearnRecConfig.from_yaml(scaled.to_yaml()) == scaled


def test_calibrated_preset_differs_where_documented():
    p, c = UnlearnRecConfig(), CalibratedConfig()
    diff = {k for k in UnlearnRecConfig.model_fields if getattr(p, k) != getattr(c, k)}
    assert diff == {"variant", "hbar", "withdraw_center", "withdraw_norm", "pretrain_epochs", "calibrate_gain",
                    "request_ratio_min", "request_ratio_max", "pretrain_loss", "select_rule",
                    "select_min_recall_ratio", "reset_isolated", "finetune_select", "finetune_min_recall_ratio",
                    "finetune_scope", "finetune_triples_per_edge", "calibration_retrains",
                    "calibration_min_recall_ratio"}
    assert type(config_for("calibrated", {"finetune_epochs": 2})) is CalibratedConfig
    assert config_for("paper", c.model_dump()).variant == "paper"
    with pytest.raises(ValueError, match="unknown UnlearnRec variant"):
        config_for("nope")


def test_yaml_round_trip_and_overrides(tmp_path):
    c = UnlearnRecConfig().with_overrides(["hbar=last", "finetune_epochs=3", "lambda_u=1.0"])
    assert (c.hbar, c.finetune_epochs, c.lambda_u) == ("last", 3, 1.0)
    c.save(tmp_path / "c.yaml")
    assert UnlearnRecConfig.load(tmp_path / "c.yaml") == c
    assert UnlearnRecConfig.from_yaml(c.to_yaml()) == c


def test_invalid_values_are_refused():
    with pytest.raises(ValidationError):
        UnlearnRecConfig(hbar="mean")
    with pytest.raises(ValidationError):
        UnlearnRecConfig(request_ratio_min=0.3, request_ratio_max=0.1)
    with pytest.raises(ValidationError, match="learning_rate_scale"):
        UnlearnRecConfig(learning_rate_scale={"mf": 0.0})
    with pytest.raises(ValueError, match="unknown config key"):
        UnlearnRecConfig().with_overrides(["no_such_key=1"])
