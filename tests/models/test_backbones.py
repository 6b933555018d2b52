import numpy as np
import pytest
import torch

from unlearnrec.config import ModelConfig
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.graph import Graph
from unlearnrec.models import MODELS, Batch, build_model, info_nce
from unlearnrec.models.sgl import contrastive_term
from unlearnrec.sampling import BPRSampler


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_users=120, n_items=80, seed=3)


@pytest.fixture(scope="module")
def graph(data):
    return Graph(data.train, data.n_users, data.n_items)


def batch_of(data, n=64):
    s = BPRSampler(data.train, data.n_items)
    return next(s.epoch(n, np.random.default_rng(0)))


@pytest.mark.parametrize("name", list(MODELS))
def test_shared_interface(name, data, graph):
    model = build_model(data.n_users, data.n_items, ModelConfig(name=name, embedding_size=16))
    model.start_epoch(graph, np.random.default_rng(0))
    emb = model.propagate(graph)
    assert emb.shape == (data.n_users + data.n_items, 16)
    loss, parts = model.loss(batch_of(data), graph)
    assert torch.isfinite(loss) and "bpr" in parts
    loss.backward()
    assert model.embedding.grad is not None and model.embedding.grad.abs().sum() > 0
    u, i = model.embeddings(graph)
    assert u.shape == (data.n_users, 16) and i.shape == (data.n_items, 16)
    if name in ("sgl", "simgcl"):
        assert "ssl" in parts


def test_lightgcn_is_mean_of_layers(data, graph):
    model = build_model(data.n_users, data.n_items, ModelConfig(name="lightgcn", embedding_size=8, n_layers=2))
    a = graph.adj.to_dense()
    e0 = model.embedding.detach()
    expected = (e0 + a @ e0 + a @ (a @ e0)) / 3
    torch.testing.assert_close(model.propagate(graph).detach(), expected, rtol=1e-5, atol=1e-6)


def test_replacement_table_is_used(data, graph):
    model = build_model(data.n_users, data.n_items, ModelConfig(name="lightgcn", embedding_size=8))
    e0 = torch.zeros_like(model.embedding)
    assert model.propagate(graph, e0).abs().sum() == 0
    assert build_model(data.n_users, data.n_items, ModelConfig(name="mf", embedding_size=8)).propagate(None, e0) is e0


def test_mf_ignores_graph(data, graph):
    model = build_model(data.n_users, data.n_items, ModelConfig(name="mf", embedding_size=8))
    torch.testing.assert_close(model.propagate(graph), model.propagate(None))


def test_simgcl_views_are_noisy_but_recommendation_branch_is_not(data, graph):
    model = build_model(data.n_users, data.n_items, ModelConfig(name="simgcl", embedding_size=8))
    torch.testing.assert_close(model.propagate(graph), model.propagate(graph))
    v1, v2 = model.noisy_propagate(graph, model.embedding), model.noisy_propagate(graph, model.embedding)
    assert not torch.allclose(v1, v2)


def test_sgl_views_follow_the_training_graph(data, graph):
    model = build_model(data.n_users, data.n_items, ModelConfig(name="sgl", embedding_size=8, edge_keep=0.5))
    model.start_epoch(graph, np.random.default_rng(0))
    v1, v2 = model._views
    assert v1.n_edges < graph.n_edges and graph.contains(v1.edges).all()
    residual = graph.without(graph.edges[:10])
    model.loss(batch_of(data), residual)  # views re-drawn from the residual graph
    assert residual.contains(model._views[0].edges).all()


def test_unknown_model():
    with pytest.raises(Exception, match="mf"):
        build_model(3, 3, ModelConfig.model_construct(name="nope", embedding_size=4))


def test_sampler_negatives_are_never_positives(data):
    s = BPRSampler(data.train, data.n_items)
    rng = np.random.default_rng(0)
    batches = list(s.epoch(100, rng))
    users = torch.cat([b.users for b in batches]).numpy()
    neg = torch.cat([b.neg for b in batches]).numpy()
    pos = torch.cat([b.pos for b in batches]).numpy()
    assert len(users) == len(data.train)
    assert not s.is_positive(users, neg).any()
    assert s.is_positive(users, pos).all()
    # every training edge exactly once per epoch
    got = np.unique(users * data.n_items + pos)
    assert len(got) == len(np.unique(data.train[:, 0] * data.n_items + data.train[:, 1]))


def test_batch_to_device():
    b = Batch(torch.arange(3), torch.arange(3), torch.arange(3))
    assert len(b.to(torch.device("cpu"))) == 3


def _hand_info_nce(z1, z2, t):
    a = z1 / z1.norm(dim=1, keepdim=True)
    b = z2 / z2.norm(dim=1, keepdim=True)
    logits = a @ b.T / t
    return -(logits.diagonal() - logits.logsumexp(dim=1))  # per-row loss


def test_info_nce_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g)
    rows = _hand_info_nce(z1, z2, 0.2)
    torch.testing.assert_close(info_nce(z1, z2, 0.2), rows.mean())
    anchors = torch.tensor([3, 7, 29])
    torch.testing.assert_close(info_nce(z1, z2, 0.2, anchors), rows[anchors].mean())


def test_ssl_anchor_cap_is_an_unbiased_estimate(data, graph):
    batch = batch_of(data, 256)
    full = build_model(data.n_users, data.n_items, ModelConfig(name="sgl", embedding_size=8))
    capped = build_model(data.n_users, data.n_items, ModelConfig(name="sgl", embedding_size=8, ssl_anchors=10))
    roomy = build_model(data.n_users, data.n_items, ModelConfig(name="sgl", embedding_size=8, ssl_anchors=10_000))
    with torch.no_grad():
        v1, v2 = full.propagate(graph), full.propagate(graph) + 0.05 * torch.randn(graph.n_nodes, 8)
        exact = contrastive_term(full, v1, v2, batch)
        torch.testing.assert_close(contrastive_term(roomy, v1, v2, batch), exact)
        torch.manual_seed(0)
        draws = torch.stack([contrastive_term(capped, v1, v2, batch) for _ in range(2000)])
    assert draws.std() > 0  # the cap really subsamples
    assert abs(float(draws.mean() - exact)) < 4 * float(draws.std()) / 2000**0.5
