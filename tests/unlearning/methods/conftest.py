"""A trained LightGCN on the synthetic data and a 3% random request, shared by the method tests that use them
(trained once for the package; modules that need another model define their own ``ctx``)."""

from __future__ import annotations

import pytest

from unlearnrec import api
from unlearnrec.config import RunConfig
from unlearnrec.unlearning.base import Context
from unlearnrec.unlearning.requests import DeletionRequest


@pytest.fixture(scope="package")
def ctx():
    cfg = RunConfig().with_overrides({"train.epochs": 40, "train.eval_every": 5, "model.embedding_size": 16})
    res = api.train(cfg, progress=False)
    return Context(res["model_object"], res["graph_object"], res["data_object"], cfg, progress=False)


@pytest.fixture(scope="package")
def request_edges(ctx):
    return DeletionRequest.random_edges(ctx.graph, 0.03, seed=0).edges
