"""Shard sub-models trained on 2 real gloo ranks equal the single-process ones (SISA, RecEraser).

Both sides run with one torch thread, so CPU kernels sum in the same order and the weights are compared bit
for bit (``torch.equal``), not within a tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tests.conftest import small_synthetic_data
from unlearnrec.config import RunConfig
from unlearnrec.graph import Graph
from unlearnrec.unlearning.base import Context
from unlearnrec.unlearning.methods.receraser import RecEraser
from unlearnrec.unlearning.methods.sharded_parallel import deal
from unlearnrec.unlearning.methods.sisa import Sisa

SMALL = {
    "model.embedding_size": 16,
    "model.n_layers": 2,
    "model.reg": 1e-3,
    "train.epochs": 8,
    "train.batch_size": 128,
    "train.learning_rate": 0.02,
    "train.eval_every": 2,
    "train.patience": 2,
    "train.ks": [20],
}
SERIAL = {"n_shards": 4, "seed": 1, "threads": 1}
PARALLEL = {**SERIAL, "workers": 2}


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ctx(one_thread):
    data = small_synthetic_data()
    graph = Graph(data.train, data.n_users, data.n_items)
    return Context(None, graph, data, RunConfig().with_overrides(SMALL), False)  # SISA needs no trained model


@pytest.fixture(scope="module")
def serial(ctx):
    return Sisa(SERIAL).prepare(ctx)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _request(state, shards, n=3):
    return np.concatenate([state.graphs[k].edges[:n] for k in shards])


def test_deal_is_round_robin_and_bad_settings_are_refused():
    assert deal(5, 2) == [[0, 2, 4], [1, 3]] and deal(2, 4) == [[0], [1], [], []]
    with pytest.raises(ValidationError, match="workers"):
        Sisa({"workers": 0})
    with pytest.raises(ValueError, match="workers must be >= 1"):
        deal(3, 0)


@pytest.mark.slow
def test_parallel_prepare_equals_the_serial_one_shard_by_shard(ctx, serial):
    par = Sisa(PARALLEL).prepare(ctx)
    log = par.prepare_log
    assert log["workers"] == {"count": 2, "shards_by_rank": [[0, 2], [1, 3]]}
    assert [r["worker"]["rank"] for r in log["shards"]] == [0, 1, 0, 1]  # shard k trained on rank k mod 2
    for k in range(4):
        assert par.state.graphs[k].keys.tolist() == serial.state.graphs[k].keys.tolist()
        assert _equal(par.state.models[k], serial.state.models[k]), f"shard {k} differs from its serial training"
        assert log["shards"][k]["epochs_run"] == serial.prepare_log["shards"][k]["epochs_run"]
    assert not _equal(serial.state.models[0], serial.state.models[1])  # shards differ, so routing is visible
    u_p, i_p = par.ensemble.embeddings(ctx.graph)
    u_s, i_s = serial.ensemble.embeddings(ctx.graph)
    assert torch.equal(u_p, u_s) and torch.equal(i_p, i_s)


def test_a_request_on_two_shards_retrains_exactly_those_at_once(ctx, serial):
    st = serial.state
    before = [_state(m) for m in st.models]
    request = _request(st, [1, 2])
    par_out = serial.with_config(PARALLEL).unlearn(request)
    ser_out = serial.unlearn(request)
    assert par_out.log["shards_touched"] == {"count": 2, "ids": [1, 2]}
    assert par_out.log["workers"] == {"count": 2, "shards_by_rank": [[1], [2]]}
    w = {r["shard"]: r["worker"] for r in par_out.log["shards"]}
    assert sorted(w) == [1, 2] and {w[1]["rank"], w[2]["rank"]} == {0, 1} and w[1]["pid"] != w[2]["pid"]
    assert w[1]["started"] < w[2]["finished"] and w[2]["started"] < w[1]["finished"]  # the two ran concurrently
    for k in range(4):
        new = par_out.state.models[k]
        if k in (1, 2):
            assert _equal(new, ser_out.state.models[k]), f"retrained shard {k} differs from the serial retrain"
            assert any(not torch.equal(v, before[k][n]) for n, v in new.state_dict().items())
            assert not par_out.state.graphs[k].contains(request).any()
        else:
            assert new is st.models[k]
            assert all(torch.equal(v, before[k][n]) for n, v in new.state_dict().items())
    u_p, _ = par_out.model.embeddings(par_out.graph)
    u_s, _ = ser_out.model.embeddings(ser_out.graph)
    assert torch.equal(u_p, u_s)


@pytest.mark.slow
def test_sliced_shards_resume_from_the_same_checkpoint_in_a_worker(ctx):
    cfg = {"n_shards": 2, "seed": 1, "threads": 1, "n_slices": 2}
    sliced = Sisa(cfg).prepare(ctx)
    st = sliced.state
    last = [st.graphs[k].edges[st.slices[st.labels == k] == 1][:2] for k in range(2)]  # edges in slice 2
    request = np.concatenate(last)
    par_out = sliced.with_config({**cfg, "workers": 2}).unlearn(request)
    ser_out = sliced.unlearn(request)
    assert par_out.log["stages_trained"] == ser_out.log["stages_trained"] == {0: 1, 1: 1}
    for k in range(2):
        assert _equal(par_out.state.models[k], ser_out.state.models[k])
        for a, b in zip(par_out.state.checkpoints[k], ser_out.state.checkpoints[k], strict=True):
            assert all(torch.equal(a[n], b[n]) for n in a)
        assert all(torch.equal(v, st.checkpoints[k][0][n]) for n, v in par_out.state.checkpoints[k][0].items())


@pytest.mark.slow
def test_receraser_parallel_request_equals_serial_and_refits_the_aggregator(ctx):
    cfg = {"n_shards": 3, "partition": "random", "agg_epochs": 2, "threads": 1}
    rec = RecEraser(cfg).prepare(ctx)
    request = _request(rec.state, [0, 2], n=2)
    par_out = rec.with_config({**cfg, "workers": 2}).unlearn(request)
    ser_out = rec.unlearn(request)
    assert par_out.log["shards_touched"]["ids"] == [0, 2] and "aggregator" in par_out.log
    for k in range(3):
        assert _equal(par_out.state.models[k], ser_out.state.models[k])
    assert _equal(par_out.model.aggregator, ser_out.model.aggregator)
