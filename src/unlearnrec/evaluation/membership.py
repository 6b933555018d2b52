"""Membership-inference audit of interactions: can an attacker tell that a request edge was trained on?

A shadow-model attack (Shokri et al., "Membership Inference Attacks against Machine Learning Models", S&P 2017)
adapted to implicit-feedback recommenders (in the spirit of Zhang et al., "Membership Inference Attacks Against
Recommender Systems", CCS 2021, who attack a user's whole history; here the unit is one ``(user, item)``
interaction, the unit an edge-deletion request removes).

**Shadow models.** The auditor knows a pool of real interactions (by default the target's training edges).
For each of ``n_shadow`` shadows it splits the pool at random into halves: *shadow-in* (the shadow model is
trained on them, with the caller's ``train_fn``, by default the recipe's :func:`train_on` for a few epochs) and
*shadow-out* (held out). Members and non-members are then both real interactions of the same users and items,
from the same distribution: the only difference between them is whether the shadow saw them, which is exactly
what the attack must learn to read from a model.

**Features** of a pair ``(u, i)`` under a model served on its graph ``G`` (:func:`pair_features`):

1. ``score``: the raw score ``ŷ(u, i)``;
2. ``rank_percentile``: ``i``'s rank percentile in ``u``'s full ranking, candidates = every item not in
   ``u``'s serving-graph edges *plus ``i`` itself* (:func:`~unlearnrec.evaluation.forgetting.item_ranks`;
   0 = top). A member is masked in serving, so without the "plus itself" rule this feature would read the mask,
   not the model;
3. ``z_user``: ``(ŷ(u, i) − mean_j ŷ(u, j)) / std_j ŷ(u, j)`` over all items ``j`` (mask-free, closed form
   from the item Gram matrix);
4. ``z_positives``: ``(ŷ(u, i) − mean ŷ over u's other serving-graph edges) / std_j ŷ(u, j)``; "other" excludes
   the pair itself (the user's overall mean when it has no other edge);
5. ``log_user_degree`` and 6. ``log_item_degree``: ``log(1 + degree)`` in the serving graph, *not counting the
   pair itself*.

No feature reads "is the pair an edge of the serving graph" directly: features 2, 4, 5, 6 exclude the pair
from whatever graph statistic they use, so under a random in/out split members and non-members have the same
graph-side distribution and only the model's scores can separate them (with fixed embeddings, a pair's
features are identical whether or not it is an edge). The attack uses the four model-output features by
default (:data:`DEFAULT_FEATURES`); the degrees are computed and reported (``feature_auc``) but opt-in, because
the *audit's* pair selection confounds them: against a fixed train/test split a member's self-excluded user
degree is exactly one less than that of a non-member of the same user, and the request's pairs come more
often from users who lost many edges. Message passing is part of the served model: a GNN serving on a graph
that holds the edge scores it higher even with untrained weights, and the attack may legitimately pick that
up.

**Attack classifier.** A small MLP (default; one hidden layer) or a logistic regression in torch, on the
chosen features standardised (statistics of the shadow features), trained full-batch with Adam on the balanced
member / non-member pairs of all shadows. ``fit_report`` holds the attack's AUC on a held-out shadow (the
last one, when ``n_shadow ≥ 2``): below about 0.55 the attack learned nothing usable and audits are moot.

**Audit** (:func:`audit`): the attack's membership probability for the request edges (positives) and for
held-out non-members (real interactions never trained on, e.g. the test edges of the request's users:
:func:`held_out_pairs`), summarised by the ROC curve and its AUC. Run it for the original, the unlearned and
the retrained model: an ideal unlearner gives the retrained model's AUC (about 0.5 for a random request; a
selective one, e.g. a user's popular items, can differ from its test edges even for a model that never saw
it); the original model's AUC is what there was to forget.

The AUC is the Mann–Whitney statistic ``P(s_pos > s_neg) + ½ P(s_pos = s_neg)`` computed from average ranks
(:func:`auc_score`), which equals the trapezoid area under :func:`roc_curve`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import rankdata
from torch import nn

from unlearnrec.data.interactions import Interactions, as_pairs
from unlearnrec.evaluation.forgetting import final_embeddings, item_ranks, percentile_of_rank
from unlearnrec.graph import Graph

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURES",
    "MembershipAuditor",
    "auc_score",
    "audit",
    "held_out_pairs",
    "pair_features",
    "roc_curve",
    "shadow_auditor",
]

FEATURES: tuple[str, ...] = (
    "score",
    "rank_percentile",
    "z_user",
    "z_positives",
    "log_user_degree",
    "log_item_degree",
)
"""Every feature :func:`pair_features` computes, in column order."""

DEFAULT_FEATURES: tuple[str, ...] = ("score", "rank_percentile", "z_user", "z_positives")
"""The features the attack uses by default: the model-output ones (see the module docstring on degrees)."""

TrainFn = Callable[[Graph, int], Any]
"""``train_fn(graph, seed) -> model``: trains a shadow on ``graph`` (anything with ``embeddings(graph)``)."""


# ---------------------------------------------------------------------------- AUC / ROC
def auc_score(pos, neg) -> float:
    """Mann–Whitney AUC ``P(pos > neg) + ½ P(pos = neg)`` from average ranks (vectorised).

    ``nan`` when either side is empty.
    """
    pos = np.asarray(pos, np.float64).reshape(-1)
    neg = np.asarray(neg, np.float64).reshape(-1)
    n_pos, n_neg = len(pos), len(neg)
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]), method="average")
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(pos, neg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)``, one per distinct score (descending), from ``(0, 0)`` at ``+inf``.

    A pair is called a member when its score is ``>= threshold``; the trapezoid area under the points equals
    :func:`auc_score` (ties count one half).
    """
    pos = np.asarray(pos, np.float64).reshape(-1)
    neg = np.asarray(neg, np.float64).reshape(-1)
    if not len(pos) or not len(neg):
        raise ValueError("roc_curve needs at least one positive and one negative")
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    fpr = np.r_[0.0, fps / len(neg)]
    tpr = np.r_[0.0, tps / len(pos)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


# ------------------------------------------------------------------------------ features
@torch.no_grad()
def pair_features(model, graph: Graph | None, pairs, batch_size: int = 256) -> np.ndarray:
    """``(n, 6)`` float64 attack features of ``pairs`` under ``model`` served on ``graph`` (order: :data:`FEATURES`).

    ``model`` is anything with ``embeddings(graph)`` or a ``(user_emb, item_emb)`` pair; ``graph`` is the
    graph it serves on (its edges are the masked items and the degrees; ``None``: no edges).
    """
    pairs = as_pairs(pairs)
    u_emb, i_emb = final_embeddings(model, graph)
    n_users, n_items = u_emb.shape[0], i_emb.shape[0]
    out = np.zeros((len(pairs), len(FEATURES)), np.float64)
    if not len(pairs):
        return out
    if pairs.min() < 0 or pairs[:, 0].max() >= n_users or pairs[:, 1].max() >= n_items:
        raise ValueError("pairs outside the model's users/items")
    if graph is not None:
        adj = graph.user_items()
        member = graph.contains(pairs)
    else:
        adj = sp.csr_matrix((n_users, n_items), dtype=np.float32)
        member = np.zeros(len(pairs), bool)
    ranks, n_cand = item_ranks(u_emb, i_emb, pairs, adj, batch_size)

    users, inv = np.unique(pairs[:, 0], return_inverse=True)
    ue = u_emb[torch.from_numpy(users).to(u_emb.device)].double().cpu()
    ie = i_emb.double().cpu()
    s = (ue[torch.from_numpy(inv)] * ie[torch.from_numpy(pairs[:, 1])]).sum(1).numpy()  # float64 throughout
    mean_all = (ue @ ie.mean(0)).numpy()
    second = ((ue @ (ie.t() @ ie)) * ue).sum(1).numpy() / n_items
    std_all = np.sqrt(np.maximum(second - mean_all**2, 0.0))
    std_all = np.where(std_all > 1e-12, std_all, 1.0)
    rows = adj[users]
    deg_u = np.diff(rows.indptr).astype(np.float64)
    sum_pos = ((torch.from_numpy(rows.astype(np.float64) @ ie.numpy())) * ue).sum(1).numpy()
    deg_i = np.bincount(adj.indices, minlength=n_items).astype(np.float64)

    m = member.astype(np.float64)
    du_other = deg_u[inv] - m
    pos_mean = np.where(du_other > 0, (sum_pos[inv] - m * s) / np.maximum(du_other, 1.0), mean_all[inv])
    out[:, 0] = s
    out[:, 1] = percentile_of_rank(ranks, n_cand)
    out[:, 2] = (s - mean_all[inv]) / std_all[inv]
    out[:, 3] = (s - pos_mean) / std_all[inv]
    out[:, 4] = np.log1p(du_other)
    out[:, 5] = np.log1p(deg_i[pairs[:, 1]] - m)
    return out


def held_out_pairs(data: Interactions, users=None, graph: Graph | None = None, splits=("test",)) -> np.ndarray:
    """Real interactions never trained on, to serve as audit non-members.

    The pairs of ``splits`` of ``data`` (default: the test split), restricted to ``users`` (e.g. the request's
    users) and, when ``graph`` is given, to pairs that are not edges of it. Sorted unique ``(n, 2)``.
    """
    parts = [as_pairs(getattr(data, s)) for s in splits]
    pairs = np.unique(np.concatenate(parts), axis=0) if parts else np.zeros((0, 2), np.int64)
    if users is not None:
        pairs = pairs[np.isin(pairs[:, 0], np.asarray(users, np.int64).reshape(-1))]
    if graph is not None and len(pairs):
        pairs = pairs[~graph.contains(pairs)]
    return pairs


# ---------------------------------------------------------------------------- classifier
class _Attack(nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray, kind: str, hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        d = len(mean)
        if kind == "logreg":
            self.net = nn.Linear(d, 1)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            raise ValueError(f"classifier must be 'mlp' or 'logreg', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.mean) / self.std).clamp(-10.0, 10.0)
        return self.net(z).squeeze(-1)


def _clean(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=1e6, neginf=-1e6)


def _fit_attack(x: np.ndarray, y: np.ndarray, kind: str, hidden: int, epochs: int, lr: float, weight_decay: float,
                seed: int) -> _Attack:
    x = _clean(x)
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):  # the default layer init must not move the caller's global RNG
        clf = _Attack(mean, std, kind, hidden)
    with torch.no_grad():
        for p in clf.net.parameters():
            bound = 1.0 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.0
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    opt = torch.optim.Adam(clf.net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    clf.train()
    for _ in range(int(epochs)):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(clf(xt), yt)
        loss.backward()
        opt.step()
    clf.eval()
    return clf


@torch.no_grad()
def _predict(clf: _Attack, x: np.ndarray) -> np.ndarray:
    return torch.sigmoid(clf(torch.as_tensor(_clean(x), dtype=torch.float32))).double().numpy()


# ------------------------------------------------------------------------------ auditor
class MembershipAuditor:
    """A shadow-model membership-inference attack on interactions (see the module docstring).

    Args:
        n_shadow: shadow models to train.
        in_fraction: share of the pool each shadow is trained on (the rest are its non-members).
        max_pairs_per_shadow: members + non-members taken from each shadow (balanced, sampled at random).
        classifier: ``"mlp"`` (one hidden layer of ``hidden`` ReLU units) or ``"logreg"``.
        hidden: hidden units of the MLP.
        classifier_epochs: full-batch Adam steps of the attack classifier.
        classifier_lr: its learning rate.
        features: the columns of :data:`FEATURES` the attack uses (default :data:`DEFAULT_FEATURES`).
        weight_decay: its L2 weight decay.
        batch_size: users per dense score block in the rank feature.
        seed: seed of the splits, the pair samples, the shadow seeds and the classifier.
    """

    def __init__(
        self,
        n_shadow: int = 4,
        in_fraction: float = 0.5,
        max_pairs_per_shadow: int = 20_000,
        classifier: str = "mlp",
        hidden: int = 32,
        classifier_epochs: int = 300,
        classifier_lr: float = 0.01,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        seed: int = 0,
        features=DEFAULT_FEATURES,
    ):
        if n_shadow < 1:
            raise ValueError("n_shadow must be >= 1")
        if not 0.0 < in_fraction < 1.0:
            raise ValueError("in_fraction must be in (0, 1)")
        if classifier not in ("mlp", "logreg"):
            raise ValueError(f"classifier must be 'mlp' or 'logreg', got {classifier!r}")
        self.n_shadow = int(n_shadow)
        self.in_fraction = float(in_fraction)
        self.max_pairs_per_shadow = int(max_pairs_per_shadow)
        self.classifier = classifier
        self.hidden = int(hidden)
        self.classifier_epochs = int(classifier_epochs)
        self.classifier_lr = float(classifier_lr)
        self.weight_decay = float(weight_decay)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        unknown = [f for f in features if f not in FEATURES]
        if unknown or not len(features):
            raise ValueError(f"features must be a non-empty subset of {FEATURES}, got {tuple(features)}")
        self.features = tuple(features)
        self._cols = np.array([FEATURES.index(f) for f in self.features])
        self.attack: _Attack | None = None
        self.fit_report: dict[str, Any] = {}

    def __repr__(self) -> str:
        state = "fitted" if self.attack is not None else "unfitted"
        return f"MembershipAuditor(n_shadow={self.n_shadow}, classifier={self.classifier!r}, {state})"

    # ---------------------------------------------------------------- fitting
    def shadow_data(self, pool, n_users: int, n_items: int, train_fn: TrainFn, device="cpu"):
        """Train the shadows; returns ``(features, labels, shadow_index)`` over all their sampled pairs.

        Each shadow's graph lives on ``device`` (where ``train_fn``'s models serve).
        """
        pool = np.unique(as_pairs(pool), axis=0)
        n = len(pool)
        n_in = int(round(self.in_fraction * n))
        if n_in < 1 or n - n_in < 1:
            raise ValueError(f"a pool of {n} pairs cannot be split into shadow-in and shadow-out")
        rng = np.random.default_rng(self.seed)
        xs, ys, ss = [], [], []
        for s in range(self.n_shadow):
            perm = rng.permutation(n)
            inside, outside = pool[np.sort(perm[:n_in])], pool[np.sort(perm[n_in:])]
            graph = Graph(inside, n_users, n_items, device=device)
            model = train_fn(graph, int(rng.integers(2**31 - 1)))
            m = min(len(inside), len(outside), max(1, self.max_pairs_per_shadow // 2))
            mem = inside[np.sort(rng.choice(len(inside), m, replace=False))]
            non = outside[np.sort(rng.choice(len(outside), m, replace=False))]
            xs.append(pair_features(model, graph, np.concatenate([mem, non]), self.batch_size))
            ys.append(np.r_[np.ones(m), np.zeros(m)])
            ss.append(np.full(2 * m, s))
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(ss)

    def fit_features(self, x: np.ndarray, y: np.ndarray, shadow: np.ndarray | None = None) -> MembershipAuditor:
        """Fit the attack classifier on shadow features (all :data:`FEATURES` columns) and labels (1 = member)."""
        x_all, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        x = x_all[:, self._cols]
        if shadow is None:
            shadow = np.zeros(len(y), np.int64)
        kw = {"kind": self.classifier, "hidden": self.hidden, "epochs": self.classifier_epochs,
              "lr": self.classifier_lr, "weight_decay": self.weight_decay}
        shadows = np.unique(shadow)
        if len(shadows) >= 2:  # attack AUC on a shadow it was not fitted on
            held = shadow == shadows[-1]
            split = "last shadow"
        else:
            held = np.random.default_rng(self.seed + 1).random(len(y)) < 0.2
            split = "random 20% of the pairs"
        holdout_auc = float("nan")
        if held.any() and (~held).any() and len(np.unique(y[~held])) == 2:
            probe = _fit_attack(x[~held], y[~held], seed=self.seed, **kw)
            p = _predict(probe, x[held])
            holdout_auc = auc_score(p[y[held] == 1], p[y[held] == 0])
        self.attack = _fit_attack(x, y, seed=self.seed, **kw)
        p = _predict(self.attack, x)
        self.fit_report.update(
            n_pairs=int(len(y)),
            n_members=int(y.sum()),
            holdout=split,
            holdout_auc=holdout_auc,
            train_auc=auc_score(p[y == 1], p[y == 0]),
            features=list(self.features),
            feature_auc={f: auc_score(x_all[y == 1, j], x_all[y == 0, j]) for j, f in enumerate(FEATURES)},
        )
        return self

    def fit(self, pool, n_users: int, n_items: int, train_fn: TrainFn, device="cpu") -> MembershipAuditor:
        """Train the shadows on random halves of ``pool`` with ``train_fn`` and fit the attack on them.

        ``train_fn(graph, seed)`` gets each shadow's graph (on ``device``) and returns the trained model.
        """
        t0 = time.perf_counter()
        x, y, s = self.shadow_data(pool, n_users, n_items, train_fn, device)
        t1 = time.perf_counter()
        self.fit_report = {"n_shadow": self.n_shadow, "pool": int(len(np.unique(as_pairs(pool), axis=0))),
                           "shadow_seconds": t1 - t0}
        self.fit_features(x, y, s)
        self.fit_report["classifier_seconds"] = time.perf_counter() - t1
        return self

    # ---------------------------------------------------------------- attacking
    def _require(self) -> _Attack:
        if self.attack is None:
            raise RuntimeError("the auditor is not fitted: call fit() (or shadow_auditor()) first")
        return self.attack

    def predict(self, model, graph: Graph | None, pairs) -> np.ndarray:
        """Membership probability of each pair under ``model`` served on ``graph``."""
        return _predict(self._require(), pair_features(model, graph, pairs, self.batch_size)[:, self._cols])

    def audit(self, model, graph: Graph | None, members, non_members, *, fprs=(0.01, 0.1)) -> dict[str, Any]:
        """Attack ``model`` (served on ``graph``): ``members`` (e.g. the request edges) against ``non_members``.

        Returns ``auc``, ``n_members``, ``n_non_members``, ``roc`` (``fpr``, ``tpr``, ``thresholds`` arrays),
        ``tpr_at_fpr`` (TPR at each FPR in ``fprs``), ``advantage`` (``max(tpr − fpr)``), ``mean_prob``
        (``members``/``non_members``) and ``feature_auc`` (each of :data:`FEATURES` alone as the attack
        score: a classifier-free check, which also shows confounds of the pair selection, e.g. degrees).
        """
        clf = self._require()
        mem, non = np.unique(as_pairs(getattr(members, "edges", members)), axis=0), as_pairs(non_members)
        if not len(mem) or not len(non):
            raise ValueError("audit needs at least one member and one non-member pair")
        x = pair_features(model, graph, np.concatenate([mem, non]), self.batch_size)
        p = _predict(clf, x[:, self._cols])
        pm, pn = p[: len(mem)], p[len(mem) :]
        fpr, tpr, thr = roc_curve(pm, pn)
        return {
            "auc": auc_score(pm, pn),
            "n_members": int(len(mem)),
            "n_non_members": int(len(non)),
            "roc": {"fpr": fpr, "tpr": tpr, "thresholds": thr},
            "tpr_at_fpr": {str(f): _tpr_at(fpr, tpr, f) for f in fprs},
            "advantage": float(np.max(tpr - fpr)),
            "mean_prob": {"members": float(pm.mean()), "non_members": float(pn.mean())},
            "feature_auc": {f: auc_score(x[: len(mem), j], x[len(mem) :, j]) for j, f in enumerate(FEATURES)},
        }


def shadow_auditor(
    ctx,
    n_shadow: int = 4,
    epochs: int = 10,
    *,
    pool=None,
    train_fn: TrainFn | None = None,
    **auditor_kwargs,
) -> MembershipAuditor:
    """A :class:`MembershipAuditor` fitted for the system of an unlearning ``Context``.

    Args:
        ctx: the :class:`~unlearnrec.unlearning.base.Context` (its data sizes, recipe and training graph).
        n_shadow: shadow models.
        epochs: training epochs of each shadow with the default ``train_fn`` (the recipe through
            :func:`~unlearnrec.unlearning.methods.retrain.train_on`, validation early stopping included).
        pool: the interactions whose membership the shadows vary (default: the edges of ``ctx.graph``).
        train_fn: ``train_fn(graph, seed) -> model`` replacing the default.
        **auditor_kwargs: the other :class:`MembershipAuditor` arguments.
    """
    if train_fn is None:
        from unlearnrec.unlearning.methods.retrain import train_on

        def train_fn(graph: Graph, seed: int):
            return train_on(ctx, graph, seed=seed, epochs=epochs)[0]

    pool = ctx.graph.edges if pool is None else pool
    auditor = MembershipAuditor(n_shadow=n_shadow, **auditor_kwargs)
    return auditor.fit(pool, ctx.data.n_users, ctx.data.n_items, train_fn, device=ctx.graph.device)


def audit(
    model, graph: Graph | None, request_edges, non_members, auditor: MembershipAuditor, **kwargs
) -> dict[str, Any]:
    """:meth:`MembershipAuditor.audit` of ``model`` on ``graph``: the request edges against held-out non-members.

    Run it on the original model (its training graph), the unlearned one (``Outcome.model`` on
    ``Outcome.graph``) and the retrained reference, with the same pairs: an ideal unlearner has the
    retrained model's AUC.
    """
    return auditor.audit(model, graph, request_edges, non_members, **kwargs)
