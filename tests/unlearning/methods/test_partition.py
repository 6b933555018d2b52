"""Partition-based exact unlearning: balanced partitions, ensembles, SISA and RecEraser (small synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tests.conftest import small_synthetic_data
from unlearnrec import api
from unlearnrec.config import RunConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.evaluation.forgetting import forgetting_report
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import Trainer, masks_for
from unlearnrec.unlearning.base import (
    Context,
    UnlearnerError,
    build_unlearner,
    list_unlearners,
)
from unlearnrec.unlearning.methods.receraser import RecEraser
from unlearnrec.unlearning.methods.retrain import train_on
from unlearnrec.unlearning.methods.sisa import Sisa, shard_validation
from unlearnrec.unlearning.partition import (
    Ensemble,
    balanced_assign,
    balanced_kmeans,
    partition_graph,
    random_partition,
    shard_graphs,
    within_shard_distance,
)
from unlearnrec.unlearning.wmf import wmf_als

SMALL = {
    "model.embedding_size": 16, "model.n_layers": 2, "model.reg": 1e-3, "train.epochs": 15,
    "train.batch_size": 256, "train.learning_rate": 0.02, "train.eval_every": 5, "train.patience": 5,
    "train.ks": [20],
}


@pytest.fixture(scope="module")
def ctx():
    """A LightGCN trained briefly on a 120 x 80 planted-community dataset, as an unlearning context."""
    data = small_synthetic_data()
    cfg = RunConfig().with_overrides(SMALL)
    graph = Graph(data.train, data.n_users, data.n_items)
    model, _ = train_on(Context(None, graph, data, cfg, False), graph)
    return Context(model, graph, data, cfg, False)


@pytest.fixture(scope="module")
def sisa(ctx):
    return Sisa({"n_shards": 4, "seed": 1}).prepare(ctx)


@pytest.fixture(scope="module")
def receraser(ctx):
    return RecEraser({"n_shards": 4, "agg_epochs": 5}).prepare(ctx)


def _naive_greedy(dist: np.ndarray, capacity: int) -> np.ndarray:
    """The paper's loop over the sorted (sample, anchor) pairs, for reference."""
    n, k = dist.shape
    labels, counts = np.full(n, -1), np.zeros(k, int)
    for flat in np.argsort(dist.ravel(), kind="stable"):
        s, a = divmod(int(flat), k)
        if labels[s] < 0 and counts[a] < capacity:
            labels[s], counts[a] = a, counts[a] + 1
    return labels


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------------------ partitions
def test_balanced_assign_equals_the_papers_greedy():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n, k = int(rng.integers(1, 120)), int(rng.integers(1, 9))
        cap = int(np.ceil(n / k * rng.choice([1.0, 1.2, 2.0])))
        dist = rng.integers(0, 4, size=(n, k)).astype(float) if rng.random() < 0.3 else rng.random((n, k))
        labels, rounds = balanced_assign(dist, cap)
        np.testing.assert_array_equal(labels, _naive_greedy(dist, cap))
        assert np.bincount(labels, minlength=k).max() <= cap and rounds >= 1
    with pytest.raises(ValueError, match="cannot hold"):
        balanced_assign(np.zeros((10, 2)), 4)


@pytest.mark.parametrize("strategy", ["user", "item", "interaction", "random-user", "random-interaction"])
@pytest.mark.parametrize("slack", [1.0, 1.2])
def test_partitions_are_balanced_and_cover_every_edge_once(ctx, strategy, slack):
    g = ctx.graph
    u, i = ctx.model.embeddings(g)
    part = partition_graph(g, strategy, 4, user_emb=u, item_emb=i, seed=2, slack=slack)
    labels = part.edge_labels
    assert labels.shape == (g.n_edges,) and labels.min() >= 0 and labels.max() < 4
    shards = shard_graphs(g, labels, 4)
    union = np.sort(np.concatenate([s.keys for s in shards]))
    np.testing.assert_array_equal(union, g.keys)  # every edge in exactly one shard
    by_strategy = {"user": part.user_labels, "random-user": part.user_labels, "item": part.item_labels}
    sample_labels = by_strategy.get(strategy, labels)
    sizes = np.bincount(sample_labels, minlength=4)
    assert sizes.sum() == {"user": g.n_users, "random-user": g.n_users, "item": g.n_items}.get(strategy, g.n_edges)
    if strategy.startswith("random"):
        assert sizes.max() - sizes.min() <= 1
    else:
        assert sizes.max() <= part.info["capacity"] == int(np.ceil(slack * sizes.sum() / 4 - 1e-9))


