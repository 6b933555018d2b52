import pytest
from pydantic import ValidationError

from unlearnrec.config import RunConfig


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig().with_overrides(["model.name=sgl", "train.learning_rate=0.002", "train.ks=[5, 20]"])
    cfg.save(tmp_path / "c.yaml")
    again = RunConfig.load(tmp_path / "c.yaml")
    assert again == cfg and again.train.ks == [5, 20] and again.model.name == "sgl"


def test_override_precedence_and_errors():
    cfg = RunConfig.from_yaml("train:\n  epochs: 3\n").with_overrides({"train.epochs": 7})
    assert cfg.train.epochs == 7
    with pytest.raises(ValueError, match="unknown config key 'train.lr'"):
        cfg.with_overrides(["train.lr=1"])
    with pytest.raises(ValueError, match="key=value"):
        cfg.with_overrides(["train.epochs"])
    with pytest.raises(ValidationError):
        cfg.with_overrides(["model.name=gcn"])
    with pytest.raises(ValidationError):
        RunConfig.from_yaml("train:\n  typo: 1\n")
