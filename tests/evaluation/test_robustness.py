"""Robustness of forgetting: quantization round trips and the relearning curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.config import ModelConfig
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.evaluation import forgetting_report, item_ranks, pair_scores
from unlearnrec.evaluation.forgetting import final_embeddings
from unlearnrec.evaluation.robustness import (
    quantization_report,
    quantize_dequantize,
    relearning_curve,
)
from unlearnrec.graph import Graph
from unlearnrec.models import build_model


@pytest.fixture(scope="module")
def small():
    data = make_synthetic(n_users=60, n_items=40, n_communities=3, mean_degree=10.0, seed=7)
    graph = Graph(data.train, data.n_users, data.n_items)
    rng = np.random.default_rng(1)
    req = graph.edges[np.sort(rng.choice(graph.n_edges, 20, replace=False))]
    return data, graph, req, graph.without(req)


def _emb(n_users: int, n_items: int, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_users, d, generator=g), torch.randn(n_items, d, generator=g)


# --------------------------------------------------------------------------- quantization
def test_fp16_changes_scores_by_less_than_1e_2_relative() -> None:
    u, i = _emb(100, 80, 32, 0)
    exact = u @ i.T
    for mode in ("fp16", "bf16"):
        q = quantize_dequantize(u, mode) @ quantize_dequantize(i, mode).T
        rel = float((q - exact).abs().max() / exact.abs().max())
        assert rel < 1e-2 if mode == "fp16" else rel < 5e-2
    assert quantize_dequantize(u, "fp16").dtype == torch.float32
    assert torch.equal(quantize_dequantize(u, "fp32"), u)


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_int8_dequantization_error_is_bounded(granularity) -> None:
    u, _ = _emb(50, 1, 16, 1)
    u = u * torch.linspace(0.01, 10, 50)[:, None]  # rows of very different scales
    u[7] = 0.0
    deq = quantize_dequantize(u, "int8", granularity)
    amax = u.abs().amax(1, keepdim=True) if granularity == "row" else u.abs().max()
    scale = amax / 127
    err = (deq - u).abs()
    assert torch.all(err <= scale / 2 * (1 + 1e-5) + 1e-12)
    assert torch.all(deq[7] == 0)
    levels = deq / torch.where(scale > 0, scale, torch.ones_like(scale))  # integers in [-127, 127]
    assert torch.allclose(levels, levels.round(), atol=1e-3) and levels.abs().max() <= 127 + 1e-3
    if granularity == "row":  # per-row scales keep small rows accurate; per-tensor does not
        assert float(err[:5].max()) < float((quantize_dequantize(u, "int8", "tensor") - u)[:5].abs().max())
    with pytest.raises(ValueError):
        quantize_dequantize(u, "int4")


def test_quantization_report_fp32_is_the_forgetting_report(small) -> None:
    data, graph, req, residual = small
    before, after = _emb(data.n_users, data.n_items, 8, 2), _emb(data.n_users, data.n_items, 8, 3)
    rep = quantization_report(after, residual, req, data, model_before=before, graph_before=graph,
                              modes=("fp32", "fp16", "int8"), n_samples=200, seed=4)
    fr = forgetting_report(before, graph, after, residual, req, data, n_samples=200, seed=4)
    fp32 = rep["modes"]["fp32"]
    assert fp32["mi_ng"] == pytest.approx(fr["mi_ng"]) and fp32["mi_bf"] == pytest.approx(fr["mi_bf"])
    assert fp32["request_score_mean"] == pytest.approx(fr["score"]["request"]["after"]["mean"])
    assert fp32["rank_mean_percentile"] == pytest.approx(fr["rank"]["after"]["mean_percentile"])
    assert fp32["max_abs_score_error"] == 0.0
    assert rep["modes"]["fp16"]["max_rel_score_error"] < 1e-2
    assert 0 < rep["modes"]["int8"]["max_rel_score_error"] < 0.05
    assert set(rep["delta"]) == {"fp16", "int8"}
    assert abs(rep["delta"]["fp16"]["mi_ng"]) < 1e-2 and abs(rep["delta"]["int8"]["rank_mean_percentile"]) < 0.05
    # without the model before: graph_before defaults to graph + request, MI-BF is not reported
    alone = quantization_report(after, residual, req, data, modes=("fp32",), n_samples=200, seed=4)
    assert "mi_bf" not in alone["modes"]["fp32"]
    assert alone["modes"]["fp32"]["mi_ng"] == pytest.approx(fr["mi_ng"])


# ------------------------------------------------------------------------------ relearning
def _lightgcn(data, seed: int = 0):
    m = build_model(data.n_users, data.n_items, ModelConfig(name="lightgcn", embedding_size=8, n_layers=2))
    m.reset_parameters(torch.Generator().manual_seed(seed))
    return m


def test_relearning_curve_shape_and_step_zero(small) -> None:
    data, graph, req, residual = small
    model = _lightgcn(data)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cur = relearning_curve(model, residual, req, steps=5, lr=0.05, batch_size=64, seed=0)
    assert cur["mode"] == "model"
    assert cur["step"] == [0, 1, 2, 3, 4, 5]
    for k in ("score_mean", "sigmoid_mean", "rank_mean_percentile", "retained_score_mean", "loss"):
        assert len(cur[k]) == 6
    assert np.isnan(cur["loss"][0]) and all(np.isfinite(cur["loss"][1:]))
    # step 0 is the model's own measures
    u, i = final_embeddings(model, residual)
    s = pair_scores((u, i), None, req)
    r, c = item_ranks(u, i, req, residual.user_items())
    assert cur["score_mean"][0] == pytest.approx(s.mean())
    assert cur["rank_mean_percentile"][0] == pytest.approx(np.mean((r - 1) / (c - 1)))
    fr = forgetting_report(model, graph, model, residual, req, data, n_samples=10)
    assert cur["rank_mean_percentile"][0] == pytest.approx(fr["rank"]["after"]["mean_percentile"])
    # the model is untouched; fine-tuning fits its positives
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert cur["retained_score_mean"][-1] > cur["retained_score_mean"][0]
    touched = np.isin(residual.edges[:, 0], req[:, 0])
    assert cur["n_retained"] == int(touched.sum()) and cur["n_request"] == len(req)
    assert cur["delta"]["score_mean"] == pytest.approx(cur["score_mean"][-1] - cur["score_mean"][0])
    # reproducible
    again = relearning_curve(model, residual, req, steps=5, lr=0.05, batch_size=64, seed=0)
    assert again["score_mean"] == pytest.approx(cur["score_mean"])


def test_relearning_on_embeddings_and_eval_every(small) -> None:
    data, _, req, residual = small
    emb = _emb(data.n_users, data.n_items, 8, 5)
    cur = relearning_curve(emb, residual, req, steps=7, eval_every=3, lr=0.05, batch_size=32, reg=1e-4)
    assert cur["mode"] == "embeddings" and cur["step"] == [0, 3, 6, 7]
    assert cur["score_mean"][0] == pytest.approx(pair_scores(emb, None, req).mean())
    assert cur["retained_score_mean"][-1] > cur["retained_score_mean"][0]
    # a backbone can be forced onto its served embeddings
    forced = relearning_curve(_lightgcn(data), residual, req, steps=2, mode="embeddings")
    assert forced["mode"] == "embeddings" and len(forced["step"]) == 3
    zero = relearning_curve(emb, residual, req, steps=0)
    assert zero["step"] == [0] and zero["delta"]["score_mean"] == 0.0


def test_relearning_validation(small) -> None:
    data, _, req, residual = small
    emb = _emb(data.n_users, data.n_items)
    with pytest.raises(ValueError, match="no retained edge"):
        lone = Graph(np.zeros((0, 2), np.int64), data.n_users, data.n_items)
        relearning_curve(emb, lone, req, steps=1)
    with pytest.raises(TypeError):
        relearning_curve(emb, residual, req, steps=1, mode="model")
    with pytest.raises(ValueError):
        relearning_curve(emb, residual, req, steps=1, lr=0.0)
