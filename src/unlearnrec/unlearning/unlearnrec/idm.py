"""The Influence Dependency Matrix (UnlearnRec spec §2) and its edge-dropped view (for ``L_C``).

``Â_Δ = D_Δ^{-1/2} [[0, A_Δ], [A_Δᵀ, 0]] D_Δ^{-1/2}`` over the request edges alone: exactly
:class:`~unlearnrec.graph.Graph` built from the request edges (degrees counted in the request only, nodes that
touch no request edge have zero rows). It is a sparse CSR tensor with ``2 |E_Δ|`` stored values; nothing
here ever builds a dense ``(|U|+|V|)²`` matrix.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from unlearnrec.data.interactions import as_pairs
from unlearnrec.graph import Graph


def request_edges(request) -> np.ndarray:
    """The request's ``(n, 2)`` int64 edges, sorted and unique.

    Accepts an ``(n, 2)`` array (or list) of ``(user, item)`` pairs, or any object with an ``edges`` attribute
    (e.g. ``unlearnrec.unlearning.requests.DeletionRequest``).
    """
    edges = getattr(request, "edges", request)
    pairs = as_pairs(edges)
    if not len(pairs):
        return pairs
    if (pairs < 0).any():
        raise ValueError("request edges must be non-negative (user, item) indices")
    return np.unique(pairs, axis=0)


def influence_dependency_matrix(
    request, n_users: int, n_items: int, device: torch.device | str = "cpu"
) -> Graph:
    """``Â_Δ`` of ``request`` as a :class:`Graph` (``.propagate(x)`` = ``Â_Δ x``, ``.adj`` the sparse CSR)."""
    edges = request_edges(request)
    if len(edges) and (edges[:, 0].max() >= n_users or edges[:, 1].max() >= n_items):
        raise ValueError(f"request has ids outside the {n_users} users x {n_items} items of the model")
    return Graph(edges, n_users, n_items, device)


class _SymmetricSpMM(torch.autograd.Function):
    """``y = S x`` with ``dL/dx = S dL/dy`` for a symmetric sparse ``S``."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, ctx.adj @ grad.contiguous()


class SparseOperator:
    """A symmetric sparse ``(n, n)`` operator with the :meth:`Graph.propagate` interface."""

    def __init__(self, adj: torch.Tensor):
        self.adj = adj

    @property
    def nnz(self) -> int:
        return int(self.adj.values().numel())

    def propagate(self, x: torch.Tensor) -> torch.Tensor:
        return _SymmetricSpMM.apply(self.adj, x)


def symmetric_csr(
    keys: np.ndarray, weights: np.ndarray, n_users: int, n_items: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The bipartite CSR ``[[0, W], [Wᵀ, 0]]`` from sorted unique pair ``keys`` and one weight per edge."""
    n = n_users + n_items
    u = keys // n_items
    i = keys - u * n_items
    by_item = np.argsort(i, kind="stable")
    indptr = np.zeros(n + 1, np.int64)
    counts = np.concatenate([np.bincount(u, minlength=n_users), np.bincount(i, minlength=n_items)])
    np.cumsum(counts, out=indptr[1:])
    indices = np.concatenate([i + n_users, u[by_item]]).astype(np.int64)
    w = np.asarray(weights, dtype=np.float32)
    values = np.concatenate([w, w[by_item]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        adj = torch.sparse_csr_tensor(
            torch.from_numpy(indptr),
            torch.from_numpy(indices),
            torch.from_numpy(values),
            size=(n, n),
            check_invariants=False,
        )
    return adj.to(device)


def dropped_idm(idm: Graph, keep: float, rng: np.random.Generator) -> SparseOperator:
    """``Â_Δ`` with each request edge dropped with probability ``1 − keep`` (both directions together, so the
    operator stays symmetric) and the kept values rescaled by ``1 / keep``; the normalisation keeps the full
    request's degrees (sparse dropout on the normalised matrix, as in the authors' ``L_C``)."""
    keys = idm.keys
    u = keys // idm.n_items
    i = keys - u * idm.n_items
    deg_u = np.bincount(u, minlength=idm.n_users).astype(np.float64)
    deg_i = np.bincount(i, minlength=idm.n_items).astype(np.float64)
    w = 1.0 / np.sqrt(deg_u[u] * deg_i[i]) if len(keys) else np.zeros(0)
    mask = rng.random(len(keys)) < keep
    return SparseOperator(symmetric_csr(keys[mask], w[mask] / keep, idm.n_users, idm.n_items, idm.device))


def accumulate(*requests) -> np.ndarray:
    """Union of several requests' edges (sorted, unique)."""
    parts = [request_edges(r) for r in requests]
    parts = [p for p in parts if len(p)]
    return np.unique(np.concatenate(parts), axis=0) if parts else as_pairs(None)


__all__ = [
    "SparseOperator",
    "accumulate",
    "dropped_idm",
    "influence_dependency_matrix",
    "request_edges",
    "symmetric_csr",
]
