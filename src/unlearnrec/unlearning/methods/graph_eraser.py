"""GraphEraser (Chen, Zhang, Wang, Backes, Humbert, Zhang, "Graph Unlearning", ACM CCS 2022) on the bipartite
user-item graph of a recommender.

GraphEraser is SISA for graphs: the nodes are partitioned into balanced shards that keep the graph's structure
(so each shard's sub-graph is still worth learning from), one GNN is trained per shard on its sub-graph, and the
shard models' predictions are combined by a learned aggregation; deleting data retrains only the shards that
hold it. Its two partitions:

* **BEKM** (balanced embedding k-means): k-means over node embeddings from a pre-trained model, with a shard
  capacity: every (node, centroid) pair sorted by distance, a node goes to the nearest centroid that is not full;
  centroids move to their nodes' mean; ``T`` rounds. Here the embeddings are the trained model's served user
  embeddings on the training graph and the assignment is the exact greedy of
  :func:`~unlearnrec.unlearning.partition.balanced_kmeans` (capacity ``ceil(slack · n / K)``).
* **BLPA** (balanced label propagation): random balanced initial labels; each round every node finds the label
  most frequent among its neighbours, the desired moves are sorted by that frequency and accepted while the
  destination holds fewer than the capacity; until no node moves or ``T`` rounds. For users of a bipartite graph
  the neighbours are the users sharing items with them, counted with multiplicity (the co-interaction graph
  ``A Aᵀ``, never formed: the counts are ``A (Aᵀ onehot(labels))``). Vectorised acceptance: in a round, shard
  ``k`` accepts the best ``capacity − |k|`` of the moves into it (the sequential code can also fill the room
  freed by departures of the same round; here that room is used in the next round).

Adaptation to recommendation (as the issue asks: partition the users, edges follow their user). Each shard model
is the context's backbone trained with the recipe on the edges of its users. GraphEraser's shard models are
inductive (every shard predicts every node from its features and neighbourhood); ID-embedding recommenders are
transductive, so a user outside shard ``k`` is represented inductively there: its *fold-in*, the mean of shard
``k``'s served item embeddings over the user's items on the serving graph (LightGCN's one-hop user aggregation,
with shard ``k``'s item table). A user inside shard ``k`` keeps its trained embedding. The score is
``ŷ(u, i) = Σ_k α_k ⟨u_k, i_k⟩`` with GraphEraser's **LBAggr**: non-negative per-shard importances ``α`` (start
``1/K``, Adam, clipped at 0, the lowest-loss ``α`` kept, normalised to sum 1, as in the public code; the loss is
computed with the normalised weights, see ``agg_l2``), fitted here with BPR on the *validation* interactions
(seeded negatives), never on test. ``aggregation="mean"`` is MeanAggr (``α = 1/K``), ``"home"`` serves each
user from its own shard only (plain SISA scoring); the default ``"auto"`` picks among the three by validation
Recall (the recipe's monitored metric), as the paper picks its aggregator by utility.

Unlearning is exact: the shards of the request's users are retrained from scratch on their residual edges, the
fold-ins are computed from the residual graph (no sub-model ever trained on a user it folds in), and ``α`` is
fitted again with the new sub-models. The partition itself is computed once, from the model trained on all the
data, and kept (as in the paper).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnrec.config import YamlConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.graph import Graph
from unlearnrec.sampling import BPRSampler
from unlearnrec.unlearning.base import Context, UnlearnerError, register
from unlearnrec.unlearning.methods.sisa import ShardedUnlearner
from unlearnrec.unlearning.partition import Ensemble, Partition, balanced_kmeans, check_n_shards, random_partition


class GraphEraserConfig(YamlConfig):
    """GraphEraser settings (``None`` keeps the recipe's)."""

    partition: Literal["bekm", "blpa"] = "bekm"
    """BEKM (balanced embedding k-means, default) or BLPA (balanced label propagation) over the users."""
    n_shards: int = Field(10, ge=1)
    """``K``: shards (sub-models); at most the number of users."""
    iterations: int = Field(10, ge=1)
    """``T``: k-means rounds (BEKM) or label-propagation rounds (BLPA), fewer when nothing changes."""
    balance_slack: float = Field(1.05, ge=1.0)
    """Shard capacity ``ceil(slack · n_users / K)`` (BLPA needs room above ``n / K`` for any node to move)."""
    seed: int = 0
    """Seed of the partition (initial centroids / labels) and of the aggregator's validation negatives."""
    aggregation: Literal["auto", "learned", "mean", "home"] = "auto"
    """LBAggr, MeanAggr, each user's own shard only, or ``auto`` (default): of those three, the one with the best
    validation ``monitor`` metric of the recipe (e.g. Recall@20) on the serving graph (model selection on validation;
    the choice and all three scores are logged). Fitted LBAggr weights optimise BPR on validation pairs, which need
    not rank best: with BEKM shards on ML-1M they were below MeanAggr in pairwise accuracy."""
    agg_epochs: int = Field(200, ge=0)
    """Full-batch Adam steps of LBAggr on the validation interactions."""
    agg_learning_rate: float = Field(0.01, gt=0)
    agg_l2: float = Field(0.0, ge=0)
    """Weight of an ``‖α‖₂`` term on the normalised weights (0, default). The public code adds ``‖w‖₂`` to bound
    the scale of its unnormalised ``w``; here the loss is computed with ``α = w / Σw`` (the served weights), which
    is scale-free, so no such term is needed (with BPR's small score scale it would drive ``w`` to 0)."""
    max_seconds: float | None = Field(None, gt=0)
    """Wall-clock budget of each sub-model's training (the best validation epoch so far is kept)."""
    epochs: int | None = Field(None, ge=1)
    """Most epochs per sub-model (default: the recipe's, with its early stopping)."""
    patience: int | None = Field(None, ge=1)
    """Validation evaluations without improvement before a sub-model stops (default: the recipe's)."""
    eval_every: int | None = Field(None, ge=1)
    """Epochs between a sub-model's validation evaluations (default: the recipe's)."""


# ------------------------------------------------------------------------------ partitions
def blpa_users(graph: Graph, n_shards: int, *, iterations: int = 10, slack: float = 1.05, seed: int = 0,
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """GraphEraser's balanced label propagation over the users of ``graph`` (neighbours: users sharing items).

    Returns the shard of each user and a JSON-safe record (moves per round, capacity). Vectorised: one round is
    two sparse products and a sort.
    """
    n = graph.n_users
    k = check_n_shards(n_shards, n, "users")
    cap = int(np.ceil(slack * n / k - 1e-9))
    e = graph.edges
    a = sp.csr_matrix((np.ones(len(e), np.float32), (e[:, 0], e[:, 1])), shape=(n, graph.n_items))
    deg = np.asarray(a.sum(1)).ravel()
    labels = random_partition(n, k, seed, "users")
    rng = np.random.default_rng([seed, 11])
    moves: list[int] = []
    for _ in range(iterations):
        onehot = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), labels)), shape=(n, k))
        counts = np.asarray((a @ (a.T @ onehot)).todense(), dtype=np.float64)
        counts[np.arange(n), labels] -= deg  # a user is not its own neighbour
        counts += rng.random(counts.shape) * 0.5  # integer counts: random tie-break, as the public code
        dst = counts.argmax(1)
        gain = counts[np.arange(n), dst]
        want = np.flatnonzero((dst != labels) & (deg > 0))
        if not len(want):
            moves.append(0)
            break
        size = np.bincount(labels, minlength=k)
        order = want[np.lexsort((-gain[want], dst[want]))]  # by destination, best first
        d = dst[order]
        first = np.searchsorted(d, np.arange(k))
        rank = np.arange(len(order)) - first[d]
        ok = order[rank < np.maximum(cap - size, 0)[d]]
        labels = labels.copy()
        labels[ok] = dst[ok]
        moves.append(int(len(ok)))
        if not len(ok):
            break
    return labels.astype(np.int64), {"capacity": cap, "rounds": len(moves), "moves": moves,
                                     "users_per_shard": np.bincount(labels, minlength=k).tolist()}


