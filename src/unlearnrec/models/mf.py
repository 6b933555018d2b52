"""BPR matrix factorisation (Rendle et al., UAI 2009): final embeddings are the layer-0 table."""

from __future__ import annotations

import torch

from unlearnrec.graph import Graph
from unlearnrec.models.base import Recommender


class MF(Recommender):
    """BPR-MF. It ignores the graph: deleting edges changes it only through its parameters."""

    name = "mf"
    uses_graph = False

    def propagate(self, graph: Graph | None, e0: torch.Tensor | None = None) -> torch.Tensor:
        return self.embedding if e0 is None else e0
