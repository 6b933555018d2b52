"""Full-ranking top-K evaluation: the one place ranking metrics are computed.

Every user is scored against *every* item (no negative sampling). The items in
``exclude`` (normally the user's training items) are masked to ``-inf`` before
ranking, and the top ``max(ks)`` items are taken with a single
:func:`torch.topk` per user batch. Users without any ``truth`` item are
skipped: every average is over the users with at least one held-out item.

Definitions, for a user ``u`` with held-out set ``T_u`` (``|T_u| >= 1``), top-K
list ``R_u@K`` and ``hits = |R_u@K ∩ T_u|``:

* ``recall@K    = hits / |T_u|`` -- the definition used by the GNN-recommender
  papers (NGCF, LightGCN, ...). It is *not* LensKit's / RecBole's "truncated"
  recall ``hits / min(|T_u|, K)``.
* ``precision@K = hits / K`` (also when fewer than K items can be ranked).
* ``hit@K       = 1 if hits > 0 else 0``.
* ``ndcg@K      = DCG@K / IDCG@K`` with binary relevance,
  ``DCG@K = sum_{r=1..K} rel_r / log2(r + 1)`` (rank ``r`` is 1-based) and
  ``IDCG@K = sum_{r=1..min(|T_u|, K)} 1 / log2(r + 1)``, the DCG of a list that
  puts ``min(|T_u|, K)`` held-out items first.

Conventions:

* Ties between equal scores are broken arbitrarily (by whatever order
  :func:`torch.topk` returns); no attempt is made to average over tie orders.
* A masked item never counts as a hit, even when it is also in ``truth`` (it
  still counts in ``|T_u|``). If a user has fewer than ``K`` unmasked items the
  remaining ranks hold masked (``-inf``) items and count as misses.
* ``truth`` and ``exclude`` are read as binary: every stored non-zero entry is
  one relevant (resp. masked) item; duplicates collapse.
* With no evaluable user at all every metric is ``nan`` (``None`` in
  :meth:`RankingResult.to_dict`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

METRIC_NAMES: tuple[str, ...] = ("recall", "ndcg", "precision", "hit")

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RankingResult:
    """Outcome of one full-ranking evaluation.

    Attributes:
        metrics: mean over the evaluated users, keys ``"<metric>@<K>"`` for
            every metric in ``recall, ndcg, precision, hit`` and every K.
        per_user: same keys, the per-user values (float64, aligned with ``users``).
        users: indices of the evaluated users (those with >= 1 truth item).
        n_users: number of evaluated users (``len(users)``).
        seconds: wall-clock time the evaluation took.
        ks: the cut-offs evaluated, ascending.
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray] = field(repr=False)
    users: np.ndarray = field(repr=False)
    n_users: int
    seconds: float
    ks: tuple[int, ...] = ()

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]

    def to_dict(self) -> dict:
        """JSON-safe summary (no per-user arrays; non-finite values become ``None``)."""
        return {
            "metrics": {k: (float(v) if math.isfinite(v) else None) for k, v in self.metrics.items()},
            "n_users": int(self.n_users),
            "seconds": float(self.seconds),
            "ks": [int(k) for k in self.ks],
        }


