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