def test_balanced_kmeans_beats_a_random_partition_on_within_shard_distance(ctx):
    u, i = (x.numpy() for x in ctx.model.embeddings(ctx.graph))
    for feats, _combine in ((u, "sum"), (i, "sum")):
        km = balanced_kmeans(feats, 4, iterations=10, slack=1.0, seed=0)
        rnd = random_partition(len(feats), 4, seed=0)
        assert within_shard_distance(feats, km.labels) < 0.9 * within_shard_distance(feats, rnd)
    e = ctx.graph.edges
    blocks = [(u, e[:, 0]), (i, e[:, 1])]  # InBP: no (n_edges, d) copies
    for combine in ("product", "sum"):
        km = balanced_kmeans(blocks, 4, iterations=10, slack=1.2, combine=combine, seed=0)
        dense = balanced_kmeans([u[e[:, 0]], i[e[:, 1]]], 4, iterations=10, slack=1.2, combine=combine, seed=0)
        assert (km.labels == dense.labels).mean() > 0.95  # same algorithm; only float summation order differs
        rnd = random_partition(len(e), 4, seed=0)
        assert within_shard_distance(blocks, km.labels, combine) < within_shard_distance(blocks, rnd, combine)
        assert km.objective[-1] <= km.objective[0]


def test_bad_partition_input_gives_clear_errors(ctx):
    g = ctx.graph
    u, i = ctx.model.embeddings(g)
    with pytest.raises(ValueError, match="unknown partition strategy 'kmeans'"):
        partition_graph(g, "kmeans", 4)
    with pytest.raises(ValueError, match="n_shards must be >= 1"):
        partition_graph(g, "random-user", 0)
    with pytest.raises(ValueError, match="exceeds the number of users"):
        partition_graph(g, "user", g.n_users + 1, user_emb=u, item_emb=i)
    with pytest.raises(ValueError, match="needs pre-trained user embeddings"):
        partition_graph(g, "interaction", 4)
    with pytest.raises(ValidationError, match="partition"):
        RecEraser({"partition": "kmeans"})
    with pytest.raises(ValidationError, match="n_shards"):
        Sisa({"n_shards": 0})
    with pytest.raises(UnlearnerError, match="exceeds the number of users"):
        Sisa({"n_shards": g.n_users + 1}).prepare(ctx)
    with pytest.raises(UnlearnerError, match="exceeds the number of items"):
        RecEraser({"n_shards": g.n_items + 1, "partition": "item"}).prepare(ctx)


# ------------------------------------------------------------------------------ shard validation
def test_shard_validation_masks_the_users_training_items_held_by_other_shards():
    """A user with training items 0 (this shard) and 1 (another shard) and validation item 2; the model
    ranks 1 > 2 > 0 > 3. Masking only the shard's edges ranks item 1 first and counts a miss at K = 1."""
    data = Interactions("tiny", 1, 4, np.array([[0, 0], [0, 1]]), np.array([[0, 2]]), np.array([[0, 3]]),
                        np.array(["u"]), np.array(list("abcd")))
    cfg = RunConfig().with_overrides({"model.name": "mf", "model.embedding_size": 2, "train.ks": [1],
                                      "train.monitor": "recall@1", "train.epochs": 1, "train.eval_every": 1,
                                      "train.learning_rate": 1e-12})
    shard, full = Graph(data.train[:1], 1, 4), Graph(data.train, 1, 4)

    def fixed():
        m = build_model(1, 4, cfg.model)
        with torch.no_grad():
            m.embedding.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0], [2.0, 0.0], [0.0, 0.0]]))
        return m

    assert Trainer(fixed(), data, cfg.train, graph=shard).validate()["recall@1"] == 0.0  # the old mask
    assert Trainer(fixed(), data, cfg.train, graph=shard, mask_edges=full.edges).validate()["recall@1"] == 1.0
    c = Context(None, shard, data, cfg, False)
    _, res = train_on(c, shard, fixed(), mask_graph=full)
    assert res.best_valid["recall@1"] == 1.0


