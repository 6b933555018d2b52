"""Retrain-anchored measures: Jaccard / JS on hand cases, rank percentiles shared with forgetting_report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearnrec.config import ModelConfig
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.evaluation import forgetting_report
from unlearnrec.evaluation.anchored import (
    aggregate_reports,
    anchored_report,
    floor_band,
    in_floor,
    noise_floor,
    pairwise_floor,
    softmax_js,
    spread,
    topk_jaccard,
)
from unlearnrec.graph import Graph
from unlearnrec.models import build_model


def _empty(n_users: int, n_items: int) -> Graph:
    return Graph(np.zeros((0, 2), np.int64), n_users, n_items)


def _random_emb(n_users: int, n_items: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_users, d, generator=g), torch.randn(n_items, d, generator=g)


@pytest.fixture(scope="module")
def small():
    data = make_synthetic(n_users=60, n_items=40, n_communities=3, mean_degree=10.0, seed=5)
    graph = Graph(data.train, data.n_users, data.n_items)
    rng = np.random.default_rng(0)
    req = graph.edges[np.sort(rng.choice(graph.n_edges, 25, replace=False))]
    return data, graph, req, graph.without(req)


# ------------------------------------------------------------------------------ Jaccard
def test_identical_models_give_jaccard_one_js_zero(small) -> None:
    data, _, req, residual = small
    emb = _random_emb(data.n_users, data.n_items, 8, 1)
    rep = anchored_report(emb, residual, emb, residual, req, data, per_user=True)
    assert rep["jaccard"] == 1.0
    assert rep["js"] == pytest.approx(0.0, abs=1e-12)
    assert rep["rank"]["percentile_diff"] == 0.0 and rep["rank"]["abs_percentile_diff"] == 0.0
    assert rep["n_users"] == len(np.unique(req[:, 0])) and rep["n_request"] == len(req)
    assert np.all(rep["per_user"]["jaccard"] == 1.0)


def test_disjoint_top_lists_give_jaccard_zero() -> None:
    # 3 users x 6 items, d = 1, user embeddings 1: model a ranks items 0-2 first, model b items 3-5
    ones = torch.ones(3, 1)
    a = (ones, torch.tensor([[6.0], [5.0], [4.0], [3.0], [2.0], [1.0]]))
    b = (ones, torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]))
    g = _empty(3, 6)
    assert topk_jaccard(a, g, b, g, [0, 1, 2], k=3).tolist() == [0.0, 0.0, 0.0]
    # k = 4: both lists share items 2 and 3 -> 2 / 6
    assert topk_jaccard(a, g, b, g, [0, 1, 2], k=4) == pytest.approx([1 / 3] * 3)
    # every item in both lists
    assert topk_jaccard(a, g, b, g, [0], k=6).tolist() == [1.0]


def test_jaccard_uses_each_models_own_mask() -> None:
    ones = torch.ones(1, 1)
    items = torch.tensor([[4.0], [3.0], [2.0], [1.0]])
    # a masks item 0 (top-2 = {1, 2}); b masks nothing (top-2 = {0, 1}) -> |{1}| / |{0, 1, 2}|
    ga, gb = Graph(np.array([[0, 0]]), 1, 4), _empty(1, 4)
    assert topk_jaccard((ones, items), ga, (ones, items), gb, [0], k=2) == pytest.approx([1 / 3])
    # a user with fewer candidates than k: lists are shorter; two empty lists count as identical
    gfull = Graph(np.array([[0, 0], [0, 1], [0, 2], [0, 3]]), 1, 4)
    assert topk_jaccard((ones, items), gfull, (ones, items), gfull, [0], k=2).tolist() == [1.0]
    assert topk_jaccard((ones, items), gfull, (ones, items), gb, [0], k=2).tolist() == [0.0]


def test_retained_jaccard_leaves_out_the_request_items_only() -> None:
    # scores = user row . one-hot item: 1 user x 6 items, request edge (0, 0)
    items = torch.eye(6)
    a = (torch.tensor([[9.0, 6.0, 5.0, 4.0, 3.0, 2.0]]), items)   # a lists the request item first
    b = (torch.tensor([[0.0, 6.0, 5.0, 4.0, 3.0, 2.0]]), items)   # b ranks it last, the rest as a does
    c = (torch.tensor([[0.0, 2.0, 3.0, 4.0, 5.0, 6.0]]), items)   # c reverses the retained items
    g, req = _empty(1, 6), np.array([[0, 0]])
    ab = anchored_report(a, g, b, g, req, k=2)
    assert ab["jaccard"] == pytest.approx(1 / 3)       # {0, 1} vs {1, 2}
    assert ab["jaccard_retained"] == 1.0               # {1, 2} vs {1, 2}: only the request item moved
    ac = anchored_report(a, g, c, g, req, k=2)
    assert ac["jaccard_retained"] == 0.0               # {1, 2} vs {5, 4}: the retained order differs
    assert anchored_report(b, g, b, g, req, k=2)["jaccard_retained"] == 1.0
    # one of the models already masks the request edge in its own graph (the original served on its graph)
    assert anchored_report(a, Graph(req, 1, 6), b, g, req, k=2)["jaccard_retained"] == 1.0
    assert "jaccard_retained" in aggregate_reports([ab, ac])


# ----------------------------------------------------------------------------------- JS
def _js_by_hand(p: list[float], q: list[float]) -> float:
    total = 0.0
    for pi, qi in zip(p, q, strict=True):
        m = 0.5 * (pi + qi)
        if pi > 0:
            total += 0.5 * pi * math.log(pi / m)
        if qi > 0:
            total += 0.5 * qi * math.log(qi / m)
    return total


def test_js_on_a_hand_computed_two_user_three_item_case() -> None:
    """2 users x 3 items, d = 1.

    model a: user values [1, 2], item values [0, 1, 2] -> scores u0 [0, 1, 2], u1 [0, 2, 4];
    graph a masks (1, 0), so u1's candidates under a are items 1, 2.
    model b: user values [1, 1], item values [1, 1, 0] -> scores [1, 1, 0] for both; no mask.
    """
    a = (torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [1.0], [2.0]]))
    b = (torch.tensor([[1.0], [1.0]]), torch.tensor([[1.0], [1.0], [0.0]]))
    ga, gb = Graph(np.array([[1, 0]]), 2, 3), _empty(2, 3)
    e = math.e
    za = 1 + e + e**2
    p0 = [1 / za, e / za, e**2 / za]
    zb = 2 * e + 1
    q = [e / zb, e / zb, 1 / zb]
    z1 = e**2 + e**4
    p1 = [0.0, e**2 / z1, e**4 / z1]
    expected = [_js_by_hand(p0, q), _js_by_hand(p1, q)]
    got = softmax_js(a, ga, b, gb, [0, 1])
    assert got == pytest.approx(expected, rel=1e-10)
    assert all(0 < x < math.log(2) for x in got)
    # symmetric, and temperature T divides the scores
    assert softmax_js(b, gb, a, ga, [0, 1]) == pytest.approx(expected, rel=1e-10)
    half = (a[0] / 2, a[1]), (b[0] / 2, b[1])
    assert softmax_js(a, ga, b, gb, [0, 1], temperature=2.0) == pytest.approx(
        softmax_js(half[0], ga, half[1], gb, [0, 1]), rel=1e-10
    )


def test_js_disjoint_supports_reach_ln2_and_empty_user_is_nan() -> None:
    ones = torch.ones(1, 1)
    items = torch.zeros(2, 1)
    ga, gb = Graph(np.array([[0, 0]]), 1, 2), Graph(np.array([[0, 1]]), 1, 2)
    assert softmax_js((ones, items), ga, (ones, items), gb, [0]) == pytest.approx([math.log(2)])
    gfull = Graph(np.array([[0, 0], [0, 1]]), 1, 2)
    assert np.isnan(softmax_js((ones, items), gfull, (ones, items), gb, [0])).all()


# ------------------------------------------------------------------------------- report
def test_report_ranks_match_forgetting_report(small) -> None:
    data, graph, req, residual = small
    before = _random_emb(data.n_users, data.n_items, 8, 2)
    unl = _random_emb(data.n_users, data.n_items, 8, 3)
    ref = _random_emb(data.n_users, data.n_items, 8, 4)
    rep = anchored_report(unl, residual, ref, residual, req, data, per_edge=True, batch_size=7)
    fr_u = forgetting_report(before, graph, unl, residual, req, data, n_samples=50, per_edge=True)
    fr_r = forgetting_report(before, graph, ref, residual, req, data, n_samples=50, per_edge=True)
    pe = rep["per_edge"]
    assert np.array_equal(pe["rank_unlearned"], fr_u["per_edge"]["rank_after"])
    assert np.array_equal(pe["rank_reference"], fr_r["per_edge"]["rank_after"])
    assert rep["rank"]["unlearned"] == fr_u["rank"]["after"]
    assert rep["rank"]["percentile_diff"] == pytest.approx(
        fr_u["rank"]["after"]["mean_percentile"] - fr_r["rank"]["after"]["mean_percentile"]
    )
    assert rep["score"]["unlearned"]["mean"] == pytest.approx(fr_u["score"]["request"]["after"]["mean"])
    assert 0.0 <= rep["jaccard"] < 1.0 and 0.0 < rep["js"] < math.log(2)


def test_batching_and_user_subset_do_not_change_values(small) -> None:
    data, graph, req, residual = small
    a = _random_emb(data.n_users, data.n_items, 8, 5)
    b = _random_emb(data.n_users, data.n_items, 8, 6)
    r1 = anchored_report(a, residual, b, graph, req, per_user=True, batch_size=1)
    r2 = anchored_report(a, residual, b, graph, req, per_user=True, batch_size=1000)
    for key in ("jaccard", "js"):
        assert r1["per_user"][key] == pytest.approx(r2["per_user"][key], rel=1e-9)
    users = r1["per_user"]["users"][:3]
    r3 = anchored_report(a, residual, b, graph, req, users=users, per_user=True)
    assert r3["per_user"]["jaccard"] == pytest.approx(r1["per_user"]["jaccard"][:3])
    assert r3["n_users"] == 3


def test_noise_floor_with_backbones(small) -> None:
    data, _, req, residual = small
    cfg = ModelConfig(name="lightgcn", embedding_size=8, n_layers=2)
    m1 = build_model(data.n_users, data.n_items, cfg)
    m2 = build_model(data.n_users, data.n_items, cfg)
    m1.reset_parameters(torch.Generator().manual_seed(1))
    m2.reset_parameters(torch.Generator().manual_seed(2))
    same = anchored_report(m1, residual, m1, residual, req, data, k=10)
    assert same["jaccard"] == 1.0 and same["js"] == pytest.approx(0.0, abs=1e-12)
    floor = noise_floor(m1, residual, m2, residual, req, data, k=10)
    assert floor["noise_floor"] is True
    assert floor["jaccard"] < 1.0 and floor["js"] > 0.0 and floor["k"] == 10


def test_report_validation(small) -> None:
    data, _, req, residual = small
    a = _random_emb(data.n_users, data.n_items, 4, 0)
    with pytest.raises(ValueError, match="empty"):
        anchored_report(a, residual, a, residual, np.zeros((0, 2)), data)
    with pytest.raises(ValueError, match="different sizes"):
        anchored_report(a, residual, (a[0], a[1][:-1]), None, req)
    with pytest.raises(ValueError, match="temperature"):
        anchored_report(a, residual, a, residual, req, temperature=0.0)


# ------------------------------------------------------------------------------ several references
def test_spread_and_aggregate_reports() -> None:
    sp_ = spread([0.5, None, 0.7, float("nan"), 0.6])
    assert sp_["n"] == 3 and sp_["mean"] == pytest.approx(0.6) and sp_["sd"] == pytest.approx(0.1)
    assert (sp_["min"], sp_["max"]) == (0.5, 0.7)
    assert spread([0.4])["sd"] is None and spread([])["mean"] is None
    reports = [{"jaccard": 0.2, "js": 0.1, "rank": {"percentile_diff": 0.05, "abs_percentile_diff": 0.1}},
               {"jaccard": 0.4, "js": 0.3, "rank": {"percentile_diff": -0.05, "abs_percentile_diff": 0.2}}]
    agg = aggregate_reports(reports)
    assert agg["jaccard"]["mean"] == pytest.approx(0.3) and agg["js"]["max"] == 0.3
    assert agg["percentile_diff"]["mean"] == pytest.approx(0.0) and agg["abs_percentile_diff"]["n"] == 2


def test_floor_band_and_verdict() -> None:
    floor = {"jaccard": spread([0.6, 0.62, 0.58]), "js": spread([0.01, 0.012, 0.011])}
    band = floor_band(floor)
    assert band["n_pairs"] == 3 and band["jaccard_low"] == pytest.approx(0.6 - 2 * 0.02)
    assert band["js_high"] == pytest.approx(0.011 + 2 * 0.001)
    assert in_floor(0.57, floor) is True and in_floor(0.55, floor) is False
    assert in_floor(0.55, band) is False and in_floor(0.57, floor_band(floor, z=1.0)) is False
    one_pair = {"jaccard": spread([0.6]), "js": spread([0.01])}
    assert floor_band(one_pair)["jaccard_low"] is None and in_floor(0.1, one_pair) is None
    assert in_floor(None, floor) is None and in_floor(0.5, None) is None


def test_pairwise_floor_of_three_retrains(small) -> None:
    data, _, req, residual = small
    embs = [(_random_emb(data.n_users, data.n_items, 8, s), residual) for s in (1, 2, 3)]
    floor = pairwise_floor(embs, req, data, k=10)
    assert floor["pairs"] == [(0, 1), (0, 2), (1, 2)] and floor["n_pairs"] == 3
    direct = [anchored_report(embs[i][0], residual, embs[j][0], residual, req, data, 10)["jaccard"]
              for i, j in floor["pairs"]]
    assert floor["jaccard"]["mean"] == pytest.approx(np.mean(direct))
    assert floor["jaccard"]["sd"] == pytest.approx(np.std(direct, ddof=1))
    assert floor["band"]["jaccard_low"] == pytest.approx(floor["jaccard"]["mean"] - 2 * floor["jaccard"]["sd"])
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_floor(embs[:1], req, data)
