"""The Unlearner interface, its registry, and the exact and cheap reference methods."""

import numpy as np
import pytest
import torch

from unlearnrec import api
from unlearnrec.config import RunConfig
from unlearnrec.evaluation.forgetting import pair_scores
from unlearnrec.unlearning.base import (
    Context,
    Unlearner,
    UnlearnerError,
    build_unlearner,
    list_unlearners,
)
from unlearnrec.unlearning.methods.references import EdgeDropConfig
from unlearnrec.unlearning.requests import DeletionRequest


def _table(model):
    return model.embedding.detach().clone()


def test_registry_lists_and_refuses_unknown_methods():
    names = {m["name"] for m in list_unlearners()}
    assert {"retrain", "retrain-warm", "edgedrop", "finetune", "neggrad+", "unlearnrec",
            "unlearnrec-calibrated"} <= names
    with pytest.raises(UnlearnerError, match="unknown unlearning method 'nope'"):
        build_unlearner("nope")
    with pytest.raises(Exception, match="epochs"):
        build_unlearner("finetune", {"epochs": 0})
    # the two UnlearnRec variants start from their own presets and refuse each other's
    assert build_unlearner("unlearnrec").config.variant == "paper"
    assert build_unlearner("unlearnrec-calibrated").config.variant == "calibrated"
    with pytest.raises(ValueError, match="variant"):
        build_unlearner("unlearnrec", {"variant": "calibrated"})


def test_unlearn_needs_prepare_and_valid_requests(ctx, request_edges):
    u = build_unlearner("edgedrop")
    with pytest.raises(UnlearnerError, match="prepare"):
        u.unlearn(request_edges)
    u.prepare(ctx)
    before = _table(ctx.model)
    first_non_item = np.setdiff1d(np.arange(ctx.data.n_items), ctx.graph.edges[ctx.graph.edges[:, 0] == 0, 1])[0]
    non_edge = np.array([[0, int(first_non_item)]])
    with pytest.raises(ValueError, match="not"):
        u.unlearn(np.concatenate([request_edges[:3], non_edge]))
    with pytest.raises(ValueError, match="empty"):
        u.unlearn(np.zeros((0, 2), np.int64))
    assert torch.equal(before, _table(ctx.model)) and u.ctx.graph is ctx.graph


def test_unsupported_backbone_is_a_clear_error(ctx):
    class OnlyMF(Unlearner):
        name = "only-mf"
        Config = EdgeDropConfig
        backbones = frozenset({"mf"})
        unsupported_reason = "for the test"

        def _prepare(self, ctx):
            pass

        def _unlearn(self, request, residual):
            raise AssertionError

    with pytest.raises(UnlearnerError, match="does not apply to lightgcn.*for the test"):
        OnlyMF().prepare(ctx)


@pytest.mark.parametrize("method", ["edgedrop", "finetune", "neggrad+", "retrain", "retrain-warm"])
def test_methods_serve_on_the_residual_graph_and_leave_the_original_alone(ctx, request_edges, method):
    before = _table(ctx.model)
    u = build_unlearner(method).prepare(ctx)
    out = u.unlearn(request_edges)
    assert not out.graph.contains(request_edges).any()
    assert out.graph.n_edges == ctx.graph.n_edges - len(request_edges)
    assert torch.equal(before, _table(ctx.model))
    assert out.timings["request_seconds"] >= 0 and "prepare_seconds" in out.timings
    assert out.to_dict()["n_request"] == len(request_edges)
    changed = not torch.equal(before, _table(out.model))
    assert changed == (method != "edgedrop")
    util = api.evaluate_model(out.model, out.graph, ctx.data, ks=(20,))
    assert util["recall@20"] > 0.1  # far above random on the planted communities


def test_neggrad_lowers_the_request_scores_more_than_finetune(ctx, request_edges):
    orig = pair_scores(ctx.model, ctx.graph, request_edges).mean()
    ng = build_unlearner("neggrad+", {"epochs": 2, "retain_weight": 0.8}).prepare(ctx).unlearn(request_edges)
    ft = build_unlearner("finetune", {"epochs": 2}).prepare(ctx).unlearn(request_edges)
    s_ng = pair_scores(ng.model, ng.graph, request_edges).mean()
    s_ft = pair_scores(ft.model, ft.graph, request_edges).mean()
    assert s_ng < orig and s_ng < s_ft
    assert [h["epoch"] for h in ng.log["history"]] == [1, 2]


