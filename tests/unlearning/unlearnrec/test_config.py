from __future__ import annotations

import pytest
from pydantic import ValidationError

from unlearnrec.unlearning.unlearnrec import UnlearnRecConfig


def test_defaults_follow_the_spec():
    c = UnlearnRecConfig()
    assert c.hbar == "sum" and c.gamma == 0.1 and c.w_eta_init == 0.002
    assert c.mlp_layers == 2 and c.leaky_slope == 0.99 and c.freeze_mlp
    assert c.redraw_every == 5 and (c.request_ratio_min, c.request_ratio_max) == (0.05, 0.2)
    assert (c.lambda_u, c.lambda_p, c.lambda_c) == (0.5, 0.02, 1e-3)
    assert (c.tau_p, c.tau_c, c.dropout_keep, c.learning_rate) == (10.0, 1.0, 0.95, 1e-3)


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
    with pytest.raises(ValueError, match="unknown config key"):
        UnlearnRecConfig().with_overrides(["no_such_key=1"])
