"""Backbones: BPR-MF, LightGCN, SGL-ED and SimGCL behind one :class:`Recommender` interface."""

from __future__ import annotations

from unlearnrec.config import ModelConfig
from unlearnrec.models.base import Batch, Recommender, bpr_loss, info_nce
from unlearnrec.models.lightgcn import LightGCN
from unlearnrec.models.mf import MF
from unlearnrec.models.sgl import SGL
from unlearnrec.models.simgcl import SimGCL

MODELS: dict[str, type[Recommender]] = {cls.name: cls for cls in (MF, LightGCN, SGL, SimGCL)}


def build_model(n_users: int, n_items: int, config: ModelConfig) -> Recommender:
    """Instantiate the backbone named by ``config.name``."""
    try:
        cls = MODELS[config.name]
    except KeyError:
        raise ValueError(f"unknown model {config.name!r}; known: {', '.join(MODELS)}") from None
    return cls(n_users, n_items, config)


__all__ = ["MODELS", "Batch", "Recommender", "LightGCN", "MF", "SGL", "SimGCL", "bpr_loss", "build_model", "info_nce"]
