"""Tests for unlearnrec.evaluation.ranking (full-ranking top-K metrics)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from unlearnrec.data import user_item_matrix
from unlearnrec.evaluation import RankingResult, evaluate_ranking, evaluate_scores

L3 = 1.0 / math.log2(3)  # discount of rank 2  = 0.630930
L4 = 1.0 / math.log2(4)  # discount of rank 3  = 0.5
L5 = 1.0 / math.log2(5)  # discount of rank 4  = 0.430677


# --------------------------------------------------------------- hand example
def _hand_case():
    """4 users x 5 items; scores are given exactly (item_emb = identity).

    u0 scores [.9 .8 .7 .6 .5] -> ranking 0,1,2,3,4 ; truth {1, 3} (ranks 2 and 4)
    u1 scores [.1 .5 .9 .3 .7] -> ranking 2,4,1,3,0 ; truth {0}    (rank 5)
    u2 scores [10 .2 .4 .6 .8], item 0 is a training item (masked, despite the
       huge score) -> ranking 4,3,2,1 ; truth {3} (rank 2)
    u3 has no truth item -> skipped.
    """
    S = np.array(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5],
            [0.1, 0.5, 0.9, 0.3, 0.7],
            [10.0, 0.2, 0.4, 0.6, 0.8],
            [0.5, 0.4, 0.3, 0.2, 0.1],
        ],
        dtype=np.float32,
    )
    truth = user_item_matrix(np.array([[0, 1], [0, 3], [1, 0], [2, 3]]), 4, 5)
    exclude = user_item_matrix(np.array([[2, 0]]), 4, 5)
    return torch.from_numpy(S), torch.eye(5), truth, exclude


def test_hand_computed():
    U, I, truth, exclude = _hand_case()
    res = evaluate_ranking(U, I, truth, exclude, ks=(2, 4))
    assert isinstance(res, RankingResult)
    assert res.n_users == 3
    assert res.users.tolist() == [0, 1, 2]

    # u0, K=2: top [0,1], 1 hit at rank 2.
    #   recall 1/2, precision 1/2, hit 1, DCG = 1/log2(3) = .63093,
    #   IDCG over min(|T|=2, 2)=2 ideal hits = 1 + 1/log2(3) = 1.63093 -> ndcg .38685
    # u0, K=4: top [0,1,2,3], hits at ranks 2 and 4.
    #   recall 1, precision 2/4, hit 1, DCG = .63093 + .43068 = 1.06161,
    #   IDCG = 1.63093 -> ndcg .65092
    # u1: its only truth item is ranked 5th -> every metric 0 for K=2 and K=4.
    # u2: item 0 masked; ranking 4,3,2,1, truth item 3 at rank 2.
    #   K=2: recall 1, precision 1/2, hit 1, DCG .63093, IDCG over min(1,2)=1 -> 1 -> ndcg .63093
    #   K=4: recall 1, precision 1/4, hit 1, ndcg .63093
    u0_ndcg2 = L3 / (1 + L3)
    u0_ndcg4 = (L3 + L5) / (1 + L3)
    u2_ndcg = L3
    assert u0_ndcg2 == pytest.approx(0.386853, abs=1e-6)
    assert u0_ndcg4 == pytest.approx(0.650921, abs=1e-6)

    per = res.per_user
    np.testing.assert_allclose(per["recall@2"], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(per["precision@2"], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(per["hit@2"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(per["ndcg@2"], [u0_ndcg2, 0.0, u2_ndcg], rtol=1e-12)
    np.testing.assert_allclose(per["recall@4"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(per["precision@4"], [0.5, 0.0, 0.25])
    np.testing.assert_allclose(per["hit@4"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(per["ndcg@4"], [u0_ndcg4, 0.0, u2_ndcg], rtol=1e-12)

    m = res.metrics
    assert set(m) == {f"{n}@{k}" for n in ("recall", "ndcg", "precision", "hit") for k in (2, 4)}
    assert m["recall@2"] == pytest.approx(0.5)  # (0.5 + 0 + 1) / 3
    assert m["precision@2"] == pytest.approx(1 / 3)  # (0.5 + 0 + 0.5) / 3
    assert m["hit@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((0.386853 + 0.630930) / 3, abs=1e-6)
    assert m["recall@4"] == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3
    assert m["precision@4"] == pytest.approx(0.25)  # (0.5 + 0 + 0.25) / 3
    assert m["hit@4"] == pytest.approx(2 / 3)
    assert m["ndcg@4"] == pytest.approx((0.650921 + 0.630930) / 3, abs=1e-6)

    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert "per_user" not in d and d["n_users"] == 3 and d["metrics"]["hit@4"] == pytest.approx(2 / 3)
    assert res["recall@2"] == m["recall@2"]


def test_masking_training_item_with_huge_score_is_skipped():
    U, I, truth, exclude = _hand_case()
    masked = evaluate_ranking(U, I, truth, exclude, ks=(1,))
    unmasked = evaluate_ranking(U, I, truth, None, ks=(1,))
    # u2: with item 0 masked, top-1 is item 4 (a miss); the per-user rows are u0, u1, u2.
    assert masked.per_user["hit@1"].tolist() == [0.0, 0.0, 0.0]
    # Without the mask item 0 (score 10) is u2's top-1: still a miss, but
    # now making u2's truth item 3 rank 3 instead of 2.
    assert unmasked.per_user["ndcg@1"][2] == 0.0
    assert masked.per_user["ndcg@1"][2] == 0.0
    two = evaluate_ranking(U, I, truth, exclude, ks=(2,))
    two_nomask = evaluate_ranking(U, I, truth, None, ks=(2,))
    assert two.per_user["hit@2"][2] == 1.0  # item 3 reaches rank 2 only thanks to the mask
    assert two_nomask.per_user["hit@2"][2] == 0.0


def test_masked_item_never_counts_as_hit():
    # One user whose truth item is also masked and has by far the highest score.
    S = torch.tensor([[100.0, 1.0, 2.0, 3.0]])
    truth = user_item_matrix(np.array([[0, 0], [0, 2]]), 1, 4)
    exclude = user_item_matrix(np.array([[0, 0], [0, 1], [0, 3]]), 1, 4)
    # Unmasked items: only item 2 -> ranks 2..3 hold -inf (masked) items.
    res = evaluate_ranking(S, torch.eye(4), truth, exclude, ks=(1, 3, 10))
    assert res.per_user["hit@1"].tolist() == [1.0]  # item 2 at rank 1
    assert res.per_user["recall@3"].tolist() == [0.5]  # item 0 masked: |T|=2, 1 hit
    assert res.per_user["recall@10"].tolist() == [0.5]  # K > n_items works, masked never hits
    assert res.per_user["precision@10"].tolist() == [0.1]  # hits / K, not hits / n_items
    # Everything masked: no hits at all.
    all_ex = user_item_matrix(np.array([[0, j] for j in range(4)]), 1, 4)
    res = evaluate_ranking(S, torch.eye(4), truth, all_ex, ks=(1, 4))
    assert all(v == 0.0 for v in res.metrics.values())


def test_users_without_truth_are_skipped_and_users_subset():
    U, I, truth, exclude = _hand_case()
    res = evaluate_ranking(U, I, truth, exclude, ks=(2,), users=np.array([3, 2]))
    assert res.users.tolist() == [2] and res.n_users == 1
    assert res.metrics["recall@2"] == 1.0
    empty = evaluate_ranking(U, I, truth, exclude, ks=(2,), users=[3])
    assert empty.n_users == 0 and all(math.isnan(v) for v in empty.metrics.values())
    assert all(v is None for v in empty.to_dict()["metrics"].values())
    json.dumps(empty.to_dict(), allow_nan=False)


# ------------------------------------------------------------ random data
def _random_case(seed=0, n_users=150, n_items=80, d=8):
    rng = np.random.default_rng(seed)
    U = torch.from_numpy(rng.standard_normal((n_users, d)).astype(np.float32))
    I = torch.from_numpy(rng.standard_normal((n_items, d)).astype(np.float32))
    pairs = np.unique(
        np.stack([rng.integers(0, n_users, 3000), rng.integers(0, n_items, 3000)], 1), axis=0
    )
    rng.shuffle(pairs)
    cut = int(0.8 * len(pairs))
    train, test = pairs[:cut], pairs[cut:]
    test = test[test[:, 0] % 7 != 0]  # some users have no test items
    truth = user_item_matrix(test, n_users, n_items)
    exclude = user_item_matrix(train, n_users, n_items)
    return U, I, truth, exclude


def _naive(S, truth, exclude, ks):
    """Independent per-user loop: argsort every user's masked scores."""
    T = truth.toarray() > 0
    X = exclude.toarray() > 0
    out = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg", "precision", "hit")}
    users = []
    for u in range(S.shape[0]):
        rel_items = set(np.flatnonzero(T[u]).tolist())
        if not rel_items:
            continue
        users.append(u)
        s = S[u].astype(np.float64).copy()
        s[X[u]] = -np.inf
        order = [i for i in np.argsort(-s, kind="stable") if np.isfinite(s[i])]
        for k in ks:
            top = order[:k]
            rel = [1.0 if i in rel_items else 0.0 for i in top]
            hits = sum(rel)
            dcg = sum(r / math.log2(pos + 2) for pos, r in enumerate(rel))
            idcg = sum(1.0 / math.log2(pos + 2) for pos in range(min(len(rel_items), k)))
            out[f"recall@{k}"].append(hits / len(rel_items))
            out[f"precision@{k}"].append(hits / k)
            out[f"hit@{k}"].append(1.0 if hits > 0 else 0.0)
            out[f"ndcg@{k}"].append(dcg / idcg)
    return np.array(users), {key: np.array(v) for key, v in out.items()}


