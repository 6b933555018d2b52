"""Small trained backbones shared by the UnlearnRec tests (module-scoped, seconds on a CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import small_synthetic_data
from unlearnrec.config import ModelConfig, TrainConfig
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import Trainer


@pytest.fixture(scope="module")
def small_data():
    """A 120 x 80 planted-community dataset (about 1.6k training pairs)."""
    return small_synthetic_data()


@pytest.fixture(scope="module")
def small_lightgcn(small_data):
    """A LightGCN trained briefly on ``small_data`` and its training graph."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="lightgcn", embedding_size=16, n_layers=2, reg=1e-3)
    model = build_model(small_data.n_users, small_data.n_items, cfg)
    tc = TrainConfig(epochs=15, batch_size=256, learning_rate=0.02, eval_every=5, patience=5, ks=[20])
    trainer = Trainer(model, small_data, tc, progress=False)
    trainer.fit()
    trainer.restore_best()
    return model, trainer.graph


def random_request(graph: Graph, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = max(1, int(round(fraction * graph.n_edges)))
    return graph.edges[np.sort(rng.choice(graph.n_edges, size=k, replace=False))]


def _train(data, edges=None, seed=0, layers=3, name="lightgcn"):
    torch.manual_seed(seed)
    cfg = ModelConfig(name=name, embedding_size=16, n_layers=layers, reg=1e-3)
    model = build_model(data.n_users, data.n_items, cfg)
    graph = None if edges is None else Graph(edges, data.n_users, data.n_items)
    tc = TrainConfig(epochs=15, batch_size=256, learning_rate=0.02, eval_every=5, patience=5, ks=[20], seed=seed)
    trainer = Trainer(model, data, tc, graph=graph, progress=False)
    trainer.fit()
    trainer.restore_best()
    return model, trainer.graph


@pytest.fixture(scope="module", params=["lightgcn", "mf"])
def forgetting_case(small_data, request):
    """A 3-layer LightGCN (or MF, where EdgeDrop changes nothing at all), a random 10 % request, the retrained
    model (another seed) and a probe of the request: the setting in which an encoder must forget more than
    EdgeDrop does."""
    from unlearnrec.unlearning.unlearnrec.unlearn import build_probe

    name = request.param
    model, graph = _train(small_data, name=name)
    rng = np.random.default_rng(4)
    req = graph.edges[np.sort(rng.choice(graph.n_edges, int(0.1 * graph.n_edges), replace=False))]
    residual = graph.without(req)
    retrained, _ = _train(small_data, residual.edges, seed=1, name=name)
    probe = build_probe(small_data, graph, residual, req, 2000, np.random.default_rng(0))
    return {"name": name, "model": model, "graph": graph, "request": req, "residual": residual, "probe": probe,
            "original": probe.with_graph(graph).measure(model), "edgedrop": probe.measure(model),
            "retrained": probe.measure(retrained)}
