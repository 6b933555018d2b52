"""Membership-inference auditor: AUC/ROC against brute force, membership-neutral features, planted memorisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.config import ModelConfig, RunConfig, TrainConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.evaluation.membership import (
    DEFAULT_FEATURES,
    FEATURES,
    MembershipAuditor,
    auc_score,
    audit,
    held_out_pairs,
    pair_features,
    roc_curve,
    shadow_auditor,
)
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.unlearning.base import Context


# ------------------------------------------------------------------------------ AUC/ROC
def test_auc_equals_brute_force_pairwise_count() -> None:
    rng = np.random.default_rng(0)
    for n_pos, n_neg in ((1, 1), (7, 13), (50, 40)):
        pos = rng.integers(0, 6, n_pos).astype(float)  # many ties
        neg = rng.integers(0, 6, n_neg).astype(float)
        brute = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (n_pos * n_neg)
        assert auc_score(pos, neg) == pytest.approx(brute, abs=1e-12)
        fpr, tpr, thr = roc_curve(pos, neg)
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thr) < 0)
        assert np.trapezoid(tpr, fpr) == pytest.approx(brute, abs=1e-12)
    assert auc_score([2.0, 3.0], [0.0, 1.0]) == 1.0 and auc_score([0.0], [1.0]) == 0.0
    assert np.isnan(auc_score([], [1.0]))


# --------------------------------------------------------------------------- features
def test_features_do_not_read_the_pairs_own_edge() -> None:
    """With fixed embeddings, a pair's features are the same whether or not it is an edge of the graph."""
    data = make_synthetic(n_users=40, n_items=30, n_communities=3, mean_degree=8.0, seed=1)
    g = Graph(data.train, data.n_users, data.n_items)
    gen = torch.Generator().manual_seed(0)
    emb = (torch.randn(40, 6, generator=gen), torch.randn(30, 6, generator=gen))
    pairs = g.edges[::5]
    f_in = pair_features(emb, g, pairs)
    f_out = np.concatenate([pair_features(emb, g.without(p[None]), p[None]) for p in pairs])
    assert f_in.shape == (len(pairs), len(FEATURES))
    np.testing.assert_allclose(f_in, f_out, rtol=1e-9, atol=1e-9)
    # z-scores by hand for one pair
    u, i = pairs[3]
    s_all = (emb[0][u] @ emb[1].T).double().numpy()
    others = [j for j in g.edges[g.edges[:, 0] == u, 1] if j != i]
    assert f_in[3, 2] == pytest.approx((s_all[i] - s_all.mean()) / s_all.std(), rel=1e-6)
    assert f_in[3, 3] == pytest.approx((s_all[i] - s_all[others].mean()) / s_all.std(), rel=1e-6)
    assert f_in[3, 4] == pytest.approx(np.log1p(len(others)))


def test_held_out_pairs() -> None:
    data = make_synthetic(n_users=30, n_items=20, n_communities=2, mean_degree=6.0, seed=2)
    g = Graph(data.train, data.n_users, data.n_items)
    users = np.array([0, 3, 5])
    got = held_out_pairs(data, users, g)
    exp = data.test[np.isin(data.test[:, 0], users)]
    assert np.array_equal(got, np.unique(exp, axis=0))
    both = held_out_pairs(data, None, None, splits=("valid", "test"))
    assert len(both) == len(np.unique(np.concatenate([data.valid, data.test]), axis=0))


# ------------------------------------------------------------------- planted memorisation
class Planted:
    """Scores ``base + alpha * [pair is an edge of the serving graph]`` exactly (d = n_items, items = identity)."""

    def __init__(self, base: torch.Tensor, alpha: float):
        self.base, self.alpha = base, alpha

    def embeddings(self, graph: Graph, e0=None):
        a = torch.from_numpy(graph.user_items().toarray())
        return self.base + self.alpha * a, torch.eye(self.base.shape[1])


