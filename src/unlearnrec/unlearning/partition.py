"""Partitions and ensembles: the one place the partition-based exact unlearners (SISA, RecEraser) share.

Partitions
----------
Every partition assigns each training edge to exactly one of ``S`` shards; a sub-model is trained on each
shard's edges only, so deleting an edge only requires retraining the shard that holds it.

* ``random-user`` (SISA, Bourtoule et al., IEEE S&P 2021): users are dealt at random into ``S`` shards of
  equal size (sizes differ by at most one); a user's edges go to the user's shard.
* ``random-interaction``: edges dealt at random (RecEraser's "Random" baseline).
* ``user`` / ``item`` / ``interaction``: RecEraser's balanced partitions UBP, IBP and InBP (Chen, Sun, Zhang,
  Ding, "Recommendation Unlearning", WWW 2022), a capacity-constrained k-means over pre-trained embeddings
  (:func:`balanced_kmeans`): users (UBP) or items (IBP) by their embeddings, edges (InBP) by the pair
  ``(user embedding, item embedding)``; the distance of edge ``(u, i)`` to anchor ``(a_u, a_i)`` combines
  ``‖p_u − a_u‖²`` and ``‖q_i − a_i‖²``, by their **product** as in the paper's InBP formula and its public
  code (``combine="product"``), or by their sum (``combine="sum"``).

The balanced k-means follows the paper's algorithm: ``K`` random samples as anchors; ``T`` times: every
(sample, anchor) pair sorted by distance and walked in ascending order, a sample going to the anchor of
its pair when it is still unassigned and the anchor holds fewer than ``capacity`` samples; then each anchor
moves to the mean of its samples. ``capacity = ceil(slack · n / K)``; the public code uses ``slack = 1.2``,
``slack = 1`` gives shards as equal as possible.

The greedy walk over the ``n·K`` sorted pairs is sequential by nature; :func:`balanced_assign` computes
**exactly the same assignment** without a Python loop over samples or pairs, as the fixed point of a
vectorised map over the anchors' "fill positions" (see its docstring for the argument).

Ensembles
---------
:class:`Ensemble` holds the sub-models and their shard graphs and serves like one backbone:
``embeddings(graph=None) -> (user_emb, item_emb)`` such that a dot product gives the aggregated score, so
every evaluation tool (``api.evaluate_model``, ``forgetting_report``) takes it unchanged.

* score averaging (SISA): user rows are the concatenation over shards of ``w_{u,k} · u_k``, item rows the
  concatenation of ``i_k``, so ``ŷ(u, i) = Σ_k w_{u,k} u_kᵀ i_k``; ``w_{u,k} = 1 / #{shards where u has
  training edges}`` on those shards and 0 elsewhere (a sub-model never trained on ``u`` holds an untrained
  embedding for it). A user with edges in no shard falls back to its home shard (user partitions) or to
  the plain mean over all shards.
* attention (RecEraser): an :class:`AttentionAggregator` combines the sub-models' embeddings into one
  ``d``-dimensional table per side. Its ``inputs`` say which: ``"layer0"`` (the public RecEraser LightGCN
  code's ``train_agg_model2``): the sub-models' layer-0 tables are aggregated and the result is propagated by
  the backbone over the union of the shard graphs (for MF the propagation is the identity, as in the public
  ``RecEraser_BPR``); ``"served"``: the sub-models' final embeddings, each computed on its own shard graph,
  are aggregated and served as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from unlearnrec.graph import Graph

__all__ = [
    "STRATEGIES",
    "AttentionAggregator",
    "BalancedKMeans",
    "Ensemble",
    "Partition",
    "balanced_assign",
    "balanced_kmeans",
    "check_n_shards",
    "edge_shards",
    "partition_graph",
    "random_partition",
    "shard_graphs",
    "within_shard_distance",
]

Strategy = Literal["random-user", "random-interaction", "user", "item", "interaction"]
STRATEGIES: tuple[str, ...] = ("random-user", "random-interaction", "user", "item", "interaction")


# ------------------------------------------------------------------------------ random partitions
def check_n_shards(n_shards: int, n_samples: int, what: str) -> int:
    """``n_shards`` as an int, or ``ValueError`` unless ``1 <= n_shards <= n_samples``."""
    if isinstance(n_shards, bool) or int(n_shards) != n_shards:
        raise ValueError(f"n_shards must be an integer, got {n_shards!r}")
    n_shards = int(n_shards)
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    if n_shards > n_samples:
        raise ValueError(f"n_shards={n_shards} exceeds the number of {what} ({n_samples}): some shards would be empty")
    return n_shards


def random_partition(n: int, n_shards: int, seed: int = 0, what: str = "samples") -> np.ndarray:
    """Shard of each of ``n`` samples: a seeded random deal into ``n_shards`` shards whose sizes differ by <= 1."""
    n_shards = check_n_shards(n_shards, n, what)
    labels = np.empty(n, np.int64)
    labels[np.random.default_rng(seed).permutation(n)] = np.arange(n, dtype=np.int64) % n_shards
    return labels


# ------------------------------------------------------------------------------ balanced k-means
def balanced_assign(dist: np.ndarray, capacity: int, max_rounds: int | None = None) -> tuple[np.ndarray, int]:
    """The paper's greedy balanced assignment, computed without a loop over samples or pairs.

    The greedy: walk every ``(sample, anchor)`` pair in ascending distance (ties: sample index, then anchor
    index); assign the sample to the anchor when the sample is unassigned and the anchor holds fewer than
    ``capacity`` samples.

    Vectorised equivalent: give every pair its position ``pos`` in that global order and every anchor a
    *fill position* ``T_a`` (the position of the pair that fills it, ``∞`` when it never fills). Given
    ``T``, each sample takes its first pair (in its own distance order) with ``pos <= T_a``; from those
    choices ``F(T)_a`` is the position of the ``capacity``-th pair taken at ``a`` (``∞`` if fewer). The
    greedy's fill positions are the *unique* fixed point of ``F`` (induction over positions: at every pair
    the fixed-point rule and the greedy rule read the same, already-agreeing, earlier decisions), and ``F``
    is monotone (a larger ``T`` lets samples stop earlier in their lists, so no anchor receives more pairs
    below any position). Iterating ``T ← F(T)`` from ``T = ∞`` (everyone at their nearest anchor) therefore
    decreases ``T`` monotonically and stops exactly at the greedy's assignment; every iterate stays above the
    fixed point, so every sample always has an admissible anchor. Each round is ``O(n·K)`` array work plus
    one ``O(n log n)`` sort; the number of rounds is the depth of the "displacement cascade" (a handful in
    practice) and is returned.

    Args:
        dist: ``(n, K)`` distances of each sample to each anchor.
        capacity: most samples per anchor; ``K · capacity >= n`` is required.
        max_rounds: safety bound on the rounds (default ``n + 1``, which is never reached: each round
            strictly lowers at least one fill position).

    Returns:
        ``(labels, rounds)``: the anchor of each sample and the rounds used.
    """
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2:
        raise ValueError(f"dist must be (n, K), got shape {dist.shape}")
    n, k = dist.shape
    capacity = int(capacity)
    if k < 1 or capacity < 1 or k * capacity < n:
        raise ValueError(f"{k} anchor(s) of capacity {capacity} cannot hold {n} samples")
    if n == 0:
        return np.zeros(0, np.int64), 0
    total = n * k
    order = np.argsort(dist.ravel(), kind="stable")  # ties: sample-major (sample, then anchor) order
    pos = np.empty(total, np.int64)
    pos[order] = np.arange(total, dtype=np.int64)
    pos = pos.reshape(n, k)
    pref = np.argsort(pos, axis=1)  # each sample's anchors in its own (global-order-consistent) order
    pref_pos = np.take_along_axis(pos, pref, axis=1)
    del pos, order
    inf = np.int64(total)
    fill = np.full(k, inf, np.int64)
    rows = np.arange(n)
    max_rounds = n + 1 if max_rounds is None else int(max_rounds)
    for rounds in range(1, max_rounds + 1):
        allowed = pref_pos <= fill[pref]
        first = allowed.argmax(axis=1)
        if not allowed[rows, first].all():  # pragma: no cover - excluded by the argument above
            raise RuntimeError("balanced assignment left a sample without an admissible anchor")
        labels = pref[rows, first]
        taken = pref_pos[rows, first]
        counts = np.bincount(labels, minlength=k)
        new_fill = np.full(k, inf, np.int64)
        full = counts >= capacity
        if full.any():
            by_anchor = np.lexsort((taken, labels))
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            new_fill[full] = taken[by_anchor[starts[full] + capacity - 1]]
        if np.array_equal(new_fill, fill):
            return labels.astype(np.int64), rounds
        fill = new_fill
    raise RuntimeError(f"balanced assignment did not converge in {max_rounds} rounds")  # pragma: no cover


class _Block:
    """One feature block: row ``index[j]`` of ``table`` for sample ``j`` (``index=None``: the table itself).

    InBP's blocks are the user and item tables indexed by the edges' endpoints: distances are computed per
    table row and gathered, and means are taken through a sparse count matrix, so no ``(n_edges, d)`` copy
    of the embeddings is ever made.
    """

    def __init__(self, table, index=None):
        self.table = np.asarray(table.detach().cpu().numpy() if torch.is_tensor(table) else table, dtype=np.float64)
        if self.table.ndim != 2:
            raise ValueError(f"a feature block must be (n, d), got shape {self.table.shape}")
        self.index = None if index is None else np.asarray(index, np.int64)
        self.n = len(self.table) if self.index is None else len(self.index)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.table[idx if self.index is None else self.index[idx]]

    def sq_dist(self, anchors: np.ndarray) -> np.ndarray:
        t = self.table
        d = (t * t).sum(1)[:, None] + (anchors * anchors).sum(1)[None, :] - 2.0 * (t @ anchors.T)
        d = np.maximum(d, 0.0)
        return d if self.index is None else d[self.index]

    def sums(self, labels: np.ndarray, k: int) -> np.ndarray:
        """``(k, d)`` sums of the samples' rows per label."""
        m = len(self.table)
        col = np.arange(self.n) if self.index is None else self.index
        counts = sp.csr_matrix((np.ones(self.n), (labels, col)), shape=(k, m))  # duplicates add up
        return np.asarray(counts @ self.table)


