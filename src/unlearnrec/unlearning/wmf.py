"""Weighted matrix factorisation (WMF) by alternating least squares: RecEraser's pre-trained embeddings.

RecEraser (Chen, Sun, Zhang, Ding, "Recommendation Unlearning", WWW 2022) builds its balanced partitions
(UBP, IBP, InBP) from embeddings pre-trained with WMF (Hu, Koren, Volinsky, "Collaborative Filtering for
Implicit Feedback Datasets", ICDM 2008), not from the recommender being unlearned. The objective is the
whole-data weighted square loss of its public code (``WMF.py``: every unobserved pair is a negative with
weight ``c0``, ``negative_weight = 0.2``, ``d = 64``):

    L(P, Q) = Σ_{(u,i) ∈ R} (1 − p_uᵀq_i)² + c0 Σ_{(u,i) ∉ R} (p_uᵀq_i)² + λ (‖P‖² + ‖Q‖²)

Instead of the public code's Adagrad over user rows, it is minimised exactly per side by ALS (Hu et al.):
with ``G = QᵀQ``,

    p_u = (c0·G + (1 − c0)·Σ_{i ∈ R_u} q_i q_iᵀ + λI)⁻¹ Σ_{i ∈ R_u} q_i,

and symmetrically for the items. Every step is array work: ``Σ_{i ∈ R_u} q_i q_iᵀ`` for a block of users is
one sparse-dense product ``R_block @ (q ⊗ q)`` (computed a few embedding dimensions at a time to bound the
memory), and the ``(d, d)`` systems are solved batched. No loop runs over users, items or edges.

The iterate kept is the one with the best validation metric (the full training graph masked) when a
validation split is given, else the last one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.graph import Graph

__all__ = ["WmfResult", "wmf_als"]


@dataclass
class WmfResult:
    """Pre-trained ``(n_users, d)`` / ``(n_items, d)`` embeddings and how they were selected."""

    user_emb: np.ndarray
    item_emb: np.ndarray
    best_iteration: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def info(self) -> dict[str, Any]:
        """JSON-safe summary (the history holds the objective and validation metric per iteration)."""
        return {"best_iteration": self.best_iteration, "seconds": self.seconds, "history": self.history}


def _solve_side(r: sp.csr_matrix, y: np.ndarray, neg_weight: float, reg: float, rows_per_block: int = 2048,
                dims_per_block: int = 16) -> np.ndarray:
    """Rows ``x_r`` minimising ``Σ_{j ∈ R_r} (1 − x_rᵀy_j)² + c0 Σ_{j ∉ R_r} (x_rᵀy_j)² + λ‖x_r‖²``."""
    n, d = r.shape[0], y.shape[1]
    base = neg_weight * (y.T @ y) + reg * np.eye(d)
    rhs = np.asarray(r @ y)
    out = np.empty((n, d))
    for r0 in range(0, n, rows_per_block):  # blocks of rows bound the (rows, d, d) systems' memory
        rb = r[r0 : r0 + rows_per_block]
        a = np.empty((rb.shape[0], d, d))
        for c0 in range(0, d, dims_per_block):  # Σ_j y_j y_jᵀ, a few of its columns at a time
            c1 = min(d, c0 + dims_per_block)
            outer = (y[:, :, None] * y[:, None, c0:c1]).reshape(len(y), -1)
            a[:, :, c0:c1] = np.asarray(rb @ outer).reshape(rb.shape[0], d, c1 - c0)
        a *= 1.0 - neg_weight
        a += base
        out[r0 : r0 + rows_per_block] = np.linalg.solve(a, rhs[r0 : r0 + rows_per_block, :, None])[..., 0]
    return out


def _objective(r: sp.csr_matrix, p: np.ndarray, q: np.ndarray, neg_weight: float, reg: float) -> float:
    """``L(P, Q)`` without materialising ``P Qᵀ``: the all-pairs term is ``c0·tr(PᵀP QᵀQ)``."""
    coo = r.tocoo()
    s = np.einsum("ij,ij->i", p[coo.row], q[coo.col])
    pos = ((1.0 - s) ** 2).sum() - neg_weight * (s**2).sum()
    return float(pos + neg_weight * np.sum((p.T @ p) * (q.T @ q)) + reg * ((p**2).sum() + (q**2).sum()))


def wmf_als(graph: Graph, dim: int = 64, *, neg_weight: float = 0.2, reg: float = 1.0, iterations: int = 10,
            seed: int = 0, init_std: float = 0.01, data: Interactions | None = None, monitor: str = "recall@20",
            ) -> WmfResult:
    """WMF embeddings of ``graph`` by ALS (see the module docstring).

    Args:
        graph: the training graph (its edges are the positives).
        dim: ``d`` (public code: 64).
        neg_weight: ``c0``, the weight of every unobserved pair (public code: 0.2).
        reg: ``λ`` (ALS needs ``λ > 0`` for well-posed systems; the public code has no L2 term but user dropout).
        iterations: ALS sweeps (users then items).
        seed, init_std: the item table's Gaussian initialisation (public code: std 0.01).
        data: when it has a validation split, the sweep with the best ``monitor`` on it is kept (training
            edges of ``graph`` masked); the test split is never read.
    """
    from unlearnrec.evaluation.ranking import evaluate_ranking
    from unlearnrec.training import masks_for

    if not 0.0 <= neg_weight <= 1.0:
        raise ValueError(f"neg_weight must be in [0, 1], got {neg_weight}")
    if reg <= 0 or iterations < 1 or dim < 1:
        raise ValueError(f"need reg > 0, iterations >= 1 and dim >= 1 (got {reg}, {iterations}, {dim})")
    t0 = time.perf_counter()
    e = graph.edges
    r = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(graph.n_users, graph.n_items))
    r.sum_duplicates()
    r.data[:] = 1.0
    rt = r.T.tocsr()
    q = np.random.default_rng(seed).normal(0.0, init_std, (graph.n_items, dim))
    p = np.zeros((graph.n_users, dim))
    masks = None
    k = int(monitor.split("@")[1]) if "@" in monitor else 20
    if data is not None and len(data.valid):
        masks = masks_for(data, e)
    best, best_it, best_pq = -np.inf, 0, (p, q)
    history: list[dict[str, Any]] = []
    for it in range(1, iterations + 1):
        p = _solve_side(r, q, neg_weight, reg)
        q = _solve_side(rt, p, neg_weight, reg)
        rec: dict[str, Any] = {"iteration": it, "objective": _objective(r, p, q, neg_weight, reg),
                               "seconds": time.perf_counter() - t0}
        if masks is not None:
            res = evaluate_ranking(torch.from_numpy(p).float(), torch.from_numpy(q).float(), masks["valid_truth"],
                                   masks["valid_exclude"], ks=(k,))
            rec["valid"] = float(res.metrics[monitor])
            if rec["valid"] > best:
                best, best_it, best_pq = rec["valid"], it, (p, q)
        else:
            best_it, best_pq = it, (p, q)
        history.append(rec)
    p, q = best_pq
    return WmfResult(p.astype(np.float32), q.astype(np.float32), best_it, history, time.perf_counter() - t0)