def _shard_recalls(ens, data, full: Graph) -> list[tuple[float, float]]:
    """Per shard: validation recall@20 of its sub-model with the full graph's and with its own edges masked."""
    out = []
    for m, g in zip(ens.models, ens.graphs, strict=True):
        v = shard_validation(data, g)
        u, i = m.embeddings(g)
        rec = [float(evaluate_ranking(u, i, mk["valid_truth"], mk["valid_exclude"], ks=(20,)).metrics["recall@20"])
               for mk in (masks_for(v, full.edges), masks_for(v, g.edges))]
        out.append((rec[0], rec[1]))
    return out


def test_sharded_training_selects_on_the_full_training_mask(ctx):
    """Every shard's recorded validation score (early stopping, best epoch) is the one with the user's full
    training items masked, before and after a deletion; with a shard's own edges only it would be lower."""
    u = RecEraser({"partition": "random", "n_shards": 4, "epochs": 5, "eval_every": 5, "agg_epochs": 0}).prepare(ctx)
    recs = u.prepare_log["shards"]
    for rec, (with_full, with_shard) in zip(recs, _shard_recalls(u.ensemble, ctx.data, ctx.graph), strict=True):
        assert rec["best_valid"] == pytest.approx(with_full)
        assert with_full > with_shard  # the old mask: other shards' training items ranked, counted as misses
    request = ctx.graph.edges[u.state.labels == 2][:6]
    out = u.unlearn(request)
    (rec,) = out.log["shards"]
    with_full, with_shard = _shard_recalls(out.model, ctx.data, out.graph)[2]
    assert rec["shard"] == 2 and rec["best_valid"] == pytest.approx(with_full) and with_full > with_shard


def _same_weights(a, b) -> bool:
    return all(torch.allclose(x, y, atol=1e-6) for x, y in zip(_weights(a), _weights(b), strict=True))


# ------------------------------------------------------------------------------ SISA
def test_sisa_is_registered():
    names = {m["name"] for m in list_unlearners()}
    assert {"sisa", "receraser"} <= names
    assert isinstance(build_unlearner("sisa", {"n_shards": 3}), Sisa)


def test_sisa_scores_are_the_average_over_the_sub_models_holding_the_user(ctx, sisa):
    ens = sisa.ensemble
    assert isinstance(ens, Ensemble) and ens.n_shards == 4 and ens.aggregator is None
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, ctx.data.n_users, 300), rng.integers(0, ctx.data.n_items, 300)
    got = ens.score(ctx.graph, users, items)
    per_shard = torch.stack(
        [m.score(g, users, items) for m, g in zip(ens.models, ens.graphs, strict=True)], 1
    )  # (300, S)
    hu, _ = ens.holders()
    w = torch.as_tensor(hu[users], dtype=per_shard.dtype)
    expected = (w * per_shard).sum(1) / w.sum(1)
    torch.testing.assert_close(got, expected)
    assert (hu.sum(1) <= 1).all()  # a user partition: each user in (at most) its own shard
    home = sisa.partition.user_labels
    torch.testing.assert_close(got, per_shard[torch.arange(300), torch.as_tensor(home[users])])


