"""The Influence Dependency Matrix (UnlearnRec spec §2) and its edge-dropped view (for ``L_C``).

``Â_Δ = D_Δ^{-1/2} [[0, A_Δ], [A_Δᵀ, 0]] D_Δ^{-1/2}`` over the request edges alone: exactly
:class:`~unlearnrec.graph.Graph` built from the request edges (degrees counted in the request only, nodes that
touch no request edge have zero rows). It is a sparse CSR tensor with ``2 |E_Δ|`` stored values; nothing
here ever builds a dense ``(|U|+|V|)²`` matrix.
"""

from __future__ import annotations

import numpy as np
import torch

from unlearnrec.data.interactions import as_pairs
from unlearnrec.graph import Graph, bipartite_csr, symmetric_propagate


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


class SparseOperator:
    """A symmetric sparse ``(n, n)`` operator with the :meth:`Graph.propagate` interface."""

    def __init__(self, adj: torch.Tensor):
        self.adj = adj

    @property
    def nnz(self) -> int:
        return int(self.adj.values().numel())

    def propagate(self, x: torch.Tensor) -> torch.Tensor:
        return symmetric_propagate(self.adj, x)


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
    return SparseOperator(bipartite_csr(keys[mask], w[mask] / keep, idm.n_users, idm.n_items, idm.device))


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
]