def test_against_naive_loop():
    U, I, truth, exclude = _random_case()
    ks = (1, 5, 10, 20)
    res = evaluate_ranking(U, I, truth, exclude, ks=ks, batch_size=32)
    users, ref = _naive((U @ I.T).numpy(), truth, exclude, ks)
    np.testing.assert_array_equal(res.users, users)
    assert res.n_users == len(users) < U.shape[0]
    for key, v in ref.items():
        np.testing.assert_allclose(res.per_user[key], v, atol=1e-12, err_msg=key)
        assert res.metrics[key] == pytest.approx(v.mean(), abs=1e-12)


def test_batch_size_does_not_change_results():
    U, I, truth, exclude = _random_case(seed=1)
    base = evaluate_ranking(U, I, truth, exclude, ks=(3, 10), batch_size=10_000)
    for bs in (1, 7, 64):
        r = evaluate_ranking(U, I, truth, exclude, ks=(3, 10), batch_size=bs)
        np.testing.assert_array_equal(r.users, base.users)
        assert r.metrics == base.metrics
        for key in base.per_user:
            np.testing.assert_array_equal(r.per_user[key], base.per_user[key])


def test_evaluate_scores_matches_and_does_not_mutate():
    U, I, truth, exclude = _random_case(seed=2)
    full = U @ I.T
    snapshot = full.clone()
    seen = []

    def score_fn(users: torch.Tensor) -> torch.Tensor:
        seen.append(len(users))
        return full[users]

    a = evaluate_scores(score_fn, truth, exclude, ks=(5, 10), batch_size=50)
    b = evaluate_ranking(U, I, truth, exclude, ks=(5, 10), batch_size=50)
    assert a.metrics == b.metrics
    assert max(seen) <= 50 and sum(seen) == a.n_users
    assert torch.equal(full, snapshot)


