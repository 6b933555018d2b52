"""The sampled subgraph a sharded LightGCN propagates over: the L-hop neighbourhood of the touched nodes.

Normalisation: the sub-adjacency keeps the *full* graph's weights ``1/sqrt(d_u d_i)`` (degrees over the whole
training graph, not over the subgraph). With ``B`` the L-hop ball of the seeds, every node at distance
``j < L`` has all of its neighbours in ``B``, so its layer ``l <= L - j`` equals the full-graph value; at the
seeds (``j = 0``) all ``L`` layers do, hence LightGCN's mean readout (He et al., SIGIR 2020) equals the
in-memory model's on those rows. Re-normalising on the subgraph's own degrees, as GraphSAGE-style samplers
(Hamilton et al., NeurIPS 2017) do, changes the weights at the ball's border and loses that equality.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from unlearnrec.graph import Graph, symmetric_propagate
from unlearnrec.models.base import mean_readout


@dataclass(frozen=True)
class Subgraph:
    """An induced subgraph with full-graph weights.

    Attributes:
        nodes: sorted unique global node ids (users first, items offset by ``n_users``), int64.
        adj: ``len(nodes) x len(nodes)`` symmetric sparse CSR, the full ``Â`` restricted to ``nodes``.
        seeds: positions in ``nodes`` of the seeds, in the order they were given.
        hops: the neighbourhood depth.
    """

    nodes: torch.Tensor
    adj: torch.Tensor
    seeds: torch.Tensor
    hops: int

    def __len__(self) -> int:
        return int(self.nodes.numel())


def _rows(crow: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the CSR ``col``/``values`` arrays of the rows ``nodes``, and which row each belongs to."""
    starts = crow[nodes]
    counts = crow[nodes + 1] - starts
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(nodes)), counts)
    offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return starts[owner] + offset, owner


def _as_seeds(seeds, n_nodes: int) -> np.ndarray:
    s = np.asarray(seeds.cpu() if isinstance(seeds, torch.Tensor) else seeds)
    if s.ndim != 1 or (s.size and not np.issubdtype(s.dtype, np.integer)):
        raise ValueError(f"seeds must be a 1-D array of integer node ids, got shape {s.shape} dtype {s.dtype}")
    s = s.astype(np.int64)
    if s.size and (s.min() < 0 or s.max() >= n_nodes):
        bad = s[(s < 0) | (s >= n_nodes)][:5].tolist()
        raise ValueError(f"seed node ids out of range [0, {n_nodes}): {bad}")
    return s


def khop_nodes(graph: Graph, seeds, hops: int) -> np.ndarray:
    """Sorted global ids of every node within ``hops`` edges of ``seeds`` (the seeds included)."""
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    s = _as_seeds(seeds, graph.n_nodes)
    adj = graph.adj.cpu()
    crow, col = adj.crow_indices().numpy(), adj.col_indices().numpy()
    seen = np.zeros(graph.n_nodes, dtype=bool)
    seen[s] = True
    frontier = np.unique(s)
    for _ in range(hops):
        if not frontier.size:
            break
        pos, _ = _rows(crow, frontier)
        nb = col[pos]
        frontier = np.unique(nb[~seen[nb]])
        seen[frontier] = True
    return np.flatnonzero(seen)


def sample_subgraph(graph: Graph, seeds, hops: int) -> Subgraph:
    """The ``hops``-hop neighbourhood of ``seeds`` with the full graph's normalised weights (vectorised)."""
    s = _as_seeds(seeds, graph.n_nodes)
    nodes = khop_nodes(graph, s, hops)
    adj = graph.adj.cpu()
    crow, col, val = adj.crow_indices().numpy(), adj.col_indices().numpy(), adj.values().numpy()
    local = np.full(graph.n_nodes, -1, dtype=np.int64)
    local[nodes] = np.arange(len(nodes))
    pos, row = _rows(crow, nodes)
    keep = local[col[pos]] >= 0
    pos, row = pos[keep], row[keep]
    indptr = np.zeros(len(nodes) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=len(nodes)), out=indptr[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        sub = torch.sparse_csr_tensor(  # columns stay sorted: ``nodes`` is sorted, so ``local`` is monotone
            torch.from_numpy(indptr),
            torch.from_numpy(local[col[pos]]),
            torch.from_numpy(val[pos].copy()),
            size=(len(nodes), len(nodes)),
            check_invariants=False,
        )
    return Subgraph(torch.from_numpy(nodes), sub, torch.from_numpy(local[s]), int(hops))


def propagate_subgraph(sub: Subgraph, rows: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN's mean readout over ``sub`` from the layer-0 ``rows`` of ``sub.nodes``; the seeds' rows.

    Exact (equal to the full-graph model) when ``sub.hops >= n_layers``.
    """
    if rows.shape[0] != len(sub):
        raise ValueError(f"rows has {rows.shape[0]} rows for a subgraph of {len(sub)} nodes")
    if n_layers > sub.hops:
        raise ValueError(f"a {sub.hops}-hop subgraph cannot give exact {n_layers}-layer embeddings")
    layers, h = [rows], rows
    for _ in range(n_layers):
        h = symmetric_propagate(sub.adj, h)
        layers.append(h)
    return mean_readout(layers)[sub.seeds]
