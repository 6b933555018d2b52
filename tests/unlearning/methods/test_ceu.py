"""CEU: the affected-samples gradient difference is GIF's (exactly), the Newton step against the exact solution,
the paper's damping, the optional certification noise, and a trained LightGCN on which a no-op fails."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.unlearning.methods.test_influence import Problem, trained_lightgcn  # noqa: F401  (fixture)
from unlearnrec.unlearning.base import Context, build_unlearner, list_unlearners
from unlearnrec.unlearning.methods.ceu import CEU


@pytest.fixture(scope="module")
def problem() -> Problem:
    return Problem("lightgcn", 20, 15, degree=6, d=4, reg=0.05, n_negatives=1, n_request=5, seed=0,
                   dtype=torch.float32)


def test_registered_with_its_paper() -> None:
    m = {x["name"]: x for x in list_unlearners()}["ceu"]
    assert "KDD 2023" in m["paper"] and "Certified Edge Unlearning" in m["paper"] and m["backbones"] == "lightgcn,mf"


def test_gradient_difference_is_gifs_and_the_step_is_newtons(problem: Problem) -> None:
    p = problem
    out = CEU({"damping_mode": "relative", "damping": 0.01, "tol": 1e-7}).prepare(p.ctx).unlearn(p.request)
    gif = build_unlearner("gif", {"tol": 1e-7}).prepare(p.ctx).unlearn(p.request)
    # the affected triples (receptive field of the removed edges) carry all of GIF's gradient difference
    assert out.log["gradient_difference_norm"] == pytest.approx(gif.log["gradient_difference_norm"], rel=1e-4)
    assert out.log["affected_triples"] <= p.n
    assert torch.allclose(out.model.embedding, gif.model.embedding, atol=1e-5)
    delta = (out.model.embedding - p.theta).detach().double()
    exact = p.exact(p.v, out.log["damping"]).double()
    assert torch.allclose(delta, exact, rtol=1e-3, atol=1e-4 * float(exact.abs().max()))
    # a radius that misses the receptive field changes the answer (the receptive field is what makes it exact)
    near = CEU({"hops": 0, "damping_mode": "relative", "damping": 0.01, "tol": 1e-7}).prepare(p.ctx).unlearn(p.request)
    assert near.log["affected_triples"] < out.log["affected_triples"]
    assert not torch.allclose(near.model.embedding, out.model.embedding, atol=1e-5)


def test_default_damping_is_the_l2_rate_and_noise_is_seeded(problem: Problem) -> None:
    p = problem
    out = CEU({"tol": 1e-6, "report_residual": True}).prepare(p.ctx).unlearn(p.request)
    lam = 3 * p.config.model.reg / p.graph.n_nodes
    assert out.log["damping_attempts"][0]["damping"] == pytest.approx(lam)
    assert out.log["solver"]["converged"] and out.log["gradient_residual_norm"] >= 0
    noisy = CEU({"tol": 1e-6, "noise_std": 0.01, "noise_seed": 3}).prepare(p.ctx).unlearn(p.request)
    again = CEU({"tol": 1e-6, "noise_std": 0.01, "noise_seed": 3}).prepare(p.ctx).unlearn(p.request)
    diff = (noisy.model.embedding - out.model.embedding).detach()
    assert torch.equal(noisy.model.embedding, again.model.embedding)
    assert float(diff.std()) == pytest.approx(0.01, rel=0.2) and noisy.log["noise_std"] == 0.01


def test_ceu_lowers_the_request_scores_below_edgedrop(trained_lightgcn: Context) -> None:  # noqa: F811
    """Fails for a no-op: the unlearned model must differ from the original and rank the request lower than
    EdgeDrop (the same parameters on the residual graph) does."""
    ctx = trained_lightgcn
    g = ctx.graph
    rng = np.random.default_rng(0)
    req = g.edges[np.sort(rng.choice(g.n_edges, g.n_edges // 20, replace=False))]
    before = ctx.model.embedding.detach().clone()
    out = build_unlearner("ceu").prepare(ctx).unlearn(req)
    assert torch.equal(ctx.model.embedding, before)
    assert not torch.allclose(out.model.embedding, before)

    def mean(m, graph) -> float:
        return float(m.score(graph, req[:, 0], req[:, 1]).mean())

    original, edgedrop, unlearned = mean(ctx.model, g), mean(ctx.model, out.graph), mean(out.model, out.graph)
    assert unlearned < edgedrop < original
    assert out.log["solver"]["status"] == "converged"
    json.dumps(out.to_dict())
