"""Forgetting measures: MI-BF / MI-NG on hand-set scores, ranks computed by hand, non-edge sampling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from unlearnrec.config import ModelConfig
from unlearnrec.data.interactions import Interactions, pair_keys
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.evaluation import (
    forgetting_report,
    item_ranks,
    pair_scores,
    random_non_edges,
    report_jsonable,
    score_stats,
)
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.unlearning import DeletionRequest


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _inter(n_users, n_items, train, valid=(), test=()) -> Interactions:
    return Interactions(
        name="hand",
        n_users=n_users,
        n_items=n_items,
        train=np.array(train, dtype=np.int64).reshape(-1, 2),
        valid=np.array(valid, dtype=np.int64).reshape(-1, 2),
        test=np.array(test, dtype=np.int64).reshape(-1, 2),
        user_ids=np.arange(n_users).astype(str),
        item_ids=np.arange(n_items).astype(str),
    )


# --------------------------------------------------------------------------- MI measures
def test_mi_measures_on_hand_set_scores() -> None:
    """2 users x 4 items, d = 1, user_emb = 1, so ŷ(u, i) = item value.

    train (0,0) (0,1) (1,2); request {(0,0)}; no valid/test -> the free pairs are exactly
    (0,2) (0,3) (1,0) (1,1) (1,3), and n_samples=5 takes all of them.
    item values before [2, 1, 0.5, -1], after [-2, 1, 0.5, -1].
    """
    data = _inter(2, 4, [[0, 0], [0, 1], [1, 2]])
    g = Graph(data.train, 2, 4)
    ones = torch.ones(2, 1)
    before = (ones, torch.tensor([[2.0], [1.0], [0.5], [-1.0]]))
    after = (ones, torch.tensor([[-2.0], [1.0], [0.5], [-1.0]]))
    rep = forgetting_report(before, g, after, None, [[0, 0]], data, n_samples=5, per_edge=True)
    non_after = [0.5, -1.0, -2.0, 1.0, -1.0]  # (0,2) (0,3) (1,0) (1,1) (1,3)
    non_before = [0.5, -1.0, 2.0, 1.0, -1.0]
    assert rep["n"] == {"request": 1, "non_edges": 5, "remaining": 2}
    sc = rep["score"]
    assert sc["request"]["before"]["mean"] == pytest.approx(2.0)
    assert sc["request"]["after"]["mean"] == pytest.approx(-2.0)
    assert sc["non_edges"]["after"]["mean"] == pytest.approx(np.mean(non_after))
    assert sc["non_edges"]["before"]["mean"] == pytest.approx(np.mean(non_before))
    assert sc["remaining"]["after"]["mean"] == pytest.approx(0.75)  # (0,1) -> 1, (1,2) -> 0.5
    assert rep["mi_bf"] == pytest.approx(sig(2) / sig(-2))
    assert rep["mi_ng"] == pytest.approx(np.mean([sig(x) for x in non_after]) / sig(-2))
    assert rep["mi_ng_before"] == pytest.approx(np.mean([sig(x) for x in non_before]) / sig(2))
    assert rep["gap_after"] == pytest.approx(np.mean(non_after) + 2.0)
    assert rep["gap_before"] == pytest.approx(np.mean(non_before) - 2.0)
    # ranks of (0,0): before, u0's candidates are {0 (itself), 2, 3}: 2 > 0.5 > -1 -> rank 1 of 3;
    # after, u0's remaining training item 1 is masked: candidates {0, 2, 3} with -2 last -> rank 3 of 3
    pe = rep["per_edge"]
    assert pe["rank_before"].tolist() == [1] and pe["rank_after"].tolist() == [3]
    assert pe["n_candidates_before"].tolist() == [3] and pe["n_candidates_after"].tolist() == [3]
    assert rep["rank"]["before"]["mean_percentile"] == 0.0 and rep["rank"]["after"]["mean_percentile"] == 1.0
    js = report_jsonable(rep)
    json.dumps(js, allow_nan=False)
    assert js["per_edge"]["edges"] == [[0, 0]]


# --------------------------------------------------------------------------- ranks by hand
S_BEFORE = np.array([[5, 4, 3, 2, 1], [1, 2, 3, 4, 5], [2, 2, 9, 0, 1]], dtype=np.float32)
S_AFTER = np.array([[5, 4, 3, 2, 1], [1, 2, 3, 4, -1], [2, 2, 9, 5, 1]], dtype=np.float32)
TRAIN = [[0, 0], [0, 2], [0, 4], [1, 1], [1, 4], [2, 2], [2, 3]]
REQUEST = [[0, 2], [0, 4], [1, 4], [2, 3]]


@pytest.mark.parametrize("batch_size", [1, 2, 256])
def test_ranks_by_hand(batch_size: int) -> None:
    """3 users x 5 items, item_emb = I (scores are the rows of S).

    before (mask: the user's training items except the item ranked):
      (0,2): candidates {1,2,3} scores 4,3,2 -> rank 2 of 3 (pct 0.5)
      (0,4): candidates {1,3,4} scores 4,2,1 -> rank 3 of 3 (pct 1)
      (1,4): candidates {0,2,3,4} scores 1,3,4,5 -> rank 1 of 4 (pct 0)
      (2,3): candidates {0,1,3,4} scores 2,2,0,1 -> rank 4 of 4 (pct 1)
    after (mask: the user's remaining training items u0 {0}, u1 {1}, u2 {2}):
      (0,2): candidates {1,2,3,4} scores 4,3,2,1 -> rank 2 of 4 (pct 1/3)
      (0,4): same candidates -> rank 4 of 4 (pct 1)
      (1,4): candidates {0,2,3,4} scores 1,3,4,-1 -> rank 4 of 4 (pct 1)
      (2,3): candidates {0,1,3,4} scores 2,2,5,1 -> rank 1 of 4 (pct 0)
    """
    data = _inter(3, 5, TRAIN)
    g = Graph(data.train, 3, 5)
    before = (torch.from_numpy(S_BEFORE), torch.eye(5))
    after = (torch.from_numpy(S_AFTER), torch.eye(5))
    req = DeletionRequest.from_pairs(g, REQUEST)
    rep = forgetting_report(before, g, after, None, req, data, n_samples=4, per_edge=True, batch_size=batch_size)
    pe = rep["per_edge"]
    assert pe["edges"].tolist() == REQUEST
    assert pe["rank_before"].tolist() == [2, 3, 1, 4]
    assert pe["n_candidates_before"].tolist() == [3, 3, 4, 4]
    assert pe["percentile_before"] == pytest.approx([0.5, 1.0, 0.0, 1.0])
    assert pe["rank_after"].tolist() == [2, 4, 4, 1]
    assert pe["n_candidates_after"].tolist() == [4, 4, 4, 4]
    assert pe["percentile_after"] == pytest.approx([1 / 3, 1.0, 1.0, 0.0])
    assert rep["rank"]["before"] == pytest.approx(
        {"mean": 2.5, "median": 2.5, "mean_percentile": 0.625, "median_percentile": 0.75}
    )
    assert rep["rank"]["after"] == pytest.approx(
        {"mean": 2.75, "median": 3.0, "mean_percentile": (1 / 3 + 2) / 4, "median_percentile": 2 / 3}
    )
    assert pe["score_before"].tolist() == [3, 1, 5, 0] and pe["score_after"].tolist() == [3, 1, -1, 5]


def test_item_ranks_ties_and_no_mask() -> None:
    u, i = torch.from_numpy(S_BEFORE), torch.eye(5)
    # u2 scores [2, 2, 9, 0, 1]: item 0 ties with item 1 (ties count in its favour) -> rank 2
    ranks, n_cand = item_ranks(u, i, [[2, 0], [2, 1], [2, 2], [2, 3], [0, 0]])
    assert ranks.tolist() == [2, 2, 1, 5, 1] and n_cand.tolist() == [5] * 5
    empty = item_ranks(u, i, np.zeros((0, 2)))
    assert len(empty[0]) == 0


# --------------------------------------------------------------------------- sampling
def test_random_non_edges() -> None:
    data = make_synthetic(n_users=30, n_items=20, n_communities=2, mean_degree=6, seed=1)
    known = pair_keys(np.concatenate([data.train, data.valid, data.test]), data.n_items)
    req = np.array([[0, 0], [1, 1]])
    ne = random_non_edges(data, 200, seed=0, exclude=req)
    keys = pair_keys(ne, data.n_items)
    assert ne.shape == (200, 2) and len(np.unique(keys)) == 200 and np.all(np.diff(keys) > 0)
    assert not np.isin(keys, known).any() and not np.isin(keys, pair_keys(req, data.n_items)).any()
    assert np.array_equal(ne, random_non_edges(data, 200, seed=0, exclude=req))
    assert not np.array_equal(ne, random_non_edges(data, 200, seed=1, exclude=req))
    free = data.n_users * data.n_items - len(np.unique(known))
    everything = random_non_edges(data, free, seed=0)  # dense path: all free pairs
    assert len(everything) == free
    with pytest.raises(ValueError, match="free pairs"):
        random_non_edges(data, free + 1)
    # a Graph counts only its edges as known; a request object can be excluded
    g = Graph(data.train, data.n_users, data.n_items)
    r = DeletionRequest.random_edges(g, count=3)
    ne_g = random_non_edges(g, 100, seed=2, exclude=[r, req])
    assert not g.contains(ne_g).any()
    assert len(random_non_edges(g, 0)) == 0


# --------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def setup():
    data = make_synthetic(n_users=40, n_items=30, n_communities=3, mean_degree=6, seed=4)
    g = Graph(data.train, data.n_users, data.n_items)
    torch.manual_seed(0)
    model = build_model(data.n_users, data.n_items, ModelConfig(name="lightgcn", embedding_size=8, n_layers=2))
    return data, g, model


def test_score_stats_and_pair_scores(setup) -> None:
    data, g, model = setup
    pairs = g.edges[:10]
    u, i = model.embeddings(g)
    expected = (u[pairs[:, 0]] * i[pairs[:, 1]]).sum(-1).double().numpy()
    assert pair_scores(model, g, pairs) == pytest.approx(expected, rel=1e-5)
    assert pair_scores((u, i), None, pairs) == pytest.approx(expected, rel=1e-5)
    st = score_stats(model, g, pairs)
    assert st["n"] == 10 and st["mean"] == pytest.approx(expected.mean(), rel=1e-5)
    assert st["sigmoid_mean"] == pytest.approx(np.mean(1 / (1 + np.exp(-expected))), rel=1e-5)
    assert st["min"] <= st["median"] <= st["max"]
    assert math.isnan(score_stats(model, g, np.zeros((0, 2)))["mean"])
    with pytest.raises(ValueError, match="e0"):
        pair_scores((u, i), None, pairs, e0=torch.zeros(1))


def test_same_backbone_with_replacement_table(setup) -> None:
    """model_after=None: the same backbone, evaluated with e0_after over the residual graph."""
    data, g, model = setup
    req = DeletionRequest.random_edges(g, 0.1, seed=0)
    res = req.residual(g)
    e0_after = model.embedding.detach() * 0.5 + 0.01
    rep = forgetting_report(model, g, None, None, req, data, n_samples=50, e0_after=e0_after)
    after = pair_scores(model, res, req.edges, e0=e0_after)
    assert rep["score"]["request"]["after"]["mean"] == pytest.approx(after.mean(), rel=1e-5)
    before = pair_scores(model, g, req.edges)
    assert rep["score"]["request"]["before"]["mean"] == pytest.approx(before.mean(), rel=1e-5)
    # identical before/after -> MI-BF = 1 and equal rank summaries only when nothing changes
    same = forgetting_report(model, g, model, g, req, data, n_samples=50)
    assert same["mi_bf"] == pytest.approx(1.0)
    assert same["mi_ng"] == pytest.approx(same["mi_ng_before"])
    # the seed fixes the samples: same seed, same non-edge statistics
    again = forgetting_report(model, g, None, None, req, data, n_samples=50, e0_after=e0_after)
    assert again["score"]["non_edges"] == rep["score"]["non_edges"]
    assert "per_edge" not in rep and "rank" in rep
    assert "rank" not in forgetting_report(model, g, None, None, req, data, n_samples=5, ranks=False)


def test_report_rejects_bad_input(setup) -> None:
    data, g, model = setup
    res = DeletionRequest.random_edges(g, count=5).residual(g)
    missing = np.setdiff1d(g.keys, res.keys)
    pairs = np.stack([missing // g.n_items, missing % g.n_items], axis=1)
    with pytest.raises(ValueError, match="not edges of graph_before"):
        forgetting_report(model, res, None, None, pairs, data)
    with pytest.raises(ValueError, match="empty"):
        forgetting_report(model, g, None, None, np.zeros((0, 2)), data)
    with pytest.raises(ValueError, match="request_edges"):
        forgetting_report(model, g, None, None, None, data)
