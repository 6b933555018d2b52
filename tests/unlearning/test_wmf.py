"""WMF by ALS (RecEraser's pre-trained embeddings): the vectorised solve against the textbook one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import small_synthetic_data
from unlearnrec.graph import Graph
from unlearnrec.unlearning.wmf import _objective, _solve_side, wmf_als


def test_als_half_sweep_is_the_weighted_least_squares_solution():
    """Each row solves min Σ_j c_rj (p_rj − xᵀy_j)² + λ‖x‖², c = 1 on observed pairs (p = 1) and c0 elsewhere
    (p = 0): x = (Yᵀ C_r Y + λI)⁻¹ Yᵀ C_r p_r, computed here row by row with dense matrices."""
    rng = np.random.default_rng(0)
    dense = (rng.random((37, 23)) < 0.2).astype(float)
    r = sp.csr_matrix(dense)
    y = rng.normal(0, 0.3, (23, 5))
    c0, lam = 0.2, 0.5
    got = _solve_side(r, y, c0, lam, rows_per_block=8, dims_per_block=2)  # blocks smaller than the sizes
    for row in range(37):
        c = np.where(dense[row] > 0, 1.0, c0)
        want = np.linalg.solve(y.T @ (c[:, None] * y) + lam * np.eye(5), y.T @ (c * dense[row]))
        np.testing.assert_allclose(got[row], want, rtol=1e-8, atol=1e-10)
    p = rng.normal(0, 0.3, (37, 5))
    full = (np.where(dense > 0, 1.0, c0) * (dense - p @ y.T) ** 2).sum() + lam * ((p**2).sum() + (y**2).sum())
    assert _objective(r, p, y, c0, lam) == pytest.approx(full)


def test_wmf_als_descends_and_keeps_the_best_validation_sweep():
    data = small_synthetic_data()
    g = Graph(data.train, data.n_users, data.n_items)
    w = wmf_als(g, 8, reg=0.1, iterations=6, data=data, seed=1)
    obj = [h["objective"] for h in w.history]
    assert all(b <= a + 1e-9 for a, b in zip(obj, obj[1:], strict=False))  # exact ALS never goes up
    valid = [h["valid"] for h in w.history]
    assert w.best_iteration == 1 + int(np.argmax(valid))
    assert max(valid) > 2 * 20 / data.n_items  # far better than random ranking
    assert w.user_emb.shape == (data.n_users, 8) and w.item_emb.shape == (data.n_items, 8)
    again = wmf_als(g, 8, reg=0.1, iterations=6, data=data, seed=1)
    np.testing.assert_array_equal(w.user_emb, again.user_emb)  # seeded
    with pytest.raises(ValueError, match="reg > 0"):
        wmf_als(g, 8, reg=0.0)
