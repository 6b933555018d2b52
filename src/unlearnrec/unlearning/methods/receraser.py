"""RecEraser (Chen, Sun, Zhang, Ding, "Recommendation Unlearning", WWW 2022), run as its authors run it.

* ``prepare``:

  1. Pre-trained embeddings: WMF on ``ctx.graph`` (:func:`~unlearnrec.unlearning.wmf.wmf_als`; the paper
     and its public code pre-train WMF, ``d = 64``, negative weight 0.2), the ALS sweep kept on validation;
     ``embeddings: model`` uses the context's trained backbone instead.
  2. The edges are split into ``n_shards`` balanced shards by the paper's balanced k-means over those
     embeddings (:func:`~unlearnrec.unlearning.partition.partition_graph`): ``interaction`` (InBP, the default
     of the paper and of its public code), ``user`` (UBP), ``item`` (IBP), or ``random`` edges (the paper's
     Random baseline). Shard capacity ``ceil(1.2 · n / K)`` and ``T = 50`` rounds (public code; the rounds
     stop early once an assignment repeats); InBP's distance is the product of the user and item squared
     distances (paper, public code).
  3. One sub-model (the context's backbone) per shard is trained from scratch with the recipe, exactly as
     in SISA (:class:`~unlearnrec.unlearning.methods.sisa.ShardedUnlearner`): early stopping on validation
     with the user's full training items masked; ``epochs``/``patience``/``max_seconds`` set the budgets;
     ``workers > 1`` trains them at once on that many ``torch.distributed`` ranks (same sub-models).
  4. The attention aggregator (:class:`~unlearnrec.unlearning.partition.AttentionAggregator`) is trained
     with BPR on the graph's edges, the sub-models frozen, Adam, dropout ``agg_dropout`` on the user
     embeddings in the loss (public code: keep probability 0.7), for at most ``agg_epochs`` epochs (public
     code: 50), keeping the best validation epoch (epoch 0, the untrained aggregator, included). With
     ``aggregate: layer0`` (default; the public LightGCN code's ``train_agg_model2``) it combines the
     sub-models' layer-0 tables and the backbone propagates the result over the whole graph; with
     ``served`` it combines the sub-models' final embeddings. Prediction: ``ŷ(u, i) = aggᵤ(u)ᵀ aggᵢ(i)``.

* ``unlearn``: the shards holding request edges are retrained from scratch on their residual edges (at once
  with ``workers > 1``), the others reused as they are, and the aggregator is retrained from a fresh
  initialisation on the residual graph (it was fitted on the deleted edges too, so keeping it would not be
  exact).

As in the paper, the partition is computed once, from embeddings pre-trained on all the data, and kept: the
sub-models and the aggregator never see a deleted edge, but which shard a remaining edge sits in was decided
with the deleted edges present (the paper treats the partition as fixed; so does this module).

Departures from the public code, all settings of the config: model selection (every early stop and best
epoch) is on the validation split, never the test split as in the public scripts; WMF is solved by ALS
rather than Adagrad; the per-shard maps start at the identity (public code: Gaussian, std 0.01), so the
aggregator starts from the plain mean; the attention is restricted to the shards where the user / item has
training edges (``mask_absent``; the public code attends over all ``K``); the k-means anchors are the means
of their samples' embeddings (the public code's ``np.mean`` without an axis collapses them to scalars).
Sub-models use the recipe (the unpartitioned model's) rather than the public code's lr 1e-3 / batch 1024.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.models.base import bpr_loss
from unlearnrec.sampling import BPRSampler
from unlearnrec.training import epoch_rng, masks_for
from unlearnrec.unlearning.base import Context, UnlearnerError, register
from unlearnrec.unlearning.methods.sisa import ShardedUnlearner, ShardTrainingConfig
from unlearnrec.unlearning.partition import AttentionAggregator, Ensemble, Partition, partition_graph
from unlearnrec.unlearning.wmf import wmf_als

_STRATEGY = {"interaction": "interaction", "user": "user", "item": "item", "random": "random-interaction"}


class RecEraserConfig(ShardTrainingConfig):
    """RecEraser settings (``None`` keeps the recipe's; defaults: the paper's public code where it has one)."""

    partition: Literal["interaction", "user", "item", "random"] = "interaction"
    """InBP (default; the paper's main variant), UBP, IBP, or random edges (the paper's Random baseline)."""
    n_shards: int = Field(10, ge=1)
    """``K``: shards (the paper uses 10); at most the number of edges / users / items partitioned."""
    embeddings: Literal["wmf", "model"] = "wmf"
    """What the balanced partitions cluster: WMF pre-trained on the graph (paper, public code) or the
    context's trained backbone served on the graph."""
    wmf_dim: int | None = Field(None, ge=1)
    """WMF embedding size (default: the recipe's, 64 on ML-1M as in the public code)."""
    wmf_neg_weight: float = Field(0.2, ge=0.0, le=1.0)
    """WMF weight of the unobserved pairs (public code: 0.2)."""
    wmf_reg: float = Field(0.1, gt=0)
    """WMF L2 weight ``λ`` of the ALS systems."""
    wmf_iterations: int = Field(8, ge=1)
    """WMF ALS sweeps (the one with the best validation metric is kept)."""
    iterations: int = Field(50, ge=1)
    """``T``: balanced k-means rounds (public code: 50; stops early when the assignment repeats)."""
    balance_slack: float = Field(1.2, ge=1.0)
    """Shard capacity ``ceil(slack · n / K)`` (public code: 1.2; 1.0: as equal as possible)."""
    interaction_distance: Literal["product", "sum"] = "product"
    """InBP: combine the user and item squared distances to an anchor by product (paper, public code) or sum."""
    seed: int = 0
    """Seed of WMF's initialisation, the partition's random anchors and the aggregator's initialisation."""
    aggregate: Literal["layer0", "served"] = "layer0"
    """Aggregate the sub-models' layer-0 tables and propagate over the whole graph (public LightGCN code), or
    aggregate their served embeddings."""
    agg_epochs: int = Field(50, ge=0)
    """Most aggregator epochs (public code: 50; 0 keeps the untrained aggregator, the plain mean)."""
    agg_learning_rate: float = Field(5e-3, gt=0)
    agg_batch_size: int | None = Field(None, gt=0)
    """Default: the recipe's batch size."""
    agg_patience: int = Field(5, ge=1)
    """Aggregator evaluations (one per epoch) without a validation improvement before stopping."""
    agg_max_seconds: float | None = Field(None, gt=0)
    """Wall-clock budget of the aggregator's training (the best validation epoch so far is kept)."""
    agg_dropout: float = Field(0.3, ge=0.0, lt=1.0)
    """Dropout on the aggregated user embeddings in the aggregator's loss (public code: keep probability 0.7)."""
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

    The sub-models' inputs (layer-0 tables or served embeddings) are computed once; each epoch visits every
    edge once (fresh uniform negatives). A ``layer0`` aggregator's output is propagated over ``graph`` (the
    union of the shard graphs) at every step, as in the public code. Validation (the recipe's monitored metric
    on the validation split, training edges of ``graph`` masked) runs before training and after every epoch.
    """
    t0 = time.perf_counter()
    us, is_ = ensemble.stacked()
    device = us.device
    agg.to(device)
    mu, mi = ensemble.masks(device)
    tc = ctx.config.train
    masks = masks_for(ctx.data, graph.edges)
    have_valid = len(ctx.data.valid) > 0
    layer0 = agg.inputs == "layer0"

    def serve(mask_users, mask_items):
        u, i = agg.users(us, mask_users), agg.items(is_, mask_items)
        return ensemble.propagate(u, i) if layer0 else (u, i)

    def validate() -> float:
        agg.eval()
        with torch.no_grad():
            u, i = serve(mu, mi)
        agg.train()
        return float(evaluate_ranking(u, i, masks["valid_truth"], masks["valid_exclude"], ks=tc.ks).metrics[tc.monitor])

    history: list[dict[str, Any]] = []
    best = validate() if have_valid else -np.inf
    best_epoch, best_state, bad = 0, copy.deepcopy(agg.state_dict()), 0
    history.append({"epoch": 0, "valid": best})
    params = [p for p in agg.parameters() if p.requires_grad]
    reason = "epoch limit"
    if config.agg_epochs > 0 and graph.n_edges:
        opt = torch.optim.Adam(params, lr=config.agg_learning_rate, weight_decay=config.agg_weight_decay)
        sampler = BPRSampler(graph.edges, graph.n_items)
        bs = config.agg_batch_size or tc.batch_size
        agg.train()
        for epoch in range(1, config.agg_epochs + 1):
            rng = epoch_rng(tc.seed + 15_485_863, epoch)
            torch.manual_seed(int(rng.integers(2**62)))  # the dropout masks
            total, n = 0.0, 0
            for batch in sampler.epoch(bs, rng, device):
                if layer0:
                    users, items = serve(mu, mi)
                    u, p, q = users[batch.users], items[batch.pos], items[batch.neg]
                else:
                    u = agg.users(us[batch.users], _rows(mu, batch.users))
                    p = agg.items(is_[batch.pos], _rows(mi, batch.pos))
                    q = agg.items(is_[batch.neg], _rows(mi, batch.neg))
                if config.agg_dropout > 0:
                    u = F.dropout(u, config.agg_dropout, training=True)
                loss = bpr_loss((u * p).sum(-1), (u * q).sum(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                n += 1
            rec: dict[str, Any] = {"epoch": epoch, "loss": total / max(1, n), "seconds": time.perf_counter() - t0}
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
                reason = "early stop"
                break
            if config.agg_max_seconds is not None and time.perf_counter() - t0 >= config.agg_max_seconds:
                reason = "time budget"
                break
    agg.load_state_dict(best_state)
    agg.eval()
    return {"best_epoch": best_epoch, f"best_valid_{tc.monitor}": None if not np.isfinite(best) else best,
            "epochs_run": len(history) - 1, "stop_reason": reason, "inputs": agg.inputs,
            "seconds": time.perf_counter() - t0, "history": history}


def _rows(mask: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if mask is None else mask[idx]


@register
class RecEraser(ShardedUnlearner):
    """RecEraser: balanced shards from WMF embeddings, one sub-model each, attention aggregation."""

    name = "receraser"
    paper = "RecEraser (Chen, Sun, Zhang, Ding, 'Recommendation Unlearning', WWW 2022)"
    Config = RecEraserConfig

    def _partition(self, ctx: Context) -> Partition:
        c = self.config
        strategy = _STRATEGY[c.partition]
        user_emb = item_emb = None
        pretrain: dict[str, Any] = {"embeddings": None}
        if strategy != "random-interaction":
            if c.embeddings == "wmf":
                w = wmf_als(ctx.graph, c.wmf_dim or ctx.config.model.embedding_size, neg_weight=c.wmf_neg_weight,
                            reg=c.wmf_reg, iterations=c.wmf_iterations, seed=c.seed, data=ctx.data,
                            monitor=ctx.config.train.monitor)
                user_emb, item_emb = w.user_emb, w.item_emb
                pretrain = {"embeddings": "wmf", **w.info()}
            else:
                user_emb, item_emb = ctx.model.embeddings(ctx.graph)
                pretrain = {"embeddings": "model"}
        try:
            part = partition_graph(ctx.graph, strategy, c.n_shards, user_emb=user_emb, item_emb=item_emb, seed=c.seed,
                                   iterations=c.iterations, slack=c.balance_slack, combine=c.interaction_distance)
        except ValueError as e:
            raise UnlearnerError(f"{self.name}: {e}") from None
        part.info["pretrain"] = pretrain
        return part

    def _ensemble(self, ctx: Context, graphs: list[Graph], models: list, user_home, residual: Graph):
        c = self.config
        dim = ctx.config.model.embedding_size
        agg = AttentionAggregator(len(models), dim, c.attention_size, c.activation, seed=c.seed, inputs=c.aggregate)
        ensemble = Ensemble(models, graphs, aggregator=agg, user_home=user_home, mask_absent=c.mask_absent)
        log = train_aggregator(agg, ensemble, ctx, residual, c)
        return ensemble, log

    def _ensemble_tensors(self, ensemble: Ensemble) -> dict[str, torch.Tensor]:
        return {f"aggregator.{k}": v for k, v in ensemble.aggregator.state_dict().items()}

    def _restore_ensemble(self, ctx: Context, graphs: list[Graph], models: list, user_home, tensors) -> Ensemble:
        c = self.config
        agg = AttentionAggregator(len(models), ctx.config.model.embedding_size, c.attention_size, c.activation,
                                  seed=c.seed, inputs=c.aggregate)
        agg.load_state_dict({k: tensors[f"aggregator.{k}"] for k in agg.state_dict()})
        agg.to(models[0].embedding.device).eval()
        return Ensemble(models, graphs, aggregator=agg, user_home=user_home, mask_absent=c.mask_absent)
