import numpy as np
import pytest
import scipy.sparse as sp
import torch

from unlearnrec.graph import Graph, normalized_adjacency


def dense_reference(pairs, n_users, n_items):
    a = np.zeros((n_users, n_items))
    a[pairs[:, 0], pairs[:, 1]] = 1
    n = n_users + n_items
    full = np.zeros((n, n))
    full[:n_users, n_users:] = a
    full[n_users:, :n_users] = a.T
    d = full.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0)
    return inv[:, None] * full * inv[None, :]


@pytest.fixture
def pairs():
    rng = np.random.default_rng(0)
    p = np.stack([rng.integers(0, 7, 40), rng.integers(0, 5, 40)], 1)
    return np.unique(p, axis=0)


def test_normalised_adjacency_matches_dense_formula(pairs):
    adj = normalized_adjacency(pairs, 8, 6)  # user 7 and item 5 are isolated
    ref = dense_reference(pairs, 8, 6)
    np.testing.assert_allclose(adj.to_dense().numpy(), ref, atol=1e-6)
    assert adj.layout == torch.sparse_csr
    # zero-degree rows stay zero, matrix is symmetric, no self loops
    dense = adj.to_dense().numpy()
    assert not dense[7].any() and not dense[8 + 5].any()
    np.testing.assert_allclose(dense, dense.T, atol=1e-7)
    assert not np.diag(dense).any()


def test_duplicates_collapse(pairs):
    g1 = Graph(pairs, 8, 6)
    g2 = Graph(np.concatenate([pairs, pairs[:5]]), 8, 6)
    assert g1.n_edges == g2.n_edges == len(pairs)
    np.testing.assert_allclose(g1.adj.to_dense(), g2.adj.to_dense())


def test_propagate_gradient_equals_autograd_through_dense(pairs):
    g = Graph(pairs, 8, 6)
    x = torch.randn(14, 3, requires_grad=True)
    w = torch.randn(14, 3)
    (g.propagate(g.propagate(x)) * w).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    dense = g.adj.to_dense()
    (dense @ (dense @ x2) * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_residual_graph_excludes_request_and_renormalises(pairs):
    g = Graph(pairs, 8, 6)
    removed = pairs[[0, 3, 7]]
    r = g.without(removed)
    assert r.n_edges == g.n_edges - 3
    assert not r.contains(removed).any()
    assert r.contains(np.delete(pairs, [0, 3, 7], axis=0)).all()
    keep = np.delete(pairs, [0, 3, 7], axis=0)
    np.testing.assert_allclose(r.adj.to_dense().numpy(), dense_reference(keep, 8, 6), atol=1e-6)
    assert g.n_edges == len(pairs)  # the original graph is untouched


def test_residual_refuses_non_edges_and_changes_nothing(pairs):
    g = Graph(pairs, 8, 6)
    before = g.adj.to_dense().clone()
    absent = np.array([[7, 5]])
    with pytest.raises(ValueError, match=r"not edges of the graph: \(7, 5\)"):
        g.without(np.concatenate([pairs[:1], absent]))
    torch.testing.assert_close(g.adj.to_dense(), before)
    assert g.without(absent, strict=False).n_edges == g.n_edges


def test_dropout_and_with_edges(pairs):
    g = Graph(pairs, 8, 6)
    view = g.dropout(0.5, np.random.default_rng(1))
    assert 0 < view.n_edges < g.n_edges and g.contains(view.edges).all()
    bigger = g.with_edges(np.array([[7, 5]]))
    assert bigger.n_edges == g.n_edges + 1 and bigger.contains(np.array([[7, 5]]))[0]


def test_user_items_matrix(pairs):
    g = Graph(pairs, 8, 6)
    m = g.user_items()
    assert isinstance(m, sp.csr_matrix) and m.nnz == len(pairs) and m.shape == (8, 6)
