"""SSD: per-triple importances (exact, batch-size independent), the dampening rule, its selection against
recomputed importances, every backbone, request scores against EdgeDrop, and the prepared-state cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import small_synthetic_data
from unlearnrec.config import RunConfig
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.models.base import Batch
from unlearnrec.training import Trainer
from unlearnrec.unlearning.base import Context, build_unlearner, copy_model
from unlearnrec.unlearning.methods.ssd import SSD, Propagation, dampen, fisher_diagonal, triple_fisher


@pytest.fixture(scope="module")
def data():
    return small_synthetic_data()


_TRAINED: dict[str, Context] = {}


def _trained(data, name: str, epochs: int = 15) -> Context:
    """A backbone briefly trained on ``data`` (cached per backbone for this module)."""
    if name not in _TRAINED:
        torch.manual_seed(0)
        cfg = RunConfig().with_overrides({
            "model.name": name, "model.embedding_size": 16, "model.n_layers": 2, "model.reg": 1e-3,
            "train.epochs": epochs, "train.batch_size": 256, "train.learning_rate": 0.02, "train.eval_every": 5,
            "train.patience": 5, "train.ks": [20]})
        model = build_model(data.n_users, data.n_items, cfg.model)
        trainer = Trainer(model, data, cfg.train, progress=False)
        trainer.fit()
        trainer.restore_best()
        _TRAINED[name] = Context(model, trainer.graph, data, cfg, progress=False)
    return _TRAINED[name]


def _request(ctx: Context, fraction: float = 0.05, seed: int = 0) -> np.ndarray:
    g = ctx.graph
    rng = np.random.default_rng(seed)
    return g.edges[np.sort(rng.choice(g.n_edges, int(fraction * g.n_edges), replace=False))]


@pytest.mark.parametrize("backbone", ["mf", "lightgcn", "sgl", "simgcl"])
def test_importance_is_the_sum_of_per_triple_squared_gradients(data, backbone: str) -> None:
    """Against autograd on one-triple batches of the backbone's own loss (for SGL/SimGCL the InfoNCE term of one
    triple is zero), through the propagation, with the L2 term and a positive drawn as its own negative; with the
    whole propagation matrix in memory and built in blocks."""
    cfg = RunConfig().with_overrides({"model.name": backbone, "model.embedding_size": 8, "model.n_layers": 2,
                                      "model.reg": 0.1})
    torch.manual_seed(1)
    model = build_model(data.n_users, data.n_items, cfg.model)
    graph = Graph(data.train, data.n_users, data.n_items)
    rng = np.random.default_rng(4)
    pick = graph.edges[rng.choice(graph.n_edges, 60, replace=False)]
    triples = np.concatenate([pick, rng.integers(0, data.n_items, (60, 1))], axis=1)
    triples[5, 2] = triples[5, 1]
    want = torch.zeros_like(model.embedding)
    model.train()
    for t in triples:
        loss, _ = model.loss(Batch(*(torch.tensor([x]) for x in t)), graph)
        (g,) = torch.autograd.grad(loss, model.embedding)
        want += g.pow(2)
    for prop in (None, Propagation(model, graph, dense=True), Propagation(model, graph, dense=False, block=37)):
        got = triple_fisher(model, graph, triples, chunk=16, propagation=prop)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("backbone", ["lightgcn", "mf"])
def test_importances_do_not_depend_on_the_batch_size(data, backbone: str) -> None:
    """The batch-mean estimate (the authors' code, and this library's before issue 15) changes with the batch
    boundaries, a last partial batch weighing more than its share; the per-triple mean does not, nor does what SSD
    dampens."""
    ctx = _trained(data, backbone)
    req = _request(ctx)
    imp = [fisher_diagonal(ctx.model, ctx.graph, req, ctx.graph.edges, batch_size=b, seed=3)["embedding"]
           for b in (7, 64, 50_000)]
    for other in imp[1:]:
        assert torch.allclose(other, imp[0], rtol=1e-5, atol=1e-12)
    full = [fisher_diagonal(ctx.model, ctx.graph, ctx.graph.edges, ctx.graph.edges, batch_size=b, seed=3)["embedding"]
            for b in (100, 1000)]
    assert torch.allclose(full[0], full[1], rtol=1e-5, atol=1e-12)
    a, b = (SSD({"batch_size": bs, "selection_weight": 5.0}).prepare(ctx).unlearn(req) for bs in (90, 4096))
    assert a.log["selected_entries"] == b.log["selected_entries"] > 0
    assert torch.allclose(a.model.embedding, b.model.embedding, rtol=1e-5, atol=1e-7)


def test_dampen_rule() -> None:
    p = {"w": torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])}
    i_d = {"w": torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0]])}
    i_f = {"w": torch.tensor([[5.0, 20.0, 0.0], [40.0, 10.0, 1.0]])}
    log = dampen(p, i_d, i_f, selection_weight=8.0, dampening=2.0)
    # selected: 20 > 8·1 (β = 2·1/20), 40 > 8·2 (β = 2·2/40), 10 > 8·1 (β = 2·1/10), 1 > 8·0 (β = 0);
    # not: 5 ≤ 8·1, 0 ≤ 0
    want = torch.tensor([[1.0, 2.0 * 0.1, 3.0], [4.0 * 0.1, 5.0 * 0.2, 0.0]])
    assert torch.allclose(p["w"], want)
    assert log["selected_entries"] == 4 and log["total_entries"] == 6 and log["rows_touched"] == 2
    # β is capped at 1: a large λ selects but does not grow an entry
    q = {"w": torch.tensor([[1.0]])}
    dampen(q, {"w": torch.tensor([[1.0]])}, {"w": torch.tensor([[20.0]])}, 10.0, 100.0)
    assert q["w"].item() == 1.0


@pytest.mark.parametrize("backbone", ["lightgcn", "mf"])
def test_only_selected_entries_shrink_by_beta(data, backbone: str) -> None:
    ctx = _trained(data, backbone)
    req = _request(ctx)
    cfg = {"selection_weight": 10.0, "dampening": 1.0, "batch_size": 256, "seed": 7}
    before = ctx.model.embedding.detach().clone()
    out = SSD(cfg).prepare(ctx).unlearn(req)
    assert torch.equal(ctx.model.embedding, before)  # the trained model is untouched
    # recompute both importances the way SSD does (same seeds: D with `seed`, the request with `seed + 1`)
    i_d = fisher_diagonal(copy_model(ctx.model), ctx.graph, ctx.graph.edges, ctx.graph.edges, batch_size=256, seed=7)
    i_f = fisher_diagonal(copy_model(ctx.model), ctx.graph, req, ctx.graph.edges, batch_size=256, seed=8)
    i_d, i_f = i_d["embedding"], i_f["embedding"]
    sel = i_f > 10.0 * i_d
    beta = torch.clamp(i_d / i_f, max=1.0)
    new = out.model.embedding.detach()
    assert 0 < int(sel.sum()) < sel.numel() // 2
    assert torch.equal(new[~sel], before[~sel])
    assert torch.allclose(new[sel], before[sel] * beta[sel], rtol=1e-5, atol=1e-8)
    assert out.log["selected_entries"] == int(sel.sum()) and out.log["mean_beta"] < 1.0
    # most selected entries are in the rows of the request's users and items (the others: rows of the forget
    # batches' negatives and, for LightGCN, of nodes the request's gradient reaches through propagation)
    own = torch.zeros(len(sel), dtype=torch.bool)
    own[req[:, 0]] = True
    own[ctx.model.n_users + req[:, 1]] = True
    assert sel[own].sum() > 0.5 * sel.sum()
    json.dumps(out.to_dict())


def test_huge_selection_weight_changes_nothing(data) -> None:
    ctx = _trained(data, "lightgcn")
    out = SSD({"selection_weight": 1e12}).prepare(ctx).unlearn(_request(ctx))
    assert torch.equal(out.model.embedding, ctx.model.embedding)
    assert out.log["selected_entries"] == 0 and out.log["mean_beta"] is None
    assert not out.graph.contains(_request(ctx)).any()


@pytest.mark.parametrize("backbone", ["mf", "lightgcn", "sgl", "simgcl"])
def test_request_scores_drop_below_edgedrops_on_every_backbone(data, backbone: str) -> None:
    """Fails for a no-op: SSD must change the table and lower the request's scores below those of the unchanged
    model served on the residual graph (EdgeDrop)."""
    ctx = _trained(data, backbone, epochs=5 if backbone in ("sgl", "simgcl") else 15)
    req = _request(ctx)
    u = build_unlearner("ssd", {"batch_size": 512}).prepare(ctx)
    out = u.unlearn(req)

    def mean(m, graph) -> float:
        return float(m.score(graph, req[:, 0], req[:, 1]).mean())

    # dampening the request's users' and items' coordinates lowers their scores beyond dropping the edges
    assert not torch.equal(out.model.embedding, ctx.model.embedding)
    assert mean(out.model, out.graph) < mean(ctx.model, out.graph)
    assert out.log["selected_entries"] > 0
    # deterministic, the stochastic backbones included (seeded views / noise)
    again = build_unlearner("ssd", {"batch_size": 512}).prepare(ctx).unlearn(req)
    assert torch.equal(again.model.embedding, out.model.embedding)
    timings = {"importance_forget_seconds", "importance_data_seconds", "request_seconds", "prepare_seconds"}
    assert timings <= set(out.timings)


def test_sequential_requests_recompute_the_data_importance(data) -> None:
    ctx = _trained(data, "mf")
    u = SSD({"batch_size": 512}).prepare(ctx)
    req = _request(ctx, 0.02)
    first = u.unlearn(req[: len(req) // 2])
    assert first.timings["importance_data_seconds"] < 1e-3  # prepared
    u.apply(first)
    second = u.unlearn(req[len(req) // 2:])
    assert second.timings["importance_data_seconds"] > 0 and second.graph.n_edges == ctx.graph.n_edges - len(req)


def test_prepared_importances_are_saved_and_reloaded(data, tmp_path) -> None:
    ctx = _trained(data, "lightgcn")
    req = _request(ctx)
    u = SSD({"batch_size": 512}).prepare(ctx)
    assert u.save_prepared(tmp_path)
    assert [f.name for f in tmp_path.iterdir()] == ["importance_data.safetensors"]  # no pickle on disk
    v = SSD({"batch_size": 512, "selection_weight": 3.0})
    assert v.load_prepared(ctx, tmp_path)
    assert torch.equal(v._importance_data["embedding"], u._importance_data["embedding"])
    out = v.unlearn(req)
    assert out.timings["importance_data_seconds"] < 1e-3
    # alpha and lambda do not change the prepared state: one prepared SSD serves a tuning grid
    assert SSD.prepare_fields() == {"data_triples", "seed"}
    w = u.with_config({"batch_size": 512, "selection_weight": 3.0})
    assert torch.equal(w.unlearn(req).model.embedding, out.model.embedding)
    assert out.log["selection_weight"] == 3.0


def test_sampled_data_importance_estimates_the_same_mean(data) -> None:
    ctx = _trained(data, "lightgcn")
    edges = ctx.graph.edges
    exact = fisher_diagonal(ctx.model, ctx.graph, edges, edges, seed=2)["embedding"]
    same = fisher_diagonal(ctx.model, ctx.graph, edges, edges, seed=2, sample=len(edges))["embedding"]
    assert torch.equal(exact, same)  # a sample of everything is everything
    est = fisher_diagonal(ctx.model, ctx.graph, edges, edges, seed=2, sample=len(edges) // 2)["embedding"]
    assert 0.7 < float(est.sum() / exact.sum()) < 1.3
    u = SSD({"data_triples": len(edges) // 2}).prepare(ctx)
    assert u.prepared_summary()["data_triples"] == len(edges) // 2
