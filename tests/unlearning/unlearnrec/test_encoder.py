"""The IDM and the Influence Encoder: shapes, sparsity, locality, initial state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from unlearnrec.config import ModelConfig
from unlearnrec.graph import Graph
from unlearnrec.models import Batch, build_model
from unlearnrec.unlearning.unlearnrec import (
    InfluenceEncoder,
    UnlearnRecConfig,
    dropped_idm,
    influence_dependency_matrix,
)
from unlearnrec.unlearning.unlearnrec.encoder import (
    contrastive_loss,
    preservation_loss,
    proxy_unlearning_loss,
    proxy_weights,
    unlearning_loss,
)

N_USERS, N_ITEMS, D = 30, 20, 8


def _graph(seed=0):
    rng = np.random.default_rng(seed)
    pairs = np.stack([rng.integers(0, N_USERS, 300), rng.integers(0, N_ITEMS, 300)], 1)
    return Graph(pairs, N_USERS, N_ITEMS)


def _request(graph, k=12, seed=1):
    rng = np.random.default_rng(seed)
    return graph.edges[np.sort(rng.choice(graph.n_edges, k, replace=False))]


def test_idm_is_sparse_symmetric_normalised_and_local():
    g = _graph()
    req = _request(g)
    idm = influence_dependency_matrix(req, N_USERS, N_ITEMS)
    adj = idm.adj
    assert adj.layout == torch.sparse_csr
    assert adj.shape == (N_USERS + N_ITEMS,) * 2
    assert adj.values().numel() == 2 * len(req)
    dense = adj.to_dense()  # test-only densification of a tiny matrix
    assert torch.allclose(dense, dense.T)
    touched = np.zeros(N_USERS + N_ITEMS, bool)
    touched[req[:, 0]] = True
    touched[N_USERS + req[:, 1]] = True
    assert (dense[torch.from_numpy(~touched)] == 0).all()
    # value of (u, i) is 1 / sqrt(deg_Δ(u) deg_Δ(i)) with degrees counted in the request only
    u, i = req[0]
    du, di = (req[:, 0] == u).sum(), (req[:, 1] == i).sum()
    assert np.isclose(float(dense[u, N_USERS + i]), 1 / np.sqrt(du * di))


def test_dropped_idm_keeps_symmetry_and_rescales():
    g = _graph()
    req = _request(g, k=40)
    idm = influence_dependency_matrix(req, N_USERS, N_ITEMS)
    drop = dropped_idm(idm, 0.5, np.random.default_rng(0))
    full, dense = idm.adj.to_dense(), drop.adj.to_dense()
    assert torch.allclose(dense, dense.T)
    kept = dense != 0
    assert 0 < int(kept.sum()) < 2 * len(req)
    assert torch.allclose(dense[kept], full[kept] / 0.5)
    assert drop.nnz == int(kept.sum())


def test_encoder_shapes_and_initial_state():
    cfg = UnlearnRecConfig()
    enc = InfluenceEncoder(N_USERS, N_ITEMS, D, 3, cfg)
    n = N_USERS + N_ITEMS
    assert enc.h0.shape == (n, D) and (enc.h0 == 0).all()
    assert enc.w_eta.shape == (n, 1) and torch.allclose(enc.w_eta, torch.full((n, 1), 0.002))
    assert len(enc.mlp) == 2
    for layer in enc.mlp:
        assert torch.equal(layer.weight, torch.eye(D)) and (layer.bias == 0).all()
    g = _graph()
    idm = influence_dependency_matrix(_request(g), N_USERS, N_ITEMS)
    e0, e_bar = torch.randn(n, D), torch.randn(n, D)
    out = enc(idm, e0, e_bar)
    assert out.e0.shape == (n, D) and out.delta.shape == (n, D)
    assert len(out.hidden) == 3 and all(h.shape == (n, D) for h in out.hidden)


def test_for_model_uses_backbone_depth_and_mf_gets_a_depth():
    lg = build_model(N_USERS, N_ITEMS, ModelConfig(name="lightgcn", embedding_size=D, n_layers=2))
    assert InfluenceEncoder.for_model(lg).n_layers == 2
    mf = build_model(N_USERS, N_ITEMS, ModelConfig(name="mf", embedding_size=D, n_layers=0))
    assert InfluenceEncoder.for_model(mf).n_layers == 1
    assert InfluenceEncoder.for_model(mf, UnlearnRecConfig(n_layers=3)).n_layers == 3


def test_untrained_last_variant_only_moves_request_nodes():
    g = _graph()
    req = _request(g)
    idm = influence_dependency_matrix(req, N_USERS, N_ITEMS)
    enc = InfluenceEncoder(N_USERS, N_ITEMS, D, 3, UnlearnRecConfig(hbar="last"))
    n = N_USERS + N_ITEMS
    e0, e_bar = torch.randn(n, D), torch.randn(n, D)
    with torch.no_grad():
        out = enc(idm, e0, e_bar)
    changed = (out.e0 != e0).any(1).numpy()
    touched = np.zeros(n, bool)
    touched[req[:, 0]] = True
    touched[N_USERS + req[:, 1]] = True
    assert not changed[~touched].any()
    assert changed[touched].all()
    # the withdraw term alone, through the W = I, b = 0 MLP (two LeakyReLUs): −γ Â_Δ^L (Ē ⊙ W_η)
    ew = e_bar * 0.002
    for _ in range(3):
        ew = idm.propagate(ew)
    expected = F.leaky_relu(F.leaky_relu(-0.1 * ew, 0.99), 0.99)
    assert torch.allclose(out.delta, expected, atol=1e-7)


def test_sum_variant_makes_h0_a_global_offset():
    g = _graph()
    req = _request(g)
    idm = influence_dependency_matrix(req, N_USERS, N_ITEMS)
    n = N_USERS + N_ITEMS
    e0, e_bar = torch.randn(n, D), torch.randn(n, D)
    for hbar, expect_untouched_moves in (("sum", True), ("last", False)):
        enc = InfluenceEncoder(N_USERS, N_ITEMS, D, 3, UnlearnRecConfig(hbar=hbar, gamma=0.0))
        with torch.no_grad():
            enc.h0.fill_(0.1)
            out = enc(idm, e0, e_bar)
        untouched = np.setdiff1d(np.arange(N_USERS), req[:, 0])
        assert bool((out.e0[untouched] != e0[untouched]).any()) == expect_untouched_moves


def test_offset_can_be_left_out_for_already_unlearned_models():
    g = _graph()
    idm = influence_dependency_matrix(_request(g), N_USERS, N_ITEMS)
    enc = InfluenceEncoder(N_USERS, N_ITEMS, D, 3, UnlearnRecConfig(hbar="sum"))
    with torch.no_grad():
        enc.h0.normal_()
    e_bar = torch.randn(N_USERS + N_ITEMS, D)
    with_h0, hidden = enc.raw_delta(idm, e_bar)
    without, _ = enc.raw_delta(idm, e_bar, include_offset=False)
    assert torch.allclose(with_h0 - without, enc.h0, atol=1e-6)
    assert len(hidden) == 3


class _ShapeRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.numels: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.numels.append(t.numel())
        return out


def test_no_dense_node_by_node_tensor_in_forward_and_losses():
    n_users, n_items, d = 400, 300, 4
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, n_users, 3000), rng.integers(0, n_items, 3000)], 1)
    g = Graph(pairs, n_users, n_items)
    req = g.edges[rng.choice(g.n_edges, 200, replace=False)]
    idm = influence_dependency_matrix(req, n_users, n_items)
    enc = InfluenceEncoder(n_users, n_items, d, 3, UnlearnRecConfig())
    n = n_users + n_items
    e0, e_bar = torch.randn(n, d), torch.randn(n, d)
    batch = Batch(torch.from_numpy(req[:64, 0]), torch.from_numpy(req[:64, 1]), torch.from_numpy(req[64:128, 1]))
    rec = _ShapeRecorder()
    with rec:
        out = enc(idm, e0, e_bar)
        emb = g.propagate(out.e0)
        loss = unlearning_loss(emb, n_users, torch.from_numpy(req[:, 0]), torch.from_numpy(req[:, 1]))
        loss = loss + preservation_loss(emb, e_bar, n_users, batch, 10.0)
        loss = loss + contrastive_loss(enc, out.hidden, dropped_idm(idm, 0.95, rng), batch, 1.0)
        loss.backward()
    assert rec.numels and max(rec.numels) < n * n // 10
    assert enc.h0.grad is not None and enc.w_eta.grad is not None


def test_proxy_unlearning_loss_stops_at_the_target():
    n_users = 1
    emb = torch.zeros(4, 2)
    emb[0] = torch.tensor([1.0, 0.0])  # user 0
    emb[1] = torch.tensor([3.0, 0.0])  # item 0: the request edge, score 3
    emb[2] = torch.tensor([2.0, 0.0])  # item 1: a remaining positive, score 2
    emb[3] = torch.tensor([1.0, 0.0])  # item 2: a validation edge, score 1
    emb.requires_grad_(True)
    one = lambda i: torch.tensor([i])  # noqa: E731
    req, val, w = (one(0), one(0), one(1)), (one(0), one(2), one(1)), torch.tensor([1.0])
    loss = proxy_unlearning_loss(emb, n_users, req, val, w)
    assert float(loss.detach()) == pytest.approx(4.0)  # ((3 - 2) - (1 - 2))^2
    loss.backward()
    assert emb.grad[1, 0] > 0  # lowers the request edge ...
    assert emb.grad[2, 0] < 0  # ... relative to the user's positive, which it raises
    assert emb.grad[3].abs().sum() == 0  # the validation edge is only a target, never fitted
    below = emb.detach().clone()
    below[1, 0] = 0.5  # already under the validation level: nothing to do
    assert float(proxy_unlearning_loss(below, n_users, req, val, w)) == 0.0


def test_proxy_weights_count_request_edges_per_user():
    req_users = np.array([0, 0, 1, 2])
    valid = np.array([[0, 5], [0, 6], [1, 7], [3, 8]])  # user 2 has no validation edge, user 3 no request
    keep, v, w = proxy_weights(req_users, valid, n_users=4)
    assert keep.tolist() == [True, True, True, False]
    assert v.tolist() == [[0, 5], [0, 6], [1, 7]]
    assert w.tolist() == [1.0, 1.0, 1.0]  # user 0: 2 request edges over 2 validation edges


def test_proxy_unlearning_loss_matches_quantiles_one_sided():
    emb = torch.zeros(6, 1)
    emb[0] = 1.0  # the user
    emb[1:, 0] = torch.tensor([3.0, 0.0, 0.0, 1.0, 2.0])  # items: request a, request b, positive, valid 1, valid 2
    t = lambda *x: torch.tensor(x)  # noqa: E731
    req, val = (t(0, 0), t(0, 1), t(2, 2)), (t(0, 0), t(3, 4), t(2, 2))
    # sorted request gaps (0, 3) against the validation quantiles (1, 2): only the top one is above, by 1
    loss = proxy_unlearning_loss(emb, 1, req, val, torch.tensor([1.0, 1.0]))
    assert float(loss) == pytest.approx(0.5)
    # weights shift the quantiles: all the weight on the validation edge at 2 leaves the top request gap 1 above
    assert float(proxy_unlearning_loss(emb, 1, req, val, torch.tensor([0.0, 1.0]))) == pytest.approx(0.5)
    assert float(proxy_unlearning_loss(emb, 1, req, val, torch.tensor([1.0, 0.0]))) == pytest.approx(2.0)


def test_degree_withdraw_is_the_full_degree_mean_of_request_neighbours():
    from unlearnrec.unlearning.unlearnrec.encoder import degree_withdraw

    g = _graph()
    req = _request(g, k=12)
    idm = influence_dependency_matrix(req, N_USERS, N_ITEMS)
    x = torch.randn(N_USERS + N_ITEMS, D)
    deg = g.degrees()
    got = degree_withdraw(idm, x, deg)
    want = torch.zeros_like(x)
    for u, i in req:  # a loop is fine for the oracle
        want[u] += x[N_USERS + i] / deg[u]
        want[N_USERS + i] += x[u] / deg[N_USERS + i]
    assert torch.allclose(got, want, atol=1e-5)
    # the same edge withdraws the same share whatever else the request deletes
    bigger = influence_dependency_matrix(_request(g, k=120), N_USERS, N_ITEMS)
    u, i = (int(v) for v in req[0])
    one = influence_dependency_matrix(req[:1], N_USERS, N_ITEMS)
    assert torch.allclose(degree_withdraw(one, x, deg)[u], x[N_USERS + i] / deg[u], atol=1e-6)
    assert bigger.n_edges > idm.n_edges


def test_neighbour_mean_and_orthogonal_withdraw_keep_the_profile_scores():
    g = _graph()
    x = torch.randn(N_USERS + N_ITEMS, D)
    mean = g.neighbour_mean(x)
    e = g.edges
    u = int(e[0, 0])
    items = e[e[:, 0] == u, 1]
    assert torch.allclose(mean[u], x[N_USERS + torch.from_numpy(items)].mean(0), atol=1e-5)
    cfg = UnlearnRecConfig(withdraw_center="orthogonal", withdraw_norm="degree", hbar="last")
    enc = InfluenceEncoder(N_USERS, N_ITEMS, D, 2, cfg)
    req = _request(g, k=12)
    residual = g.without(req)
    idm = influence_dependency_matrix(req, N_USERS, N_ITEMS)
    raw, _ = enc.delta_for(idm, x, residual)
    profile = residual.neighbour_mean(x)
    touched = torch.from_numpy(np.unique(np.concatenate([req[:, 0], N_USERS + req[:, 1]])))
    assert raw[touched].abs().sum() > 0
    # orthogonal to what each node keeps: its mean score with its remaining neighbours does not move
    assert torch.allclose((raw * profile).sum(1), torch.zeros(len(raw)), atol=1e-5)
    untouched = torch.ones(len(raw), dtype=torch.bool)
    untouched[touched] = False
    assert raw[untouched].abs().max() == 0
    with pytest.raises(ValueError, match="residual graph"):
        enc.delta_for(idm, x, None)