def test_sisa_request_in_one_shard_retrains_exactly_that_shard(ctx, sisa):
    st = sisa.state
    home = sisa.partition.user_labels
    shard = int(home[ctx.graph.edges[0, 0]])
    e = ctx.graph.edges
    mine = e[home[e[:, 0]] == shard]
    request = mine[np.random.default_rng(0).choice(len(mine), 5, replace=False)]
    before = [_weights(m) for m in st.models]
    out = sisa.unlearn(request)
    assert out.log["shards_touched"] == {"count": 1, "ids": [shard]}
    assert set(out.log["shard_seconds"]) == {shard}
    assert out.timings["request_seconds"] >= out.timings["train_seconds"] > 0
    assert out.timings["prepare_seconds"] == pytest.approx(sisa.prepare_seconds)
    # the residual graph excludes the request, and so does every shard
    assert not out.graph.contains(request).any()
    assert out.graph.n_edges == ctx.graph.n_edges - len(request)
    np.testing.assert_array_equal(out.model.keys, out.graph.keys)
    new = out.state
    for k in range(4):
        assert not new.graphs[k].contains(request).any()
        if k == shard:
            assert new.models[k] is not st.models[k]
        else:
            assert new.models[k] is st.models[k] and new.graphs[k] is st.graphs[k]
            for a, b in zip(before[k], _weights(new.models[k]), strict=True):
                assert torch.equal(a, b)
    # unlearn() did not change the unlearner; the outcome serves through the common tools
    assert sisa.state is st
    res = api.evaluate_model(out.model, out.graph, ctx.data, ks=(20,))
    assert 0.0 <= res["recall@20"] <= 1.0
    rep = forgetting_report(sisa.ensemble, ctx.graph, out.model, out.graph, request, ctx.data, n_samples=200)
    assert np.isfinite(rep["mi_bf"]) and "rank" in rep
    with pytest.raises(ValueError, match="shard graphs"):
        out.model.embeddings(ctx.graph)  # the ensemble serves on its own residual graph only


def test_sisa_unlearning_is_not_a_no_op(ctx, sisa):
    """The served model changes on the request, and the touched shard is exactly a fresh retrain on its residual
    edges (a method that did nothing would serve the original sub-model, trained with the request)."""
    st = sisa.state
    user = int(ctx.graph.edges[7, 0])
    request = ctx.graph.edges[ctx.graph.edges[:, 0] == user]
    out = sisa.unlearn(request)
    (k,) = out.log["shards_touched"]["ids"]
    before = st.ensemble.score(ctx.graph, request[:, 0], request[:, 1])
    after = out.model.score(out.graph, request[:, 0], request[:, 1])
    assert not torch.allclose(before, after, atol=1e-4)
    fresh, _, _ = sisa._train_shard(sisa.ctx, out.state.graphs[k], k, out.graph)
    assert _same_weights(out.state.models[k], fresh)
    assert not _same_weights(st.models[k], fresh)


def test_sisa_slicing_retrains_from_the_checkpoint_before_the_deleted_slice(ctx):
    """Bourtoule et al.'s slicing: a deletion in the last slice retrains one stage from the last checkpoint, one
    in the first slice retrains every stage; either way the result is the staged training on the residual."""
    R = 4
    u = Sisa({"n_shards": 2, "n_slices": R, "epochs": 4, "eval_every": 2, "seed": 1}).prepare(ctx)
    st = u.state
    assert st.slices is not None and len(st.slices) == ctx.graph.n_edges
    for k in range(2):
        sizes = np.bincount(st.slices[st.labels == k], minlength=R)
        assert sizes.max() - sizes.min() <= 1 and len(st.checkpoints[k]) == R
        assert u.prepare_log["shards"][k]["stages_trained"] == R
    plain = Sisa({"n_shards": 2, "epochs": 4, "eval_every": 2, "seed": 1}).prepare(ctx)
    assert plain.state.slices is None and plain.prepare_log["shards"][0].get("stages_trained") is None
    edges = ctx.graph.edges
    mine = (st.labels == 0)
    last, first = edges[mine & (st.slices == R - 1)][:1], edges[mine & (st.slices == 0)][:1]
    out_last, out_first = u.unlearn(last), u.unlearn(first)
    assert out_last.log["stages_trained"] == {0: 1} and out_first.log["stages_trained"] == {0: R}
    (rl,), (rf,) = out_last.log["shards"], out_first.log["shards"]
    assert rl["epochs_run"] < rf["epochs_run"] and rl["first_slice"] == R - 1 and rf["first_slice"] == 0
    assert all(a is b for a, b in zip(out_last.state.checkpoints[0][: R - 1], st.checkpoints[0][: R - 1],
                                        strict=True))  # stages before the deleted slice are kept as they are
    assert out_last.state.models[1] is st.models[1]
    for out, req in ((out_last, last), (out_first, first)):
        res = out.state
        assert not res.graphs[0].contains(req).any()
        again, _, _ = u._train_shard(u.ctx, res.graphs[0], 0, out.graph, res.slices[res.labels == 0])
        assert _same_weights(res.models[0], again)  # = training every stage afresh on the residual slices
        assert not _same_weights(st.models[0], res.models[0])