def test_masking_does_not_mutate_a_view_returned_by_score_fn():
    U, I, truth, exclude = _hand_case()
    cache = U @ I.T
    snapshot = cache.clone()
    # users 0..2 are contiguous, so the score function returns a *view* of the cache.
    res = evaluate_scores(lambda u: cache.narrow(0, int(u[0]), len(u)), truth, exclude, ks=(2,), users=[0, 1, 2])
    assert torch.equal(cache, snapshot)  # u2's masked item 0 still scores 10 in the cache
    assert res.metrics == evaluate_ranking(U, I, truth, exclude, ks=(2,)).metrics


def test_input_validation():
    U, I, truth, exclude = _hand_case()
    with pytest.raises(ValueError):
        evaluate_ranking(U, I, truth, exclude, ks=(0,))
    with pytest.raises(ValueError):
        evaluate_ranking(U[:3], I, truth, exclude)
    with pytest.raises(ValueError):
        evaluate_ranking(U, I, truth, exclude[:3])
    with pytest.raises(ValueError):
        evaluate_ranking(U, I, truth, exclude, users=[4])


# ------------------------------------------------------------- torch_geometric
def test_against_torch_geometric():
    pytest.importorskip("torch_geometric")
    from torch_geometric.metrics import (
        LinkPredHitRatio,
        LinkPredNDCG,
        LinkPredPrecision,
        LinkPredRecall,
    )

    U, I, truth, exclude = _random_case(seed=3, n_users=200, n_items=120)
    ks = (5, 10, 20)
    res = evaluate_ranking(U, I, truth, exclude, ks=ks, batch_size=64)

    # PyG ranks nothing itself: give it the masked top-k computed independently
    # here (numpy argsort), for *all* users (those without truth add 0 to its
    # sum and are excluded from its count, like ours).
    S = (U @ I.T).numpy().astype(np.float64)
    S[exclude.toarray() > 0] = -np.inf
    assert np.isfinite(np.sort(S, axis=1)[:, -max(ks):]).all()  # enough unmasked items
    top = torch.from_numpy(np.argsort(-S, axis=1, kind="stable")[:, : max(ks)].copy())
    coo = truth.tocoo()
    label_index = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))

    for k in ks:
        for name, cls in (("recall", LinkPredRecall), ("ndcg", LinkPredNDCG),
                          ("precision", LinkPredPrecision), ("hit", LinkPredHitRatio)):
            metric = cls(k=k)
            for lo in range(0, len(top), 50):  # several updates, as in a batched loop
                sel = (label_index[0] >= lo) & (label_index[0] < lo + 50)
                li = label_index[:, sel].clone()
                li[0] -= lo
                metric.update(top[lo : lo + 50, :k], li)
            theirs = float(metric.compute())
            assert res.metrics[f"{name}@{k}"] == pytest.approx(theirs, abs=1e-5), f"{name}@{k}"
