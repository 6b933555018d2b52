"""IAU: one gradient step on the retained loss minus the forgotten loss (exact full-data means), registered, through
the CLI, and not a no-op (it lowers the request's scores below EdgeDrop's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from unlearnrec import api
from unlearnrec.cli import app
from unlearnrec.config import RunConfig
from unlearnrec.evaluation.forgetting import pair_scores
from unlearnrec.unlearning.base import Context, build_unlearner, list_unlearners
from unlearnrec.unlearning.methods.iau import IAU, mean_loss_gradient
from unlearnrec.unlearning.methods.references import forget_sampler
from unlearnrec.unlearning.requests import DeletionRequest


def test_registered_with_its_paper():
    row = next(m for m in list_unlearners() if m["name"] == "iau")
    assert "Influence Approximation" in row["paper"] and "lightgcn" in row["backbones"]
    assert isinstance(build_unlearner("iau"), IAU)


def test_lowers_the_request_scores_below_edgedrops(ctx, request_edges):
    """Fails for a no-op: the table must change and the request must score lower than under EdgeDrop (the
    unchanged model on the residual graph), while the retained edges keep most of their scores."""
    out = build_unlearner("iau", {"learning_rate": 0.02}).prepare(ctx).unlearn(request_edges)
    assert not torch.equal(out.model.embedding, ctx.model.embedding)
    assert not out.graph.contains(request_edges).any()
    edgedrop = pair_scores(ctx.model, out.graph, request_edges).mean()
    assert pair_scores(out.model, out.graph, request_edges).mean() < edgedrop
    kept = out.graph.edges[:: max(1, out.graph.n_edges // 500)]
    assert pair_scores(out.model, out.graph, kept).mean() > 0.8 * pair_scores(ctx.model, out.graph, kept).mean()
    util = api.evaluate_model(out.model, out.graph, ctx.data, ks=(20,))
    assert util["recall@20"] > 0.1
    h = out.log["history"]
    assert len(h) == 1 and h[0]["forget_grad_norm"] > 0 and h[0]["retain_grad_norm"] > 0
    json.dumps(out.to_dict())


def test_update_is_one_step_independent_of_the_batch_size(ctx, request_edges):
    """SGD: the update is linear in the step size (one step at θ*), and the same whatever ``batch_size`` (the
    gradients are full-data means)."""
    def delta(cfg):
        out = IAU({"optimizer": "sgd", **cfg}).prepare(ctx).unlearn(request_edges)
        return out.model.embedding.detach() - ctx.model.embedding.detach()

    d1 = delta({"learning_rate": 50.0, "batch_size": 64})
    d2 = delta({"learning_rate": 100.0, "batch_size": 64})
    d3 = delta({"learning_rate": 50.0, "batch_size": 100_000})
    assert float(d1.abs().max()) > 0
    assert torch.allclose(d2, 2 * d1, rtol=1e-4, atol=1e-7)
    assert torch.allclose(d3, d1, rtol=1e-4, atol=1e-7)
    # the step is −η (∇L_r − ∇L_f): the forgotten triples' loss goes up, the retained ones' changes little
    model = ctx.model
    rng = np.random.default_rng(0)
    fs = forget_sampler(ctx.graph.edges, request_edges, ctx.data.n_items)
    g_f, _ = mean_loss_gradient(model, ctx.graph, fs, 4096, rng, "cpu")
    assert float((d1 * g_f[0]).sum()) > 0  # along the forgotten loss's ascent direction


def test_runs_through_the_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ckpt"
    r = runner.invoke(app, ["train", "--dataset", "synthetic", "--model", "lightgcn", "--out", str(out),
                            "train.epochs=3", "model.embedding_size=8"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    cfg = tmp_path / "iau.yaml"
    cfg.write_text("learning_rate: 0.01\n")
    r = runner.invoke(app, ["unlearn", "--checkpoint", str(out), "--method", "iau", "--method-config", str(cfg),
                            "--random-edges", "0.02", "--out", str(tmp_path / "u")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "u" / "result.json").read_text())
    assert res["method"] == "iau" and res["method_config"]["learning_rate"] == 0.01
    assert res["unlearn"]["log"]["history"][0]["step"] == 1


@pytest.mark.parametrize("backbone", ["mf", "sgl", "simgcl"])
def test_every_backbone(backbone):
    cfg = RunConfig().with_overrides({"model.name": backbone, "train.epochs": 2, "model.embedding_size": 8})
    res = api.train(cfg, progress=False)
    c = Context(res["model_object"], res["graph_object"], res["data_object"], cfg, progress=False)
    req = DeletionRequest.random_edges(c.graph, 0.01, seed=0).edges
    out = build_unlearner("iau", {"steps": 2}).prepare(c).unlearn(req)
    assert not out.graph.contains(req).any() and len(out.log["history"]) == 2
    assert not torch.equal(out.model.embedding, c.model.embedding)
