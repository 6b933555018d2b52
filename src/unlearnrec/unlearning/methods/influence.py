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
import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnrec.config import YamlConfig
from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch, Recommender
from unlearnrec.unlearning.base import Context, Outcome, Unlearner, copy_model, register
from unlearnrec.unlearning.influence import (
    HessianVectorProduct,
    SolveInfo,
    fixed_triples,
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
    """Lanczos steps (one Hessian-vector product each) of the ``prepare`` estimates of λ_max and λ_min."""
    curvature_margin: float = Field(2.0, ge=0.0)
    """The damping is at least this multiple of ``−λ_min`` when the ``prepare`` estimate of the Hessian's smallest
    eigenvalue is negative, so that ``H + damping·I`` is positive definite for every request: the damping is then a
    property of the model, the same for GIF and IFRU (0: off, the damping comes from ``damping`` and the solver's
    negative-curvature test alone). IFRU needs it: its restricted system is often positive definite where the full
    one is not (on the Gowalla LightGCN stopped after 5 epochs, λ_min ≈ −0.15 λ_max; without the floor GIF's CG
    raised the damping 27× while IFRU on the request's own rows solved at the initial damping and moved the
    request's scores 13× further)."""
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
    importance: Literal["step", "gradient"] = "step"
    """A row's importance for pruning: ``step`` (default), ``‖v_x‖ / c_x`` with ``c_x`` the number of training
    triples touching row ``x``, the size of the row's Newton step under a diagonal Hessian (row ``x``'s block of
    the mean objective grows with ``c_x``): like the authors' importance (removed edges at a node over its degree,
    propagated), it discounts popular items, on which one removed interaction moves little though their gradient
    difference is large; ``gradient``: ``‖v_x‖``."""
    keep_mass: float = Field(0.9, gt=0.0, le=1.0)
    """Of the rows ``keep_ratio`` kept, only the fewest (by importance) that carry this share of their total squared
    importance (1: no further pruning). The influence of a local request is concentrated (on ML-1M LightGCN, 80% of
    ``Σ‖v_x‖²`` of the 10 least-active users' request sits in its own 94 rows of the 9,683 of its 3-hop
    neighbourhood); a spread-out request keeps many rows. 0.9 was chosen on a tuning request (the 11th-20th
    least-active ML-1M users, not a reported one): 8 rows, 18 s, request rank percentile 0.0170 and MI-NG 0.6583
    against 0.0168 / 0.6586 with ``keep_mass = 1`` (5,813 rows, 454 s); 0.99 and 0.999 land in between."""
    scope: Literal["local", "global"] = "local"
    """How the restricted system ``(H_SS + damping·I) Δ_S = v_S`` is solved. ``local`` (default): Hessian-vector
    products of the *local objective*, the triples that touch the kept rows (see ``hessian_hops``) with the
    propagation restricted to the kept rows' ``n_layers``-hop sub-graph, so a product costs in proportion to the
    neighbourhood, not the graph. ``global``: masked products of the full objective (every triple, whole graph)."""
    hessian_hops: int = Field(0, ge=0)
    """``local`` scope: the triples of the local objective are those with an endpoint within ``hessian_hops`` hops of
    a kept row (0, default: the triples that touch the kept rows). With ``hessian_hops >= n_layers`` the local
    Hessian is exactly the restricted Hessian of the full objective (every triple whose propagated embeddings
    depend on the kept rows); smaller radii drop the triples that reach the kept rows only through propagation."""
    gradient_hops: int | None = Field(None, ge=0)
    """The gradient difference ``v``: ``None`` (default) exact, by one gradient of the whole residual objective, as
    GIF; an integer ``h``: the sum over the triples with an endpoint within ``h`` hops of the request's users and
    items only, each scored on the full and the residual graph (``h >= n_layers``: still exact, every triple whose
    propagated embeddings change; 0: the removed triples and the other triples of the request's nodes). The
    per-triple work dominates a gradient (Gowalla: 6 s for the 728k triples, 0.5 s for the propagation), so a
    small ``h`` makes this step local too; it drops the triples that reach the request only by propagation."""


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
        self._lambda_min = 0.0
        self._stale = True

    # ------------------------------------------------------------ set-up
    def _prepare(self, ctx: Context) -> None:
        c = self.config
        device = ctx.model.embedding.device
        self._triples = fixed_triples(
            ctx.graph.edges, ctx.model.n_items, seed=c.negatives_seed, n_negatives=c.n_negatives, device=device
        )
        self._refresh()

    def _refresh(self) -> float:
        """Request-independent state of the current model: ``∇L_G(θ*)`` and the extreme eigenvalues of
        ``∇²L_G(θ*)``; returns seconds."""
        t0 = time.perf_counter()
        hvp = self._hessian(None)
        self._grad_full = hvp.gradient
        self._lambda_min, self._lambda_max = extreme_eigenvalues(
            hvp, hvp.gradient, iterations=self.config.power_iterations
        )
        self._stale = False
        return time.perf_counter() - t0

    def _hessian(self, rows: torch.Tensor | None) -> HessianVectorProduct:
        ctx = self._require()
        model = ctx.model
        full = ctx.graph.to(model.embedding.device)
        triples, n = self._triples, self._denominator()
        return HessianVectorProduct(
            lambda x: objective(model, full, x, triples, n), model.embedding.detach(), rows=rows
        )

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
        damping = self._initial_damping()
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

    def _post_update(self, model: Recommender, residual: Graph) -> dict:
        """A hook after the update is applied to the copy ``model`` (CEU: certification noise); its log."""
        del model, residual
        return {}

    def _initial_damping(self) -> float:
        """The damping of the first solve attempt: ``damping`` (times λ_max in the relative mode), at least
        ``curvature_margin · (−λ_min)``."""
        c = self.config
        base = c.damping * self._lambda_max if c.damping_mode == "relative" else c.damping
        return max(base, c.curvature_margin * max(0.0, -self._lambda_min))

    def _gradient_difference(
        self, model: Recommender, res: Graph, theta: torch.Tensor, removed: np.ndarray, n: float
    ) -> tuple[torch.Tensor, dict]:
        """``v = ∇L_G(θ*) − ∇L_Gr(θ*)`` (the prepared full gradient minus one gradient of the residual objective)."""
        retained = select_triples(self._triples, ~removed)
        return self._grad_full - objective_grad(model, res, theta, retained, n), {}

    def _step(self, v: torch.Tensor, rows: torch.Tensor | None):
        """``(H + damping·I)⁻¹ v`` on ``rows`` (all rows: ``None``) by masked products of the full objective;
        returns ``(Δθ, SolveInfo, damping, attempts, operator, log)``."""
        hvp = self._hessian(rows)
        delta, info, damping, attempts = self._solve(hvp, hvp.restrict(v))
        return delta, info, damping, attempts, hvp, {}

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
        v, grad_log = self._gradient_difference(model, res, theta, removed, n)
        rows, row_log = self._rows(request, v)
        gradient_seconds = time.perf_counter() - t0

        t1 = time.perf_counter()
        delta, info, damping, attempts, hvp, step_log = self._step(v, rows)
        solve_seconds = time.perf_counter() - t1

        out = copy_model(model)
        with torch.no_grad():
            out.embedding.add_(c.scale_update * delta)
        post_log = self._post_update(out, res)
        log = {
            "solver": info.to_dict(),
            "damping": damping,
            "damping_attempts": attempts,
            "lambda_max": self._lambda_max,
            "lambda_min": self._lambda_min,
            "hessian_vector_products": hvp.calls,
            "delta_norm": float(torch.linalg.vector_norm(delta)) * c.scale_update,
            "theta_norm": float(torch.linalg.vector_norm(theta)),
            "gradient_difference_norm": float(torch.linalg.vector_norm(v)),
            "rows_changed": int((delta.abs().sum(1) > 0).sum()),
            "n_triples": int(n),
            "n_removed_triples": int(removed.sum()),
            **grad_log,
            **row_log,
            **step_log,
            **post_log,
        }
        return self._outcome(
            out,
            residual,
            request,
            log,
            refresh_seconds=refresh_seconds,
            gradient_seconds=gradient_seconds,
            solve_seconds=solve_seconds,
        )


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
    the extreme eigenvalues of ``H`` (Lanczos); a request costs one gradient on the residual graph and the solve.
    Settings: :class:`GIFConfig` (CG, ≤ 100 iterations, tol 1e-4, damping ``max(0.01·λ_max, 2·(−λ_min))``, raised
    ×3 if CG still meets negative curvature, LiSSA scale from λ_max, ``scale_update`` = 1, one fixed negative per
    edge, seed 0). The outcome log holds the solver diagnostics (iterations, relative residual, status), the
    damping used, λ_min, λ_max, ``‖Δθ‖`` and ``‖∇L_G − ∇L_Gr‖``.
    """

    name = "gif"
    paper = (
        "GIF (Wu, Yang, Qian, Sui, Wang, He, 'GIF: A General Graph Unlearning Strategy via Influence "
        "Function', WWW 2023)"
    )
    Config = GIFConfig


@register
class IFRU(_InfluenceUnlearner):
    """IFRU: Influence Function-based Recommendation Unlearning (Zhang, Hu, Bai, Wu, Wang, Feng, "Recommendation
    Unlearning via Influence Function", ACM Transactions on Recommender Systems 3(2), 2024).

    The same influence as GIF, direct (the removed samples' loss) plus spill-over through the computation graph
    (the retained samples whose aggregation used the removed edges), but the update is restricted to the layer-0
    rows of the ``hops``-hop neighbourhood of the request's users and items (on the training graph; default
    ``hops`` = the backbone's ``n_layers``, 0 for MF) and pruned by importance: of those rows only the
    ``keep_ratio`` share (default 0.6) with the largest importance may move (``importance``: by default the
    gradient-difference norm over the number of triples touching the row, the row's diagonal Newton step), the
    rest stay fixed.
    Of those, only the fewest rows carrying ``keep_mass`` (default 0.9) of their total squared gradient
    difference are kept (the influence of a local request concentrates on its own rows and their nearest
    neighbours; on ML-1M and Gowalla the 3-hop neighbourhood of even one interaction is a large share of the
    graph, so the radius alone does not make the computation local).

    The inverse-Hessian-vector product is solved in that sub-space ``S`` (the rest of the table is left exactly
    as trained). With ``scope="local"`` (default) each Hessian-vector product is one of the *local objective*:
    the triples with an endpoint within ``hessian_hops`` (default 0) hops of ``S``, their propagated embeddings
    ``E* + P[:, S] Δ_S`` computed on the sub-graph induced by the ``n_layers``-hop reach of ``S`` (exact there:
    every path of length <= ``n_layers`` from ``S`` stays inside it), so its cost follows the size of the
    neighbourhood, not of the graph. With ``hessian_hops >= n_layers`` the local Hessian is exactly the restricted
    Hessian of the full objective; the default drops the triples that reach ``S`` only through propagation
    (their second-order terms are products of the small propagation weights). ``scope="global"`` solves with
    masked products of the full objective instead. The gradient difference ``v`` is exact (one gradient of the
    residual objective, as GIF). With ``hops`` covering the whole graph, ``keep_ratio = keep_mass = 1`` and
    ``hessian_hops >= n_layers`` (or the global scope) it is GIF. Other settings as :class:`GIFConfig`; the
    damping comes from the *full* Hessian's extreme eigenvalues (``prepare``), as GIF's, so both solve with the
    same damping: the restricted system ``H_SS`` of a few rows is often positive definite where ``H`` is not, and
    solved at a smaller damping it overshoots GIF's step on those rows (Gowalla: 13× the score change).

    Differences from the authors' public code: that code ranks the neighbours by a share of the request's degree
    propagated over the graph (keeping those above the 40% quantile) and minimises the quadratic with Adam; here
    the importance is the norm of a row's gradient difference and the quadratic is solved by CG/LiSSA on exact
    masked Hessian-vector products.
    """

    name = "ifru"
    paper = "IFRU (Zhang, Hu, Bai, Wu, Wang, Feng, 'Recommendation Unlearning via Influence Function', ACM TORS 2024)"
    Config = IFRUConfig

    def _hops(self) -> int:
        ctx = self._require()
        if self.config.hops is not None:
            return int(self.config.hops)
        return int(ctx.model.config.n_layers) if ctx.model.uses_graph else 0

    def _unlearn(self, request: np.ndarray, residual: Graph) -> Outcome:
        self._request = request
        return super()._unlearn(request, residual)

    def _gradient_difference(
        self, model: Recommender, res: Graph, theta: torch.Tensor, removed: np.ndarray, n: float
    ) -> tuple[torch.Tensor, dict]:
        """``v`` over the triples within ``gradient_hops`` of the request's nodes (all of them: ``None``)."""
        hops = self.config.gradient_hops
        if hops is None:
            return super()._gradient_difference(model, res, theta, removed, n)
        ctx = self._require()
        req = self._request
        nodes = np.concatenate([np.unique(req[:, 0]), model.n_users + np.unique(req[:, 1])])
        near = khop_rows(ctx.graph, nodes, hops).cpu().numpy()
        t = self._triples
        tu, tp, tn = (x.cpu().numpy() for x in (t.users, t.pos, t.neg))
        near_t = near[tu] | near[model.n_users + tp] | near[model.n_users + tn] | removed
        full = ctx.graph.to(theta.device)
        v = objective_grad(model, full, theta, select_triples(t, near_t), n) - objective_grad(
            model, res, theta, select_triples(t, near_t & ~removed), n
        )
        return v, {"gradient_hops": hops, "gradient_triples": int(near_t.sum())}

    def _rows(self, request: np.ndarray, v: torch.Tensor) -> tuple[torch.Tensor, dict]:
        ctx = self._require()
        hops = self._hops()
        nodes = np.concatenate([np.unique(request[:, 0]), ctx.model.n_users + np.unique(request[:, 1])])
        near = khop_rows(ctx.graph, nodes, hops).to(v.device)
        idx = torch.nonzero(near).squeeze(1)
        n_keep = max(1, math.ceil(self.config.keep_ratio * len(idx)))
        importance = torch.linalg.vector_norm(v[idx], dim=1)
        if self.config.importance == "step":
            t = self._triples
            n_users = ctx.model.n_users
            count = torch.bincount(torch.cat([t.users, t.pos + n_users, t.neg + n_users]), minlength=v.shape[0])
            importance = importance / (count[idx].to(importance.dtype) + 1.0)
        if n_keep < len(idx):
            top = torch.topk(importance, n_keep).indices
            idx, importance = idx[top], importance[top]
        mass = self.config.keep_mass
        kept_mass = 1.0
        if mass < 1.0 and len(idx) > 1:
            order = torch.argsort(importance, descending=True)
            energy = importance[order].double() ** 2
            total = float(energy.sum())
            if total > 0:
                cum = torch.cumsum(energy, 0) / total
                n_mass = int(torch.searchsorted(cum, torch.tensor(mass, dtype=cum.dtype))) + 1
                n_mass = min(max(1, n_mass), len(idx))
                kept_mass = float(cum[n_mass - 1])
                idx = idx[order[:n_mass]]
        rows = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
        rows[idx] = True
        return rows, {
            "hops": hops,
            "neighbourhood_rows": int(near.sum()),
            "rows_kept": int(rows.sum()),
            "kept_mass": kept_mass,
        }

    # ------------------------------------------------------------ the local solve
    def _step(self, v: torch.Tensor, rows: torch.Tensor | None):
        ctx = self._require()
        if self.config.scope == "global" or rows is None or not _local_capable(ctx.model):
            return super()._step(v, rows)
        t0 = time.perf_counter()
        op, S, info = local_hessian(
            ctx.model,
            ctx.graph,
            ctx.model.embedding.detach(),
            self._triples,
            self._denominator(),
            rows,
            hessian_hops=self.config.hessian_hops,
        )
        setup = time.perf_counter() - t0
        delta_s, sinfo, damping, attempts = self._solve(op, v[S])
        delta = torch.zeros_like(v)
        delta[S] = delta_s
        return delta, sinfo, damping, attempts, op, {"scope": "local", "local_setup_seconds": setup, **info}


def extreme_eigenvalues(matvec, like: torch.Tensor, *, iterations: int = 20, seed: int = 0) -> tuple[float, float]:
    """``(λ_min, λ_max)`` of the symmetric operator ``matvec`` from ``iterations`` Lanczos steps (Lanczos, J. Res.
    NBS 1950; Golub & Van Loan, "Matrix Computations", §10.1), one product each, from the seeded random start of
    :func:`~unlearnrec.unlearning.influence.largest_eigenvalue` (same products).

    ``λ_min`` is the smallest Ritz value (no reorthogonalisation: the extreme Ritz values converge first and lie
    inside the spectrum, so it errs towards zero). ``λ_max`` is that power iteration's estimate, read off the same
    Krylov space: with ``T`` the tridiagonal matrix, ``q₁ᵀ A^j q₁ = e₁ᵀ T^j e₁`` for ``j <= 2·iterations − 1``, so the
    Rayleigh quotient of ``A^(k−1) q₁`` is ``e₁ᵀ T^(2k−1) e₁ / e₁ᵀ T^(2k−2) e₁`` (``k = iterations``); the damping
    relative to λ_max is thus the power iteration's, as other influence methods compute it.
    """
    gen = torch.Generator().manual_seed(seed)
    q = matvec(torch.randn(like.shape, generator=gen, dtype=like.dtype).to(like.device))  # in the sub-space
    norm = float(torch.linalg.vector_norm(q))
    if norm == 0.0:
        return 0.0, 0.0
    q, q_prev, beta = q / norm, torch.zeros_like(q), 0.0
    alphas, betas = [], []
    for _ in range(iterations):
        w = matvec(q)
        alpha = float((w * q).sum())
        w = w - alpha * q - beta * q_prev
        alphas.append(alpha)
        beta = float(torch.linalg.vector_norm(w))
        if beta <= 1e-12 * max(abs(alpha), 1e-300):  # invariant sub-space: T is exact for every power
            break
        betas.append(beta)
        q_prev, q = q, w / beta
    k = len(alphas)
    t = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    ritz = np.linalg.eigvalsh(t)
    scale = max(abs(ritz[0]), abs(ritz[-1]))
    if scale == 0.0:
        return 0.0, 0.0
    y = np.zeros(k)
    y[0] = 1.0
    tn = t / scale
    for _ in range(iterations - 1):  # y = (T/s)^(k-1) e1, normalised (the ratio is scale-free)
        y = tn @ y
        y /= np.linalg.norm(y)
    power = scale * float(y @ tn @ y) / float(y @ y)
    return float(ritz[0]), float(abs(power))


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


def _local_capable(model: Recommender) -> bool:
    """Whether :func:`local_hessian` reproduces ``model``'s objective: its loss is the base BPR + layer-0 L2 and
    its propagation a fixed linear map of the table (LightGCN, MF)."""
    return type(model).recommendation_loss is Recommender.recommendation_loss and model.name in ("lightgcn", "mf")


def _subgraph(graph: Graph, nodes: torch.Tensor) -> Graph:
    """The principal sub-matrix ``Â[nodes, nodes]`` of the normalised adjacency (the original weights, not
    re-normalised) as a :class:`Graph` that only propagates (``nodes``: sorted node indices)."""
    import scipy.sparse as sp

    adj = graph.adj.to("cpu")
    n = graph.n_nodes
    a = sp.csr_matrix((adj.values().numpy(), adj.col_indices().numpy(), adj.crow_indices().numpy()), shape=(n, n))
    idx = nodes.cpu().numpy()
    sub = a[idx][:, idx].tocsr()
    sub.sort_indices()
    g = Graph.__new__(Graph)
    g.n_users, g.n_items, g.keys, g.device = 0, len(idx), np.zeros(0, np.int64), graph.device
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        g.adj = torch.sparse_csr_tensor(
            torch.from_numpy(sub.indptr.astype(np.int64)),
            torch.from_numpy(sub.indices.astype(np.int64)),
            torch.from_numpy(sub.data.astype(np.float32)),
            size=sub.shape,
            check_invariants=False,
        ).to(graph.device)
    return g


def local_hessian(
    model: Recommender,
    graph: Graph,
    theta: torch.Tensor,
    triples: Batch,
    denominator: float,
    rows: torch.Tensor,
    *,
    hessian_hops: int = 0,
) -> tuple[HessianVectorProduct, torch.Tensor, dict]:
    """Hessian-vector products of the objective restricted to the table rows ``rows``, computed locally (IFRU).

    The *local objective* of ``Δ`` (one row per kept row ``s ∈ S``) is
    ``Σ_{t ∈ T_S} ℓ_t(E* + P[:, S] Δ; θ* + U_S Δ) / denominator``: the triples ``T_S`` with an endpoint within
    ``hessian_hops`` hops of ``S``, scored on the propagated embeddings ``E* = P θ*`` (over the training graph)
    moved by the propagation of ``Δ``, which is computed on the sub-graph induced by the ``n_layers``-hop reach of
    ``S`` (exact: a path of length <= ``n_layers`` from ``S`` never leaves it), plus the L2 of the triples'
    layer-0 rows. Its Hessian at ``Δ = 0`` is the objective's Hessian restricted to ``S`` when ``T_S`` holds every
    triple whose embeddings depend on ``S`` (``hessian_hops >= n_layers``), and leaves out the triples that reach
    ``S`` only through propagation otherwise. A product costs one pass over ``T_S`` and propagations over the
    reach's sub-graph: both follow the neighbourhood's size. No Python loop over triples, rows or edges.

    Returns the operator (on ``(|S|, d)`` tensors), the sorted row indices ``S`` and sizes for the log.
    """
    device = theta.device
    n_users = model.n_users
    rows = rows.to(device)
    S = torch.nonzero(rows).squeeze(1)
    near = rows if hessian_hops == 0 else khop_rows(graph, S.cpu().numpy(), hessian_hops).to(device)
    tu, tp, tn = triples.users, triples.pos + n_users, triples.neg + n_users
    tmask = near[tu] | near[tp] | near[tn]
    lu, lp, ln = tu[tmask], tp[tmask], tn[tmask]
    k = len(lu)
    X, inv = torch.unique(torch.cat([lu, lp, ln]), return_inverse=True)
    iu, ip, ineg = inv[:k], inv[k : 2 * k], inv[2 * k :]
    layers = int(model.config.n_layers) if model.uses_graph else 0
    reach = khop_rows(graph, S.cpu().numpy(), layers).to(device) if layers else rows
    R = torch.nonzero(reach).squeeze(1)
    sub = _subgraph(graph, R) if layers else None
    s_in_r = torch.searchsorted(R, S)
    pos = torch.searchsorted(R, X).clamp(max=len(R) - 1)
    x_in_r = torch.where(R[pos] == X, pos, torch.full_like(pos, len(R)))  # len(R): a zero row (outside the reach)
    sx = torch.searchsorted(X, S).clamp(max=max(len(X) - 1, 0))
    s_has = (X[sx] == S) if len(X) else torch.zeros_like(S, dtype=torch.bool)
    with torch.no_grad():
        e_star = model.propagate(graph, theta)[X] if model.uses_graph else theta[X]
        e0_x = theta[X]
    reg = float(model.config.reg)
    d = theta.shape[1]

    def fn(delta: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(len(R), d, dtype=delta.dtype, device=device).index_add(0, s_in_r, delta)
        moved = model.propagate(sub, x) if layers else x
        moved = torch.cat([moved, moved.new_zeros(1, d)])
        e = e_star + moved[x_in_r]
        e0 = e0_x.index_add(0, sx[s_has], delta[s_has])
        u, p, q = e[iu], e[ip], e[ineg]
        bpr = F.softplus((u * q).sum(-1) - (u * p).sum(-1)).sum()
        l2 = 0.5 * (e0[iu].pow(2).sum() + e0[ip].pow(2).sum() + e0[ineg].pow(2).sum())
        return (bpr + reg * l2) / float(denominator)

    op = HessianVectorProduct(fn, torch.zeros(len(S), d, dtype=theta.dtype, device=device))
    info = {
        "local_triples": int(k),
        "local_rows": int(len(X)),
        "reach_rows": int(len(R)),
        "hessian_hops": int(hessian_hops),
    }
    return op, S, info
