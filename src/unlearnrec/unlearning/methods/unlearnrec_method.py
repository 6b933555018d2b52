"""UnlearnRec (Chen, Xia, Huang, SIGIR 2025) under the common :class:`Unlearner` interface.

``prepare`` pre-trains the Influence Encoder (the one-off cost); ``unlearn`` is one encoder pass plus
``finetune_epochs`` fine-tuning epochs (:func:`~unlearnrec.unlearning.unlearnrec.unlearn_request`). Sequential
requests follow the ``new`` mode: after :meth:`apply`, the encoder sees only the next request and the
request-independent offset is not re-applied (see :mod:`unlearnrec.unlearning.unlearnrec.unlearn`).
"""

from __future__ import annotations

import numpy as np

from unlearnrec.graph import Graph
from unlearnrec.unlearning.base import Context, Outcome, Unlearner, register
from unlearnrec.unlearning.unlearnrec import UnlearnRecConfig, pretrain_encoder
from unlearnrec.unlearning.unlearnrec.unlearn import _unlearn


@register
class UnlearnRec(Unlearner):
    """Pre-trained Influence Encoder plus a little fine-tuning."""

    name = "unlearnrec"
    paper = "UnlearnRec (Chen, Xia, Huang, SIGIR 2025); spec: shared/docs/unlearnrec-method.md"
    Config = UnlearnRecConfig

    def __init__(self, config=None, encoder=None):
        super().__init__(config)
        self.encoder = encoder
        self.pretrain_report: dict | None = None
        self.steps = 0

    def _prepare(self, ctx: Context) -> None:
        if self.encoder is None:
            self.encoder, self.pretrain_report = pretrain_encoder(ctx.model, ctx.graph, ctx.data, self.config,
                                                                  progress=ctx.progress)
        self.steps = 0

    def _unlearn(self, request: np.ndarray, residual: Graph) -> Outcome:
        ctx = self._require()
        res = _unlearn(ctx.model, ctx.graph, self.encoder, request, request, ctx.data, self.config,
                       self.config.finetune_epochs, ctx.progress, step_seed=self.steps,
                       include_offset=self.steps == 0, residual=residual)
        t = res.timings
        return self._outcome(res.model, res.graph, request, res.to_dict(), encoder_seconds=t["encoder_seconds"],
                             finetune_seconds=t["finetune_seconds"], state=res)

    def _apply(self, outcome: Outcome) -> None:
        self.steps += 1