# ---------------------------------------------------------------- helpers
def _as_binary_csr(m, name: str) -> sp.csr_matrix:
    if not sp.issparse(m):
        raise TypeError(f"{name} must be a scipy sparse matrix, got {type(m).__name__}")
    m = sp.csr_matrix(m, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data = np.ones_like(m.data, dtype=np.float32)
    return m


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (int(ks),)
    out = tuple(sorted({int(k) for k in ks}))
    if not out or out[0] <= 0:
        raise ValueError(f"ks must be non-empty positive integers, got {ks!r}")
    return out


def _rows_cols(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """COO (local row, col) of a CSR matrix, vectorised."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return rows, m.indices.astype(np.int64, copy=False)


# ------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_scores(
    score_fn: ScoreFn,
    truth: sp.csr_matrix,
    exclude: sp.csr_matrix | None = None,
    ks: Sequence[int] = (10, 20, 50),
    batch_size: int = 1024,
    users: np.ndarray | Sequence[int] | None = None,
) -> RankingResult:
    """Full-ranking top-K evaluation of an arbitrary score function.

    Args:
        score_fn: maps a 1-D int64 tensor of ``B`` user indices to a ``(B, n_items)``
            score tensor (higher is better; any device). Partition/ensemble models
            that aggregate scores plug in here.
        truth: ``n_users x n_items`` CSR, the held-out items of each user.
        exclude: ``n_users x n_items`` CSR of items to mask per user (normally
            the training items), or ``None``.
        ks: cut-offs.
        batch_size: users scored per call of ``score_fn``.
        users: restrict to these user indices (default: all); users without
            truth items are dropped either way.

    Returns:
        A :class:`RankingResult` (see the module docstring for definitions).
    """
    start = time.perf_counter()
    ks = _check_ks(ks)
    k_max = ks[-1]
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    truth = _as_binary_csr(truth, "truth")
    n_users_total, n_items = truth.shape
    if exclude is not None:
        exclude = _as_binary_csr(exclude, "exclude")
        if exclude.shape != truth.shape:
            raise ValueError(f"exclude shape {exclude.shape} != truth shape {truth.shape}")

    n_truth_all = np.diff(truth.indptr).astype(np.int64)
    if users is None:
        cand = np.arange(n_users_total, dtype=np.int64)
    else:
        cand = np.asarray(users, dtype=np.int64).reshape(-1)
        if cand.size and (cand.min() < 0 or cand.max() >= n_users_total):
            raise ValueError("users contains indices outside 0..n_users-1")
    eval_users = cand[n_truth_all[cand] > 0]
    n_eval = len(eval_users)

    # Position-discount table: disc[r] = 1/log2(r+2) for 0-based rank r;
    # idcg_table[n] = sum_{r<n} disc[r] (idcg_table[0] = 0).
    disc = 1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64))
    idcg_table = np.concatenate([[0.0], np.cumsum(disc)])
    k_eff = min(k_max, n_items)  # ranks beyond n_items are misses

    hits_all = np.zeros((n_eval, k_max), dtype=bool)  # relevance of ranks 1..k_max

    for lo in range(0, n_eval, batch_size):
        bu = eval_users[lo : lo + batch_size]
        b = len(bu)
        bu_t = torch.from_numpy(bu)
        scores = score_fn(bu_t)
        if scores.shape != (b, n_items):
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {(b, n_items)}")
        if not scores.is_floating_point():
            scores = scores.float()
        dev = scores.device
        if exclude is not None:
            r, c = _rows_cols(exclude[bu])
            if len(r):
                # out-of-place: never mutate a tensor score_fn may still own
                idx = (torch.from_numpy(r).to(dev), torch.from_numpy(c).to(dev))
                scores = scores.index_put(idx, torch.tensor(-math.inf, dtype=scores.dtype, device=dev))
        top_val, top_idx = torch.topk(scores, k_eff, dim=1, largest=True, sorted=True)
        top_val, top_idx = top_val.cpu(), top_idx.cpu().to(torch.int64)

        # Sorted-key lookup: key = local_row * n_items + item.
        tr, tc = _rows_cols(truth[bu])
        t_keys = torch.from_numpy(np.sort(tr * n_items + tc))
        q_keys = (torch.arange(b, dtype=torch.int64).unsqueeze(1) * n_items + top_idx).reshape(-1)
        pos = torch.searchsorted(t_keys, q_keys).clamp_(max=len(t_keys) - 1)
        hit = (t_keys[pos] == q_keys).view(b, k_eff) & torch.isfinite(top_val)
        hits_all[lo : lo + b, :k_eff] = hit.numpy()

    # Metrics from the (n_eval, k_max) relevance matrix.
    n_truth = n_truth_all[eval_users].astype(np.float64)
    cum_hits = np.cumsum(hits_all, axis=1, dtype=np.float64)
    cum_dcg = np.cumsum(hits_all * disc, axis=1)
    per_user: dict[str, np.ndarray] = {}
    for k in ks:
        h = cum_hits[:, k - 1]
        idcg = idcg_table[np.minimum(n_truth_all[eval_users], k)]
        per_user[f"recall@{k}"] = h / n_truth
        per_user[f"ndcg@{k}"] = cum_dcg[:, k - 1] / idcg
        per_user[f"precision@{k}"] = h / k
        per_user[f"hit@{k}"] = (h > 0).astype(np.float64)
    ordered = {f"{m}@{k}": per_user[f"{m}@{k}"] for k in ks for m in METRIC_NAMES}
    metrics = {key: (float(v.mean()) if n_eval else float("nan")) for key, v in ordered.items()}
    return RankingResult(
        metrics=metrics,
        per_user=ordered,
        users=eval_users,
        n_users=int(n_eval),
        seconds=time.perf_counter() - start,
        ks=ks,
    )


@torch.no_grad()
def evaluate_ranking(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    truth: sp.csr_matrix,
    exclude: sp.csr_matrix | None = None,
    ks: Sequence[int] = (10, 20, 50),
    batch_size: int = 1024,
    users: np.ndarray | Sequence[int] | None = None,
) -> RankingResult:
    """Full-ranking evaluation of dot-product scores ``user_emb @ item_emb.T``.

    Args:
        user_emb: ``(n_users, d)`` user embeddings.
        item_emb: ``(n_items, d)`` item embeddings (same device as ``user_emb``).
        truth, exclude, ks, batch_size, users: as in :func:`evaluate_scores`.
    """
    user_emb = user_emb.detach()
    item_emb = item_emb.detach()
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"incompatible embeddings {tuple(user_emb.shape)} and {tuple(item_emb.shape)}")
    if truth.shape != (user_emb.shape[0], item_emb.shape[0]):
        raise ValueError(
            f"truth shape {truth.shape} != (n_users, n_items) = {(user_emb.shape[0], item_emb.shape[0])}"
        )
    item_t = item_emb.t()
    dev = user_emb.device

    def score_fn(u: torch.Tensor) -> torch.Tensor:
        return user_emb[u.to(dev)] @ item_t

    return evaluate_scores(score_fn, truth, exclude, ks=ks, batch_size=batch_size, users=users)