def _blocks(features) -> list[_Block]:
    if isinstance(features, tuple) and len(features) == 2 and np.ndim(features[1]) == 1:
        features = [features]  # one (table, index) pair
    items = list(features) if isinstance(features, (list, tuple)) else [features]
    blocks = [f if isinstance(f, _Block) else _Block(*f) if isinstance(f, tuple) else _Block(f) for f in items]
    if not blocks or len({b.n for b in blocks}) != 1:
        raise ValueError(
            "features must be an (n, d) array, a (table, index) pair, or a sequence of those with the same n"
        )
    return blocks


def _combined(blocks: list[_Block], anchors: list[np.ndarray], combine: str) -> np.ndarray:
    out = blocks[0].sq_dist(anchors[0])
    for b, a in zip(blocks[1:], anchors[1:], strict=True):
        d = b.sq_dist(a)
        out = out * d if combine == "product" else out + d
    return out


@dataclass
class BalancedKMeans:
    """Result of :func:`balanced_kmeans`.

    Attributes:
        labels: the shard of each sample.
        anchors: final anchors, one ``(K, d_b)`` array per feature block.
        capacity: most samples per shard.
        iterations: anchor updates run (stops early when the assignment repeats).
        objective: mean combined distance of the samples to their anchors, per iteration.
        assign_rounds: rounds of :func:`balanced_assign` per iteration.
    """

    labels: np.ndarray
    anchors: list[np.ndarray]
    capacity: int
    iterations: int
    objective: list[float] = field(default_factory=list)
    assign_rounds: list[int] = field(default_factory=list)