@pytest.fixture(scope="module")
def planted():
    """300 users x 50 items from a rank-4 affinity; 12 interactions per user, 8 train / 4 test."""
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 50
    base = rng.normal(size=(n_users, 4)) @ rng.normal(size=(4, n_items)) / 2.0
    picks = np.argsort(-(base + rng.gumbel(size=base.shape)), axis=1)[:, :12]
    perm = rng.permuted(picks, axis=1)
    users = np.repeat(np.arange(n_users), 8)
    train = np.stack([users, perm[:, :8].reshape(-1)], 1)
    test = np.stack([np.repeat(np.arange(n_users), 4), perm[:, 8:].reshape(-1)], 1)
    data = Interactions("planted", n_users, n_items, train, np.zeros((0, 2)), test,
                        np.arange(n_users).astype(str), np.arange(n_items).astype(str))
    graph = Graph(train, n_users, n_items)
    req = graph.edges[np.sort(rng.choice(graph.n_edges, 400, replace=False))]
    return data, graph, req, torch.tensor(base, dtype=torch.float32)


@pytest.mark.parametrize("classifier", ["mlp", "logreg"])
def test_auditor_detects_memorisation_and_not_retraining(planted, classifier) -> None:
    data, graph, req, base = planted
    memoriser = Planted(base, alpha=1.0)
    auditor = MembershipAuditor(n_shadow=2, classifier=classifier, classifier_epochs=200, seed=0)
    auditor.fit(graph.edges, data.n_users, data.n_items, lambda g, seed: memoriser)
    assert auditor.fit_report["holdout_auc"] > 0.7
    assert auditor.fit_report["feature_auc"]["log_user_degree"] == pytest.approx(0.5, abs=0.05)
    non = held_out_pairs(data, np.unique(req[:, 0]), graph)
    original = audit(memoriser, graph, req, non, auditor)
    retrained = audit(memoriser, graph.without(req), req, non, auditor)
    assert original["auc"] > 0.7
    assert abs(retrained["auc"] - 0.5) < 0.06
    assert original["n_members"] == len(req) and original["n_non_members"] == len(non)
    assert original["mean_prob"]["members"] > retrained["mean_prob"]["members"]
    assert 0 <= original["tpr_at_fpr"]["0.1"] <= 1 and original["advantage"] > retrained["advantage"]
    # a model whose scores ignore membership altogether is at chance too
    blind = audit((base, torch.eye(data.n_items)), graph, req, non, auditor)
    assert abs(blind["auc"] - 0.5) < 0.06


def test_unfitted_auditor_refuses(planted) -> None:
    data, graph, req, base = planted
    with pytest.raises(RuntimeError, match="not fitted"):
        MembershipAuditor().audit((base, torch.eye(data.n_items)), graph, req, data.test)
    with pytest.raises(ValueError, match="classifier"):
        MembershipAuditor(classifier="svm")
    with pytest.raises(ValueError, match="features"):
        MembershipAuditor(features=("score", "is_edge"))


def test_degree_features_are_opt_in(planted) -> None:
    data, graph, req, base = planted
    memoriser = Planted(base, alpha=1.0)
    auditor = MembershipAuditor(n_shadow=1, classifier="logreg", classifier_epochs=100, features=FEATURES)
    auditor.fit(graph.edges, data.n_users, data.n_items, lambda g, seed: memoriser)
    assert auditor.fit_report["features"] == list(FEATURES)
    assert auditor.fit_report["holdout"] == "random 20% of the pairs" and auditor.fit_report["holdout_auc"] > 0.7
    assert len(auditor.predict(memoriser, graph, req[:5])) == 5
    assert MembershipAuditor().features == DEFAULT_FEATURES


def test_shadow_auditor_with_real_backbones() -> None:
    """The default path: shadows trained by train_on with the recipe (a tiny MF, 2 epochs)."""
    data = make_synthetic(n_users=60, n_items=40, n_communities=3, mean_degree=10.0, seed=4)
    graph = Graph(data.train, data.n_users, data.n_items)
    cfg = RunConfig(model=ModelConfig(name="mf", embedding_size=8),
                    train=TrainConfig(epochs=2, batch_size=256, learning_rate=0.05, ks=[20]))
    model = build_model(data.n_users, data.n_items, cfg.model)
    ctx = Context(model, graph, data, cfg, progress=False)
    auditor = shadow_auditor(ctx, n_shadow=2, epochs=2, classifier_epochs=50, seed=1)
    rep = auditor.fit_report
    assert rep["n_shadow"] == 2 and rep["n_pairs"] > 0 and set(rep["feature_auc"]) == set(FEATURES)
    req = graph.edges[:30]
    out = audit(model, graph, req, held_out_pairs(data, np.unique(req[:, 0]), graph), auditor)
    assert 0.0 <= out["auc"] <= 1.0 and len(out["roc"]["fpr"]) == len(out["roc"]["tpr"])
