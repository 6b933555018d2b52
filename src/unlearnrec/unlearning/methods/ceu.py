"""CEU: Certified Edge Unlearning (Wu, Shen, Ning, Wang, Wang, "Certified Edge Unlearning for Graph Neural
Networks", KDD 2023), for the edges of a recommender's interaction graph.

CEU replaces retraining without the removed edges ``E_UL`` by one Newton-style step of the trained parameters
(its Eqn. 11-12): the samples whose loss can change are those within the model's receptive field of the removed
edges, ``V_EUL`` (the nodes within ``ℓ`` hops of an endpoint, for an ``ℓ``-layer GNN), and

    θ_UL = θ_OR + H⁻¹ ( ∇ Σ_{V_EUL} L(θ_OR; G) − ∇ Σ_{V_EUL} L(θ_OR; G \\ E_UL) ) / |V|,
    H = ∇² (1/|V|) Σ_V L(θ_OR; G)  (+ λ₁ I when H has negative eigenvalues, λ₁ the L2 rate)

with ``H⁻¹ k`` solved by conjugate gradient on Hessian-vector products (the paper; LiSSA is an option here).
Certification (Step 1, Eqn. 8) trains the original with a random linear term ``bᵀθ`` added to the loss, which
hides the gradient residual of ``θ_UL``; ``b`` cancels in ``k`` and vanishes from ``H``, so it enters the
unlearning step only through the model trained with it.

Adaptation to a recommender (LightGCN's layer-0 table ``E0`` as the parameters, MF alike):

* the samples are the BPR triples of the training edges (one seeded negative each, ``n_negatives`` to average
  more) and the loss is BPR + the backbone's L2 (the objective of :mod:`unlearnrec.unlearning.influence`): the
  full-batch version of what the backbone was trained on;
* ``V_EUL`` becomes the *affected triples*: those with an endpoint (user, positive or negative item) within
  ``hops`` (default ``n_layers``; 0 for MF) of an endpoint of a removed edge; a removed edge's own triple is a
  sample of ``G`` but not of ``G \\ E_UL`` (in a recommender an edge is both a sample and structure), so it
  appears in the first sum only. ``k`` is computed from the affected triples alone (two gradients over them);
  for the other triples both terms are identical and cancel exactly, so this is the same gradient difference GIF
  uses, restricted to where it can be non-zero;
* ``H`` is the Hessian of the objective over every training triple on ``G`` (as in the paper); the damping
  ``λ₁`` is the objective's own L2 rate (the per-row L2 coefficient of the mean objective, averaged over the
  table's rows: ``3 · reg / n_rows``), raised ×``damping_growth`` while CG still meets negative curvature (a
  model stopped early by validation is not at a minimum; the damping used is logged);
* the original models here are trained by the shared recipe, without ``bᵀθ``; the optional certification noise
  is therefore applied at the output instead (``noise_std`` > 0: Gaussian noise on every parameter of the
  unlearned table, seeded), the output-perturbation form of the same Gaussian mechanism. ``report_residual``
  logs the gradient residual ``‖∇L_{G \\ E_UL}(θ_UL)‖`` that CEU's bounds and the noise calibration are about.

Departures from the public code (github.com/kunwu522/certified_edge_unlearning, node classification): CG starts
from 0 instead of from ``k`` and stops at a relative residual ``tol`` (the code: ``fmin_cg`` with ``gtol``
1e-4, at most 100 iterations, which are the defaults here).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from unlearnrec.graph import Graph
from unlearnrec.models.base import Recommender
from unlearnrec.unlearning.base import register
from unlearnrec.unlearning.influence import largest_eigenvalue, objective_grad, select_triples, triples_of
from unlearnrec.unlearning.methods.influence import InfluenceConfig, _InfluenceUnlearner, khop_rows


class CEUConfig(InfluenceConfig):
    """CEU settings (the inverse-Hessian solve as :class:`~unlearnrec.unlearning.methods.influence.GIFConfig`)."""

    hops: int | None = Field(None, ge=0)
    """Receptive field ``ℓ`` of the affected samples (default: the backbone's ``n_layers``; 0 for MF)."""
    damping_mode: Literal["regularisation", "relative", "absolute"] = "regularisation"
    """``regularisation`` (default, the paper's ``λ₁ = λ``): ``damping`` × the objective's mean per-row L2 rate
    ``3 · reg / n_rows``; ``relative``: × the Hessian's λ_max (as GIF); ``absolute``: ``damping`` as is."""
    damping: float = Field(1.0, ge=0.0)
    """Multiplier of the damping of ``damping_mode`` (1: the paper's ``λ₁ = λ``)."""
    max_damping_increases: int = Field(10, ge=0)
    """Solve again with ``damping_growth`` × the damping while CG meets negative curvature, at most this often."""
    noise_std: float = Field(0.0, ge=0.0)
    """Certification noise: standard deviation of the Gaussian added to every parameter of the unlearned table
    (0, default: none; the uncertified update, the paper's UEU)."""
    noise_seed: int = 0
    report_residual: bool = False
    """Log ``‖∇L_{G \\ E_UL}(θ_UL)‖`` (one more gradient of the residual objective)."""


@register
class CEU(_InfluenceUnlearner):
    """CEU (Wu et al., KDD 2023): one Newton step with the influence of the removed edges on the samples in their
    receptive field; optional certification noise. See the module docstring for the recommender adaptation."""

    name = "ceu"
    paper = ("CEU (Wu, Shen, Ning, Wang, Wang, 'Certified Edge Unlearning for Graph Neural Networks', KDD 2023)")
    Config = CEUConfig

    def _needs_lambda_max(self) -> bool:
        return self.config.solver == "lissa" or self.config.damping_mode == "relative"

    def _refresh(self) -> float:
        # k comes from the affected triples alone (no full gradient needed); λ_max only for LiSSA / relative damping
        import time

        t0 = time.perf_counter()
        if self._needs_lambda_max():
            hvp = self._hessian(None)
            self._lambda_max = largest_eigenvalue(hvp, hvp.gradient, iterations=self.config.power_iterations)
        self._stale = False
        return time.perf_counter() - t0

    def _hops(self) -> int:
        ctx = self._require()
        if self.config.hops is not None:
            return int(self.config.hops)
        return int(ctx.model.config.n_layers) if ctx.model.uses_graph else 0

    def _initial_damping(self) -> float:
        c = self.config
        if c.damping_mode == "regularisation":
            model = self._require().model
            return c.damping * 3.0 * float(model.config.reg) / float(model.n_users + model.n_items)
        return super()._initial_damping()

    def _gradient_difference(self, model: Recommender, res: Graph, theta: torch.Tensor, removed: np.ndarray,
                             n: float) -> tuple[torch.Tensor, dict]:
        ctx = self._require()
        req = self._request
        nodes = np.concatenate([np.unique(req[:, 0]), model.n_users + np.unique(req[:, 1])])
        near = khop_rows(ctx.graph, nodes, self._hops()).cpu().numpy()
        t = self._triples
        tu, tp, tn = (x.cpu().numpy() for x in (t.users, t.pos, t.neg))
        affected = near[tu] | near[model.n_users + tp] | near[model.n_users + tn] | removed
        full = ctx.graph.to(theta.device)
        k_old = objective_grad(model, full, theta, select_triples(t, affected), n)
        k_new = objective_grad(model, res, theta, select_triples(t, affected & ~removed), n)
        return k_old - k_new, {"hops": self._hops(), "affected_nodes": int(near.sum()),
                               "affected_triples": int(affected.sum())}

    def _unlearn(self, request: np.ndarray, residual: Graph):
        self._request = request
        return super()._unlearn(request, residual)

    def _post_update(self, model: Recommender, residual: Graph) -> dict:
        c = self.config
        log: dict = {"noise_std": c.noise_std}
        with torch.no_grad():
            if c.noise_std > 0:
                gen = torch.Generator().manual_seed(int(c.noise_seed))
                noise = torch.randn(model.embedding.shape, generator=gen, dtype=model.embedding.dtype)
                model.embedding.add_(c.noise_std * noise.to(model.embedding.device))
        if c.report_residual:
            assert self._triples is not None
            retained = select_triples(self._triples, ~self._removed_mask())
            g = objective_grad(model, residual.to(model.embedding.device), model.embedding.detach(), retained,
                               self._denominator())
            log["gradient_residual_norm"] = float(torch.linalg.vector_norm(g))
        return log

    def _removed_mask(self) -> np.ndarray:
        return triples_of(self._triples, self._request, self._require().model.n_items)