def balanced_kmeans(
    features, n_clusters: int, *, iterations: int = 10, slack: float = 1.0, capacity: int | None = None,
    combine: Literal["sum", "product"] = "sum", seed: int = 0, what: str = "samples",
) -> BalancedKMeans:
    """RecEraser's balanced k-means (anchors, greedy capacity-constrained assignment, mean update; T rounds).

    Args:
        features: the samples' features: an ``(n, d)`` array, a ``(table, index)`` pair (sample ``j`` is
            ``table[index[j]]``), or a sequence of such blocks (InBP: ``[(user_emb, edge_users),
            (item_emb, edge_items)]``); an anchor has one part per block, and a sample's distance to it
            combines the blocks' squared Euclidean distances to the anchor's parts by ``combine``.
        n_clusters: ``K``.
        iterations: ``T``, assignment + anchor-update rounds (stops early once an assignment repeats).
        slack: ``capacity = ceil(slack · n / K)`` unless ``capacity`` is given.
        combine: ``"sum"`` or ``"product"`` of the block distances (irrelevant for one block).
        seed: seed of the random anchors (``K`` distinct samples).
    """
    blocks = _blocks(features)
    n = blocks[0].n
    k = check_n_shards(n_clusters, n, what)
    if combine not in ("sum", "product"):
        raise ValueError(f"combine must be 'sum' or 'product', got {combine!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if capacity is None:
        if slack < 1.0:
            raise ValueError(f"slack must be >= 1, got {slack}")
        capacity = math.ceil(slack * n / k - 1e-9)
    capacity = int(capacity)
    if capacity * k < n:
        raise ValueError(f"capacity {capacity} x {k} shards cannot hold {n} {what}")
    start = np.random.default_rng(seed).choice(n, size=k, replace=False)
    anchors = [b.rows(start).copy() for b in blocks]
    result = BalancedKMeans(np.zeros(n, np.int64), anchors, capacity, 0)
    labels = None
    for it in range(1, iterations + 1):
        dist = _combined(blocks, anchors, combine)
        new, rounds = balanced_assign(dist, capacity)
        result.objective.append(float(dist[np.arange(n), new].mean()))
        result.assign_rounds.append(int(rounds))
        result.iterations = it
        del dist
        same = labels is not None and np.array_equal(new, labels)
        labels = new
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        nonempty = counts > 0
        for b, a in zip(blocks, anchors, strict=True):
            a[nonempty] = b.sums(labels, k)[nonempty] / counts[nonempty, None]  # an empty shard keeps its anchor
        if same:
            break
    result.labels = labels
    result.anchors = anchors
    return result


def within_shard_distance(features, labels: np.ndarray, combine: Literal["sum", "product"] = "sum") -> float:
    """Mean combined squared distance of each sample to its shard's mean (lower: tighter shards)."""
    blocks = _blocks(features)
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return float("nan")
    k = int(labels.max()) + 1
    counts = np.maximum(np.bincount(labels, minlength=k), 1).astype(np.float64)
    out = None
    for b in blocks:
        d = b.sq_dist(b.sums(labels, k) / counts[:, None])[np.arange(len(labels)), labels]
        out = d if out is None else (out * d if combine == "product" else out + d)
    return float(out.mean())


# ------------------------------------------------------------------------------ graph partitions
@dataclass
class Partition:
    """A partition of a graph's edges into shards.

    Attributes:
        strategy: one of :data:`STRATEGIES`.
        n_shards: ``S``.
        edge_labels: the shard of each edge, aligned with ``graph.keys`` (sorted edge keys).
        user_labels: the shard of each user for user-based strategies (``random-user``, ``user``), else ``None``.
        item_labels: the shard of each item for ``item``, else ``None``.
        info: sizes, capacity, k-means iterations and objective (JSON-safe).
    """

    strategy: str
    n_shards: int
    edge_labels: np.ndarray
    user_labels: np.ndarray | None = None
    item_labels: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def partition_graph(
    graph: Graph, strategy: str, n_shards: int, *, user_emb=None, item_emb=None, seed: int = 0,
    iterations: int = 10, slack: float = 1.2, combine: Literal["sum", "product"] = "product",
) -> Partition:
    """Partition ``graph``'s edges into ``n_shards`` shards with ``strategy``.

    Args:
        graph: the training graph (every edge goes to exactly one shard).
        strategy: ``random-user`` (SISA), ``random-interaction``, ``user`` (UBP), ``item`` (IBP) or
            ``interaction`` (InBP).
        n_shards: ``S``; at most the number of users / items / edges the strategy partitions.
        user_emb, item_emb: pre-trained ``(n_users, d)`` / ``(n_items, d)`` embeddings (balanced strategies).
        seed: partition seed (random deal or random anchors).
        iterations, slack, combine: :func:`balanced_kmeans` settings (``combine``: InBP only).

    Raises:
        ValueError: unknown strategy, bad ``n_shards``, missing or mis-shaped embeddings.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown partition strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    keys = graph.keys
    users, items = keys // graph.n_items, keys % graph.n_items
    user_labels = item_labels = None
    info: dict[str, Any] = {}

    def emb(x, n, name):
        if x is None:
            raise ValueError(f"the {strategy!r} partition needs pre-trained {name} embeddings")
        x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        if x.ndim != 2 or len(x) != n:
            raise ValueError(f"{name} embeddings must be ({n}, d), got shape {x.shape}")
        return x

    if strategy == "random-user":
        user_labels = random_partition(graph.n_users, n_shards, seed, "users")
        edge_labels = user_labels[users]
    elif strategy == "random-interaction":
        edge_labels = random_partition(len(keys), n_shards, seed, "edges")
    elif strategy == "user":
        check_n_shards(n_shards, graph.n_users, "users")
        km = balanced_kmeans(emb(user_emb, graph.n_users, "user"), n_shards, iterations=iterations, slack=slack,
                             seed=seed, what="users")
        user_labels = km.labels
        edge_labels = user_labels[users]
        info.update(_km_info(km))
    elif strategy == "item":
        check_n_shards(n_shards, graph.n_items, "items")
        km = balanced_kmeans(emb(item_emb, graph.n_items, "item"), n_shards, iterations=iterations, slack=slack,
                             seed=seed, what="items")
        item_labels = km.labels
        edge_labels = item_labels[items]
        info.update(_km_info(km))
    else:  # interaction
        check_n_shards(n_shards, len(keys), "edges")
        ue, ie = emb(user_emb, graph.n_users, "user"), emb(item_emb, graph.n_items, "item")
        km = balanced_kmeans([(ue, users), (ie, items)], n_shards, iterations=iterations, slack=slack,
                             combine=combine, seed=seed, what="edges")
        edge_labels = km.labels
        info.update(_km_info(km), combine=combine)
    n_shards = int(n_shards)
    sizes = np.bincount(edge_labels, minlength=n_shards)
    info.update(edges_per_shard=sizes.tolist(),
                users_per_shard=[len(np.unique(users[edge_labels == s])) for s in range(n_shards)])
    return Partition(strategy, n_shards, edge_labels.astype(np.int64), user_labels, item_labels, info)


def _km_info(km: BalancedKMeans) -> dict[str, Any]:
    return {"capacity": km.capacity, "kmeans_iterations": km.iterations, "kmeans_objective": km.objective,
            "assign_rounds": km.assign_rounds, "samples_per_shard": np.bincount(km.labels).tolist()}


def shard_graphs(graph: Graph, edge_labels: np.ndarray, n_shards: int) -> list[Graph]:
    """One graph per shard holding the edges labelled with it (same users, items and device as ``graph``)."""
    edges = graph.edges
    return [Graph(edges[edge_labels == s], graph.n_users, graph.n_items, graph.device) for s in range(n_shards)]


def edge_shards(keys: np.ndarray, labels: np.ndarray, pairs: np.ndarray, n_items: int) -> np.ndarray:
    """Shard of each of ``pairs`` given sorted edge ``keys`` and their ``labels`` (``KeyError`` if absent)."""
    q = np.asarray(pairs, np.int64)[:, 0] * int(n_items) + np.asarray(pairs, np.int64)[:, 1]
    pos = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
    if not len(keys) or not (keys[pos] == q).all():
        raise KeyError("some pairs are not edges of the partitioned graph")
    return labels[pos]


# ------------------------------------------------------------------------------ aggregation
class AttentionAggregator(nn.Module):
    """RecEraser's attention-based adaptive aggregation of the ``S`` sub-models' embeddings.

    For an entity with sub-model embeddings ``x_1..x_S`` (``d``-dimensional): a per-shard linear map brings
    them into one space, ``s_k = M_k x_k + c_k`` (shared by users and items, as in the public code; started
    at the identity, so training starts from the plain mean); attention logits ``z_k = hᵀ act(W s_k + b)``
    with separate ``(W, b, h)`` for users and items; ``α = softmax_k(z)`` over the shards that hold the entity
    (all shards when none does, or with ``mask_absent=False``); aggregated embedding ``Σ_k α_k s_k``.

    The paper and its code use ``act = ReLU``; ``tanh`` is the classic additive-attention alternative.
    ``inputs``: what an :class:`Ensemble` feeds it (``"layer0"``: the sub-models' layer-0 tables, the result
    propagated over the whole graph, as in the public LightGCN code; ``"served"``: their final embeddings).
    """

    def __init__(self, n_shards: int, dim: int, attention_size: int | None = None,
                 activation: Literal["relu", "tanh"] = "relu", transform: bool = True, seed: int = 0,
                 inputs: Literal["layer0", "served"] = "served"):
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        if inputs not in ("layer0", "served"):
            raise ValueError(f"inputs must be 'layer0' or 'served', got {inputs!r}")
        self.inputs = inputs
        self.n_shards, self.dim = int(n_shards), int(dim)
        self.attention_size = int(attention_size or max(1, dim // 2))
        self.activation = activation
        self.transform = bool(transform)
        a = self.attention_size
        self.shard_weight = nn.Parameter(torch.eye(dim).repeat(self.n_shards, 1, 1), requires_grad=transform)
        self.shard_bias = nn.Parameter(torch.zeros(self.n_shards, dim), requires_grad=transform)
        self.user_w = nn.Parameter(torch.empty(dim, a))
        self.user_b = nn.Parameter(torch.zeros(a))
        self.user_h = nn.Parameter(torch.full((a,), 0.01))
        self.item_w = nn.Parameter(torch.empty(dim, a))
        self.item_b = nn.Parameter(torch.zeros(a))
        self.item_h = nn.Parameter(torch.full((a,), 0.01))
        gen = torch.Generator().manual_seed(int(seed))
        std = math.sqrt(2.0 / (a + dim))  # Glorot normal, as in the public code
        with torch.no_grad():
            self.user_w.normal_(0.0, std, generator=gen)
            self.item_w.normal_(0.0, std, generator=gen)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if self.activation == "relu" else torch.tanh(x)

    def _aggregate(self, x: torch.Tensor, mask: torch.Tensor | None, w, b, h) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (n, S, d); mask: (n, S) bool
        s = torch.einsum("nkd,ked->nke", x, self.shard_weight) + self.shard_bias
        logits = self._act(s @ w + b) @ h  # (n, S)
        if mask is not None:
            mask = mask | ~mask.any(1, keepdim=True)  # held by no shard: attend over all of them
            logits = logits.masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(logits, dim=1)
        return (alpha.unsqueeze(-1) * s).sum(1), alpha

    def users(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Aggregated user embeddings from ``(n, S, d)`` sub-model embeddings (``mask``: shards holding each)."""
        return self._aggregate(x, mask, self.user_w, self.user_b, self.user_h)[0]

    def items(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Aggregated item embeddings (same as :meth:`users`, with the item attention parameters)."""
        return self._aggregate(x, mask, self.item_w, self.item_b, self.item_h)[0]

    def attention(self, x: torch.Tensor, mask: torch.Tensor | None = None, *, items: bool = False) -> torch.Tensor:
        """The ``(n, S)`` attention weights."""
        p = (self.item_w, self.item_b, self.item_h) if items else (self.user_w, self.user_b, self.user_h)
        return self._aggregate(x, mask, *p)[1]


def shard_tensors(models: Sequence) -> dict[str, torch.Tensor]:
    """Every sub-model's weights as ``shard{k}.{name}`` tensors, for a safetensors file (ensemble checkpoints,
    saved prepared states)."""
    return {f"shard{k}.{name}": v.detach().cpu().contiguous()
            for k, m in enumerate(models) for name, v in m.state_dict().items()}


def shard_models(tensors: dict[str, torch.Tensor], n_shards: int, n_users: int, n_items: int, model_config,
                 device) -> list:
    """The inverse of :func:`shard_tensors`: ``n_shards`` backbones built from ``model_config``, in eval mode
    on ``device``; a missing or mis-shaped tensor raises ``KeyError``/``RuntimeError``."""
    from unlearnrec.models import build_model

    models = []
    for k in range(n_shards):
        m = build_model(n_users, n_items, model_config)
        m.load_state_dict({name: tensors[f"shard{k}.{name}"] for name in m.state_dict()})
        models.append(m.to(device).eval())
    return models


class Ensemble:
    """``S`` sub-models, each serving on its shard graph, behind one ``embeddings()`` like a backbone's.

    Args:
        models: the sub-models (backbones), one per shard.
        graphs: their shard graphs (disjoint; their union is the graph the ensemble serves on).
        aggregator: ``None`` for score averaging (SISA), or a trained :class:`AttentionAggregator`.
        user_home: shard of each user for user-based partitions: the fallback of a user with edges in no
            shard under averaging (default fallback: the mean over all shards).
        mask_absent: attention only over the shards that hold the entity (RecEraser).
    """

    def __init__(self, models: Sequence, graphs: Sequence[Graph], aggregator: AttentionAggregator | None = None,
                 user_home: np.ndarray | None = None, mask_absent: bool = True):
        if not len(models) or len(models) != len(graphs):
            raise ValueError(f"need one graph per sub-model, got {len(models)} model(s) and {len(graphs)} graph(s)")
        g0 = graphs[0]
        if any((g.n_users, g.n_items) != (g0.n_users, g0.n_items) for g in graphs):
            raise ValueError("shard graphs of different sizes")
        if aggregator is not None and aggregator.n_shards != len(models):
            raise ValueError(f"aggregator for {aggregator.n_shards} shards, ensemble of {len(models)}")
        self.models = list(models)
        self.graphs = list(graphs)
        self.aggregator = aggregator
        self.user_home = None if user_home is None else np.asarray(user_home, np.int64)
        self.mask_absent = bool(mask_absent)
        self.n_users, self.n_items = g0.n_users, g0.n_items
        self.keys = np.sort(np.concatenate([g.keys for g in self.graphs]))
        if len(np.unique(self.keys)) != len(self.keys):
            raise ValueError("shard graphs overlap: an edge is in more than one shard")
        self._union: Graph | None = None

    def __repr__(self) -> str:
        agg = "attention" if self.aggregator is not None else "average"
        return f"Ensemble(shards={self.n_shards}, aggregation={agg}, edges={len(self.keys)})"

    @property
    def n_shards(self) -> int:
        return len(self.models)

    @property
    def n_edges(self) -> int:
        return len(self.keys)

    # ------------------------------------------------------------ holders and weights
    def holders(self) -> tuple[np.ndarray, np.ndarray]:
        """``(n_users, S)`` and ``(n_items, S)`` masks: which shards hold training edges of each user / item."""
        hu = np.zeros((self.n_users, self.n_shards), bool)
        hi = np.zeros((self.n_items, self.n_shards), bool)
        for k, g in enumerate(self.graphs):
            hu[np.unique(g.keys // self.n_items), k] = True
            hi[np.unique(g.keys % self.n_items), k] = True
        return hu, hi

    def user_weights(self) -> np.ndarray:
        """``(n_users, S)`` averaging weights ``w_{u,k}`` (rows sum to 1)."""
        hu, _ = self.holders()
        w = hu.astype(np.float64)
        count = w.sum(1)
        none = count == 0
        if none.any():
            if self.user_home is not None:
                w[np.flatnonzero(none), self.user_home[none]] = 1.0
            else:
                w[none] = 1.0
        return w / w.sum(1, keepdims=True)

    # ------------------------------------------------------------ serving
    @torch.no_grad()
    def shard_embeddings(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each sub-model's served ``(user_emb, item_emb)`` on its shard graph."""
        return [m.embeddings(g.to(m.embedding.device)) for m, g in zip(self.models, self.graphs, strict=True)]

    def _check_graph(self, graph: Graph | None) -> None:
        if graph is None:
            return
        if (graph.n_users, graph.n_items) != (self.n_users, self.n_items) or not np.array_equal(graph.keys, self.keys):
            raise ValueError(
                f"the ensemble serves on its {self.n_shards} shard graphs, whose union has {self.n_edges} edges; "
                f"it was asked to serve on another graph ({graph.n_edges} edges): evaluate it on its own "
                "(residual) graph"
            )

    @torch.no_grad()
    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The aggregator's inputs stacked as ``(n_users, S, d)`` and ``(n_items, S, d)``: the sub-models'
        layer-0 tables for a ``"layer0"`` aggregator, else their served embeddings."""
        if self.aggregator is not None and self.aggregator.inputs == "layer0":
            e0 = torch.stack([m.embedding.detach() for m in self.models], 1)
            return e0[: self.n_users], e0[self.n_users :]
        embs = self.shard_embeddings()
        return torch.stack([u for u, _ in embs], 1), torch.stack([i for _, i in embs], 1)

    @property
    def union_graph(self) -> Graph:
        """The graph the ensemble serves on (the union of the shard graphs), built once."""
        if self._union is None:
            pairs = np.stack([self.keys // self.n_items, self.keys % self.n_items], 1)
            self._union = Graph(pairs, self.n_users, self.n_items, self.models[0].embedding.device)
        return self._union

    def propagate(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``"layer0"`` aggregator's output served: the backbone's propagation of the aggregated layer-0
        tables over :attr:`union_graph` (differentiable; the sub-models' own parameters are not used)."""
        m = self.models[0]
        was = m.training
        m.eval()  # deterministic propagation (no augmentation or noise)
        out = m.split(m.propagate(self.union_graph, torch.cat([users, items], 0)))
        m.train(was)
        return out

    @torch.no_grad()
    def embeddings(
        self, graph: Graph | None = None, e0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Served ``(user_emb, item_emb)`` whose dot products are the aggregated scores.

        ``graph`` (optional) must be the union of the shard graphs (the graph the ensemble serves on);
        ``e0`` is not supported (an ensemble has no single embedding table).
        """
        if e0 is not None:
            raise ValueError("an ensemble has no single layer-0 table: e0 is not supported")
        self._check_graph(graph)
        if self.aggregator is None:
            embs = self.shard_embeddings()
            w = torch.as_tensor(self.user_weights(), dtype=embs[0][0].dtype, device=embs[0][0].device)
            users = torch.cat([w[:, k : k + 1] * u for k, (u, _) in enumerate(embs)], dim=1)
            items = torch.cat([i for _, i in embs], dim=1)
            return users, items
        us, is_ = self.stacked()
        mu, mi = self.masks(us.device)
        was = self.aggregator.training
        self.aggregator.eval()
        agg = self.aggregator.to(us.device)
        out = agg.users(us, mu), agg.items(is_, mi)
        self.aggregator.train(was)
        if agg.inputs == "layer0":
            out = self.propagate(*out)
        return out

    def masks(self, device=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Attention masks (``None`` when ``mask_absent`` is off)."""
        if not self.mask_absent:
            return None, None
        hu, hi = self.holders()
        return torch.as_tensor(hu, device=device), torch.as_tensor(hi, device=device)

    @torch.no_grad()
    def score(self, graph: Graph | None, users, items) -> torch.Tensor:
        """Aggregated scores of aligned ``users`` / ``items`` index arrays."""
        u, i = self.embeddings(graph)
        users = torch.as_tensor(np.asarray(users), dtype=torch.long, device=u.device)
        items = torch.as_tensor(np.asarray(items), dtype=torch.long, device=u.device)
        return (u[users] * i[items]).sum(-1)