def user_partition(labels: np.ndarray, graph: Graph, strategy: str, info: dict) -> Partition:
    """The edge partition in which every edge follows its user."""
    k = int(labels.max()) + 1 if len(labels) else 0
    edge_labels = labels[graph.keys // graph.n_items]
    info = {**info, "edges_per_shard": np.bincount(edge_labels, minlength=k).tolist()}
    return Partition(strategy, k, edge_labels.astype(np.int64), labels.astype(np.int64), None, info)


# ------------------------------------------------------------------------------ the ensemble
def fold_in(graph: Graph, item_emb: torch.Tensor) -> torch.Tensor:
    """Each user's mean over its items (on ``graph``) of ``item_emb``'s rows (0 for a user without items)."""
    e = graph.edges
    deg = np.bincount(e[:, 0], minlength=graph.n_users).astype(np.float32)
    w = 1.0 / np.maximum(deg, 1.0)
    m = sp.csr_matrix((w[e[:, 0]], (e[:, 0], e[:, 1])), shape=(graph.n_users, graph.n_items)).tocoo()
    idx = torch.from_numpy(np.stack([m.row, m.col]).astype(np.int64))
    mat = torch.sparse_coo_tensor(idx, torch.from_numpy(m.data), (graph.n_users, graph.n_items),
                                  check_invariants=False).to(item_emb.device)
    return torch.sparse.mm(mat, item_emb)


class GraphEraserEnsemble(Ensemble):
    """The shard models behind one ``embeddings()``: ``ŷ(u, i) = Σ_k α_k ⟨u_k, i_k⟩`` (users concatenated as
    ``α_k u_k``, items as ``i_k``), ``u_k`` the trained embedding in the user's own shard and its fold-in from the
    serving graph elsewhere; ``weights=None``: each user from its own shard only."""

    def __init__(self, models, graphs, user_home: np.ndarray, weights: torch.Tensor | None = None):
        super().__init__(models, graphs, user_home=user_home)
        self.weights = weights

    def serving_graph(self) -> Graph:
        pairs = np.stack([self.keys // self.n_items, self.keys % self.n_items], 1)
        return Graph(pairs, self.n_users, self.n_items, self.graphs[0].device)

    @torch.no_grad()
    def shard_tables(self, serving: Graph | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per shard: (users with fold-ins outside the shard, items)."""
        serving = serving or self.serving_graph()
        home = torch.as_tensor(self.user_home)
        out = []
        for k, (u, i) in enumerate(self.shard_embeddings()):
            mine = (home == k).to(u.device).unsqueeze(1)
            out.append((torch.where(mine, u, fold_in(serving, i)), i))
        return out

    @torch.no_grad()
    def embeddings(self, graph: Graph | None = None, e0: torch.Tensor | None = None):
        if e0 is not None:
            raise ValueError("an ensemble has no single layer-0 table: e0 is not supported")
        self._check_graph(graph)
        if self.weights is None:  # each user from its home shard only
            embs = self.shard_embeddings()
            home = torch.as_tensor(self.user_home)
            users = torch.cat([(home == k).to(u.dtype).to(u.device).unsqueeze(1) * u
                               for k, (u, _) in enumerate(embs)], 1)
            return users, torch.cat([i for _, i in embs], 1)
        tables = self.shard_tables()
        w = self.weights
        users = torch.cat([float(w[k]) * u for k, (u, _) in enumerate(tables)], 1)
        return users, torch.cat([i for _, i in tables], 1)


def fit_lbaggr(tables: list[tuple[torch.Tensor, torch.Tensor]], data: Interactions, graph: Graph,
               config: GraphEraserConfig) -> tuple[torch.Tensor, dict[str, Any]]:
    """GraphEraser's LBAggr on the validation interactions: per-shard scores of every validation pair and a seeded
    negative, ``α >= 0`` fitted by full-batch Adam on BPR + ``agg_l2 · ‖α‖₂``; the lowest-loss ``α``, normalised."""
    t0 = time.perf_counter()
    k = len(tables)
    valid = data.valid
    start = torch.full((k,), 1.0 / k)
    if not len(valid) or config.agg_epochs == 0:
        return start, {"epochs": 0, "seconds": time.perf_counter() - t0, "weights": start.tolist()}
    known = np.concatenate([graph.edges, valid])
    neg = BPRSampler(known, graph.n_items).negatives(valid[:, 0], np.random.default_rng([config.seed, 5]))
    u_idx, p_idx, n_idx = (torch.from_numpy(np.ascontiguousarray(x)).long() for x in (valid[:, 0], valid[:, 1], neg))
    with torch.no_grad():
        sp_ = torch.stack([(u[u_idx] * i[p_idx]).sum(-1) for u, i in tables], 1).float().cpu()
        sn_ = torch.stack([(u[u_idx] * i[n_idx]).sum(-1) for u, i in tables], 1).float().cpu()
    w = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([w], lr=config.agg_learning_rate)

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        a = x / x.sum().clamp(min=1e-12)  # scale-free: the served α is normalised anyway
        return F.softplus(sn_ @ a - sp_ @ a).mean() + config.agg_l2 * torch.linalg.vector_norm(a)

    best, best_w, history = float(loss_of(start)), start.clone(), []
    for step in range(config.agg_epochs):
        loss = loss_of(w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            w.clamp_(min=0.0)
            cur = float(loss_of(w)) if float(w.sum()) > 0 else float("inf")
        if cur < best:
            best, best_w = cur, w.detach().clone()
        if step % 20 == 0:
            history.append({"step": step, "loss": cur})
    alpha = best_w / best_w.sum()
    with torch.no_grad():
        auc = float(((sp_ @ alpha) > (sn_ @ alpha)).float().mean())
        auc_mean = float(((sp_ @ start) > (sn_ @ start)).float().mean())
    return alpha, {"epochs": config.agg_epochs, "best_loss": best, "weights": alpha.tolist(),
                   "valid_pair_accuracy": auc, "valid_pair_accuracy_mean_aggr": auc_mean,
                   "n_valid_pairs": int(len(valid)), "history": history, "seconds": time.perf_counter() - t0}


@register
class GraphEraser(ShardedUnlearner):
    """GraphEraser (Chen et al., CCS 2022): BEKM / BLPA user shards, one sub-model each, LBAggr aggregation;
    a request retrains the shards of its users. See the module docstring for the recommender adaptation."""

    name = "graph-eraser"
    paper = ("GraphEraser (Chen, Zhang, Wang, Backes, Humbert, Zhang, 'Graph Unlearning', ACM CCS 2022)")
    Config = GraphEraserConfig

    def _partition(self, ctx: Context) -> Partition:
        c = self.config
        try:
            if c.partition == "bekm":
                with torch.no_grad():
                    user_emb, _ = ctx.model.embeddings(ctx.graph)
                km = balanced_kmeans(user_emb.detach().cpu().numpy(), c.n_shards, iterations=c.iterations,
                                     slack=c.balance_slack, seed=c.seed, what="users")
                info = {"capacity": km.capacity, "kmeans_iterations": km.iterations, "kmeans_objective": km.objective,
                        "users_per_shard": np.bincount(km.labels, minlength=c.n_shards).tolist()}
                return user_partition(km.labels, ctx.graph, "bekm", info)
            labels, info = blpa_users(ctx.graph, c.n_shards, iterations=c.iterations, slack=c.balance_slack,
                                      seed=c.seed)
            return user_partition(labels, ctx.graph, "blpa", info)
        except ValueError as e:
            raise UnlearnerError(f"{self.name}: {e}") from None

    def _ensemble(self, ctx: Context, graphs: list[Graph], models: list, user_home, residual: Graph):
        c = self.config
        ens = GraphEraserEnsemble(models, graphs, user_home=user_home)
        k = len(models)
        if c.aggregation == "home":
            return ens, {"aggregation": "home"}
        if c.aggregation == "mean":
            ens.weights = torch.full((k,), 1.0 / k)
            return ens, {"aggregation": "mean", "weights": ens.weights.tolist()}
        tables = ens.shard_tables(residual)
        alpha, log = fit_lbaggr(tables, ctx.data, residual, c)
        if c.aggregation == "learned" or not len(ctx.data.valid):
            ens.weights = alpha
            return ens, {"aggregation": "learned", **copy.deepcopy(log)}
        scores = {}
        for name, w in (("learned", alpha), ("mean", torch.full((k,), 1.0 / k)), ("home", None)):
            ens.weights = w
            scores[name] = validation_score(ens, ctx, residual)
        best = max(scores, key=lambda n: (scores[n], n == "learned"))
        ens.weights = {"learned": alpha, "mean": torch.full((k,), 1.0 / k), "home": None}[best]
        monitor = ctx.config.train.monitor
        return ens, {"aggregation": best, "selected_on": f"valid {monitor}", "valid_scores": scores,
                     **copy.deepcopy(log)}

    def _ensemble_tensors(self, ensemble: GraphEraserEnsemble) -> dict[str, torch.Tensor]:
        return {} if ensemble.weights is None else {"weights": torch.as_tensor(ensemble.weights)}

    def _restore_ensemble(self, ctx: Context, graphs: list[Graph], models: list, user_home, tensors) -> Ensemble:
        return GraphEraserEnsemble(models, graphs, user_home=user_home, weights=tensors.get("weights"))


def validation_score(ens: GraphEraserEnsemble, ctx: Context, graph: Graph) -> float:
    """The recipe's monitored metric of ``ens`` on the validation split (the serving graph's edges masked)."""
    from unlearnrec.evaluation.ranking import evaluate_ranking
    from unlearnrec.training import masks_for

    tc = ctx.config.train
    masks = masks_for(ctx.data, graph.edges)
    u, i = ens.embeddings(graph)
    return float(evaluate_ranking(u, i, masks["valid_truth"], masks["valid_exclude"], ks=tc.ks).metrics[tc.monitor])
