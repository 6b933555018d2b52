"""The L-hop subgraph with full-graph weights: exact LightGCN rows for the seeds, nothing beyond the ball."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.config import ModelConfig
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.scale import khop_nodes, propagate_subgraph, sample_subgraph


@pytest.fixture(scope="module")
def setting():
    data = make_synthetic(n_users=60, n_items=40, n_communities=4, mean_degree=5.0, min_degree=3, seed=1)
    graph = Graph(data.train, data.n_users, data.n_items)
    torch.manual_seed(0)
    model = build_model(data.n_users, data.n_items, ModelConfig(name="lightgcn", embedding_size=8, n_layers=2))
    return graph, model


def _bfs(graph: Graph, seeds, hops: int) -> set[int]:
    nb: dict[int, set[int]] = {}
    for u, i in graph.edges.tolist():
        nb.setdefault(u, set()).add(graph.n_users + i)
        nb.setdefault(graph.n_users + i, set()).add(u)
    seen, frontier = set(seeds), set(seeds)
    for _ in range(hops):
        frontier = {v for x in frontier for v in nb.get(x, ())} - seen
        seen |= frontier
    return seen


@pytest.mark.parametrize("hops", [0, 1, 2])
def test_khop_nodes_is_the_breadth_first_ball(setting, hops):
    graph, _ = setting
    seeds = [0, 3, 61]
    assert set(khop_nodes(graph, seeds, hops).tolist()) == _bfs(graph, seeds, hops)


def test_subgraph_propagation_equals_in_memory_lightgcn_on_the_seeds(setting):
    graph, model = setting
    full = model.propagate(graph).detach()
    seeds = np.array([0, 3, 61, 61, 99])  # a repeated seed keeps its place
    sub = sample_subgraph(graph, seeds, 2)
    assert len(sub) < graph.n_nodes
    out = propagate_subgraph(sub, model.embedding.detach()[sub.nodes], 2)
    assert (out - full[seeds]).abs().max() <= 1e-6
    # the full graph's degrees matter: re-normalising on the subgraph's own degrees changes the seeds' rows
    inside = np.isin(graph.edges[:, 0], sub.nodes.numpy()) & np.isin(
        graph.n_users + graph.edges[:, 1], sub.nodes.numpy()
    )
    local = Graph(graph.edges[inside], graph.n_users, graph.n_items)
    assert (model.propagate(local).detach()[seeds] - full[seeds]).abs().max() > 1e-3


def test_too_shallow_a_subgraph_and_bad_seeds_are_refused(setting):
    graph, model = setting
    sub = sample_subgraph(graph, [0], 1)
    with pytest.raises(ValueError, match="1-hop subgraph cannot give exact 2-layer"):
        propagate_subgraph(sub, model.embedding.detach()[sub.nodes], 2)
    with pytest.raises(ValueError, match=r"seed node ids out of range \[0, 100\): \[100\]"):
        sample_subgraph(graph, [0, 100], 2)
    with pytest.raises(ValueError, match="seeds must be a 1-D array of integer node ids"):
        sample_subgraph(graph, [0.5], 2)