def test_sisa_sequential_requests_and_user_with_no_edges_left(ctx):
    u = Sisa({"n_shards": 3, "epochs": 3}).prepare(ctx)
    e = ctx.graph.edges
    user = int(e[0, 0])
    out = u.unlearn(e[e[:, 0] == user])  # a whole user
    assert out.log["shards_touched"]["count"] == 1
    u.apply(out)
    assert u.ctx.graph is out.graph and u.state is out.state
    assert not out.model.holders()[0][user].any()
    w = out.model.user_weights()
    assert w[user, u.partition.user_labels[user]] == 1.0  # falls back to the user's own (retrained) shard
    other = out.graph.edges[out.graph.edges[:, 0] != user][:2]
    out2 = u.unlearn(other)
    assert out2.graph.n_edges == out.graph.n_edges - 2
    with pytest.raises(ValueError, match="not edges"):
        u.unlearn(e[e[:, 0] == user][:1])  # already forgotten


# ------------------------------------------------------------------------------ RecEraser
def test_receraser_prediction_uses_the_trained_aggregator(ctx, receraser):
    ens = receraser.ensemble
    agg = ens.aggregator
    assert agg is not None and receraser.config.partition == "interaction"
    log = receraser.prepare_log["aggregator"]
    assert log["epochs_run"] >= 1 and len(log["history"]) == log["epochs_run"] + 1
    valid = [h["valid"] for h in log["history"]]
    assert log["best_epoch"] == int(np.argmax(valid))  # the aggregator's epoch is selected on validation
    us, is_ = ens.stacked()
    mu, mi = ens.masks()
    u, i = ens.embeddings(ctx.graph)
    assert u.shape == (ctx.data.n_users, ctx.config.model.embedding_size)
    assert agg.inputs == "layer0"  # the public LightGCN code: layer-0 tables aggregated, then propagated
    with torch.no_grad():
        pu, pi = ens.propagate(agg.users(us, mu), agg.items(is_, mi))
        torch.testing.assert_close(u, pu)
        torch.testing.assert_close(i, pi)
        e0 = torch.stack([m.embedding for m in ens.models], 1)
        torch.testing.assert_close(us, e0[: ctx.data.n_users])
        alpha = agg.attention(us, mu)
    assert torch.allclose(alpha.sum(1), torch.ones(len(alpha)))
    assert (alpha[~mu] == 0).all()  # no weight on shards that never saw the user
    pairs = ctx.graph.edges[:50]
    before = ens.score(ctx.graph, pairs[:, 0], pairs[:, 1]).clone()
    saved = {k: v.clone() for k, v in agg.state_dict().items()}
    try:
        with torch.no_grad():
            agg.user_h.copy_(torch.randn(agg.user_h.shape, generator=torch.Generator().manual_seed(0)) * 5)
            agg.shard_weight.mul_(1.5)
        after = ens.score(ctx.graph, pairs[:, 0], pairs[:, 1])
        assert not torch.allclose(before, after)
    finally:
        agg.load_state_dict(saved)
    torch.testing.assert_close(ens.score(ctx.graph, pairs[:, 0], pairs[:, 1]), before)


