"""Sharded LightGCN tables on two real gloo ranks (TorchRec row-wise ``EmbeddingCollection``).

One launch (about 20-40 s on a busy 2-core machine, mostly imports and the two ranks' start) runs every
scenario in order on the same tables; the tests below check its results against the single-process path:

1. load from a LightGCN checkpoint (each rank reads its rows) -> the gathered table equals the model's;
2. forward over each rank's seeds' sampled subgraph equals the in-memory LightGCN on those rows;
3. erase two users whose rows live on rank 1 -> rank 0's shards bit-identical, rank 1's rows = the in-memory
   ``isolated_reset`` rows;
4. an UnlearnRec encoder edit (zero-shot Ẽ0) written row by row -> the gathered table equals the in-memory
   unlearned model's, and the forward over the residual graph equals its embeddings;
5. one fused row-wise-Adagrad BPR step (each rank its own batch) equals the hand-computed single-process
   step on the combined batch; then rewriting rows resets their optimizer state and nothing else.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.scale import torchrec_missing

_MISSING = torchrec_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

N_USERS, N_ITEMS, DIM, LAYERS, LR, EPS = 60, 40, 8, 2, 0.05, 1e-8


def _snapshot(tables) -> dict[str, np.ndarray]:
    return {t: tables.shard(t)[1].detach().clone().numpy() for t in ("user", "item")}


def _rank(ctx, ckpt: str, model, edges, seeds, erase_nodes, erase_rows, residual, edit_nodes, edit_rows, batches, redo):
    from unlearnrec.graph import Graph
    from unlearnrec.models.base import Batch
    from unlearnrec.scale.tables import ShardedLightGCN, ShardedTablesConfig

    graph = Graph(edges, N_USERS, N_ITEMS)
    tables = ShardedLightGCN.from_checkpoint(ctx, ckpt, ShardedTablesConfig(learning_rate=LR, eps=EPS))
    out = {"spans": {t: tables.routing[t].span(ctx.rank) for t in ("user", "item")}}
    out["loaded"] = tables.full_table().numpy()
    out["from_model"] = ShardedLightGCN.from_model(ctx, model).full_table().numpy()
    out["errors"] = []
    for nodes, rows in (([0, 0], torch.zeros(2, DIM)), ([0], torch.zeros(1, DIM + 1)), ([N_USERS + N_ITEMS], None)):
        try:
            tables.write_rows(nodes, torch.zeros(len(nodes), DIM) if rows is None else rows)
        except ValueError as exc:
            out["errors"].append(str(exc))
    out["embed"] = tables.embed(graph, seeds[ctx.rank]).detach().numpy()
    before = _snapshot(tables)
    held = ctx.rank == 0  # the edit is held by rank 0 (the ledger's rank) and sent to the owners only
    out["erase_written"] = tables.send_rows(erase_nodes if held else None, erase_rows if held else None, src=0)
    out["erase_before"], out["erase_after"] = before, _snapshot(tables)
    out["erase_table"] = tables.full_table().numpy()
    tables.write_rows(edit_nodes, edit_rows)
    out["edit_table"] = tables.full_table().numpy()
    out["edit_embed"] = tables.embed(Graph(residual, N_USERS, N_ITEMS), seeds[ctx.rank]).detach().numpy()
    users, pos, neg = (torch.as_tensor(a) for a in batches[ctx.rank])
    out["loss"] = tables.train_step(graph, Batch(users, pos, neg))
    out["step_table"] = tables.full_table().numpy()
    out["state_after_step"] = {t: [s.numpy() for s in tables.optimizer_state(t)] for t in ("user", "item")}
    tables.write_rows(redo, torch.from_numpy(out["step_table"][redo]))
    out["state_after_reset"] = {t: [s.numpy() for s in tables.optimizer_state(t)] for t in ("user", "item")}
    return out


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from unlearnrec.checkpoint import save_checkpoint
    from unlearnrec.config import ModelConfig, RunConfig, TrainConfig
    from unlearnrec.data.synthetic import make_synthetic
    from unlearnrec.distributed import launch
    from unlearnrec.models import build_model
    from unlearnrec.scale.tables import changed_rows
    from unlearnrec.training import Trainer
    from unlearnrec.unlearning.unlearnrec.encoder import InfluenceEncoder
    from unlearnrec.unlearning.unlearnrec.unlearn import isolated_reset, unlearn_request

    data = make_synthetic(n_users=N_USERS, n_items=N_ITEMS, n_communities=4, mean_degree=5.0, min_degree=3, seed=2)
    torch.manual_seed(0)
    mc = ModelConfig(name="lightgcn", embedding_size=DIM, n_layers=LAYERS, reg=1e-3)
    tc = TrainConfig(epochs=3, batch_size=128, learning_rate=0.02, eval_every=3, ks=[20])
    model = build_model(data.n_users, data.n_items, mc)
    trainer = Trainer(model, data, tc, progress=False)
    trainer.fit()
    graph = trainer.graph
    ckpt = tmp_path_factory.mktemp("scale") / "lgn"
    save_checkpoint(ckpt, model, RunConfig(model=mc, train=tc), data.fingerprint(), data.stats())
    e0 = model.embedding.detach().clone()

    # erase two users of rank 1's block (the upper half), neither the only holder of an item
    deg_i = np.bincount(graph.edges[:, 1], minlength=N_ITEMS)
    lone = {int(u) for u, i in graph.edges if deg_i[i] < 2}
    erased = [N_USERS // 2, N_USERS - 1]  # the first and the last row of rank 1's user block
    assert not lone & set(erased)
    request = graph.edges[np.isin(graph.edges[:, 0], erased)]
    residual_graph = graph.without(request)
    mask, fresh = isolated_reset(model, graph, residual_graph, seed=5)
    erase_nodes = mask.nonzero().flatten()
    assert sorted(erase_nodes.tolist()) == sorted(erased)
    e_erased = e0.clone()
    e_erased[erase_nodes] = fresh

    # an UnlearnRec edit (encoder with its initial MLP, zero-shot) of a random request, on the erased model
    rng = np.random.default_rng(0)
    rest = residual_graph.edges
    request2 = rest[np.sort(rng.choice(len(rest), size=8, replace=False))]
    base = build_model(N_USERS, N_ITEMS, mc)
    with torch.no_grad():
        base.embedding.copy_(e_erased)
    torch.manual_seed(1)
    res = unlearn_request(base, residual_graph, InfluenceEncoder.for_model(base), request2, data, finetune_epochs=0)
    e_edit = res.model.embedding.detach().clone()
    changed, changed_to = changed_rows(e_erased, e_edit)
    assert 0 < len(changed)
    final_graph = res.graph

    seeds = [np.array([0, 3, N_USERS + 1, N_USERS + 1]), np.array([N_USERS - 1, N_USERS + N_ITEMS - 1, 31])]
    batches = [
        (np.array([1, 40]), np.array([int(graph.edges[graph.edges[:, 0] == 1][0, 1]), 5]), np.array([7, 30])),
        (np.array([45, 2, 45]), np.array([0, 39, 3]), np.array([20, 21, 22])),
    ]
    redo = np.array([0, 40, N_USERS + 0, N_USERS + 39])  # rows the step touched on both ranks
    ranks = launch(
        _rank,
        2,
        str(ckpt),
        model,
        graph.edges,
        seeds,
        erase_nodes,
        fresh,
        final_graph.edges,
        changed,
        changed_to,
        batches,
        redo,
        threads=1,
        timeout_s=240,
    )
    return {
        "ranks": ranks,
        "model": model,
        "graph": graph,
        "e0": e0,
        "e_erased": e_erased,
        "e_edit": e_edit,
        "final_graph": final_graph,
        "seeds": seeds,
        "batches": batches,
        "erased": erased,
        "redo": redo,
        "mc": mc,
    }


def _lgn(mc, e0):
    from unlearnrec.models import build_model

    m = build_model(N_USERS, N_ITEMS, mc)
    with torch.no_grad():
        m.embedding.copy_(e0)
    return m


def test_tables_load_the_checkpoint_rows_on_their_owners(case):
    r0, r1 = case["ranks"]
    assert r0["spans"] == {"user": (0, 30), "item": (0, 20)} and r1["spans"] == {"user": (30, 60), "item": (20, 40)}
    for r in case["ranks"]:
        np.testing.assert_array_equal(r["loaded"], case["e0"].numpy())
        np.testing.assert_array_equal(r["from_model"], case["e0"].numpy())


def test_bad_row_writes_are_refused_with_the_problem_named(case):
    for r in case["ranks"]:
        assert r["errors"] == [
            "nodes repeat: each row may be written once per call",
            f"rows must have shape (1, {DIM}), got (1, {DIM + 1})",
            f"node ids out of range [0, {N_USERS + N_ITEMS}): [{N_USERS + N_ITEMS}]",
        ]


def test_sharded_forward_over_the_sampled_subgraph_equals_in_memory_lightgcn(case):
    from unlearnrec.scale import sample_subgraph

    full = case["model"].propagate(case["graph"]).detach()
    for rank, r in enumerate(case["ranks"]):
        seeds = case["seeds"][rank]
        assert len(sample_subgraph(case["graph"], seeds, LAYERS)) < N_USERS + N_ITEMS  # a real subgraph
        assert np.abs(r["embed"] - full[seeds].numpy()).max() <= 1e-6


def test_a_request_on_rank_one_rows_leaves_rank_zero_bit_identical(case):
    r0, r1 = case["ranks"]
    assert all(u >= N_USERS // 2 for u in case["erased"])
    assert (r0["erase_written"], r1["erase_written"]) == (0, len(case["erased"]))
    for t in ("user", "item"):
        assert r0["erase_before"][t].tobytes() == r0["erase_after"][t].tobytes()
    changed = np.flatnonzero((r1["erase_before"]["user"] != r1["erase_after"]["user"]).any(1)) + 30
    assert sorted(changed.tolist()) == sorted(case["erased"])
    assert r1["erase_before"]["item"].tobytes() == r1["erase_after"]["item"].tobytes()
    for r in case["ranks"]:  # the fresh rows are exactly what the single-process reset writes
        assert r["erase_table"].tobytes() == case["e_erased"].numpy().tobytes()


def test_unlearned_rows_equal_the_single_process_unlearner(case):
    unlearned = _lgn(case["mc"], case["e_edit"])
    final = unlearned.propagate(case["final_graph"]).detach()
    for rank, r in enumerate(case["ranks"]):
        assert r["edit_table"].tobytes() == case["e_edit"].numpy().tobytes()
        assert np.abs(r["edit_embed"] - final[case["seeds"][rank]].numpy()).max() <= 1e-6


def test_one_fused_step_equals_single_process_rowwise_adagrad_and_rewrites_reset_its_state(case):
    from unlearnrec.models.base import Batch

    model = _lgn(case["mc"], case["e_edit"])
    grads = []
    for users, pos, neg in case["batches"]:
        model.zero_grad()
        loss, _ = model.loss(Batch(*(torch.as_tensor(a) for a in (users, pos, neg))), case["graph"])
        loss.backward()
        grads.append(model.embedding.grad.clone())
    g = sum(grads) / len(grads)  # TorchRec divides embedding gradients by the world size, as DDP averages
    state = g.pow(2).mean(1)
    expected = case["e_edit"] - LR * g / (state.sqrt() + EPS).unsqueeze(1)
    for r in case["ranks"]:
        assert np.abs(r["step_table"] - expected.numpy()).max() <= 1e-6
    r0, r1 = case["ranks"]
    mom = {t: np.concatenate([r0["state_after_step"][t][0], r1["state_after_step"][t][0]]) for t in ("user", "item")}
    np.testing.assert_allclose(np.concatenate([mom["user"], mom["item"]]), state.numpy(), rtol=1e-5, atol=1e-9)
    after = {
        t: np.concatenate([r0["state_after_reset"][t][0], r1["state_after_reset"][t][0]]) for t in ("user", "item")
    }
    after = np.concatenate([after["user"], after["item"]])
    before = np.concatenate([mom["user"], mom["item"]])
    redo = case["redo"]
    assert (before[redo] > 0).all() and (after[redo] == 0).all()
    keep = np.setdiff1d(np.arange(N_USERS + N_ITEMS), redo)
    assert after[keep].tobytes() == before[keep].tobytes()


def test_non_lightgcn_checkpoints_and_a_missing_process_group_are_refused(tmp_path):
    from unlearnrec.checkpoint import save_checkpoint
    from unlearnrec.config import ModelConfig, RunConfig
    from unlearnrec.data.synthetic import make_synthetic
    from unlearnrec.distributed import SINGLE
    from unlearnrec.models import build_model
    from unlearnrec.scale.tables import ShardedLightGCN

    data = make_synthetic(n_users=20, n_items=10, n_communities=2, mean_degree=4.0, min_degree=2, seed=0)
    mf = ModelConfig(name="mf", embedding_size=4)
    save_checkpoint(tmp_path / "mf", build_model(20, 10, mf), RunConfig(model=mf), data.fingerprint(), data.stats())
    with pytest.raises(ValueError, match="sharded tables are built from a lightgcn checkpoint, not 'mf'"):
        ShardedLightGCN.from_checkpoint(SINGLE, tmp_path / "mf")
    with pytest.raises(RuntimeError, match="needs a process group: run it under unlearnrec.distributed.launch"):
        ShardedLightGCN(SINGLE, 20, 10, 4, 2)
