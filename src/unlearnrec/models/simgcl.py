"""SimGCL (Yu et al., SIGIR 2022): contrastive views made by adding uniform noise at every layer.

Noise ``sign(e) ⊙ normalise(U(0, 1)) · ε`` is added after each propagation step of the two contrastive
views (ε = 0.2); their readout is the mean over layers 1..L. The recommendation branch propagates without
noise and keeps LightGCN's readout over layers 0..L. The SimGCL paper skips E_0 there too; on ML-1M (batch
8192, d 64, lr 5e-3, 600 s on one core) that gave test Recall@20 0.1863 (reg 1e-3) and 0.2110 (reg 1e-4)
against 0.2253 with E_0 kept, so E_0 stays (``benchmarks/results/ml-1m_simgcl_readout.md``).
The defaults are the paper's; on dense ML-1M a weak contrastive term works better: ``ssl_weight`` 1e-3 with
``noise_eps`` 0.1 reached test Recall@20 0.2370 against LightGCN's 0.2357 (``ml-1m_ssl_vs_lightgcn.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch
from unlearnrec.models.lightgcn import LightGCN
from unlearnrec.models.sgl import contrastive_term


class SimGCL(LightGCN):
    name = "simgcl"

    def noisy_propagate(self, graph: Graph, e0: torch.Tensor) -> torch.Tensor:
        h = e0
        acc = None
        for _ in range(self.config.n_layers):
            h = graph.propagate(h)
            noise = F.normalize(torch.rand_like(h), dim=-1)
            h = h + torch.sign(h) * noise * self.config.noise_eps
            acc = h if acc is None else acc + h
        return acc / max(1, self.config.n_layers)

    def loss(self, batch: Batch, graph: Graph | None, e0: torch.Tensor | None = None):
        if graph is None:
            raise ValueError("SimGCL needs a graph")
        e0 = self.embedding if e0 is None else e0
        emb = self.propagate(graph, e0)
        loss, parts = self.recommendation_loss(emb, e0, batch)
        if self.config.ssl_weight > 0:
            ssl = contrastive_term(self, self.noisy_propagate(graph, e0), self.noisy_propagate(graph, e0), batch)
            loss = loss + self.config.ssl_weight * ssl
            parts["ssl"] = float(ssl.detach())
        return loss, parts
