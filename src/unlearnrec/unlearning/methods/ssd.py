"""Selective Synaptic Dampening (Foster, Schoepf, Brintrup, AAAI 2024), adapted to embedding-table recommenders.

SSD needs no retraining: it compares, entry by entry, how important each parameter is to the forget set and to the
whole training set, by the diagonal of the (empirical) Fisher information, the mean over the examples of the
squared gradient of the loss,

    I_D = (1/|D|) Σ_{t ∈ D} (∂ℓ_t/∂θ)²        I_f = (1/|D_f|) Σ_{t ∈ D_f} (∂ℓ_t/∂θ)²,

and dampens the entries that are disproportionately important to the forget set:

    θ_k ← β_k θ_k  where  I_f,k > α · I_D,k,  with  β_k = min(λ · I_D,k / I_f,k, 1);  the other entries unchanged.

Here ``D`` is every training edge (the request included, as in the paper) and ``D_f`` the request edges, each a BPR
triple ``t = (u, i, j)`` with a negative ``j`` drawn (seeded) among the items ``u`` has no training edge with, and
``ℓ_t`` the backbone's training loss on the one-triple batch ``{t}``: BPR on the propagated embeddings plus ``reg``
times half the squared layer-0 norms of ``u``, ``i``, ``j`` (for SGL and SimGCL the InfoNCE term of a one-triple
batch is zero: one anchor contrasted with itself). The parameters are the layer-0 table ``E0``; its entries are
(row, dimension) pairs.

**Per-triple, not per-batch.** The authors' code averages the squared gradients of *batch-mean* losses over the
batches. That estimate depends on the batch boundaries: a batch of ``B`` triples contributes
``(1/B Σ g_t)² ≈ (1/B²) Σ g_t²`` with weight ``1/#batches``, so a last partial batch (1,384 of a 9,576-triple
request at batch 2,048) weighs several times its share, and ``I_f`` and ``I_D`` are on scales set by their
batch counts rather than by their data. Here each triple's own squared gradient is summed exactly and divided by
the number of triples: the importances are the same whatever the chunk size (``batch_size`` only bounds memory).

**Exact per-triple gradients through the propagation.** The recommendation branch of every backbone is linear
in ``E0``: ``Z = M E0`` with ``M = I`` (MF) or ``M = mean_{l=0..L} Â^l`` (LightGCN, SGL, SimGCL; ``Â`` symmetric).
With ``δ_{t,r} = ∂ℓ_t/∂Z_r`` (non-zero on the triple's three rows ``r ∈ {u, i, j}``) and ``ρ_{t,r} = reg·E0_r``,
``∂ℓ_t/∂E0 = Σ_r M[r, :]ᵀ δ_{t,r} + Σ_r e_r ρ_{t,r}``, and its square summed over ``t`` expands into

* ``(M ∘ M)ᵀ W`` with ``W_r = Σ_t δ_{t,r}²`` (each row's own term),
* ``2 Σ_t M[a, :] ∘ M[b, :] ⊗ (δ_{t,a} ∘ δ_{t,b})`` over the triple's row pairs ``(u,i), (u,j), (i,j)``, evaluated
  per group of pairs sharing ``a`` as ``M[a, :]ᵀ ∘ (M[B_a, :]ᵀ W_a)`` (one GEMM per user and per item),
* the ``reg`` terms at the triple's own rows, through the entries ``M[r, r']`` of its rows.

``M`` is built column block by column block with the backbone's own ``propagate`` on one-hot tables (kept in memory
while it fits, ``dense_nodes``). Cost: ``O(N · |D| · d)`` for ``I_D`` (one-off), ``O(N · |D_f| · d)`` per request;
``data_triples`` estimates ``I_D`` from a uniform sample of the training triples on graphs too large for that.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from unlearnrec.config import YamlConfig
from unlearnrec.data.interactions import as_pairs
from unlearnrec.graph import Graph
from unlearnrec.models.base import Recommender
from unlearnrec.sampling import BPRSampler
from unlearnrec.unlearning.base import Context, Outcome, Unlearner, copy_model, register

__all__ = ["SSD", "SSDConfig", "Propagation", "dampen", "fisher_diagonal", "triple_fisher"]


class SSDConfig(YamlConfig):
    selection_weight: float = Field(10.0, gt=0.0)
    """``α``: an entry is selected when its forget-set importance exceeds ``α`` times its training-set one
    (paper default 10; select it per dataset on tuning requests)."""
    dampening: float = Field(1.0, gt=0.0)
    """``λ``: a selected entry is multiplied by ``min(λ · I_D / I_f, 1)`` (paper default 1)."""
    batch_size: int | None = Field(None, gt=0)
    """Triples per pass of the per-triple computation (default: the recipe's training batch size). Bounds memory
    only: the importances do not depend on it."""
    data_triples: int | None = Field(None, gt=0)
    """Estimate ``I_D`` from this many training triples drawn uniformly without replacement (default: all of
    them, exact); an unbiased estimate of the same per-triple mean, for graphs where ``O(N·|D|·d)`` is too much."""
    dense_nodes: int = Field(12_000, gt=0)
    """Keep the propagation matrix ``M`` (``N × N`` floats) in memory between requests when ``N`` is at most this;
    above, it is rebuilt block by block for every importance."""
    seed: int = 0
    """Seed of the negatives (``I_D`` with ``seed``, ``I_f`` with ``seed + 1``) and of the ``data_triples`` draw."""


# ------------------------------------------------------------------------------ the propagation matrix
class Propagation:
    """Columns of the matrix ``M`` with ``Z = M E0`` for a backbone on a graph (``M = I`` for MF).

    ``M[:, c] = propagate(graph, e_c)``: the backbone's own ``propagate`` applied to one-hot tables (its
    recommendation branch is linear in ``E0`` and does not depend on the table's width). ``dense``: build and keep
    the whole ``N × N`` matrix (built in column blocks of ``block`` nodes).
    """

    def __init__(self, model: Recommender, graph: Graph | None, *, dense: bool, block: int = 2048):
        self.model, self.graph = model, graph
        self.n = model.n_users + model.n_items
        self.identity = not model.uses_graph
        self.block = max(1, int(block))
        self.dense: torch.Tensor | None = None
        if dense and not self.identity:
            dev = model.embedding.device
            full = torch.empty(self.n, self.n, dtype=model.embedding.dtype, device=dev)
            for lo in range(0, self.n, self.block):
                cols = torch.arange(lo, min(self.n, lo + self.block), device=dev)
                full[:, lo:lo + len(cols)] = self._columns(cols)
            self.dense = full

    @torch.no_grad()
    def _columns(self, cols: torch.Tensor) -> torch.Tensor:
        e = torch.zeros(self.n, len(cols), dtype=self.model.embedding.dtype, device=self.model.embedding.device)
        e[cols, torch.arange(len(cols), device=e.device)] = 1.0
        return self.model.propagate(self.graph, e)

    def blocks(self):
        """``(cols, P)`` with ``P[r, k] = M[r, cols[k]]``, covering every column once."""
        dev = self.model.embedding.device
        if self.dense is not None:
            yield torch.arange(self.n, device=dev), self.dense
            return
        for lo in range(0, self.n, self.block):
            cols = torch.arange(lo, min(self.n, lo + self.block), device=dev)
            yield cols, self._columns(cols)

    @property
    def nbytes(self) -> int:
        return 0 if self.dense is None else self.dense.numel() * self.dense.element_size()


# ------------------------------------------------------------------------------ per-triple Fisher
def _triple_grads(model: Recommender, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-triple gradients of the one-triple loss: ``δ`` w.r.t. the propagated rows and ``ρ`` (the L2 term) w.r.t.
    the layer-0 rows, both ``(T, 3, d)`` in the order (user, positive, negative)."""
    zu, zp, zn = z[rows[:, 0]], z[rows[:, 1]], z[rows[:, 2]]
    sig = torch.sigmoid((zu * zn).sum(-1) - (zu * zp).sum(-1)).unsqueeze(1)  # d softplus(x_n - x_p)
    delta = torch.stack([sig * (zn - zp), -sig * zu, sig * zu], dim=1)
    rho = model.config.reg * model.embedding.detach()[rows]
    return delta, rho


@torch.no_grad()
def triple_fisher(model: Recommender, graph: Graph | None, triples: np.ndarray, *, chunk: int = 65536,
                  propagation: Propagation | None = None) -> torch.Tensor:
    """``Σ_t (∂ℓ_t/∂E0)²`` over the ``(T, 3)`` ``(user, positive, negative)`` triples, exactly (module docstring).

    ``ℓ_t`` is the backbone's loss on the one-triple batch ``{t}``; the result does not depend on ``chunk`` (triples
    per pass, memory only) beyond float rounding. Returns an ``(N, d)`` tensor (divide by ``T`` for the mean).
    """
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    if names != ["embedding"]:
        raise ValueError(f"SSD's per-triple Fisher covers the layer-0 table only; {type(model).__name__} also "
                         f"trains {', '.join(k for k in names if k != 'embedding')}")
    dev = model.embedding.device
    e0 = model.embedding.detach()
    n, d = e0.shape
    was = model.training
    model.eval()
    graph = graph.to(dev) if graph is not None else None
    z = e0 if not model.uses_graph else model.propagate(graph, e0)
    prop = propagation or Propagation(model, graph, dense=False)
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    rows_all = torch.from_numpy(np.stack([t[:, 0], model.n_users + t[:, 1], model.n_users + t[:, 2]], 1)).to(dev)
    acc = torch.zeros(n, d, dtype=e0.dtype, device=dev)
    for lo in range(0, len(rows_all), max(1, int(chunk))):
        rows = rows_all[lo:lo + chunk]
        delta, rho = _triple_grads(model, z, rows)
        if prop.identity:
            _identity_terms(acc, rows, delta, rho)
        else:
            _propagated_terms(acc, prop, rows, delta, rho)
    model.train(was)
    return acc


def _identity_terms(acc: torch.Tensor, rows: torch.Tensor, delta: torch.Tensor, rho: torch.Tensor) -> None:
    """``M = I`` (MF): a triple's gradient is ``δ + ρ`` on its own rows (summed where the positive is the negative)."""
    v = delta + rho
    same = (rows[:, 1] == rows[:, 2]).unsqueeze(1)
    vp = v[:, 1] + torch.where(same, v[:, 2], torch.zeros_like(v[:, 2]))
    vn = torch.where(same, torch.zeros_like(v[:, 2]), v[:, 2])
    acc.index_add_(0, rows.reshape(-1), torch.stack([v[:, 0], vp, vn], 1).pow(2).reshape(-1, acc.shape[1]))


def _propagated_terms(acc: torch.Tensor, prop: Propagation, rows: torch.Tensor, delta: torch.Tensor,
                      rho: torch.Tensor) -> None:
    """Add one chunk's ``Σ_t (Σ_r M[r,:]ᵀ δ_{t,r} + Σ_r e_r ρ_{t,r})²`` into ``acc`` (module docstring).

    BPR's gradients have ``δ_i = −δ_j = −v`` (``v = σ·z_u``) and ``δ_u = q``, so the propagated part of a triple is
    ``M[:,u] q + (M[:,j] − M[:,i]) v`` and its square sums to ``(M∘M)ᵀ W`` (each row's own terms) plus two grouped
    products: ``2 M[:,u] ∘ Σ_{t∋u} (M[:,j] − M[:,i]) (q∘v)`` per user and ``−2 M[:,i] ∘ Σ_{t∋i} M[:,j] v²`` per
    positive item.
    """
    n, d = acc.shape
    q, v = delta[:, 0], delta[:, 2]
    own = torch.zeros(n, d, dtype=acc.dtype, device=acc.device).index_add_(0, rows.reshape(-1),
                                                                         delta.pow(2).reshape(-1, d))
    qv, vv = q * v, v * v
    groups = []
    for first in (0, 1):  # by user, by positive item
        order = torch.argsort(rows[:, first], stable=True)
        keys, counts = torch.unique_consecutive(rows[order, first], return_counts=True)
        groups.append((first, order, keys.tolist(), counts.tolist()))
    local = torch.full((n,), -1, dtype=torch.long, device=acc.device)
    for cols, p in prop.blocks():
        whole = len(cols) == n
        part = acc if whole else acc[cols]  # (b, d): the block's rows of the result
        for lo in range(0, n, 4096):  # (M ∘ M)ᵀ W, in row chunks of M
            part.addmm_(p[lo:lo + 4096].pow(2).T, own[lo:lo + 4096])
        for first, order, keys, counts in groups:
            start = 0
            for a, k in zip(keys, counts, strict=True):
                idx = order[start:start + k]
                start += k
                if first == 0:
                    prod = (p[rows[idx, 2]] - p[rows[idx, 1]]).T @ qv[idx]
                    part.addcmul_(p[a].unsqueeze(1), prod, value=2.0)
                else:
                    prod = p[rows[idx, 2]].T @ vv[idx]
                    part.addcmul_(p[a].unsqueeze(1), prod, value=-2.0)
        # the L2 terms at the triple's own rows r' (where r' is a column of this block)
        local.fill_(-1)
        local[cols] = torch.arange(len(cols), device=acc.device)
        for jj in range(3):
            loc = local[rows[:, jj]]
            keep = loc >= 0
            if not bool(keep.any()):
                continue
            r_, l_ = rows[keep], loc[keep]
            h = sum(p[r_[:, j], l_].unsqueeze(1) * delta[keep, j] for j in range(3))
            val = 2.0 * rho[keep, jj] * h + rho[keep, jj].pow(2)
            for j in range(3):  # coincident rows (a positive drawn as the negative): the L2 cross terms
                if j != jj:
                    same = (r_[:, j] == r_[:, jj]).unsqueeze(1)
                    val = val + torch.where(same, rho[keep, j] * rho[keep, jj], torch.zeros_like(val))
            part.index_add_(0, l_, val)
        if not whole:
            acc[cols] = part


def _triples(pairs: np.ndarray, positives: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """``pairs`` (in their order) with one negative each, drawn outside the user's ``positives``."""
    pairs = as_pairs(pairs)
    neg = BPRSampler(positives, n_items).negatives(pairs[:, 0], rng)
    return np.concatenate([pairs, neg[:, None]], axis=1)


def fisher_diagonal(model: Recommender, graph: Graph, pairs: np.ndarray, positives: np.ndarray, *,
                    batch_size: int = 65536, seed: int, sample: int | None = None,
                    propagation: Propagation | None = None) -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher of ``pairs``: the mean over its triples of the squared per-triple gradient.

    Each pair gets one negative outside the user's ``positives`` (seeded by ``seed``); ``sample`` keeps that many
    pairs drawn uniformly (an unbiased estimate of the same mean). ``batch_size`` is the number of triples per pass
    and does not change the result. Returns ``{"embedding": (N, d) tensor}``.
    """
    rng = np.random.default_rng(seed)
    pairs = as_pairs(pairs)
    if sample is not None and sample < len(pairs):
        pairs = pairs[np.sort(rng.choice(len(pairs), int(sample), replace=False))]
    if not len(pairs):
        raise ValueError("no pairs to compute importances on")
    triples = _triples(pairs, positives, model.n_items, rng)
    total = triple_fisher(model, graph, triples, chunk=batch_size, propagation=propagation)
    return {"embedding": total / len(triples)}


@torch.no_grad()
def dampen(params: dict[str, torch.Tensor], importance_data: dict[str, torch.Tensor],
           importance_forget: dict[str, torch.Tensor], selection_weight: float, dampening: float) -> dict:
    """SSD's update, in place: where ``I_f > α I_D`` multiply by ``β = min(λ I_D / I_f, 1)``. Returns counts."""
    selected = 0
    total = 0
    rows = 0
    beta_sum = 0.0
    for k, p in params.items():
        i_d, i_f = importance_data[k], importance_forget[k]
        sel = i_f > selection_weight * i_d
        beta = torch.clamp(dampening * i_d / torch.where(sel, i_f, torch.ones_like(i_f)), max=1.0)
        p.mul_(torch.where(sel, beta, torch.ones_like(beta)))
        selected += int(sel.sum())
        total += sel.numel()
        rows += int(sel.reshape(sel.shape[0], -1).any(1).sum()) if sel.dim() > 1 else 0
        beta_sum += float(beta[sel].sum())
    return {"selected_entries": selected, "total_entries": total, "selected_fraction": selected / max(1, total),
            "rows_touched": rows, "mean_beta": beta_sum / selected if selected else None}


@register
class SSD(Unlearner):
    """Selective Synaptic Dampening (Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without Retraining Through
    Selective Synaptic Dampening", AAAI 2024) on the embedding table.

    ``prepare`` computes the training-set importances ``I_D`` (the one-off cost, request-independent) as exact
    per-triple means (module docstring); ``unlearn`` computes the request's ``I_f`` the same way and dampens every
    entry with ``I_f > α·I_D`` by ``β = min(λ·I_D/I_f, 1)``; the result is served on the residual graph. Settings:
    :class:`SSDConfig` (``selection_weight`` α and ``dampening`` λ, the paper's 10 and 1 by default, to be chosen
    per dataset on tuning requests). After :meth:`apply`, ``I_D`` is recomputed for the new model on the residual
    graph at the next request (and counted in that request's time). ``I_D`` can be saved with the bench's
    prepared-state cache.
    """

    name = "ssd"
    paper = ("SSD (Foster, Schoepf, Brintrup, 'Fast Machine Unlearning Without Retraining Through Selective Synaptic "
             "Dampening', AAAI 2024)")
    Config = SSDConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._importance_data: dict[str, torch.Tensor] | None = None
        self._propagation: Propagation | None = None

    @classmethod
    def prepare_fields(cls) -> set[str]:
        return {"data_triples", "seed"}  # I_D depends on these (and on the data); α, λ and the chunk size do not

    def _batch_size(self, ctx: Context) -> int:
        return int(self.config.batch_size or ctx.config.train.batch_size)

    def _propagation_for(self, ctx: Context) -> Propagation:
        if self._propagation is None or self._propagation.graph is not ctx.graph:
            n = ctx.model.n_users + ctx.model.n_items
            self._propagation = Propagation(ctx.model, ctx.graph, dense=n <= self.config.dense_nodes)
        return self._propagation

    def _prepare(self, ctx: Context) -> None:
        self._importance_data = fisher_diagonal(
            ctx.model, ctx.graph, ctx.graph.edges, ctx.graph.edges, batch_size=self._batch_size(ctx),
            seed=self.config.seed, sample=self.config.data_triples, propagation=self._propagation_for(ctx))

    def prepared_summary(self) -> dict | None:
        if self._importance_data is None:
            return None
        return {"importances": "per-triple mean squared gradients (batch-size independent)",
                "data_triples": self.config.data_triples}

    def save_prepared(self, directory) -> bool:
        if self._importance_data is None:
            return False
        save_file({k: v.detach().cpu().contiguous() for k, v in self._importance_data.items()},
                  str(Path(directory) / "importance_data.safetensors"))
        return True

    def load_prepared(self, ctx: Context, directory) -> bool:
        path, legacy = Path(directory) / "importance_data.safetensors", Path(directory) / "importance_data.pt"
        if path.is_file():
            imp = {k: v.to(ctx.model.embedding.device) for k, v in load_file(str(path)).items()}
        elif legacy.is_file():  # caches written before the safetensors switch; tensors only (weights_only)
            imp = torch.load(legacy, map_location=ctx.model.embedding.device, weights_only=True)
        else:
            return False
        if set(imp) != {"embedding"} or tuple(imp["embedding"].shape) != tuple(ctx.model.embedding.shape):
            return False
        self._importance_data = imp
        self.ctx = ctx
        self._propagation_for(ctx)  # request-independent, part of the one-off cost
        return True

    def _apply(self, outcome: Outcome) -> None:
        self._importance_data = None  # recomputed for the new state at the next request
        self._propagation = None

    def _unlearn(self, request: np.ndarray, residual: Graph) -> Outcome:
        ctx = self._require()
        c = self.config
        t0 = time.perf_counter()
        if self._importance_data is None:
            self._prepare(ctx)
        data_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        forget = fisher_diagonal(ctx.model, ctx.graph, request, ctx.graph.edges, batch_size=self._batch_size(ctx),
                                 seed=c.seed + 1, propagation=self._propagation_for(ctx))
        forget_seconds = time.perf_counter() - t1
        model = copy_model(ctx.model)
        params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        log = dampen(params, self._importance_data, forget, c.selection_weight, c.dampening)
        log.update({"selection_weight": c.selection_weight, "dampening": c.dampening})
        model.eval()
        return self._outcome(model, residual, request, log, importance_data_seconds=data_seconds,
                             importance_forget_seconds=forget_seconds)
