"""Influence-function machinery shared by the influence-based unlearners (GIF, IFRU).

Influence functions need a *deterministic* training objective, so that its gradient and Hessian at the trained
parameters are well defined. For a backbone whose only parameters are its layer-0 table ``E0`` (LightGCN, MF)
that objective is a function of ``E0`` alone:

    L(E0; G, T) = (1 / n) · Σ_{(u, i, j) ∈ T} [ softplus(ŝ_uj − ŝ_ui) + reg/2 · (‖e0_u‖² + ‖e0_i‖² + ‖e0_j‖²) ]

over a fixed set ``T`` of BPR triples (one per training edge and drawn negative; negatives are drawn *once*, with a
seed, by :meth:`~unlearnrec.sampling.BPRSampler.negatives`), with the scores ``ŝ`` of the backbone propagated over
graph ``G``. Per triple this is exactly the backbone's own training loss (:meth:`Recommender.recommendation_loss`,
BPR plus ``reg`` times the batch's layer-0 squared norms), so the objective is the full-batch version of what the
backbone was trained on. ``n`` defaults to ``|T|`` (a mean); influence methods pass the *same* ``n`` for the full and
the residual objectives, so that the difference of their gradients is exactly the removed triples' terms plus the
change of the retained triples' terms caused by the graph change.

The Hessian is never formed: :class:`HessianVectorProduct` gives ``(H + damping·I) v`` by double backward through
the objective's gradient (computed once, with ``create_graph``), optionally restricted to a subset of rows.
:func:`conjugate_gradient` and :func:`lissa` solve ``(H + damping·I) x = b`` with it and report
:class:`SolveInfo` diagnostics (iterations, relative residual ``‖b − A x‖ / ‖b‖``, why they stopped).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from unlearnrec.data.interactions import as_pairs, pair_keys
from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch, Recommender
from unlearnrec.sampling import BPRSampler

__all__ = [
    "HessianVectorProduct",
    "SolveInfo",
    "conjugate_gradient",
    "fixed_triples",
    "largest_eigenvalue",
    "lissa",
    "objective",
    "objective_grad",
    "select_triples",
    "solve",
    "triples_of",
]

MatVec = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------ the objective
def fixed_triples(
    edges: np.ndarray,
    n_items: int,
    *,
    seed: int,
    positives: np.ndarray | None = None,
    n_negatives: int = 1,
    device: torch.device | str = "cpu",
) -> Batch:
    """Fixed BPR triples: each of ``edges`` repeated ``n_negatives`` times, each with one seeded negative item.

    Negatives are drawn uniformly among the items the user has no pair with in ``positives`` (default: ``edges``),
    with :meth:`BPRSampler.negatives`, so the same ``seed`` always gives the same triples. Triple ``k`` belongs to
    edge ``k // n_negatives``.
    """
    edges = as_pairs(edges)
    if n_negatives < 1:
        raise ValueError("n_negatives must be >= 1")
    sampler = BPRSampler(edges if positives is None else positives, n_items)
    users = np.repeat(edges[:, 0], n_negatives)
    pos = np.repeat(edges[:, 1], n_negatives)
    neg = sampler.negatives(users, np.random.default_rng(seed))
    return Batch(*(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (users, pos, neg)))


def triples_of(triples: Batch, pairs: np.ndarray, n_items: int) -> np.ndarray:
    """Boolean mask over ``triples``: those whose ``(user, positive)`` pair is one of ``pairs``."""
    keys = np.unique(pair_keys(as_pairs(pairs), n_items))
    if not len(keys) or not len(triples):
        return np.zeros(len(triples), dtype=bool)
    q = triples.users.cpu().numpy() * int(n_items) + triples.pos.cpu().numpy()
    at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    return keys[at] == q


def select_triples(triples: Batch, mask: np.ndarray | torch.Tensor) -> Batch:
    """The triples where ``mask`` is true (order kept)."""
    m = torch.as_tensor(np.asarray(mask, dtype=bool)).to(triples.users.device)
    return Batch(triples.users[m], triples.pos[m], triples.neg[m])


def objective(
    model: Recommender,
    graph: Graph | None,
    e0: torch.Tensor,
    triples: Batch,
    denominator: float | None = None,
) -> torch.Tensor:
    """The deterministic training objective ``Σ_T ℓ(E0; G) / denominator`` (default denominator: ``|T|``).

    One vectorised pass: ``model.propagate(graph, e0)`` then the backbone's per-triple BPR + L2 terms for all
    triples at once (the backbone's :meth:`~Recommender.recommendation_loss` on the whole set, rescaled from a mean
    to a sum over ``denominator``). Differentiable in ``e0``, twice.
    """
    n = len(triples)
    if n == 0:
        return e0.sum() * 0.0
    emb = model.propagate(graph, e0)
    loss, _ = model.recommendation_loss(emb, e0, triples)
    return loss * (n / float(denominator if denominator is not None else n))


def objective_grad(
    model: Recommender,
    graph: Graph | None,
    e0: torch.Tensor,
    triples: Batch,
    denominator: float | None = None,
) -> torch.Tensor:
    """``∇_E0`` of :func:`objective` at ``e0`` (detached, same shape as ``e0``)."""
    x = e0.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(objective(model, graph, x, triples, denominator), x)
    return g.detach()


# ------------------------------------------------------------------------------ Hessian-vector products
class HessianVectorProduct:
    """``v ↦ (H + damping·I) v`` for the Hessian ``H`` of ``fn`` at ``point``, by double backward.

    The gradient of ``fn`` is computed once with ``create_graph=True``; each product is one more backward pass
    through it (about the cost of two gradient evaluations). No Hessian is formed.

    Args:
        fn: scalar, twice-differentiable function of one tensor.
        point: where the Hessian is taken.
        damping: added multiple of the identity.
        rows: optional boolean mask over ``point``'s first dimension; the operator then acts on the sub-space of
            those rows only, ``v ↦ P (H + damping·I) P v`` with ``P`` zeroing the other rows (the restricted
            Hessian), so that a solver started at zero stays inside the sub-space.

    Attributes:
        gradient: ``∇fn(point)`` (detached; a free by-product).
        calls: number of products so far.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        point: torch.Tensor,
        *,
        damping: float = 0.0,
        rows: torch.Tensor | np.ndarray | None = None,
    ):
        self.x = point.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (self._grad,) = torch.autograd.grad(fn(self.x), self.x, create_graph=True)
        self.gradient = self._grad.detach()
        self.damping = float(damping)
        self.calls = 0
        self.mask: torch.Tensor | None = None
        if rows is not None:
            r = torch.as_tensor(np.asarray(rows, dtype=bool) if isinstance(rows, np.ndarray) else rows)
            shape = (-1,) + (1,) * (point.dim() - 1)
            self.mask = r.to(device=point.device, dtype=point.dtype).reshape(shape)

    def restrict(self, v: torch.Tensor) -> torch.Tensor:
        """``P v``: ``v`` with the rows outside the sub-space zeroed (``v`` itself without a mask)."""
        return v if self.mask is None else v * self.mask

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        v = self.restrict(v.detach())
        (hv,) = torch.autograd.grad(self._grad, self.x, grad_outputs=v, retain_graph=True)
        self.calls += 1
        hv = self.restrict(hv.detach())
        return hv + self.damping * v if self.damping else hv


