"""The interface every backbone shares.

A backbone owns one layer-0 embedding table ``E0`` (users first, then items), propagates it over a
:class:`~unlearnrec.graph.Graph` into final (readout) embeddings, and computes its training loss on a
batch of BPR triples. Every method that takes ``e0`` accepts a replacement table, so unlearners (the
UnlearnRec Influence Encoder, influence functions) can run the backbone on modified embeddings without
touching its parameters.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearnrec.config import ModelConfig
from unlearnrec.graph import Graph


class Batch:
    """A batch of BPR triples (user, positive item, negative item) as int64 tensors."""

    __slots__ = ("users", "pos", "neg")

    def __init__(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        self.users, self.pos, self.neg = users, pos, neg

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def to(self, device: torch.device) -> Batch:
        return Batch(self.users.to(device), self.pos.to(device), self.neg.to(device))


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking loss, ``mean(softplus(neg - pos))`` (Rendle et al., UAI 2009)."""
    return F.softplus(neg_scores - pos_scores).mean()


def info_nce(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, anchors: torch.Tensor | None = None
) -> torch.Tensor:
    """InfoNCE between two views: row ``b`` of ``z1`` against every row of ``z2``, positive on the diagonal.

    ``anchors`` (row indices) restricts the rows of ``z1`` that are scored; each is still contrasted with every
    row of ``z2``. A uniform random subset gives an unbiased estimate of the full mean at a fraction of the cost.
    """
    rows = torch.arange(z1.shape[0], device=z1.device) if anchors is None else anchors
    a = F.normalize(z1 if anchors is None else z1[anchors], dim=1) / temperature  # scale n×d, not n×n
    return F.cross_entropy(a @ F.normalize(z2, dim=1).T, rows)


class Recommender(nn.Module):
    """Base class of the backbones (BPR-MF, LightGCN, SGL, SimGCL).

    Args:
        n_users: number of users.
        n_items: number of items.
        config: the backbone's :class:`~unlearnrec.config.ModelConfig`.
    """

    name: ClassVar[str] = "base"
    uses_graph: ClassVar[bool] = True

    def __init__(self, n_users: int, n_items: int, config: ModelConfig):
        super().__init__()
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.config = config
        self.embedding = nn.Parameter(torch.empty(self.n_users + self.n_items, config.embedding_size))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.embedding.normal_(0.0, self.config.init_std, generator=generator)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(users={self.n_users}, items={self.n_items}, "
            f"d={self.config.embedding_size}, layers={self.config.n_layers})"
        )

    # ------------------------------------------------------------ forward
    def propagate(self, graph: Graph | None, e0: torch.Tensor | None = None) -> torch.Tensor:
        """Final embeddings of all nodes (``n_users + n_items`` rows) over ``graph``."""
        raise NotImplementedError

    def split(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return emb[: self.n_users], emb[self.n_users :]

    @torch.no_grad()
    def embeddings(self, graph: Graph | None, e0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item embeddings for serving and evaluation (no gradient)."""
        was = self.training
        self.eval()
        users, items = self.split(self.propagate(graph, e0))
        self.train(was)
        return users, items

    @torch.no_grad()
    def score(self, graph: Graph | None, users, items, e0: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``ŷ(u, i) = ē_uᵀ ē_i`` of aligned ``users`` / ``items`` index arrays."""
        u, i = self.embeddings(graph, e0)
        users = torch.as_tensor(np.asarray(users), dtype=torch.long, device=u.device)
        items = torch.as_tensor(np.asarray(items), dtype=torch.long, device=u.device)
        return (u[users] * i[items]).sum(-1)

    # ------------------------------------------------------------ training
    def start_epoch(self, graph: Graph | None, rng: np.random.Generator) -> None:
        """Hook called once per epoch (SGL re-draws its augmented views here)."""

    def recommendation_loss(
        self, emb: torch.Tensor, e0: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """BPR on the final embeddings plus ``reg`` times the batch's layer-0 squared norms (LightGCN)."""
        users, items = self.split(emb)
        u, p, n = users[batch.users], items[batch.pos], items[batch.neg]
        bpr = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        u0 = e0[batch.users]
        p0 = e0[self.n_users + batch.pos]
        n0 = e0[self.n_users + batch.neg]
        reg = 0.5 * (u0.pow(2).sum() + p0.pow(2).sum() + n0.pow(2).sum()) / len(batch)
        return bpr + self.config.reg * reg, {"bpr": float(bpr.detach()), "reg": float(reg.detach())}

    def loss(
        self, batch: Batch, graph: Graph | None, e0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The backbone's own training loss on ``batch``; returns the loss and its parts for logging."""
        e0 = self.embedding if e0 is None else e0
        emb = self.propagate(graph, e0)
        return self.recommendation_loss(emb, e0, batch)


def mean_readout(layers: list[torch.Tensor]) -> torch.Tensor:
    """Mean over a list of layer outputs (LightGCN's readout with uniform layer weights)."""
    out = layers[0]
    for h in layers[1:]:
        out = out + h
    return out / len(layers)
