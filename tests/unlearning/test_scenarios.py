"""The adversarial protocol: argmin injections, never colliding with known pairs, and the attacked data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.config import ModelConfig, TrainConfig
from unlearnrec.data.interactions import Interactions, pair_keys
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.evaluation import forgetting_report
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import Trainer
from unlearnrec.unlearning import (
    DeletionRequest,
    ScenarioError,
    adversarial_edges,
    adversarial_scenario,
    attacked_dataset,
)


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


def _brute_force(scores: np.ndarray, known: np.ndarray) -> set[tuple[int, int]]:
    s = scores.astype(np.float64).copy()
    s[known[:, 0], known[:, 1]] = np.inf
    out = set()
    for u in range(s.shape[0]):
        if np.isfinite(s[u]).any():
            out.add((u, int(np.argmin(s[u]))))
    for i in range(s.shape[1]):
        if np.isfinite(s[:, i]).any():
            out.add((int(np.argmin(s[:, i])), i))
    return out


def test_hand_built_argmin() -> None:
    """3 users x 4 items, item_emb = I, so user_emb rows are the score rows.

    scores        i0   i1   i2   i3      known pairs (train/valid/test)
      u0          5    -1    2    0      u0: i1 (train)         -> u0 picks i3 (0)
      u1          1     3   -2    4      u1: i2 (valid)         -> u1 picks i0 (1)
      u2         -3     2    1    9      u2: i0 (test)          -> u2 picks i2 (1)
    items: i0 -> min over u0(5), u1(1) -> u1; i1 -> u1(3), u2(2) -> u2;
           i2 -> u0(2), u2(1) -> u2; i3 -> u0(0) -> u0.
    """
    s = np.array([[5, -1, 2, 0], [1, 3, -2, 4], [-3, 2, 1, 9]], dtype=np.float32)
    data = _inter(3, 4, [[0, 1]], valid=[[1, 2]], test=[[2, 0]])
    emb = (torch.from_numpy(s), torch.eye(4))
    got = adversarial_edges(emb, None, data)
    expected = [[0, 3], [1, 0], [2, 1], [2, 2]]
    assert got.tolist() == expected  # sorted unique; (u2, i2) chosen by both sides appears once
    assert got.dtype == np.int64
    # a user who already interacted with every item gets no user-side pair
    full = _inter(2, 2, [[0, 0], [0, 1]])
    got = adversarial_edges((torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.eye(2)), None, full)
    assert got.tolist() == [[1, 0], [1, 1]]  # u1 picks i0; both items pick u1 (u0 has them all)


@pytest.fixture(scope="module")
def syn() -> Interactions:
    return make_synthetic(n_users=60, n_items=45, n_communities=3, mean_degree=8, seed=2)


@pytest.fixture(scope="module")
def untrained(syn: Interactions):
    torch.manual_seed(0)
    return build_model(syn.n_users, syn.n_items, ModelConfig(name="lightgcn", embedding_size=8, n_layers=2))


def test_matches_brute_force_and_avoids_known_pairs(syn: Interactions, untrained) -> None:
    g = Graph(syn.train, syn.n_users, syn.n_items)
    u, i = untrained.embeddings(g)
    scores = (u @ i.T).numpy()
    known = np.concatenate([syn.train, syn.valid, syn.test])
    got = adversarial_edges(untrained, g, syn, batch_size=7)  # several user and item batches
    assert {tuple(p) for p in got.tolist()} == _brute_force(scores, known)
    assert not np.isin(pair_keys(got, syn.n_items), pair_keys(known, syn.n_items)).any()
    assert set(got[:, 0]) == set(range(syn.n_users)) and set(got[:, 1]) == set(range(syn.n_items))
    assert np.array_equal(got, np.unique(got, axis=0))
    assert np.array_equal(adversarial_edges(untrained, None, syn, batch_size=1000), got)


def test_ratio_subset(syn: Interactions, untrained) -> None:
    full = {tuple(p) for p in adversarial_edges(untrained, None, syn).tolist()}
    half = adversarial_edges(untrained, None, syn, ratio=0.5, seed=3)
    halfset = {tuple(p) for p in half.tolist()}
    assert halfset <= full  # same argmins, fewer injectors
    assert max(30, 22) <= len(half) <= 30 + 22 < len(full)
    assert np.array_equal(adversarial_edges(untrained, None, syn, ratio=0.5, seed=3), half)
    assert not np.array_equal(adversarial_edges(untrained, None, syn, ratio=0.5, seed=4), half)
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ScenarioError):
            adversarial_edges(untrained, None, syn, ratio=bad)


def test_attacked_dataset() -> None:
    data = _inter(3, 4, [[0, 1], [1, 1]], valid=[[1, 2]], test=[[2, 0]])
    att = attacked_dataset(data, [[0, 3], [2, 2], [0, 3]])
    assert att.train.tolist() == [[0, 1], [1, 1], [0, 3], [2, 2]]
    assert np.array_equal(att.valid, data.valid) and np.array_equal(att.test, data.test)
    assert att.name == "hand-attacked" and att.fingerprint() != data.fingerprint()
    with pytest.raises(ScenarioError, match=r"collide with test pairs of hand: \(2, 0\)"):
        attacked_dataset(data, [[0, 3], [2, 0]])
    with pytest.raises(ScenarioError, match="collide with valid"):
        attacked_dataset(data, [[1, 2]])
    with pytest.raises(ScenarioError, match="collide with train"):
        attacked_dataset(data, [[0, 1]])
    with pytest.raises(ScenarioError, match="outside"):
        attacked_dataset(data, [[3, 0]])
    with pytest.raises(ScenarioError, match="no injected"):
        attacked_dataset(data, [])


def test_scenario_request(syn: Interactions, untrained) -> None:
    sc = adversarial_scenario(untrained, syn, ratio=0.5, seed=1)
    assert isinstance(sc.request, DeletionRequest) and sc.request.kind == "adversarial"
    assert sc.graph.contains(sc.injected).all()
    clean = Graph(syn.train, syn.n_users, syn.n_items)
    assert np.array_equal(sc.request.residual(sc.graph).keys, clean.keys)
    assert len(sc.data.train) == len(syn.train) + len(sc.injected)


def test_protocol_end_to_end() -> None:
    """Clean model -> inject -> model trained on the attacked graph fits the injections; the clean model
    (what retraining on the residual graph approximates) scores them below random non-edges."""
    data = make_synthetic(n_users=80, n_items=50, n_communities=3, mean_degree=8, seed=5)
    cfg = TrainConfig(epochs=15, batch_size=1024, learning_rate=0.05, patience=100, eval_every=15, ks=[20])

    def train(d: Interactions):
        torch.manual_seed(0)
        m = build_model(d.n_users, d.n_items, ModelConfig(name="lightgcn", embedding_size=16, n_layers=2))
        t = Trainer(m, d, cfg, progress=False)
        t.fit()
        return m

    clean = train(data)
    sc = adversarial_scenario(clean, data)
    attacked = train(sc.data)
    rep = forgetting_report(attacked, sc.graph, clean, None, sc.request, sc.data, n_samples=2000)
    assert rep["score"]["request"]["before"]["mean"] > rep["score"]["non_edges"]["before"]["mean"]
    assert rep["score"]["request"]["after"]["mean"] < rep["score"]["non_edges"]["after"]["mean"]
    assert rep["mi_ng"] > 1.0 > rep["mi_ng_before"] and rep["mi_bf"] > 1.0
    assert rep["rank"]["after"]["mean_percentile"] > rep["rank"]["before"]["mean_percentile"]
