"""BPR sampling: positives drawn per user."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnrec.sampling import BPRSampler


def test_positives_are_uniform_over_each_users_items():
    pairs = np.array([[0, 1], [0, 4], [0, 7], [2, 3]])
    sampler = BPRSampler(pairs, n_items=8)
    rng = np.random.default_rng(0)
    users = np.array([0] * 3000 + [2] * 10)
    items = sampler.positives(users, rng)
    assert sampler.is_positive(users, items).all()
    counts = np.bincount(items[:3000], minlength=8)[[1, 4, 7]]
    assert counts.sum() == 3000 and counts.min() > 900  # each of user 0's three items about a third of the time
    assert (items[3000:] == 3).all()
    with pytest.raises(ValueError, match=r"users without positive pairs: \[1\]"):
        sampler.positives(np.array([0, 1]), rng)
