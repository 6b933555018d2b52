"""RecEraser (Chen, Sun, Zhang, Ding, "Recommendation Unlearning", WWW 2022).

* ``prepare``: the edges of ``ctx.graph`` are split into ``n_shards`` balanced shards by a balanced k-means
  over the pre-trained embeddings of ``ctx.model`` served on ``ctx.graph``
  (:func:`~unlearnrec.unlearning.partition.partition_graph`): ``interaction`` (InBP, the default: the paper's
  main variant and the one it reports best), ``user`` (UBP), ``item`` (IBP), or ``random`` edges (the
  paper's Random baseline). One sub-model (the context's backbone) per shard is trained from scratch with
  the recipe, exactly as in SISA (:class:`~unlearnrec.unlearning.methods.sisa.ShardedUnlearner`). Then the
  attention aggregator (:class:`~unlearnrec.unlearning.partition.AttentionAggregator`) is trained with BPR
  on the graph's edges, the sub-models frozen, Adam, for at most ``agg_epochs`` epochs, keeping the best
  validation epoch (epoch 0, the untrained aggregator — the plain mean of the sub-models — included).
  Prediction is the aggregator's output: ``ŷ(u, i) = aggᵤ(u)ᵀ aggᵢ(i)``.
* ``unlearn``: the shards holding request edges are retrained from scratch on their residual edges, the
  others reused as they are, and the aggregator is retrained from a fresh initialisation on the residual
  graph (it was fitted on the deleted edges too, so keeping it would not be exact).

As in the paper, the partition is computed once, from the model trained on all the data, and kept: the
sub-models and the aggregator never see a deleted edge, but which shard a remaining edge sits in was
decided with the deleted edges present (the paper treats the partition as fixed; so does this module).

Departures from the public code, all documented in the config: the aggregation is over the sub-models'
*served* (final) embeddings for every backbone (the public LightGCN variant aggregates layer-0 tables and
propagates them again over the whole graph); the attention is restricted to the shards where the user /
item has training edges (``mask_absent``; the public code attends over all ``K``, including sub-models that
never saw the entity); the per-shard maps start at the identity; no dropout on the aggregated embeddings.
The balanced partition follows the paper's greedy exactly
(see :func:`~unlearnrec.unlearning.partition.balanced_assign`), with the public code's shard capacity
``ceil(1.2 · n / K)`` and InBP distance (product of the user and item squared distances).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from unlearnrec.config import YamlConfig
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.models.base import bpr_loss
from unlearnrec.sampling import BPRSampler
from unlearnrec.training import epoch_rng, masks_for
from unlearnrec.unlearning.base import Context, UnlearnerError, register
from unlearnrec.unlearning.methods.sisa import ShardedUnlearner
from unlearnrec.unlearning.partition import AttentionAggregator, Ensemble, Partition, partition_graph

_STRATEGY = {"interaction": "interaction", "user": "user", "item": "item", "random": "random-interaction"}


class RecEraserConfig(YamlConfig):
    """RecEraser settings (``None`` keeps the recipe's)."""

    partition: Literal["interaction", "user", "item", "random"] = "interaction"
    """InBP (default; the paper's main variant), UBP, IBP, or random edges (the paper's Random baseline)."""
    n_shards: int = Field(10, ge=1)
    """``K``: shards (the paper uses 10); at most the number of edges / users / items partitioned."""
    iterations: int = Field(10, ge=1)
    """``T``: balanced k-means rounds (assignment + anchor update; stops early when the assignment repeats)."""
    balance_slack: float = Field(1.2, ge=1.0)
    """Shard capacity ``ceil(slack · n / K)`` (public code: 1.2; 1.0: as equal as possible)."""
    interaction_distance: Literal["product", "sum"] = "product"
    """InBP: combine the user and item squared distances to an anchor by product (paper, public code) or sum."""
    seed: int = 0
    """Seed of the partition's random anchors (and of the aggregator's initialisation)."""
    max_seconds: float | None = Field(None, gt=0)
    """Wall-clock budget of each sub-model's training."""
    epochs: int | None = Field(None, ge=1)
    """Most epochs per sub-model (default: the recipe's, with its early stopping)."""
    agg_epochs: int = Field(20, ge=0)
    """Most aggregator epochs (0: keep the untrained aggregator, i.e. the plain mean of the sub-models)."""
    agg_learning_rate: float = Field(5e-3, gt=0)
    agg_batch_size: int | None = Field(None, gt=0)
    """Default: the recipe's batch size."""
    agg_patience: int = Field(3, ge=1)
    """Aggregator evaluations without a validation improvement before stopping."""
    agg_weight_decay: float = Field(0.0, ge=0)
    attention_size: int | None = Field(None, ge=1)
    """Default: half the embedding size (as in the public code)."""
    activation: Literal["relu", "tanh"] = "relu"
    """Attention non-linearity (paper and public code: ReLU)."""
    mask_absent: bool = True
    """Attend only over the shards where the user / item has training edges."""


def train_aggregator(agg: AttentionAggregator, ensemble: Ensemble, ctx: Context, graph: Graph, config: RecEraserConfig,
                     ) -> dict[str, Any]:
    """Fit ``agg`` with BPR on ``graph``'s edges, the sub-models frozen; keep the best validation epoch.

    The sub-models' served embeddings are computed once; each epoch visits every edge once (fresh uniform
    negatives). Validation (the recipe's monitored metric on the validation split, training edges of
    ``graph`` masked) runs before training and after every epoch.
    """
    t0 = time.perf_counter()
    us, is_ = ensemble.stacked()
    device = us.device
    agg.to(device)
    mu, mi = ensemble.masks(device)
    tc = ctx.config.train
    masks = masks_for(ctx.data, graph.edges)
    have_valid = len(ctx.data.valid) > 0

    def validate() -> float:
        agg.eval()
        with torch.no_grad():
            u, i = agg.users(us, mu), agg.items(is_, mi)
        agg.train()
        return float(evaluate_ranking(u, i, masks["valid_truth"], masks["valid_exclude"], ks=tc.ks).metrics[tc.monitor])

    history: list[dict[str, Any]] = []
    best = validate() if have_valid else -np.inf
    best_epoch, best_state, bad = 0, copy.deepcopy(agg.state_dict()), 0
    history.append({"epoch": 0, "valid": best})
    params = [p for p in agg.parameters() if p.requires_grad]
    if config.agg_epochs > 0 and graph.n_edges:
        opt = torch.optim.Adam(params, lr=config.agg_learning_rate, weight_decay=config.agg_weight_decay)
        sampler = BPRSampler(graph.edges, graph.n_items)
        bs = config.agg_batch_size or tc.batch_size
        agg.train()
        for epoch in range(1, config.agg_epochs + 1):
            rng = epoch_rng(tc.seed + 15_485_863, epoch)
            total, n = 0.0, 0
            for batch in sampler.epoch(bs, rng, device):
                u = agg.users(us[batch.users], _rows(mu, batch.users))
                p = agg.items(is_[batch.pos], _rows(mi, batch.pos))
                q = agg.items(is_[batch.neg], _rows(mi, batch.neg))
                loss = bpr_loss((u * p).sum(-1), (u * q).sum(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                n += 1
            rec: dict[str, Any] = {"epoch": epoch, "loss": total / max(1, n)}
            if have_valid:
                score = validate()
                rec["valid"] = score
                if score > best:
                    best, best_epoch, bad = score, epoch, 0
                    best_state = copy.deepcopy(agg.state_dict())
                else:
                    bad += 1
            else:
                best_epoch, best_state = epoch, copy.deepcopy(agg.state_dict())
            history.append(rec)
            if have_valid and bad >= config.agg_patience:
                break
    agg.load_state_dict(best_state)
    agg.eval()
    return {"best_epoch": best_epoch, f"best_valid_{tc.monitor}": None if not np.isfinite(best) else best,
            "epochs_run": len(history) - 1, "seconds": time.perf_counter() - t0, "history": history}


def _rows(mask: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if mask is None else mask[idx]


@register
class RecEraser(ShardedUnlearner):
    """RecEraser: balanced shards from pre-trained embeddings, one sub-model each, attention aggregation."""

    name = "receraser"
    paper = "RecEraser (Chen, Sun, Zhang, Ding, 'Recommendation Unlearning', WWW 2022)"
    Config = RecEraserConfig

    def _partition(self, ctx: Context) -> Partition:
        c = self.config
        strategy = _STRATEGY[c.partition]
        user_emb = item_emb = None
        if strategy != "random-interaction":
            user_emb, item_emb = ctx.model.embeddings(ctx.graph)
        try:
            return partition_graph(ctx.graph, strategy, c.n_shards, user_emb=user_emb, item_emb=item_emb, seed=c.seed,
                                   iterations=c.iterations, slack=c.balance_slack, combine=c.interaction_distance)
        except ValueError as e:
            raise UnlearnerError(f"{self.name}: {e}") from None

    def _ensemble(self, ctx: Context, graphs: list[Graph], models: list, user_home, residual: Graph):
        c = self.config
        dim = ctx.config.model.embedding_size
        agg = AttentionAggregator(len(models), dim, c.attention_size, c.activation, seed=c.seed)
        ensemble = Ensemble(models, graphs, aggregator=agg, user_home=user_home, mask_absent=c.mask_absent)
        log = train_aggregator(agg, ensemble, ctx, residual, c)
        return ensemble, log
