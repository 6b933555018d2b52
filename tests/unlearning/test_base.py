"""The Unlearner base class's hooks for sharing prepared state: prepare_fields, with_config, save/load_prepared."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnrec.config import RunConfig, YamlConfig
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.unlearning.base import Context, Unlearner, UnlearnerError, build_unlearner


class TwoFieldConfig(YamlConfig):
    heavy: int = 0
    light: float = 0.0


class TwoField(Unlearner):
    name = "two-field (test, not registered)"
    Config = TwoFieldConfig

    @classmethod
    def prepare_fields(cls) -> set[str]:
        return {"heavy"}

    def _prepare(self, ctx) -> None:
        self.state = [self.config.heavy]

    def _unlearn(self, request, residual):
        return self._outcome(self._require().model, residual, request, {"light": self.config.light})


@pytest.fixture(scope="module")
def ctx():
    data = make_synthetic(n_users=40, n_items=30, n_communities=2, mean_degree=6.0)
    cfg = RunConfig().with_overrides({"model.embedding_size": 4})
    return Context(build_model(data.n_users, data.n_items, cfg.model), Graph(data.train, data.n_users, data.n_items),
                   data, cfg, progress=False)


def test_with_config_shares_the_prepared_state(ctx):
    unl = TwoField({"heavy": 2}).prepare(ctx)
    twin = unl.with_config({"heavy": 2, "light": 0.5})
    assert twin is not unl and twin.state is unl.state and twin.ctx is unl.ctx
    assert twin.prepare_seconds == unl.prepare_seconds and unl.config.light == 0.0
    out = twin.unlearn(ctx.graph.edges[:3])
    assert out.log == {"light": 0.5} and np.array_equal(out.request, np.unique(ctx.graph.edges[:3], axis=0))
    with pytest.raises(UnlearnerError, match="heavy change"):
        unl.with_config({"heavy": 3})


def test_defaults_every_field_matters_and_no_saved_state(ctx, tmp_path):
    assert Unlearner.prepare_fields() is None
    ft = build_unlearner("finetune", {"epochs": 1}).prepare(ctx)
    with pytest.raises(UnlearnerError, match="epochs"):
        ft.with_config({"epochs": 2})
    assert ft.with_config({"epochs": 1}).config.epochs == 1
    with pytest.raises(UnlearnerError, match="expects"):
        ft.with_config(TwoFieldConfig())
    assert ft.save_prepared(tmp_path) is False and not any(tmp_path.iterdir())
    assert build_unlearner("finetune").load_prepared(ctx, tmp_path) is False
