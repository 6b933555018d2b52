"""The synthetic generator: seeded, well-formed, long-tailed, and with learnable structure."""

from __future__ import annotations

import time

import numpy as np
import pytest

from unlearnrec.data.interactions import Interactions, pair_keys, user_item_matrix
from unlearnrec.data.synthetic import make_synthetic


def _recall_at(scores: np.ndarray, d: Interactions, k: int = 20) -> float:
    seen = user_item_matrix(d.train, d.n_users, d.n_items).toarray() > 0
    top = np.argsort(-np.where(seen, -np.inf, scores), axis=1)[:, :k]
    truth = user_item_matrix(d.test, d.n_users, d.n_items).toarray()
    hits = np.take_along_axis(truth, top, axis=1).sum(1)
    n = truth.sum(1)
    has = n > 0
    return float((hits[has] / np.minimum(n[has], k)).mean())


@pytest.fixture(scope="module")
def synth() -> Interactions:
    return make_synthetic()


def test_default_shape_and_speed() -> None:
    t = time.perf_counter()
    d = make_synthetic()
    assert time.perf_counter() - t < 1.0
    assert (d.n_users, d.n_items, d.name) == (600, 400, "synthetic")
    total = len(d.train) + len(d.valid) + len(d.test)
    assert 10_000 < total < 14_000
    assert abs(len(d.test) / total - 0.2) < 0.02 and abs(len(d.valid) / total - 0.1) < 0.02


def test_seeded(synth: Interactions) -> None:
    assert make_synthetic().fingerprint() == synth.fingerprint()
    assert make_synthetic(seed=1).fingerprint() != synth.fingerprint()


def test_well_formed(synth: Interactions) -> None:
    keys = [pair_keys(s, synth.n_items) for s in (synth.train, synth.valid, synth.test)]
    allk = np.concatenate(keys)
    assert len(np.unique(allk)) == len(allk)  # no duplicates, no overlap between splits
    degree = np.bincount(allk // synth.n_items, minlength=synth.n_users)
    assert degree.min() >= 5
    assert np.bincount(synth.train[:, 0], minlength=synth.n_users).min() >= 1
    assert np.bincount(synth.test[:, 0], minlength=synth.n_users).min() >= 1


def test_long_tail(synth: Interactions) -> None:
    deg = np.sort(np.bincount(synth.train[:, 1], minlength=synth.n_items))[::-1]
    assert deg[: synth.n_items // 10].sum() > 0.3 * deg.sum()  # top 10 % of items hold > 30 %


def test_structure_is_learnable(synth: Interactions) -> None:
    """Item-kNN (a stand-in for any collaborative model) clearly beats popularity."""
    r = user_item_matrix(synth.train, synth.n_users, synth.n_items).toarray()
    pop = np.broadcast_to(r.sum(0), r.shape)
    norm = r / np.maximum(np.linalg.norm(r, axis=0), 1e-9)
    sim = norm.T @ norm
    np.fill_diagonal(sim, 0.0)
    rec_pop, rec_knn = _recall_at(pop, synth), _recall_at(r @ sim, synth)
    assert rec_knn > 1.5 * rec_pop


def test_options_and_errors() -> None:
    d = make_synthetic(n_users=50, n_items=30, n_communities=1, mean_degree=8, ratios=(0.8, 0.2), seed=3, name="s")
    assert (d.n_users, d.n_items, d.name, len(d.valid)) == (50, 30, "s", 0)
    for bad in [dict(n_items=1), dict(n_communities=0), dict(in_community=1.0)]:
        with pytest.raises(ValueError):
            make_synthetic(**bad)