def test_receraser_request_retrains_touched_shards_and_the_aggregator(ctx, receraser):
    st = receraser.state
    labels = st.labels
    shard = int(labels[0])
    request = ctx.graph.edges[labels == shard][:4]
    out = receraser.unlearn(request)
    assert out.log["shards_touched"] == {"count": 1, "ids": [shard]}
    assert "aggregator" in out.log and out.timings["aggregator_seconds"] > 0
    new = out.state
    assert new.ensemble.aggregator is not st.ensemble.aggregator
    for k in range(4):
        assert (new.models[k] is st.models[k]) == (k != shard)
    assert not out.graph.contains(request).any()
    np.testing.assert_array_equal(out.model.keys, out.graph.keys)
    # a request spread over every shard touches every shard
    spread = np.stack([ctx.graph.edges[labels == k][-1] for k in range(4)])
    assert receraser.touched_shards(spread).tolist() == [0, 1, 2, 3]


def test_receraser_unlearning_is_not_a_no_op(ctx, receraser):
    """The served scores of the request change, the touched shard is exactly a fresh retrain on its residual
    edges and the aggregator is refitted on the residual graph."""
    st = receraser.state
    shard = int(st.labels[3])
    request = ctx.graph.edges[st.labels == shard][:8]
    out = receraser.unlearn(request)
    assert out.log["shards_touched"]["ids"] == [shard]
    before = st.ensemble.score(ctx.graph, request[:, 0], request[:, 1])
    after = out.model.score(out.graph, request[:, 0], request[:, 1])
    assert not torch.allclose(before, after, atol=1e-4)
    fresh, _, _ = receraser._train_shard(receraser.ctx, out.state.graphs[shard], shard, out.graph)
    assert _same_weights(out.state.models[shard], fresh) and not _same_weights(st.models[shard], fresh)
    old, new = st.ensemble.aggregator.state_dict(), out.model.aggregator.state_dict()
    assert any(not torch.equal(old[k], new[k]) for k in old)


@pytest.mark.parametrize("partition", ["interaction", "user", "item"])
def test_receraser_partitions_wmf_embeddings_with_the_capacity_rule(ctx, partition):
    """The balanced partitions cluster WMF embeddings pre-trained on the graph (not the recommender's), with
    the public code's capacity ceil(1.2 n / K) and T = 50 rounds."""
    u = RecEraser({"partition": partition, "n_shards": 4, "epochs": 1, "agg_epochs": 0}).prepare(ctx)
    info = u.prepare_log["partition"]
    assert info["pretrain"]["embeddings"] == "wmf" and info["pretrain"]["best_iteration"] >= 1
    w = wmf_als(ctx.graph, ctx.config.model.embedding_size, neg_weight=0.2, reg=0.1, iterations=8, seed=0,
                data=ctx.data)
    strategy = {"interaction": "interaction", "user": "user", "item": "item"}[partition]
    expected = partition_graph(ctx.graph, strategy, 4, user_emb=w.user_emb, item_emb=w.item_emb, seed=0,
                               iterations=50, slack=1.2, combine="product")
    np.testing.assert_array_equal(u.partition.edge_labels, expected.edge_labels)
    n = {"interaction": ctx.graph.n_edges, "user": ctx.data.n_users, "item": ctx.data.n_items}[partition]
    assert info["capacity"] == int(np.ceil(1.2 * n / 4 - 1e-9)) and max(info["samples_per_shard"]) <= info["capacity"]
    m = RecEraser({"partition": partition, "n_shards": 4, "epochs": 1, "agg_epochs": 0, "embeddings": "model"})
    assert m.prepare(ctx).prepare_log["partition"]["pretrain"] == {"embeddings": "model"}


