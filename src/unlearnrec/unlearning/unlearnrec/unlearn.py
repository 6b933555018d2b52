"""Unlearning a real deletion request with a pre-trained Influence Encoder (UnlearnRec spec §5).

1. Build ``Â_Δ`` (the request) and ``Â_r`` (the residual graph); one encoder pass gives ``Ẽ0``: the
   zero-shot unlearned model.
2. Optional "little fine-tuning": ``k`` epochs of ``L_M + λ_u' L_U + λ_p' L_P`` on the residual graph with the
   layer-0 table and the encoder's MLP trainable (``Ẽ0 = E0' + MLP'(−γ E_w^L + H̄)`` with ``E0'`` starting at
   E0 and ``MLP'`` at the encoder's MLP, so epoch 0 is exactly the zero-shot output; ``H0`` and ``W_η`` stay
   fixed). The kept epoch (the zero-shot one included) maximises, by default, the spec's gap
   ``mean(score of random non-edges) − mean(score of request edges)`` among the epochs whose validation
   recall@20 is at least ``finetune_min_recall_ratio`` of the best epoch's (:func:`select_epoch`);
   ``finetune_select="target"`` keeps instead the epoch whose request edges rank most like the retrain proxy
   (below), and ``auto`` picks one of the two per request (:func:`resolve_select`).
3. The unlearned model is a copy of the backbone whose ``embedding`` is the final ``Ẽ0``; it serves on
   ``Â_r`` and its evaluation masks only the residual training edges (forgotten items are rankable again).

Two additions beyond the paper (used by ``unlearnrec-calibrated``), both measured on ML-1M LightGCN with the
retired ``benchmarks/unlearning.py`` (its results: ``benchmarks/results/unlearning_ml-1m_*``):

* **Deleted nodes** (``reset_isolated``): a node the request leaves without edges (a whole user, a whole item)
  gets a fresh draw from the backbone's initialisation, which is what a retrained model holds for it. The
  encoder only shifts such a row: 10 deleted users kept their items at a rank percentile of 0.16 (0.36 after
  a fine-tuning epoch), where retraining puts them at 0.51–0.55; with the reset, 0.51 and MI-NG 1.30
  (retrained: 0.55 and 1.32) with no fine-tuning, in 0.08 s.
* **Fine-tuning towards the retrain proxy**: when the rule is ``target`` the spec's ``L_U`` (``−log σ(−ŷ)``,
  which drives every request score towards −∞ through the users' rows and, on a random request touching most
  users, shrinks all scores and utility with them) is replaced by :func:`~.encoder.proxy_unlearning_loss`:
  the request edges' score relative to the users' remaining positives is pulled down to where the same
  users' validation edges sit (matching the distribution, one-sided), and no further. On a 1 % random request
  it moved the request edges' rank percentile from 0.063 (zero-shot; 0.058 before; 0.103 retrained) to 0.089
  in 22 s with recall 0.2282 (retrained 0.2270); the spec's loss, made strong enough to move them, first
  shrank every score (validation-edge mean 4.07 to 1.83) and cost 9 % of recall, so the recall floor kept the
  zero-shot model.

Retrain proxy. A model retrained without a *random* request treats the deleted edges like any real
interaction it never saw, i.e. like the validation edges. So where a retrained model would put the request
edges is estimated from the same users' validation edges: their mean score (``valid_target``) and their rank
percentile against random non-edges (``valid_auc``); ``auc_excess = request_auc − valid_auc`` is what
unlearning should remove (see :class:`RequestProbe`). For adversarial requests of least-likely edges the
retrained level is lower still; the gap rule covers that case.

Sequential requests (:func:`unlearn_sequence`) act on the already-unlearned model each time. Two modes:
``new`` (the encoder sees only the new request) and ``accumulated`` (the union of all requests so far). With
``hbar="sum"`` the request-independent part of ``H̄`` (``H^0 = H0``, an offset every node receives) is
applied at the first step only: the later models already carry it (``reapply_offset=True`` restores the
naive repetition). ``new`` is the default. Measured on gowalla-tiny (LightGCN d=32, L=3, encoder pre-trained
with the defaults for 20 epochs; five 2 % random requests, one fine-tuning epoch each; original validation
recall@20 0.474, retrained without all five 0.457), after the fifth step, recall@20 / ``auc_excess`` of all
forgotten edges: ``new`` 0.420 / 0.080; ``new`` re-applying the offset 0.333 / 0.127; ``accumulated``
0.335 / 0.079 (retrained: 0.011). Re-feeding earlier requests re-applies their withdraw term to a model that
has already forgotten them, which compounds the shift on those nodes at
every step, costs utility and does not forget better; and its cost grows with the history.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unlearnrec.data.interactions import Interactions, as_pairs, user_item_matrix
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch, Recommender
from unlearnrec.sampling import BPRSampler
from unlearnrec.training import epoch_rng, resolve_device
from unlearnrec.unlearning.unlearnrec.config import UnlearnRecConfig
from unlearnrec.unlearning.unlearnrec.encoder import (
    InfluenceEncoder,
    backbone_loss,
    preservation_loss,
    proxy_unlearning_loss,
    proxy_weights,
    unlearning_loss,
)
from unlearnrec.unlearning.unlearnrec.idm import accumulate, influence_dependency_matrix, request_edges


# ---------------------------------------------------------------------------- helpers
def _head(batch: Batch, n: int | None) -> Batch:
    """The first ``n`` triples of a (shuffled) batch: ``L_P``'s in-batch softmax builds an n x n matrix."""
    if n is None or len(batch) <= n:
        return batch
    return Batch(batch.users[:n], batch.pos[:n], batch.neg[:n])


