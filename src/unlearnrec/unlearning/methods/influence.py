"""Influence-function unlearning for edge deletion: GIF and IFRU.

Both estimate, from the trained table ``θ*`` alone, where retraining on the residual graph would move it, by one
Newton step on the deterministic training objective of :mod:`unlearnrec.unlearning.influence` (fixed negatives,
all triples in one vectorised pass). With ``T`` the triples of every training edge, ``T_r ⊂ T`` those of the
retained edges, ``G_r`` the residual graph and ``n = |T|``:

    L_G(θ)  = (1/n) Σ_{t ∈ T}   ℓ_t(θ; G)          (the objective the model was trained on)
    L_Gr(θ) = (1/n) Σ_{t ∈ T_r} ℓ_t(θ; G_r)        (the one retraining minimises, same negatives)
    Δθ      = H⁻¹ (∇L_G(θ*) − ∇L_Gr(θ*)),    H = ∇²L_G(θ*) + damping·I,    θ_new = θ* + scale_update · Δθ

The gradient difference holds the removed triples' own terms (the classic influence function) plus, for a GNN,
the change of the retained triples' terms whose propagated embeddings used the removed edges (the "influenced
neighbours" term of GIF, the "spill-over" of IFRU); for MF the latter is zero. Using ``∇L_G(θ*)`` rather than
assuming it is zero also corrects for training having stopped short of the optimum of ``L_G``. The update is
served on the residual graph.

Only backbones whose training objective is a deterministic function of the table apply (LightGCN, MF): the
contrastive terms of SGL and SimGCL depend on random views and noise.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from unlearnrec.config import YamlConfig
from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch, Recommender
from unlearnrec.unlearning.base import Context, Outcome, Unlearner, copy_model, register
from unlearnrec.unlearning.influence import (
    HessianVectorProduct,
    SolveInfo,
    fixed_triples,
    largest_eigenvalue,
    objective,
    objective_grad,
    select_triples,
    solve,
    triples_of,
)

_UNSUPPORTED = (
    "influence functions need the Hessian of a deterministic training objective at the trained parameters; "
    "SGL's and SimGCL's contrastive term depends on random augmented views / random noise, so their objective "
    "at the optimum is not a fixed function of the embedding table"
)


class InfluenceConfig(YamlConfig):
    """Settings of the inverse-Hessian solve (shared by GIF and IFRU)."""

    solver: Literal["cg", "lissa"] = "cg"
    """Conjugate gradient or LiSSA (Neumann series) for ``(H + damping·I)⁻¹ v``."""
    iterations: int | None = Field(None, ge=1)
    """Maximum solver iterations, one Hessian-vector product each (default: 100 for CG, 1000 for LiSSA)."""
    tol: float = Field(1e-4, gt=0.0)
    """Stop at this relative residual ``‖v − A Δθ‖ / ‖v‖``."""
    damping: float = Field(0.01, ge=0.0)
    """Multiple of the identity added to the Hessian: with ``damping_mode=relative`` (default) as a fraction of the
    Hessian's largest eigenvalue (estimated once, in ``prepare``), otherwise as is. The objective is a mean over the
    n training triples, so the Hessian's own scale is about (row degree / n)·‖e‖², which the relative mode follows
    from one dataset to the next."""
    damping_mode: Literal["relative", "absolute"] = "relative"
    max_damping_increases: int = Field(5, ge=0)
    """When a solve meets negative curvature (CG) or diverges (LiSSA), i.e. ``H + damping·I`` is not positive
    definite, solve again with ``damping_growth`` times the damping, at most this many times (0: never). A model
    stopped early by validation is not at a minimum of the objective and its Hessian is often indefinite (about
    −0.2 λ_max at the bottom of the spectrum for a small LightGCN); the damping used is logged."""
    damping_growth: float = Field(3.0, gt=1.0)
    scale: float | None = Field(None, gt=0.0)
    """LiSSA's scale (must exceed half the largest eigenvalue of ``H + damping·I``); default: 1.05 × (the prepared
    estimate of λ_max + damping)."""
    power_iterations: int = Field(20, ge=1)
    """Power-iteration steps (Hessian-vector products) of the λ_max estimate in ``prepare``."""
    scale_update: float = Field(1.0, gt=0.0)
    """Multiplier of the estimated parameter change (GIF's experiments also scale the update; 1 = plain Newton)."""
    negatives_seed: int = 0
    """Seed of the fixed negatives of the objective."""
    n_negatives: int = Field(1, ge=1)
    """Negatives per training edge in the objective (each triple weighted ``1 / n_negatives``)."""


class GIFConfig(InfluenceConfig):
    """GIF: the Newton step over the whole table."""


class IFRUConfig(InfluenceConfig):
    """IFRU: the Newton step restricted to the request's neighbourhood, pruned by importance."""

    hops: int | None = Field(None, ge=0)
    """Neighbourhood radius around the request's users and items whose layer-0 rows may change (default: the
    backbone's propagation depth, ``n_layers``; 0 for MF, which does not propagate: only the request's own user
    and item rows move)."""
    keep_ratio: float = Field(0.6, gt=0.0, le=1.0)
    """Share of the neighbourhood's rows kept, by the norm of their gradient difference (the rest stay fixed).
    The authors' code keeps the neighbours above the 40% quantile of their importance, i.e. about 0.6."""


class _InfluenceUnlearner(Unlearner):
    """Shared set-up and Newton step of GIF and IFRU (not registered)."""

    Config = InfluenceConfig
    backbones = frozenset({"lightgcn", "mf"})
    unsupported_reason = _UNSUPPORTED

    def __init__(self, config=None):
        super().__init__(config)
        self._triples: Batch | None = None
        self._grad_full: torch.Tensor | None = None
        self._lambda_max = 0.0
        self._stale = True

    # ------------------------------------------------------------ set-up
    def _prepare(self, ctx: Context) -> None:
        c = self.config
        device = ctx.model.embedding.device
        self._triples = fixed_triples(ctx.graph.edges, ctx.model.n_items, seed=c.negatives_seed,
                                      n_negatives=c.n_negatives, device=device)
        self._refresh()

    def _refresh(self) -> float:
        """Request-independent state of the current model: ``∇L_G(θ*)`` and ``λ_max(∇²L_G(θ*))``; returns seconds."""
        t0 = time.perf_counter()
        hvp = self._hessian(None)
        self._grad_full = hvp.gradient
        self._lambda_max = largest_eigenvalue(hvp, hvp.gradient, iterations=self.config.power_iterations)
        self._stale = False
        return time.perf_counter() - t0

    def _hessian(self, rows: torch.Tensor | None) -> HessianVectorProduct:
        ctx = self._require()
        model = ctx.model
        full = ctx.graph.to(model.embedding.device)
        triples, n = self._triples, self._denominator()
        return HessianVectorProduct(lambda x: objective(model, full, x, triples, n), model.embedding.detach(),
                                    rows=rows)

    def _denominator(self) -> float:
        assert self._triples is not None
        return float(len(self._triples))

    def _apply(self, outcome: Outcome) -> None:
        # The retained triples keep their negatives; the request-independent state of the new model is recomputed
        # lazily, at (and timed with) the next request.
        assert self._triples is not None
        keep = ~triples_of(self._triples, outcome.request, self.ctx.model.n_items)
        self._triples = select_triples(self._triples, keep)
        self._stale = True

    # ------------------------------------------------------------ the Newton step
    def _rows(self, request: np.ndarray, v: torch.Tensor) -> tuple[torch.Tensor | None, dict]:
        """Rows the update may touch (``None``: all) and what to log about them."""
        return None, {}

    def _solve(self, hvp: HessianVectorProduct, b: torch.Tensor) -> tuple[torch.Tensor, SolveInfo, float, list]:
        """``(H + damping·I)⁻¹ b``, raising the damping while the system is not positive definite."""
        c = self.config
        damping = c.damping * self._lambda_max if c.damping_mode == "relative" else c.damping
        attempts = []
        for attempt in range(c.max_damping_increases + 1):
            hvp.damping = damping
            scale = c.scale or 1.05 * (self._lambda_max + damping)
            x, info = solve(hvp, b, c.solver, iterations=c.iterations, tol=c.tol, scale=scale)
            attempts.append({"damping": damping, "status": info.status, "iterations": info.iterations})
            if info.status not in ("negative_curvature", "diverged") or attempt == c.max_damping_increases:
                break
            damping = damping * c.damping_growth if damping > 0 else 0.01 * max(self._lambda_max, 1e-12)
        return x, info, damping, attempts

    def _unlearn(self, request: np.ndarray, residual: Graph) -> Outcome:
        ctx = self._require()
        c = self.config
        refresh_seconds = self._refresh() if self._stale else 0.0
        t0 = time.perf_counter()
        model: Recommender = ctx.model
        res = residual.to(model.embedding.device)
        theta = model.embedding.detach()
        n = self._denominator()
        removed = triples_of(self._triples, request, model.n_items)
        retained = select_triples(self._triples, ~removed)
        v = self._grad_full - objective_grad(model, res, theta, retained, n)
        rows, row_log = self._rows(request, v)
        gradient_seconds = time.perf_counter() - t0

        t1 = time.perf_counter()
        hvp = self._hessian(rows)
        delta, info, damping, attempts = self._solve(hvp, hvp.restrict(v))
        solve_seconds = time.perf_counter() - t1

        out = copy_model(model)
        with torch.no_grad():
            out.embedding.add_(c.scale_update * delta)
        log = {
            "solver": info.to_dict(),
            "damping": damping,
            "damping_attempts": attempts,
            "lambda_max": self._lambda_max,
            "hessian_vector_products": hvp.calls,
            "delta_norm": float(torch.linalg.vector_norm(delta)) * c.scale_update,
            "theta_norm": float(torch.linalg.vector_norm(theta)),
            "gradient_difference_norm": float(torch.linalg.vector_norm(v)),
            "rows_changed": int((delta.abs().sum(1) > 0).sum()),
            "n_triples": int(n),
            "n_removed_triples": int(removed.sum()),
            **row_log,
        }
        return self._outcome(out, residual, request, log, refresh_seconds=refresh_seconds,
                             gradient_seconds=gradient_seconds, solve_seconds=solve_seconds)


@register
class GIF(_InfluenceUnlearner):
    """GIF: Graph Influence Function (Wu, Yang, Qian, Sui, Wang, He, "GIF: A General Graph Unlearning Strategy via
    Influence Function", WWW 2023), for edge deletion in a recommender.

    The training samples are the edges' BPR terms (one fixed negative each, ``n_negatives`` to average more). GIF
    supplements the classic influence of the removed samples with the loss change of the influenced neighbours
    (retained triples whose propagated embeddings used the removed edges), i.e. the gradient difference
    ``∇L_G(θ*) − ∇L_Gr(θ*)`` of the module docstring, and takes the Newton step ``θ* + H⁻¹(…)`` with the Hessian
    of the full objective, by CG (default) or LiSSA (the paper's solver) on Hessian-vector products; the whole
    table is updated. ``prepare`` draws the fixed negatives and computes the request-independent ``∇L_G(θ*)`` and
    ``λ_max(H)``; a request costs one gradient on the residual graph and the solve. Settings: :class:`GIFConfig`
    (CG, ≤ 100 iterations, tol 1e-4, damping 0.01·λ_max raised ×3 while ``H + damping·I`` is not positive
    definite, LiSSA scale from λ_max, ``scale_update`` = 1, one fixed negative per edge, seed 0). The outcome log
    holds the solver diagnostics (iterations, relative residual, status), the damping used, ``‖Δθ‖`` and
    ``‖∇L_G − ∇L_Gr‖``.
    """

    name = "gif"
    paper = ("GIF (Wu, Yang, Qian, Sui, Wang, He, 'GIF: A General Graph Unlearning Strategy via Influence "
             "Function', WWW 2023)")
    Config = GIFConfig


@register
class IFRU(_InfluenceUnlearner):
    """IFRU: Influence Function-based Recommendation Unlearning (Zhang, Hu, Bai, Wu, Wang, Feng, "Recommendation
    Unlearning via Influence Function", ACM Transactions on Recommender Systems 3(2), 2024).

    The same influence as GIF, direct (the removed samples' loss) plus spill-over through the computation graph
    (the retained samples whose aggregation used the removed edges), but the update is restricted to the layer-0
    rows of the ``hops``-hop neighbourhood of the request's users and items (on the training graph; default
    ``hops`` = the backbone's ``n_layers``, 0 for MF) and pruned by importance: of those rows only the
    ``keep_ratio`` share (default 0.6) with the largest gradient-difference norm may move, the rest stay fixed.
    The inverse-Hessian-vector product is solved in that sub-space (masked Hessian-vector products: each product
    still costs a pass over the whole objective, but the smaller system needs fewer of them, and the rest of the
    table is left exactly as trained). With ``hops`` covering the whole graph and ``keep_ratio = 1`` it is GIF.
    Other settings as :class:`GIFConfig`.

    Differences from the authors' public code: that code ranks the neighbours by a share of the request's degree
    propagated over the graph (keeping those above the 40% quantile) and minimises the quadratic with Adam; here
    the importance is the norm of a row's gradient difference and the quadratic is solved by CG/LiSSA on exact
    masked Hessian-vector products.
    """

    name = "ifru"
    paper = ("IFRU (Zhang, Hu, Bai, Wu, Wang, Feng, 'Recommendation Unlearning via Influence Function', "
             "ACM TORS 2024)")
    Config = IFRUConfig

    def _hops(self) -> int:
        ctx = self._require()
        if self.config.hops is not None:
            return int(self.config.hops)
        return int(ctx.model.config.n_layers) if ctx.model.uses_graph else 0

    def _rows(self, request: np.ndarray, v: torch.Tensor) -> tuple[torch.Tensor, dict]:
        ctx = self._require()
        hops = self._hops()
        nodes = np.concatenate([np.unique(request[:, 0]), ctx.model.n_users + np.unique(request[:, 1])])
        near = khop_rows(ctx.graph, nodes, hops).to(v.device)
        idx = torch.nonzero(near).squeeze(1)
        n_keep = max(1, math.ceil(self.config.keep_ratio * len(idx)))
        if n_keep < len(idx):
            importance = torch.linalg.vector_norm(v[idx], dim=1)
            idx = idx[torch.topk(importance, n_keep).indices]
        rows = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
        rows[idx] = True
        return rows, {"hops": hops, "neighbourhood_rows": int(near.sum()), "rows_kept": int(rows.sum())}


def khop_rows(graph: Graph, nodes: np.ndarray, hops: int) -> torch.Tensor:
    """Boolean mask over the ``n_users + n_items`` rows: the nodes within ``hops`` edges of ``nodes``.

    Node indices are users first, then ``n_users + item``; the frontier expands by products with the graph's
    (non-negative) normalised adjacency, so it runs where the graph lives.
    """
    adj = graph.adj
    mask = torch.zeros(graph.n_nodes, dtype=torch.bool, device=adj.device)
    mask[torch.as_tensor(np.asarray(nodes, dtype=np.int64), device=adj.device)] = True
    frontier = mask.clone()
    for _ in range(hops):
        reached = (adj @ frontier.to(torch.float32).unsqueeze(1)).squeeze(1) > 0
        new = reached & ~mask
        if not bool(new.any()):
            break
        mask |= new
        frontier = new
    return mask
