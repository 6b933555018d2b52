"""Per-user validation carve and single-file splits: counts, determinism, disjointness."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnrec.data.interactions import Interactions, pair_keys
from unlearnrec.data.splits import carve_validation, split_labels, split_per_user


def _toy(degrees: list[int], n_items: int = 50, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    pairs = np.concatenate(  # item n_items - 1 is kept for the one test pair
        [np.stack([np.full(d, u), rng.choice(n_items - 1, d, replace=False)], 1) for u, d in enumerate(degrees)]
    )
    n = len(degrees)
    return Interactions(
        name="toy",
        n_users=n,
        n_items=n_items,
        train=pairs,
        valid=None,
        test=np.array([[0, n_items - 1]]),
        user_ids=np.arange(n).astype(str),
        item_ids=np.arange(n_items).astype(str),
    )


def test_carve_counts_and_disjoint() -> None:
    degrees = [1, 2, 4, 5, 10, 14, 15, 30]
    d = _toy(degrees)
    c = carve_validation(d, 0.1, seed=7)
    n_valid = np.bincount(c.valid[:, 0], minlength=len(degrees))
    # round half up of 10 %, capped so every user keeps one training pair
    assert n_valid.tolist() == [0, 0, 0, 1, 1, 1, 2, 3]
    assert np.bincount(c.train[:, 0], minlength=len(degrees)).min() >= 1
    before = set(pair_keys(d.train, d.n_items).tolist())
    tr, va = set(pair_keys(c.train, d.n_items).tolist()), set(pair_keys(c.valid, d.n_items).tolist())
    assert tr | va == before and not (tr & va)
    assert np.array_equal(c.test, d.test)


def test_carve_deterministic_and_seeded() -> None:
    d = _toy([20] * 30)
    a, b = carve_validation(d, 0.2, seed=1), carve_validation(d, 0.2, seed=1)
    assert a.fingerprint() == b.fingerprint()
    assert carve_validation(d, 0.2, seed=2).fingerprint() != a.fingerprint()
    assert len(a.valid) == 30 * 4


def test_carve_edge_cases() -> None:
    d = _toy([3, 3])
    assert carve_validation(d, 0.0) is d
    big = carve_validation(d, 0.9)  # capped: one pair stays in train
    assert np.bincount(big.train[:, 0]).tolist() == [1, 1]
    with pytest.raises(ValueError):
        carve_validation(d, 1.0)
    with pytest.raises(ValueError, match="already has a validation split"):
        carve_validation(big, 0.1)


def test_split_per_user_counts() -> None:
    users = np.repeat(np.arange(4), [1, 2, 10, 25])
    pairs = np.stack([users, np.arange(len(users))], 1)
    tr, va, te = split_per_user(pairs, (0.8, 0.1, 0.1), seed=0)
    count = lambda p: np.bincount(p[:, 0], minlength=4).tolist()  # noqa: E731
    assert count(tr) == [1, 2, 8, 20]
    assert count(va) == [0, 0, 1, 3]  # cumulative rounding: round(22.5) - 20
    assert count(te) == [0, 0, 1, 2]
    assert len(tr) + len(va) + len(te) == len(pairs)
    # two ratios mean (train, test)
    tr2, va2, te2 = split_per_user(pairs, (0.5, 0.5), seed=0)
    assert len(va2) == 0 and count(te2) == [0, 1, 5, 12]


def test_split_per_user_deterministic_temporal_and_errors() -> None:
    users = np.repeat(np.arange(50), 10)
    pairs = np.stack([users, np.tile(np.arange(10), 50)], 1)
    a = split_labels(pairs[:, 0], seed=3)
    assert np.array_equal(a, split_labels(pairs[:, 0], seed=3))
    assert not np.array_equal(a, split_labels(pairs[:, 0], seed=4))
    ts = pairs[:, 1].astype(float)  # item index doubles as time
    tr, va, te = split_per_user(pairs, (0.8, 0.1, 0.1), seed=0, timestamps=ts)
    assert set(te[:, 1].tolist()) == {9} and set(va[:, 1].tolist()) == {8} and tr[:, 1].max() == 7
    for bad in [(0.5,), (0.0, 1.0), (-0.1, 0.5, 0.6), (1, 1, 1, 1)]:
        with pytest.raises(ValueError):
            split_labels(users, bad)
    assert split_labels(np.zeros(0, dtype=np.int64)).shape == (0,)


def test_carve_scales_to_a_million_pairs() -> None:  # its speed: benchmarks/data_speed.py
    rng = np.random.default_rng(0)
    n = 1_000_000
    pairs = np.stack([np.sort(rng.integers(0, 30_000, n)), rng.integers(0, 40_000, n)], 1)
    d = Interactions(
        "big", 30_000, 40_000, pairs, None, None, np.arange(30_000).astype(str), np.arange(40_000).astype(str)
    )
    out = carve_validation(d, 0.1)
    assert len(out.train) + len(out.valid) == len(d.train) and 0.08 < len(out.valid) / len(d.train) < 0.12