def final_embeddings(model: Recommender, graph: Graph | None, e0: torch.Tensor | None = None) -> torch.Tensor:
    """All nodes' final embeddings (users first), no gradient, eval mode."""
    u, i = model.embeddings(graph, e0)
    return torch.cat([u, i], 0)


def with_embedding(model: Recommender, e0: torch.Tensor) -> Recommender:
    """A new backbone of the same class and config as ``model`` whose ``embedding`` is ``e0``."""
    new = type(model)(model.n_users, model.n_items, model.config)
    new.load_state_dict(model.state_dict())
    with torch.no_grad():
        new.embedding.copy_(e0.detach().to(new.embedding.device))
    return new.to(e0.device)


def isolated_reset(
    model: Recommender, graph: Graph, residual: Graph, seed: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(node mask, fresh rows)`` for the nodes that have edges in ``graph`` but none in ``residual``: fresh rows
    drawn like the backbone's initialisation (``N(0, init_std²)``, seeded), as a retrained model would hold them
    (see ``UnlearnRecConfig.reset_isolated``). ``None`` when the request isolates no node."""
    n_users = model.n_users
    before = np.zeros(model.n_users + model.n_items, dtype=bool)
    after = np.zeros_like(before)
    for g, deg in ((graph, before), (residual, after)):
        e = g.edges
        deg[e[:, 0]] = True
        deg[n_users + e[:, 1]] = True
    mask = before & ~after
    if not mask.any():
        return None
    gen = torch.Generator().manual_seed(int(seed))
    rows = torch.randn(int(mask.sum()), model.embedding.shape[1], generator=gen) * model.config.init_std
    dev = model.embedding.device
    return torch.from_numpy(mask).to(dev), rows.to(device=dev, dtype=model.embedding.dtype)


def _with_reset(e0: torch.Tensor, reset: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    if reset is None:
        return e0
    mask, rows = reset
    out = e0.clone()
    out[mask] = rows
    return out


def sample_nonedges(users: np.ndarray, sampler: BPRSampler, rng: np.random.Generator) -> np.ndarray:
    """One non-edge per entry of ``users``: an item drawn uniformly among those the user has no pair with in
    ``sampler``'s positives (user-matched random non-edges)."""
    users = np.asarray(users, dtype=np.int64)
    if not len(users):
        return as_pairs(None)
    return np.stack([users, sampler.negatives(users, rng)], axis=1)


def _subsample(pairs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return pairs if len(pairs) <= n else pairs[np.sort(rng.choice(len(pairs), size=n, replace=False))]


class RequestProbe:
    """A fixed measurement set for one request: where the model puts the request edges, and its utility.

    Measured on the model serving on ``graph``:

    * ``recall@20``, ``ndcg@20``: validation ranking, masking ``graph``'s edges only;
    * ``request_score``: mean score of the request edges; ``nonedge_score``: mean score of user-matched random
      non-edges (each request edge's user, an item it never interacted with in any split); ``gap`` =
      ``nonedge_score − request_score`` (the spec's fine-tuning criterion);
    * ``valid_target``: the retrain proxy — mean validation-edge score of the request edges' users (weighted by
      their request edges); ``excess = request_score − valid_target``;
    * ``request_auc``: P(score of a request edge > score of a random non-edge of the same user), the request
      edges' mean rank percentile; ``valid_auc``: the same for the validation edges of the request's users;
      ``auc_excess = request_auc − valid_auc``: scale-free, 0 = retrain-like (a random request's edges rank
      like unseen true items), > 0 = still memorised, < 0 = over-unlearned;
    * ``request_sigma``, ``nonedge_sigma``: mean σ(score) (the MI-BF / MI-NG ingredients).

    Args:
        data: the dataset (validation split).
        graph: the serving graph.
        request: the request edges.
        positives: every known pair (non-edges avoid them).
        rng: seeds the non-edges and subsamples (fixed at construction).
        n_probe: at most this many request edges and validation edges enter the AUCs.
        per_edge: non-edges drawn per probed edge.
    """

    def __init__(
        self,
        data: Interactions,
        graph: Graph,
        request: np.ndarray,
        positives: np.ndarray,
        rng: np.random.Generator,
        n_probe: int = 20000,
        per_edge: int = 4,
        ks=(20,),
    ):
        self.data, self.graph, self.ks = data, graph, tuple(ks)
        self.truth = user_item_matrix(data.valid, data.n_users, data.n_items)
        self.exclude = graph.user_items()
        sampler = BPRSampler(positives, data.n_items)
        counts = np.bincount(data.valid[:, 0], minlength=data.n_users)
        has = counts[request[:, 0]] > 0
        in_req = np.zeros(data.n_users, bool)
        in_req[request[:, 0]] = True
        valid = data.valid[in_req[data.valid[:, 0]]]
        req_p = _subsample(request, n_probe, rng)
        val_p = _subsample(valid, n_probe, rng)
        req_non = sample_nonedges(np.repeat(req_p[:, 0], per_edge), sampler, rng)
        val_non = sample_nonedges(np.repeat(val_p[:, 0], per_edge), sampler, rng)
        self.per_edge = per_edge
        dev = graph.device
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(dev)  # noqa: E731
        self.req = (t(request[:, 0]), t(request[:, 1]))
        self.req_p, self.req_non = (t(req_p[:, 0]), t(req_p[:, 1])), (t(req_non[:, 0]), t(req_non[:, 1]))
        self.val_p, self.val_non = (t(val_p[:, 0]), t(val_p[:, 1])), (t(val_non[:, 0]), t(val_non[:, 1]))
        self.val_all = (t(data.valid[:, 0]), t(data.valid[:, 1]))
        self.val_count = torch.from_numpy(counts.astype(np.float32)).to(dev)
        self.req_u_with_valid = t(request[has, 0])

    def with_graph(self, graph: Graph) -> RequestProbe:
        """The same measurement set for a model serving on another graph (e.g. the full pre-deletion graph)."""
        other = copy.copy(self)
        other.graph = graph
        other.exclude = graph.user_items()
        return other

    @staticmethod
    def _scores(users: torch.Tensor, items: torch.Tensor, pairs) -> torch.Tensor:
        return (users[pairs[0]] * items[pairs[1]]).sum(-1)

    def _auc(self, pos: torch.Tensor, neg: torch.Tensor) -> float:
        if not pos.numel():
            return float("nan")
        p = pos.repeat_interleave(self.per_edge)
        return float(((p > neg).float() + 0.5 * (p == neg).float()).mean())

    @torch.no_grad()
    def measure(self, model: Recommender, e0: torch.Tensor | None = None) -> dict[str, float]:
        """The measurements above for ``model`` (with ``e0`` replacing its table, if given) on the probe's graph."""
        users, items = model.embeddings(self.graph, e0)
        rank = evaluate_ranking(users, items, self.truth, self.exclude, ks=self.ks).metrics
        s_req = self._scores(users, items, self.req)
        s_non = self._scores(users, items, self.req_non)
        s_val = self._scores(users, items, self.val_all)
        per_user = torch.zeros(len(users), device=users.device).index_add_(0, self.val_all[0], s_val)
        per_user = per_user / self.val_count.clamp(min=1)
        target = float(per_user[self.req_u_with_valid].mean()) if len(self.req_u_with_valid) else float("nan")
        req, non = float(s_req.mean()), float(s_non.mean())
        req_auc = self._auc(self._scores(users, items, self.req_p), s_non)
        val_auc = self._auc(self._scores(users, items, self.val_p), self._scores(users, items, self.val_non))
        return {
            "recall@20": rank["recall@20"],
            "ndcg@20": rank["ndcg@20"],
            "request_score": req,
            "nonedge_score": non,
            "valid_target": target,
            "gap": non - req,
            "excess": req - target,
            "request_auc": req_auc,
            "valid_auc": val_auc,
            "auc_excess": req_auc - val_auc,
            "request_sigma": float(torch.sigmoid(s_req).mean()),
            "nonedge_sigma": float(torch.sigmoid(s_non).mean()),
        }


def build_probe(
    data: Interactions,
    full_graph: Graph,
    serve_graph: Graph,
    request: np.ndarray,
    n_probe: int,
    rng: np.random.Generator,
    ks=(20,),
) -> RequestProbe:
    """A :class:`RequestProbe` whose non-edges avoid the full graph, the training and the validation pairs.

    The test split is never read: the probe drives model selection (pre-training epochs, fine-tuning epochs).
    """
    positives = np.concatenate([full_graph.edges, data.train, data.valid])
    return RequestProbe(data, serve_graph, request, positives, rng, n_probe=n_probe, ks=ks)


# ---------------------------------------------------------------------------- result
@dataclass
class UnlearnResult:
    """The outcome of unlearning one request.

    Attributes:
        model: the unlearned backbone (same class and config; ``embedding`` = the final ``Ẽ0``); serve it on
            ``graph`` and evaluate it with the standard tools, masking ``graph``'s edges only.
        graph: the residual graph ``E \\ E_Δ``.
        request: the request edges (sorted unique ``(n, 2)``).
        zero_shot_e0: ``Ẽ0`` straight from the encoder (before fine-tuning).
        timings: ``graph_seconds`` (building ``Â_Δ``, ``Â_r``), ``encoder_seconds`` (Ē and the encoder pass),
            ``finetune_seconds`` (fine-tuning, its per-epoch validation included; split in
            ``finetune_train_seconds`` and ``finetune_eval_seconds``), ``total_seconds``.
        log: the probe's measurements of the original model on the residual graph (``epoch = "before"``), then
            per fine-tuning epoch (epoch 0 = zero-shot): losses and the same measurements.
        selected_epoch: the kept epoch (0 = zero-shot).
        idm_edges: number of edges the encoder saw (differs from the request in ``accumulated`` sequences).
    """

    model: Recommender
    graph: Graph
    request: np.ndarray
    zero_shot_e0: torch.Tensor
    timings: dict[str, float]
    log: list[dict[str, Any]] = field(default_factory=list)
    selected_epoch: int = 0
    idm_edges: int = 0
    finetune_epochs: int = 0

    @property
    def n_request(self) -> int:
        return int(len(self.request))

    @property
    def zero_shot_model(self) -> Recommender:
        """The zero-shot unlearned backbone (encoder output, no fine-tuning)."""
        return with_embedding(self.model, self.zero_shot_e0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no tensors)."""
        return {
            "n_request": self.n_request,
            "idm_edges": self.idm_edges,
            "residual_edges": self.graph.n_edges,
            "finetune_epochs": self.finetune_epochs,
            "selected_epoch": self.selected_epoch,
            "timings": dict(self.timings),
            "log": self.log,
        }


# ---------------------------------------------------------------------------- core
def _unlearn(
    model: Recommender,
    graph: Graph,
    encoder: InfluenceEncoder,
    removed: np.ndarray,
    idm_request: np.ndarray,
    data: Interactions,
    config: UnlearnRecConfig,
    finetune_epochs: int,
    progress: bool | None,
    step_seed: int = 0,
    include_offset: bool = True,
    residual: Graph | None = None,
) -> UnlearnResult:
    device = resolve_device(config.device)
    t_start = time.perf_counter()
    if not len(removed):
        raise ValueError("the deletion request is empty")
    if model.n_users != encoder.n_users or model.n_items != encoder.n_items:
        raise ValueError(
            f"encoder is for {encoder.n_users} users x {encoder.n_items} items, model has "
            f"{model.n_users} x {model.n_items}"
        )
    model.to(device)
    encoder.to(device)
    graph = graph.to(device)
    if residual is None:  # strict: refuses pairs that are not edges, listing them
        residual = graph.without(removed)
    residual = residual.to(device)
    idm = influence_dependency_matrix(idm_request, model.n_users, model.n_items, device)
    t_graph = time.perf_counter()

    with torch.no_grad():
        e0 = model.embedding.detach()
        e_bar = final_embeddings(model, graph)
        raw, _ = encoder.delta_for(idm, e_bar, residual, include_offset=include_offset)
        reset = None
        if config.reset_isolated:
            reset = isolated_reset(model, graph, residual, config.seed + 7919 * step_seed)
        zero = _with_reset(e0 + encoder.apply_mlp(raw), reset)
    t_enc = time.perf_counter()

    log: list[dict[str, Any]] = []
    final, selected = zero, 0
    train_s = eval_s = 0.0
    if finetune_epochs > 0:
        final, selected, log, train_s, eval_s = _finetune(
            model, graph, residual, encoder, raw, e0, e_bar, removed, data, config, finetune_epochs, progress,
            step_seed, reset,
        )
    t_end = time.perf_counter()
    timings = {
        "graph_seconds": t_graph - t_start,
        "encoder_seconds": t_enc - t_graph,
        "finetune_seconds": t_end - t_enc,
        "finetune_train_seconds": train_s,
        "finetune_eval_seconds": eval_s,
        "total_seconds": t_end - t_start,
    }
    return UnlearnResult(
        model=with_embedding(model, final),
        graph=residual,
        request=removed,
        zero_shot_e0=zero.detach(),
        timings=timings,
        log=log,
        selected_epoch=selected,
        idm_edges=int(len(idm_request)),
        finetune_epochs=int(finetune_epochs),
    )


class ProxyPairs:
    """The request edges and validation edges that :func:`~.encoder.proxy_unlearning_loss` compares, each drawn
    with a fresh random remaining positive of its user at every step. Users left without any training edge are
    left out (nothing to be relative to; their rows are reset anyway), as are request edges of users without
    validation edges."""

    def __init__(self, request: np.ndarray, valid: np.ndarray, sampler: BPRSampler, n_users: int, device):
        has_pos = np.bincount(sampler.pairs[:, 0], minlength=n_users) > 0
        keep, self.valid, w = proxy_weights(request[:, 0], valid[has_pos[valid[:, 0]]], n_users)
        self.request = request[keep & has_pos[request[:, 0]]]
        self.sampler, self.device = sampler, device
        self.weights = torch.from_numpy(w).to(device)

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self.device)

    def draw(self, rng: np.random.Generator) -> tuple:
        """``(request (u, i, p), valid (u, v, p'), valid weights)`` for one step."""
        req, val = self.request, self.valid
        rp, vp = self.sampler.positives(req[:, 0], rng), self.sampler.positives(val[:, 0], rng)
        return ((self._t(req[:, 0]), self._t(req[:, 1]), self._t(rp)),
                (self._t(val[:, 0]), self._t(val[:, 1]), self._t(vp)), self.weights)


def request_reach(removed: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """Node mask (users first) of the request's endpoints: the rows a ``reach``-scoped fine-tuning updates."""
    mask = np.zeros(n_users + n_items, dtype=bool)
    mask[removed[:, 0]] = True
    mask[n_users + removed[:, 1]] = True
    return mask


def _finetune(
    model, graph, residual, encoder, raw, e0, e_bar, removed, data, config, epochs, progress, step_seed, reset=None
):
    device = e0.device
    t0 = time.perf_counter()
    mlp = copy.deepcopy(encoder.mlp)
    for p in mlp.parameters():
        p.requires_grad_(True)
    sampler = BPRSampler(residual.edges, model.n_items)
    if config.finetune_scope == "reach":
        # only the request's endpoints move; triples: residual edges touching them, at most
        # finetune_triples_per_edge per request edge (negatives still avoid every residual positive of the user)
        reach_mask = request_reach(removed, model.n_users, model.n_items)
        reach = torch.from_numpy(np.flatnonzero(reach_mask)).to(device)
        with torch.no_grad():
            fixed = e0 + encoder.apply_mlp(raw)  # the zero-shot table, before the reset (applied in current())
        table = torch.nn.Parameter(e0[reach].clone())
        raw_reach = raw[reach]
        pu, pi = sampler.pairs[:, 0], sampler.pairs[:, 1]
        triple_index = np.flatnonzero(reach_mask[pu] | reach_mask[model.n_users + pi])
        limit = None if config.finetune_triples_per_edge is None else config.finetune_triples_per_edge * len(removed)
    else:
        table = torch.nn.Parameter(e0.clone())
        triple_index, limit = None, None
    opt = torch.optim.Adam([table, *mlp.parameters()], lr=config.finetune_learning_rate)
    req_u = torch.from_numpy(removed[:, 0]).to(device)
    req_i = torch.from_numpy(removed[:, 1]).to(device)
    probe_rng = np.random.default_rng([config.seed, 977, step_seed])
    probe = build_probe(data, graph, residual, removed, config.n_probe, probe_rng, config.ks)
    frozen = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(False)

    def current() -> torch.Tensor:
        if config.finetune_scope == "reach":
            return _with_reset(fixed.index_put((reach,), table + encoder.apply_mlp(raw_reach, mlp)), reset)
        return _with_reset(table + encoder.apply_mlp(raw, mlp), reset)

    before = probe.measure(model, e0)  # the original model served on the residual graph: utility reference
    base = probe.measure(model, current().detach())
    mode = resolve_select(config.finetune_select, before)
    target_excess = encoder.config.finetune_target_excess  # set by pre-training (calibration retrains)
    proxy = ProxyPairs(removed, data.valid, sampler, model.n_users, device) if mode == "target" else None
    eval_s = time.perf_counter() - t0  # probe construction counts as evaluation
    train_s = 0.0
    log: list[dict[str, Any]] = [{"epoch": 0, **base}]
    tables = [current().detach().clone()]
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(range(1, epochs + 1), desc="unlearnrec fine-tune", disable=not show, leave=False)
    try:
        for epoch in bar:
            ts = time.perf_counter()
            rng = epoch_rng(config.seed + 7_000_003 * (step_seed + 1), epoch)
            torch.manual_seed(int(rng.integers(2**62)))
            model.train()
            model.start_epoch(residual, rng)
            sums: dict[str, float] = {}
            n = 0
            for batch in sampler.epoch_of(triple_index, config.finetune_batch_size, rng, device, limit):
                e0t = current()
                emb = model.propagate(residual, e0t)
                lm, _ = backbone_loss(model, batch, residual, e0t, emb)
                if mode == "target":
                    lu = proxy_unlearning_loss(emb, model.n_users, *proxy.draw(rng))
                    lam_u = config.finetune_lambda_target
                else:
                    lu = unlearning_loss(emb, model.n_users, req_u, req_i)
                    lam_u = config.finetune_lambda_u
                lp = preservation_loss(emb, e_bar, model.n_users, _head(batch, config.lp_max_pairs), config.tau_p)
                loss = lm + lam_u * lu + config.finetune_lambda_p * lp
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for k, v in (("loss", loss), ("l_m", lm), ("l_u", lu), ("l_p", lp)):
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                n += 1
            model.eval()
            te = time.perf_counter()
            train_s += te - ts
            with torch.no_grad():
                cand = current().detach().clone()
            m = probe.measure(model, cand)
            eval_s += time.perf_counter() - te
            rec = {"epoch": epoch, **{k: v / max(1, n) for k, v in sums.items()}, **m,
                   "seconds": time.perf_counter() - ts}
            log.append(rec)
            tables.append(cand)
            bar.set_postfix(
                req=f"{m['request_score']:.2f}", non=f"{m['nonedge_score']:.2f}", r20=f"{m['recall@20']:.4f}"
            )
            # in rank (at the calibrated target), or in mean score (the proxy)
            reached = m["auc_excess"] <= target_excess or m["excess"] <= 0
            kept_utility = m["recall@20"] >= config.finetune_min_recall_ratio * before["recall@20"]
            if mode == "target" and reached and kept_utility:
                break  # the retrain proxy is reached with utility intact: more epochs would only over-unlearn
    finally:
        bar.close()
        for p, f in zip(model.parameters(), frozen, strict=False):
            p.requires_grad_(f)
        model.train(was_training)
    best_epoch = select_epoch(log, config, before["recall@20"], mode, target_excess)
    for rec in log:
        rec["selected"] = rec["epoch"] == best_epoch
        rec["select_mode"] = mode
    before["selected"] = False
    return tables[best_epoch], best_epoch, [{"epoch": "before", **before}] + log, train_s, eval_s


def resolve_select(select: str, before: dict[str, float]) -> str:
    """The selection rule for one request: ``auto`` becomes ``target`` when the original model ranks the request
    edges above the same users' validation edges (``auc_excess > 0``), else ``gap`` (see the config field)."""
    if select != "auto":
        return select
    return "target" if before["auc_excess"] > 0 else "gap"


def select_epoch(log: list[dict[str, Any]], config: UnlearnRecConfig, reference_recall: float,
                 mode: str | None = None, target_excess: float | None = None) -> int:
    """The fine-tuning epoch to keep (0 = zero-shot).

    Eligible: the epochs whose validation recall@20 is at least ``finetune_min_recall_ratio`` times
    ``reference_recall``, the original model's served on the residual graph (the utility before unlearning);
    when none is, the epoch with the best recall. The floor is not relative to the zero-shot model: that one
    often gives up utility that the first fine-tuning epoch wins back (ML-1M, 1 % random request: 0.2042
    zero-shot, 0.2083 after one epoch, 0.2109 before unlearning, 0.2142 retrained), and the spec's gap, which is
    not scale-free, favours the zero-shot's uniformly shrunk scores. Among the eligible: ``gap`` (the spec's
    rule) keeps the largest ``mean(non-edges) − mean(request edges)``, ``target`` the ``auc_excess`` nearest
    ``finetune_target_excess`` (0, or where the calibration's retrained held-out requests put it).
    """
    log = [r for r in log if isinstance(r["epoch"], int)]
    floor = config.finetune_min_recall_ratio * reference_recall
    eligible = [r for r in log if r["recall@20"] >= floor]
    if not eligible:
        return int(max(log, key=lambda r: r["recall@20"])["epoch"])
    mode = mode or resolve_select(config.finetune_select, {"auc_excess": 0.0})
    if mode == "gap":
        return int(max(eligible, key=lambda r: r["gap"])["epoch"])
    target = config.finetune_target_excess if target_excess is None else target_excess
    return int(min(eligible, key=lambda r: abs(r["auc_excess"] - target))["epoch"])


# ---------------------------------------------------------------------------- public API
def unlearn_request(
    model: Recommender,
    graph: Graph,
    encoder: InfluenceEncoder,
    request,
    data: Interactions,
    config: UnlearnRecConfig | None = None,
    finetune_epochs: int | None = None,
    progress: bool | None = None,
) -> UnlearnResult:
    """Unlearn ``request`` from ``model`` (trained on ``graph``) with a pre-trained ``encoder``.

    Args:
        model: the trained backbone (left unchanged; the result holds a new one).
        graph: the graph ``model`` serves on (its training edges, attacked edges included).
        encoder: the Influence Encoder pre-trained for this model (:func:`pretrain_encoder` / :func:`load_encoder`).
        request: ``(n, 2)`` training edges, or an object with ``.edges``; every pair must be an edge of ``graph``
            (otherwise ``ValueError`` listing the offenders, and nothing changes).
        data: the dataset (validation split for the fine-tuning selection).
        config: hyper-parameters (default: the encoder's own config).
        finetune_epochs: ``k`` (default ``config.finetune_epochs``); 0 = zero-shot only.
    """
    config = config or encoder.config
    k = config.finetune_epochs if finetune_epochs is None else int(finetune_epochs)
    edges = request_edges(request)
    return _unlearn(model, graph, encoder, edges, edges, data, config, k, progress)


def unlearn_sequence(
    model: Recommender,
    graph: Graph,
    encoder: InfluenceEncoder,
    requests,
    data: Interactions,
    config: UnlearnRecConfig | None = None,
    finetune_epochs: int | None = None,
    mode: str | None = None,
    progress: bool | None = None,
    reapply_offset: bool = False,
) -> list[UnlearnResult]:
    """Apply ``requests`` one after another, each on the model the previous one left.

    Args:
        mode: ``new`` (the encoder sees only the new request; default, see the module docstring) or
            ``accumulated`` (the union of every request so far). Default: ``config.sequential_mode``.
        reapply_offset: with ``hbar="sum"``, add the request-independent offset ``H^0 = H0`` again at every step
            (default: only at the first; the later models already carry it).

    Returns:
        One :class:`UnlearnResult` per request; the ``i``-th holds the model and residual graph after request
        ``i`` (its ``graph`` excludes every request up to ``i``).
    """
    config = config or encoder.config
    mode = mode or config.sequential_mode
    if mode not in ("new", "accumulated"):
        raise ValueError(f"unknown sequential mode {mode!r} (expected 'new' or 'accumulated')")
    k = config.finetune_epochs if finetune_epochs is None else int(finetune_epochs)
    results: list[UnlearnResult] = []
    current_model, current_graph = model, graph
    seen = as_pairs(None)
    for step, req in enumerate(requests):
        edges = request_edges(req)
        seen = accumulate(seen, edges)
        idm_edges = edges if mode == "new" else seen
        res = _unlearn(
            current_model, current_graph, encoder, edges, idm_edges, data, config, k, progress, step + 1,
            include_offset=reapply_offset or step == 0,
        )
        results.append(res)
        current_model, current_graph = res.model, res.graph
    return results


__all__ = [
    "ProxyPairs",
    "RequestProbe",
    "UnlearnResult",
    "build_probe",
    "final_embeddings",
    "isolated_reset",
    "sample_nonedges",
    "unlearn_request",
    "unlearn_sequence",
    "with_embedding",
]
