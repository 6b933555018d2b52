"""LightGCN (He et al., SIGIR 2020): linear propagation ``E_l = Â E_{l-1}``, mean readout over l = 0..L."""

from __future__ import annotations

import torch

from unlearnrec.graph import Graph
from unlearnrec.models.base import Recommender, mean_readout


class LightGCN(Recommender):
    """LightGCN with BPR and L2 on the batch's layer-0 embeddings.

    The authors' code sums the layers instead of averaging; the ranking is the same.
    """

    name = "lightgcn"

    def layers(self, graph: Graph, e0: torch.Tensor) -> list[torch.Tensor]:
        """``[E_0, E_1, ..., E_L]``."""
        out = [e0]
        h = e0
        for _ in range(self.config.n_layers):
            h = graph.propagate(h)
            out.append(h)
        return out

    def propagate(self, graph: Graph | None, e0: torch.Tensor | None = None) -> torch.Tensor:
        if graph is None:
            raise ValueError(f"{self.name} needs a graph to propagate over")
        e0 = self.embedding if e0 is None else e0
        return mean_readout(self.layers(graph, e0))
