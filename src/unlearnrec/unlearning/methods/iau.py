"""IAU: Influence Approximation Unlearning (Liu, Wu, Lian, Chen, "Efficient Machine Unlearning via Influence
Approximation", arXiv 2507.23257, 2025), for edge deletion in recommenders.

**Influence unlearning.** Removing ``z⁻`` from the ``n`` training examples moves the optimum by about
``θ*_{−z⁻} − θ* ≈ (1/n) H⁻¹ ∇ℓ(z⁻, θ*)``; computing or approximating ``H⁻¹`` is what makes influence unlearning
slow (GIF, IFRU in :mod:`~unlearnrec.unlearning.methods.influence`).

**Incremental approximation.** The paper's link between forgetting and memorising: *adding* an example ``z⁺``
moves the optimum by ``−(1/n) H⁻¹ ∇ℓ(z⁺, θ*)``, so removing ``z⁻`` has the influence of adding an opposite example
whose gradient is ``−∇ℓ(z⁻, θ*)``; and adding an example is what incremental learning does with a gradient step,
no Hessian. Unlearning ``D_f`` is thus learning its opposite: a step *up* the loss of the forgotten data,
``θ ← θ* + η ∇L_f(θ*)``.

**Gradient correction.** The ascent alone over-forgets (it also moves what the retained data needs); IAU adds the
gradient of the remaining data, so the update is one step on

    ∇L_r(θ*) − ∇L_f(θ*),      L_r = mean loss of the retained triples,  L_f = mean loss of the forgotten ones,

taken, as in the authors' code, by one step of a fresh optimiser (``optimizer``: Adam, as there, or plain SGD)
with step size ``learning_rate``; ``steps`` > 1 repeats it from the new point (the paper takes one).

**Gradient restriction**, the paper's third module, is a training-time penalty (``ℓ + α‖∇ℓ‖``) that keeps single
examples' gradients small, so that later requests are easier to approximate. It changes how the original is
trained; here every method starts from the same original trained with the plain recipe, so IAU runs without it.

For a recommender the examples are BPR triples of the backbone's own loss: the retained edges on the residual
graph (negatives outside the user's residual edges, as retraining would draw them) and the request edges on the
graph they were learned on (negatives outside all of the user's training edges). Both gradients are exact
full-data means: every triple once, the batch losses weighted by their sizes, so ``batch_size`` bounds memory and
does not change the update. The cost is about one training epoch per step.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from unlearnrec.config import YamlConfig
from unlearnrec.graph import Graph
from unlearnrec.sampling import BPRSampler
from unlearnrec.training import epoch_rng
from unlearnrec.unlearning.base import Unlearner, copy_model, register
from unlearnrec.unlearning.methods.references import forget_sampler

__all__ = ["IAU", "IAUConfig", "mean_loss_gradient"]


class IAUConfig(YamlConfig):
    learning_rate: float = Field(1e-3, gt=0.0)
    """``η``: step size of the update (select it on validation, on tuning requests)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """``adam``: one step of a fresh Adam (the authors' code; about ``η·sign`` of the update direction); ``sgd``:
    ``θ ← θ − η (∇L_r − ∇L_f)``."""
    steps: int = Field(1, ge=1)
    """Update steps (the paper takes one; more repeat it from the new point, gradients recomputed)."""
    batch_size: int | None = Field(None, gt=0)
    """Triples per forward/backward pass (default: the recipe's batch size); memory only."""
    seed: int | None = None
    """Seed of the negatives (default: the recipe's)."""


def mean_loss_gradient(model, graph: Graph, sampler, batch_size: int, rng: np.random.Generator,
                       device) -> tuple[list[torch.Tensor], float]:
    """Gradient of the mean over ``sampler``'s triples (one pass, fresh negatives) of ``model.loss``; the batch
    means are weighted by their sizes, so the result does not depend on ``batch_size``. Returns the gradients
    (one per parameter, in ``model.parameters()`` order) and the mean loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    total, n = 0.0, 0
    for batch in sampler.epoch(batch_size, rng, device):
        loss, _ = model.loss(batch, graph)
        g = torch.autograd.grad(loss * len(batch), params, allow_unused=True)
        for acc, gi in zip(grads, g, strict=True):
            if gi is not None:
                acc.add_(gi)
        total += float(loss.detach()) * len(batch)
        n += len(batch)
    n = max(1, n)
    return [g / n for g in grads], total / n


@register
class IAU(Unlearner):
    """Influence Approximation Unlearning (Liu, Wu, Lian, Chen, "Efficient Machine Unlearning via Influence
    Approximation", arXiv 2507.23257, 2025): forgetting the request as incrementally learning its opposite, with
    the remaining data's gradient as correction, in one gradient step and no Hessian (module docstring).
    Settings: :class:`IAUConfig`.
    """

    name = "iau"
    paper = ("IAU (Liu, Wu, Lian, Chen, 'Efficient Machine Unlearning via Influence Approximation', "
             "arXiv 2507.23257, 2025)")
    Config = IAUConfig

    def _prepare(self, ctx) -> None:
        pass

    def _unlearn(self, request: np.ndarray, residual: Graph):
        ctx = self._require()
        c = self.config
        t0 = time.perf_counter()
        model = copy_model(ctx.model)
        device = model.embedding.device
        res_graph, full_graph = residual.to(device), ctx.graph.to(device)
        batch_size = int(c.batch_size or ctx.config.train.batch_size)
        seed = ctx.config.train.seed if c.seed is None else c.seed
        retain = BPRSampler(res_graph.edges, ctx.data.n_items)
        forget = forget_sampler(ctx.graph.edges, request, ctx.data.n_items)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = (torch.optim.Adam(params, lr=c.learning_rate) if c.optimizer == "adam"
               else torch.optim.SGD(params, lr=c.learning_rate))
        history = []
        model.train()
        for step in range(1, c.steps + 1):
            rng = epoch_rng(seed + 7_919, step)
            torch.manual_seed(int(rng.integers(2**62)))
            model.start_epoch(res_graph, rng)
            g_r, l_r = mean_loss_gradient(model, res_graph, retain, batch_size, rng, device)
            g_f, l_f = mean_loss_gradient(model, full_graph, forget, batch_size, rng, device)
            opt.zero_grad(set_to_none=True)
            for p, gr, gf in zip(params, g_r, g_f, strict=True):
                p.grad = gr - gf
            norms = {"retain_grad_norm": float(torch.sqrt(sum((g * g).sum() for g in g_r))),
                     "forget_grad_norm": float(torch.sqrt(sum((g * g).sum() for g in g_f)))}
            opt.step()
            history.append({"step": step, "retain_loss": l_r, "forget_loss": l_f, **norms})
        model.eval()
        return self._outcome(model, residual, request, {"history": history}, train_seconds=time.perf_counter() - t0)
