"""Small trained backbones shared by the UnlearnRec tests (module-scoped, seconds on a CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.config import ModelConfig, TrainConfig
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import Trainer


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tests run tiny sparse products, where OpenMP thread hand-offs cost more than the work (5-10x
    slower on a busy 2-core machine); restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_data():
    """A 120 x 80 planted-community dataset (about 1.6k training pairs)."""
    return make_synthetic(n_users=120, n_items=80, n_communities=4, mean_degree=18.0, seed=3)


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