@pytest.mark.parametrize("backbone", ["mf", "sgl", "simgcl"])
def test_both_methods_apply_to_every_backbone(backbone):
    data = make_synthetic(n_users=60, n_items=40, n_communities=3, mean_degree=10.0, seed=5)
    cfg = RunConfig().with_overrides({**SMALL, "model.name": backbone, "train.epochs": 2})
    g = Graph(data.train, data.n_users, data.n_items)
    model, _ = train_on(Context(None, g, data, cfg, False), g)
    c = Context(model, g, data, cfg, False)
    req = g.edges[:2]
    for u in (Sisa({"n_shards": 2}), RecEraser({"n_shards": 2, "agg_epochs": 1, "partition": "user"})):
        out = u.prepare(c).unlearn(req)
        assert out.log["shards_touched"]["count"] >= 1
        assert np.isfinite(api.evaluate_model(out.model, out.graph, data, ks=(20,))["recall@20"])


# ------------------------------------------------------------------------------ utility before deletion
def test_utility_before_deletion_is_sane(capsys):
    cfg = RunConfig().with_overrides({"model.embedding_size": 32, "model.n_layers": 2, "train.epochs": 20,
                                      "train.batch_size": 1024, "train.learning_rate": 0.01, "train.eval_every": 5,
                                      "train.patience": 2, "train.ks": [20]})
    res = api.train(cfg, progress=False)
    model, graph, data = res["model_object"], res["graph_object"], res["data_object"]
    c = Context(model, graph, data, cfg, False)
    full = api.evaluate_model(model, graph, data, ks=(20,))["recall@20"]
    sisa = api.evaluate_model(Sisa({"n_shards": 5}).prepare(c).ensemble, graph, data, ks=(20,))["recall@20"]
    rec = api.evaluate_model(RecEraser({"n_shards": 5, "agg_epochs": 10}).prepare(c).ensemble, graph, data,
                             ks=(20,))["recall@20"]
    random_recall = 20 / data.n_items
    with capsys.disabled():
        print(f"\n[utility before deletion, synthetic 600x400, recall@20 test] full={full:.4f} "
              f"sisa(5)={sisa:.4f} receraser-inbp(5)={rec:.4f} random~{random_recall:.4f}")
    assert full > 2 * random_recall
    assert sisa > 2 * random_recall and rec > 2 * random_recall


# ------------------------------------------------------------------------------ prepared state on disk
@pytest.mark.parametrize("method", ["sisa", "receraser"])
def test_a_saved_prepared_state_serves_and_unlearns_as_the_prepared_one(ctx, sisa, receraser, method, tmp_path):
    """What the bench's prepared cache relies on: a fresh unlearner loaded from ``save_prepared`` serves the same
    scores and unlearns a request exactly as the one that trained the shards (safetensors and JSON only)."""
    prepared = {"sisa": sisa, "receraser": receraser}[method]
    assert prepared.save_prepared(tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["shards.json", "shards.safetensors"]
    fresh = type(prepared)(prepared.config)
    assert fresh.load_prepared(ctx, tmp_path)
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, ctx.data.n_users, 400), rng.integers(0, ctx.data.n_items, 400)
    torch.testing.assert_close(fresh.ensemble.score(ctx.graph, users, items),
                               prepared.ensemble.score(ctx.graph, users, items))
    assert fresh.state.seconds == prepared.state.seconds and fresh.prepare_log.keys() == prepared.prepare_log.keys()
    req = ctx.graph.edges[rng.choice(ctx.graph.n_edges, 6, replace=False)]
    a, b = prepared.unlearn(req), fresh.unlearn(req)
    assert a.log["shards_touched"] == b.log["shards_touched"]
    torch.testing.assert_close(b.model.score(b.graph, users, items), a.model.score(a.graph, users, items))
    # another graph (another original): nothing restored
    other = Context(ctx.model, ctx.graph.without(req), ctx.data, ctx.config, False)
    assert not type(prepared)(prepared.config).load_prepared(other, tmp_path)


def test_sliced_sisa_does_not_save_its_state(ctx, tmp_path):
    sliced = Sisa({"n_shards": 2, "n_slices": 2, "epochs": 2}).prepare(ctx)
    assert not sliced.save_prepared(tmp_path) and not any(tmp_path.iterdir())  # slice checkpoints stay in memory
