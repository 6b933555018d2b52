"""The Influence Encoder (UnlearnRec spec §3) and the losses that train it (§4, §5).

```
H^l    = Â_Δ H^{l-1},              l = 1..L
E_w^0  = Ē ⊙ W_η ;  E_w^l = Â_Δ E_w^{l-1}
ΔE0    = MLP(−γ · E_w^L + H̄)       H̄ = Σ_{l=0..L} H^l ("sum", authors' code) or H^L ("last")
Ẽ0     = E0 + ΔE0
```
Trainable tables: ``H0`` (zeros) and ``W_η`` (0.002) — node-indexed, so an encoder belongs to one model and
one dataset. The MLP's layers start at ``W = I, b = 0``. Everything is a sparse-times-dense product over
``Â_Δ`` (``2 |E_Δ|`` stored values): no dense ``(|U|+|V|)²`` tensor is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearnrec.models.base import Batch, Recommender, info_nce
from unlearnrec.unlearning.unlearnrec.config import UnlearnRecConfig


@dataclass
class EncoderOutput:
    """What one encoder pass produces.

    Attributes:
        e0: ``Ẽ0 = E0 + ΔE0``, the unlearned layer-0 table.
        delta: ``ΔE0`` after the MLP.
        hidden: ``[H^1, ..., H^L]`` (for ``L_C``).
    """

    e0: torch.Tensor
    delta: torch.Tensor
    hidden: list[torch.Tensor]


class InfluenceEncoder(nn.Module):
    """Maps (request, E0, Ē) to the unlearned table ``Ẽ0``.

    Args:
        n_users, n_items: the backbone's sizes (tables have ``n_users + n_items`` rows, users first).
        dim: the backbone's embedding size ``d``.
        n_layers: propagation depth ``L`` over ``Â_Δ`` (the backbone's depth).
        config: hyper-parameters (``hbar``, ``gamma``, ``w_eta_init``, ``mlp_layers``, ``leaky_slope``).
    """

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, config: UnlearnRecConfig | None = None):
        super().__init__()
        self.config = config or UnlearnRecConfig()
        self.n_users, self.n_items, self.dim = int(n_users), int(n_items), int(dim)
        self.n_layers = int(n_layers)
        if self.n_layers < 1:
            raise ValueError("the influence encoder needs at least one propagation layer")
        n = self.n_users + self.n_items
        self.h0 = nn.Parameter(torch.zeros(n, self.dim))
        self.w_eta = nn.Parameter(torch.full((n, 1), float(self.config.w_eta_init)))
        # log of a global withdraw gain (calibrated variant; 0 = gain 1 = the paper's encoder)
        self.log_gain = nn.Parameter(torch.zeros(()))
        self.mlp = nn.ModuleList(nn.Linear(self.dim, self.dim) for _ in range(self.config.mlp_layers))
        self.reset_mlp()

    @classmethod
    def for_model(cls, model: Recommender, config: UnlearnRecConfig | None = None) -> InfluenceEncoder:
        """An untrained encoder sized for ``model`` (depth: ``config.n_layers`` or the backbone's, at least 1)."""
        config = config or UnlearnRecConfig()
        depth = config.n_layers or max(1, int(model.config.n_layers))
        return cls(model.n_users, model.n_items, model.config.embedding_size, depth, config)

    def reset_mlp(self) -> None:
        """``W_k = I``, ``b_k = 0``."""
        with torch.no_grad():
            for layer in self.mlp:
                layer.weight.copy_(torch.eye(self.dim))
                layer.bias.zero_()

    def set_mlp_trainable(self, flag: bool) -> None:
        for p in self.mlp.parameters():
            p.requires_grad_(flag)

    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"nodes={self.n_nodes}, d={self.dim}, L={self.n_layers}, hbar={c.hbar}, gamma={c.gamma}, "
            f"mlp_layers={c.mlp_layers}, slope={c.leaky_slope}"
        )

    # ----------------------------------------------------------------- parts
    def hidden_layers(self, idm, h0: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``[H^0, H^1, ..., H^L]`` over ``idm`` (anything with ``.propagate``)."""
        h = self.h0 if h0 is None else h0
        out = [h]
        for _ in range(self.n_layers):
            h = idm.propagate(h)
            out.append(h)
        return out

    def raw_delta(
        self, idm, e_bar: torch.Tensor, include_offset: bool = True, profile: torch.Tensor | None = None,
        degrees: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``−γ g E_w^L + H̄`` (before the MLP) and ``[H^1..H^L]``.

        ``include_offset=False`` leaves ``H^0`` out of the ``sum`` variant's ``H̄``: ``H^0 = H0`` does not depend
        on the request, it is a per-node offset every node receives, and a model that has already been through
        the encoder carries it (sequential requests apply it once, see ``unlearn_sequence``).

        ``profile`` (``withdraw_center``): each node's mean final embedding over its *residual* neighbours. The
        withdraw term then moves a node away from what it loses *relative to what it keeps*:
        ``E_w^L − s ⊙ profile`` with ``s = Â_Δ^L (W_η g)`` the same paths' weights, i.e. for one hop a user
        withdraws ``Σ_i â_ui w_i (ē_i − mean of its remaining items)``. The uncentred term also pulls the user
        away from its remaining positives (ML-1M: every score shrinks and recall falls before the request edges
        move as far as retraining moves them).

        ``degrees`` (``withdraw_norm="degree"``): every node's degree before the request; the withdraw term is
        then one hop over ``D^{-1} A_Δ`` (see :func:`degree_withdraw`) instead of ``L`` hops over ``Â_Δ``.
        """
        hs = self.hidden_layers(idm)
        if self.config.hbar == "sum":
            hbar = torch.stack(hs if include_offset else hs[1:]).sum(0)
        else:
            hbar = hs[-1]
        w = self.w_eta * self.log_gain.exp()
        mode = self.config.withdraw_center if profile is not None else "none"
        ew, s = e_bar * w, w
        if self.config.withdraw_norm == "degree":
            if degrees is None:
                raise ValueError("withdraw_norm='degree' needs the nodes' degrees before the request")
            ew, s = degree_withdraw(idm, ew, degrees), degree_withdraw(idm, s, degrees)
        else:
            for _ in range(self.n_layers):
                ew = idm.propagate(ew)
                if mode == "mean":
                    s = idm.propagate(s)
        if mode == "mean":
            ew = ew - s * profile
        elif mode == "orthogonal":
            unit = F.normalize(profile, dim=1)
            ew = ew - (ew * unit).sum(1, keepdim=True) * unit
        side = self.config.withdraw_side
        if side != "both":
            keep = torch.zeros(ew.shape[0], 1, dtype=ew.dtype, device=ew.device)
            if side == "users":
                keep[: self.n_users] = 1.0
            else:
                keep[self.n_users :] = 1.0
            ew = ew * keep
        return -self.config.gamma * ew + hbar, hs[1:]

    def context(self, idm, residual, e_bar: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """What the calibrated withdraw needs besides ``Â_Δ``: the residual profile (``withdraw_center``) and the
        degrees before the request (``withdraw_norm="degree"``: residual degrees plus the request's)."""
        out: dict[str, torch.Tensor | None] = {"profile": None, "degrees": None}
        if self.config.withdraw_center != "none" or self.config.withdraw_norm == "degree":
            if residual is None:
                raise ValueError("the calibrated withdraw term needs the residual graph")
        if self.config.withdraw_center != "none":
            out["profile"] = residual_profile(residual, e_bar)
        if self.config.withdraw_norm == "degree":
            out["degrees"] = residual.degrees().to(e_bar.device) + idm.degrees().to(e_bar.device)
        return out

    def delta_for(self, idm, e_bar: torch.Tensor, residual=None, include_offset: bool = True):
        """:meth:`raw_delta` with :meth:`context` (``residual``: the graph the unlearned model serves on)."""
        return self.raw_delta(idm, e_bar, include_offset=include_offset, **self.context(idm, residual, e_bar))

    def apply_mlp(self, x: torch.Tensor, mlp: nn.ModuleList | None = None) -> torch.Tensor:
        """The K LeakyReLU layers (``mlp`` overrides the encoder's own, e.g. a fine-tuned copy)."""
        for layer in self.mlp if mlp is None else mlp:
            x = F.leaky_relu(layer(x), self.config.leaky_slope)
        return x

    def forward(self, idm, e0: torch.Tensor, e_bar: torch.Tensor, context: dict | None = None) -> EncoderOutput:
        """One pass: ``idm`` = ``Â_Δ`` of the request, ``e0`` = the model's E0, ``e_bar`` = its final embeddings
        on the pre-deletion graph (both fixed); ``context``: :meth:`context` (the calibrated withdraw term)."""
        if e0.shape != (self.n_nodes, self.dim) or e_bar.shape != e0.shape:
            raise ValueError(
                f"encoder is for {self.n_nodes} x {self.dim} tables, "
                f"got E0 {tuple(e0.shape)} and Ē {tuple(e_bar.shape)}"
            )
        raw, hidden = self.raw_delta(idm, e_bar, **(context or {}))
        delta = self.apply_mlp(raw)
        return EncoderOutput(e0=e0 + delta, delta=delta, hidden=hidden)


def degree_withdraw(idm, x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """``D^{-1} A_Δ x``: each node's sum of ``x`` over its request neighbours, divided by its degree before the
    request. The paper's ``Â_Δ`` divides by ``sqrt(d_Δ(u) d_Δ(i))``, the degrees *within the request*, so a request
    five times larger withdraws each edge about five times less; what one edge contributed to a trained node
    is about ``1 / deg(node)`` of it (BPR visits every edge equally often and the L2 term grows with the degree
    as well), whatever else is deleted."""
    d_req = idm.degrees().to(x.dtype).unsqueeze(1)
    root = d_req.sqrt()
    summed = idm.propagate(x * root) * root  # A_Δ x = D_Δ^{1/2} Â_Δ D_Δ^{1/2} x
    return summed / degrees.to(x.dtype).clamp(min=1.0).unsqueeze(1)


def residual_profile(residual, e_bar: torch.Tensor) -> torch.Tensor:
    """Each node's mean of ``e_bar`` over its neighbours in ``residual`` (see :meth:`InfluenceEncoder.raw_delta`)."""
    return residual.neighbour_mean(e_bar)


# ------------------------------------------------------------------------ losses
def edge_scores(emb: torch.Tensor, n_users: int, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``ê_uᵀ ê_v`` for aligned user / item index tensors over a full (users first) embedding table."""
    return (emb[users] * emb[n_users + items]).sum(-1)


def unlearning_loss(emb: torch.Tensor, n_users: int, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``L_U = −mean log(σ(−ê_uᵀ ê_v) + 1e-10)`` over the request edges."""
    if users.numel() == 0:
        return emb.sum() * 0.0
    s = edge_scores(emb, n_users, users, items)
    return -torch.log(torch.sigmoid(-s) + 1e-10).mean()


def proxy_unlearning_loss(
    emb: torch.Tensor,
    n_users: int,
    request: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    valid_weights: torch.Tensor,
) -> torch.Tensor:
    """Retrain-proxy ``L_U`` (this library's, not the paper's), relative to the users' remaining positives.

    A model retrained without a random request scores the deleted edges like real interactions it never saw,
    i.e. like the same users' validation edges. Each request edge ``(u, i)`` and each validation edge
    ``(u, v)`` comes with a random remaining training positive ``p`` of the same user; with the gaps
    ``g = ŷ_ui − ŷ_up`` (request) and ``h = ŷ_uv − ŷ_up'`` (validation, detached, weighted),

    ``L = mean_k relu(g_(k) − Q_h((k + ½) / n))²``

    matches the sorted request gaps to the weighted quantiles of the validation gaps, one-sided: each request
    quantile that sits above its validation quantile is pulled down to it, none is pushed below. Matching the
    whole distribution, not only its mean, moves the request edges' *ranks* to where validation edges rank
    (ML-1M LightGCN, a 1 % random request: matching the mean gap only left them at a rank percentile of 0.081,
    where validation edges rank at 0.092; this loss 0.087; retrained 0.097; before 0.055). Being relative to
    the users' positives, it lowers the request edges without shrinking every score; no gradient ever fits the
    validation edges. The spec's ``L_U`` (:func:`unlearning_loss`), ``−log σ(−ŷ)``, instead drives the request
    scores towards −∞ through the users' rows, which on a random request touching most users shrinks every
    score with them.

    Args:
        request: ``(users, items, positives)`` of the request edges.
        valid: ``(users, items, positives)`` of the request users' validation edges.
        valid_weights: per validation edge (:func:`proxy_weights`).
    """
    u, i, p = request
    if u.numel() == 0 or valid[0].numel() == 0:
        return emb.sum() * 0.0
    gap = edge_scores(emb, n_users, u, i) - edge_scores(emb, n_users, u, p)
    with torch.no_grad():
        vu, vi, vp = valid
        vgap, order = torch.sort(edge_scores(emb, n_users, vu, vi) - edge_scores(emb, n_users, vu, vp))
        cum = torch.cumsum(valid_weights[order], 0)
        q = (torch.arange(len(gap), device=gap.device, dtype=cum.dtype) + 0.5) / len(gap) * cum[-1]
        target = vgap[torch.searchsorted(cum, q).clamp(max=len(vgap) - 1)]
    return torch.relu(torch.sort(gap).values - target).pow(2).mean()


def proxy_weights(
    request_users: np.ndarray, valid: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`proxy_unlearning_loss`: ``(kept request rows mask, validation edges of the request's users,
    their weights)``. A user with ``r`` request edges and ``v`` validation edges gives each of them weight
    ``r / v``; request edges of users without validation edges are left out (nothing to compare them with)."""
    n_req = np.bincount(request_users, minlength=n_users)
    n_val = np.bincount(valid[:, 0], minlength=n_users)
    keep_val = n_req[valid[:, 0]] > 0
    v = valid[keep_val]
    w = n_req[v[:, 0]] / n_val[v[:, 0]]
    return n_val[request_users] > 0, v, w.astype(np.float32)


def _inbatch_logp(emb: torch.Tensor, n_users: int, batch: Batch, tau: float) -> torch.Tensor:
    u = emb[batch.users]
    i = emb[n_users + batch.pos]
    logits = (u @ i.T) / tau
    return torch.diagonal(torch.log_softmax(logits, dim=1))


def preservation_loss(
    emb: torch.Tensor, e_bar: torch.Tensor, n_users: int, batch: Batch, tau: float
) -> torch.Tensor:
    """``L_P = Σ_b (p'_b − p_b)²`` with ``p_b = log softmax_c(e_{u_b}ᵀ e_{i_c} / τ_p)`` at ``c = b`` (in-batch),
    ``p'`` from the unlearned embeddings and ``p`` from the original ``Ē``."""
    p_new = _inbatch_logp(emb, n_users, batch, tau)
    with torch.no_grad():
        p_old = _inbatch_logp(e_bar, n_users, batch, tau)
    return (p_new - p_old).pow(2).sum()


def contrastive_loss(
    encoder: InfluenceEncoder, hidden: list[torch.Tensor], dropped, batch: Batch, tau: float
) -> torch.Tensor:
    """``L_C``: per layer, InfoNCE between ``normalise(stopgrad(H^l))`` and ``normalise(H'^l)`` (``H'`` propagated
    from ``H0`` over the edge-dropped ``Â_Δ``), over the batch's unique users plus its unique positive items."""
    users = torch.unique(batch.users)
    items = torch.unique(batch.pos) + encoder.n_users
    dropped_hidden = encoder.hidden_layers(dropped)[1:]
    total = hidden[0].sum() * 0.0
    for h, h2 in zip(hidden, dropped_hidden, strict=True):
        z1 = h.detach()
        total = total + info_nce(z1[users], h2[users], tau) + info_nce(z1[items], h2[items], tau)
    return total


def backbone_loss(
    model: Recommender, batch: Batch, graph, e0: torch.Tensor, emb: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L_M``: the backbone's own loss with the replacement table ``e0`` on ``graph``.

    Backbones whose loss is the plain recommendation loss (MF, LightGCN) reuse the already propagated ``emb``;
    the SSL backbones (SGL, SimGCL) go through their own ``loss`` (it adds the contrastive term).
    """
    if type(model).loss is Recommender.loss:
        return model.recommendation_loss(emb, e0, batch)
    return model.loss(batch, graph, e0=e0)


__all__ = [
    "degree_withdraw",
    "residual_profile",
    "EncoderOutput",
    "InfluenceEncoder",
    "backbone_loss",
    "contrastive_loss",
    "edge_scores",
    "preservation_loss",
    "proxy_unlearning_loss",
    "proxy_weights",
    "unlearning_loss",
]
