"""GraphEraser: BEKM / BLPA user partitions (balanced, structure-aware), the fold-in ensemble and LBAggr, exact
unlearning of the touched shards, a no-op that fails, and both new methods through ``unlearnrec unlearn``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import small_synthetic_data
from unlearnrec.cli import app
from unlearnrec.config import RunConfig
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import Trainer
from unlearnrec.unlearning.base import Context, build_unlearner, list_unlearners
from unlearnrec.unlearning.methods.graph_eraser import GraphEraser, GraphEraserEnsemble, blpa_users, fold_in


def _blocks(n_users=60, n_items=40, k=3, seed=0) -> Graph:
    """``k`` user communities, each interacting only with its own items."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), 8)
    comm = users % k
    items = comm * (n_items // k) + rng.integers(0, n_items // k, len(users))
    return Graph(np.stack([users, items], 1), n_users, n_items)


def test_blpa_is_balanced_and_finds_the_communities() -> None:
    g = _blocks()
    labels, info = blpa_users(g, 3, iterations=20, slack=1.1, seed=0)
    sizes = np.bincount(labels, minlength=3)
    assert sizes.max() <= info["capacity"] == 22 and sizes.sum() == g.n_users
    assert sum(info["moves"]) > 0
    comm = np.arange(g.n_users) % 3
    # purity: the majority community of each shard holds most of its users (random labels: about 1/3)
    purity = sum(np.bincount(comm[labels == s]).max() for s in range(3)) / g.n_users
    assert purity > 0.8, purity


@pytest.fixture(scope="module")
def ctx() -> Context:
    data = small_synthetic_data()
    torch.manual_seed(0)
    cfg = RunConfig().with_overrides({
        "model.name": "lightgcn", "model.embedding_size": 16, "model.n_layers": 2, "model.reg": 1e-3,
        "train.epochs": 10, "train.batch_size": 256, "train.learning_rate": 0.02, "train.eval_every": 5,
        "train.patience": 5, "train.ks": [20]})
    model = build_model(data.n_users, data.n_items, cfg.model)
    trainer = Trainer(model, data, cfg.train, progress=False)
    trainer.fit()
    trainer.restore_best()
    return Context(model, trainer.graph, data, cfg, progress=False)


@pytest.fixture(scope="module")
def prepared(ctx: Context) -> GraphEraser:
    return GraphEraser({"n_shards": 3, "epochs": 5, "agg_epochs": 50, "aggregation": "learned"}).prepare(ctx)


def test_registered_with_its_paper() -> None:
    m = {x["name"]: x for x in list_unlearners()}["graph-eraser"]
    assert "CCS 2022" in m["paper"] and "Graph Unlearning" in m["paper"]


def test_bekm_user_shards_and_the_served_scores(prepared: GraphEraser, ctx: Context) -> None:
    ens = prepared.ensemble
    assert isinstance(ens, GraphEraserEnsemble) and ens.n_shards == 3
    part = prepared.partition
    assert part.strategy == "bekm" and part.user_labels is not None
    assert max(part.info["users_per_shard"]) <= part.info["capacity"]
    g = ctx.graph
    np.testing.assert_array_equal(part.edge_labels, part.user_labels[g.keys // g.n_items])  # edges follow users
    alpha = ens.weights
    assert float(alpha.sum()) == pytest.approx(1.0) and bool((alpha >= 0).all())
    # ŷ(u, i) = Σ_k α_k <u_k, i_k>, u_k: the trained row in the user's shard, its fold-in elsewhere
    u, i = ens.embeddings(g)
    embs = ens.shard_embeddings()
    users, items = np.array([0, 5, 17]), np.array([3, 8, 2])
    want = torch.zeros(3)
    for k, (uk, ik) in enumerate(embs):
        folded = fold_in(g, ik)
        home = torch.as_tensor(part.user_labels[users] == k).unsqueeze(1)
        rows = torch.where(home, uk[users], folded[users])
        want += float(alpha[k]) * (rows * ik[items]).sum(-1)
    assert torch.allclose((u[users] * i[items]).sum(-1), want, atol=1e-5)
    log = prepared.prepare_log["aggregator"]
    assert log["aggregation"] == "learned" and log["n_valid_pairs"] == len(ctx.data.valid)


def test_auto_aggregation_is_chosen_on_validation(ctx: Context) -> None:
    u = GraphEraser({"n_shards": 3, "epochs": 3, "agg_epochs": 20}).prepare(ctx)
    log = u.prepare_log["aggregator"]
    scores = log["valid_scores"]
    assert set(scores) == {"learned", "mean", "home"} and log["aggregation"] == max(scores, key=scores.get)
    assert (u.ensemble.weights is None) == (log["aggregation"] == "home")


def test_lbaggr_down_weights_a_useless_shard(prepared: GraphEraser, ctx: Context) -> None:
    from unlearnrec.unlearning.methods.graph_eraser import fit_lbaggr

    ens = prepared.ensemble
    tables = ens.shard_tables(ctx.graph)
    gen = torch.Generator().manual_seed(0)
    noise = [(torch.randn(u.shape, generator=gen), torch.randn(i.shape, generator=gen)) for u, i in tables[:1]]
    alpha, log = fit_lbaggr(noise + tables[1:], ctx.data, ctx.graph, prepared.config)
    assert float(alpha[0]) < 0.5 / 3 and log["valid_pair_accuracy"] >= log["valid_pair_accuracy_mean_aggr"] - 0.01


def test_unlearning_retrains_the_request_shards_and_changes_the_served_model(prepared: GraphEraser,
                                                                              ctx: Context) -> None:
    """Fails for a no-op: the request's users' shards are retrained without the request, the other sub-models
    are reused as they are, and the served scores of the request differ from the original ensemble's."""
    g = ctx.graph
    users = np.array([1, 2])
    req = g.edges[np.isin(g.edges[:, 0], users)][::2]
    before = prepared.ensemble
    out = prepared.unlearn(req)
    touched = sorted(set(prepared.partition.user_labels[users].tolist()))
    assert out.log["shards_touched"]["ids"] == touched
    for k, (old, new) in enumerate(zip(before.models, out.model.models, strict=True)):
        assert (new is old) == (k not in touched)
        assert not out.model.graphs[k].contains(req).any()
    u0, i0 = before.embeddings(g)
    u1, i1 = out.model.embeddings(out.graph)
    s0 = (u0[req[:, 0]] * i0[req[:, 1]]).sum(-1)
    s1 = (u1[req[:, 0]] * i1[req[:, 1]]).sum(-1)
    assert not torch.allclose(s0, s1, atol=1e-4)
    assert float(s1.mean()) < float(s0.mean())
    json.dumps(out.to_dict())


def test_other_aggregations_and_blpa(ctx: Context) -> None:
    for agg in ("mean", "home"):
        u = GraphEraser({"n_shards": 2, "epochs": 2, "aggregation": agg, "partition": "blpa"}).prepare(ctx)
        assert u.partition.strategy == "blpa"
        e = u.ensemble
        assert (e.weights is None) == (agg == "home")
        uu, ii = e.embeddings(ctx.graph)
        assert uu.shape == (ctx.graph.n_users, 2 * ctx.config.model.embedding_size)
    with pytest.raises(Exception, match="partition"):
        build_unlearner("graph-eraser", {"partition": "metis"})


@pytest.mark.parametrize("method,config", [("ceu", "iterations: 20\n"),
                                           ("graph-eraser", "n_shards: 2\nepochs: 1\nagg_epochs: 5\n")])
def test_through_the_cli(method: str, config: str, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "ckpt"
    r = runner.invoke(app, ["train", "--dataset", "synthetic", "--model", "lightgcn", "--out", str(out),
                            "train.epochs=2", "model.embedding_size=8"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    cfg = tmp_path / "m.yaml"
    cfg.write_text(config)
    r = runner.invoke(app, ["unlearn", "--checkpoint", str(out), "--method", method, "--method-config", str(cfg),
                            "--random-edges", "0.02", "--out", str(tmp_path / "u")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "u" / "result.json").read_text())
    assert res["method"] == method and res["request"]["n_edges"] > 0
    assert res["forgetting"]["rank"]["after"]["mean_percentile"] != res["forgetting"]["rank"]["before"][
        "mean_percentile"]


def test_a_saved_prepared_state_serves_as_the_prepared_one(prepared: GraphEraser, ctx: Context, tmp_path) -> None:
    assert prepared.save_prepared(tmp_path)
    fresh = GraphEraser(prepared.config)
    assert fresh.load_prepared(ctx, tmp_path)
    assert isinstance(fresh.ensemble, GraphEraserEnsemble)
    torch.testing.assert_close(fresh.ensemble.weights, prepared.ensemble.weights)  # the learned LBAggr weights
    u, i = fresh.ensemble.embeddings(ctx.graph)
    pu, pi = prepared.ensemble.embeddings(ctx.graph)
    torch.testing.assert_close(u, pu)
    torch.testing.assert_close(i, pi)