# ------------------------------------------------------------------------------ solvers
@dataclass
class SolveInfo:
    """Diagnostics of an inverse-Hessian-vector solve ``A x = b``.

    Attributes:
        solver: ``"cg"`` or ``"lissa"``.
        iterations: iterations run (one matrix-vector product each, plus LiSSA's power iteration, see ``matvecs``).
        residual: relative residual ``‖b − A x‖ / ‖b‖`` of the returned ``x``.
        converged: ``residual <= tol``.
        status: ``converged``, ``max_iterations``, ``negative_curvature`` (CG met ``pᵀAp <= 0``: ``A`` is not
            positive definite; the iterate so far is returned), ``diverged`` (LiSSA's residual blew up: scale too
            small or ``A`` indefinite; the best iterate is returned) or ``zero_rhs``.
        matvecs: matrix-vector products used in all.
        scale: LiSSA's scale (``None`` for CG).
    """

    solver: str
    iterations: int
    residual: float
    converged: bool
    status: str
    matvecs: int
    scale: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x))


def conjugate_gradient(matvec: MatVec, b: torch.Tensor, *, iterations: int = 100, tol: float = 1e-5,
                       ) -> tuple[torch.Tensor, SolveInfo]:
    """Solve ``A x = b`` for a symmetric positive definite ``A`` given as ``matvec``, from ``x = 0``.

    Stops when the relative residual is ``<= tol``, after ``iterations`` products, or at negative curvature.
    """
    x = torch.zeros_like(b)
    bnorm = _norm(b)
    if bnorm == 0.0:
        return x, SolveInfo("cg", 0, 0.0, True, "zero_rhs", 0)
    r = b.clone()
    p = r.clone()
    rr = float((r * r).sum())
    status = "max_iterations"
    it = 0
    for it in range(1, iterations + 1):
        ap = matvec(p)
        pap = float((p * ap).sum())
        if not pap > 0.0:  # also catches NaN
            status = "negative_curvature"
            it -= 1
            break
        alpha = rr / pap
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = float((r * r).sum())
        if math.sqrt(rr_new) <= tol * bnorm:
            rr = rr_new
            status = "converged"
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    residual = math.sqrt(rr) / bnorm  # the recursive residual (equals ‖b − A x‖ up to rounding)
    return x, SolveInfo("cg", it, residual, residual <= tol, status, it + (status == "negative_curvature"))