def test_apply_continues_from_an_outcome(ctx, request_edges):
    u = build_unlearner("finetune", {"epochs": 1}).prepare(ctx)
    first, second = request_edges[: len(request_edges) // 2], request_edges[len(request_edges) // 2 :]
    out1 = u.unlearn(first)
    u.apply(out1)
    assert u.ctx.graph is out1.graph and u.ctx.model is out1.model
    with pytest.raises(ValueError):  # already forgotten: no longer an edge of the current graph
        u.unlearn(first)
    out2 = u.unlearn(second)
    assert not out2.graph.contains(request_edges).any()
    with pytest.raises(UnlearnerError, match="cannot be applied"):
        build_unlearner("edgedrop").prepare(ctx).apply(out1)


def test_retrain_with_another_seed_differs(ctx, request_edges):
    a = build_unlearner("retrain", {"epochs": 3}).prepare(ctx).unlearn(request_edges)
    b = build_unlearner("retrain", {"epochs": 3, "seed": 7}).prepare(ctx).unlearn(request_edges)
    assert not torch.equal(_table(a.model), _table(b.model))
    assert a.log["epochs_run"] == 3


@pytest.mark.parametrize("backbone", ["sgl", "simgcl", "mf"])
def test_reference_methods_work_for_every_backbone(backbone):
    cfg = RunConfig().with_overrides({"model.name": backbone, "train.epochs": 2, "model.embedding_size": 8})
    res = api.train(cfg, progress=False)  # a trained SGL holds augmented views that deepcopy refuses
    c = Context(res["model_object"], res["graph_object"], res["data_object"], cfg, progress=False)
    req = DeletionRequest.random_edges(c.graph, 0.01, seed=0).edges
    for method in ("finetune", "neggrad+", "retrain-warm"):
        out = build_unlearner(method, {"epochs": 1}).prepare(c).unlearn(req)
        assert not out.graph.contains(req).any()
        assert not torch.equal(out.model.embedding, c.model.embedding)


def test_neggrad_forget_negatives_avoid_the_users_retained_positives(ctx, request_edges, monkeypatch):
    """The ascent on a request triple (u, i, j) raises ŷ(u, j): j must not be one of u's retained positives, so
    request batches draw negatives among the items u has no training edge with at all."""
    from unlearnrec.data.interactions import pair_keys

    seen = []
    cls = type(ctx.model)
    original_loss = cls.loss

    def recording_loss(self, batch, graph, e0=None):
        seen.append((batch.users.numpy().copy(), batch.pos.numpy().copy(), batch.neg.numpy().copy()))
        return original_loss(self, batch, graph, e0)

    monkeypatch.setattr(cls, "loss", recording_loss)
    build_unlearner("neggrad+", {"epochs": 2, "forget_batch_size": 64}).prepare(ctx).unlearn(request_edges)
    n_items = ctx.data.n_items
    req_keys = set(pair_keys(request_edges, n_items).tolist())
    train_keys = set(pair_keys(ctx.graph.edges, n_items).tolist())
    forget = [(u, p, n) for u, p, n in seen if all(k in req_keys for k in (u * n_items + p).tolist())]
    assert len(forget) >= 2 and len(forget) < len(seen)
    negs = np.concatenate([u * n_items + n for u, _, n in forget])
    assert not any(k in train_keys for k in negs.tolist())  # neither the request nor the retained positives


def test_neggrad_takes_at_least_min_steps_per_epoch(ctx, request_edges):
    # a graph smaller than a batch is one step per epoch; min_steps gives such a graph a real budget
    out = build_unlearner("neggrad+", {"batch_size": 100_000, "min_steps": 4}).prepare(ctx).unlearn(request_edges)
    assert [h["steps"] for h in out.log["history"]] == [4]