def largest_eigenvalue(matvec: MatVec, like: torch.Tensor, *, iterations: int = 30, seed: int = 0) -> float:
    """Power-iteration estimate of the largest-magnitude eigenvalue of the symmetric operator ``matvec``."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(like.shape, generator=gen, dtype=like.dtype).to(like.device)
    v = matvec(v)  # lands in the operator's sub-space, if it has one
    lam = 0.0
    for _ in range(iterations):
        n = _norm(v)
        if n == 0.0:
            return 0.0
        v = v / n
        av = matvec(v)
        lam = float((v * av).sum())
        v = av
    return abs(lam)


def lissa(matvec: MatVec, b: torch.Tensor, *, iterations: int = 1000, scale: float | None = None,
          tol: float = 1e-5, power_iterations: int = 30) -> tuple[torch.Tensor, SolveInfo]:
    """LiSSA (Agarwal, Bullins, Hazan, JMLR 2017; as used by Koh & Liang, ICML 2017) for ``A x = b``.

    With exact (full-objective) products the recursion ``h_j = b + (I − A/scale) h_{j−1}``, ``x = h / scale``, is
    the truncated Neumann series of ``A⁻¹``, i.e. the Richardson iteration ``x ← x + (b − A x) / scale`` from
    ``x = b / scale``. It converges when ``A`` is positive definite and ``scale > λ_max(A) / 2`` (error shrinking
    like ``(1 − λ_min/scale)^j``); ``scale=None`` takes ``1.05 ×`` a power-iteration estimate of ``λ_max``.
    The residual is a by-product of each step, so it stops early at ``tol``. For a positive definite ``A`` and a
    valid scale the residual shrinks at every step (``I − A/scale`` is a contraction); if it grows by half over the
    best so far (``A`` indefinite, or the scale too small) the best iterate is returned with status ``diverged``.
    """
    bnorm = _norm(b)
    if bnorm == 0.0:
        return torch.zeros_like(b), SolveInfo("lissa", 0, 0.0, True, "zero_rhs", 0, scale)
    extra = 0
    if scale is None:
        scale = 1.05 * largest_eigenvalue(matvec, b, iterations=power_iterations)
        extra = power_iterations + 1
        if scale <= 0.0:
            scale = 1.0
    x = b / scale
    best_x, best_res = x, math.inf
    status = "max_iterations"
    it = 0
    for it in range(1, iterations + 1):
        r = b - matvec(x)
        res = _norm(r) / bnorm
        if res < best_res:
            best_x, best_res = x, res
        if res <= tol:
            status = "converged"
            break
        if not math.isfinite(res) or res > 1.5 * best_res:
            status = "diverged"  # for a positive definite A and a valid scale the residual never grows
            break
        if it < iterations:
            x = x + r / scale
    return best_x, SolveInfo("lissa", it, best_res, best_res <= tol, status, it + extra, float(scale))


def solve(matvec: MatVec, b: torch.Tensor, solver: str = "cg", *, iterations: int | None = None, tol: float = 1e-5,
          scale: float | None = None) -> tuple[torch.Tensor, SolveInfo]:
    """``A⁻¹ b`` by ``solver`` (``cg``: default 100 iterations; ``lissa``: default 1000)."""
    if solver == "cg":
        return conjugate_gradient(matvec, b, iterations=iterations or 100, tol=tol)
    if solver == "lissa":
        return lissa(matvec, b, iterations=iterations or 1000, scale=scale, tol=tol)
    raise ValueError(f"unknown solver {solver!r} (cg or lissa)")
