"""UnlearnRec (Chen, Xia, Huang, SIGIR 2025) under the common :class:`Unlearner` interface, in two variants.

* ``unlearnrec``: the paper as published (:class:`~unlearnrec.unlearning.unlearnrec.UnlearnRecConfig`);
* ``unlearnrec-calibrated``: this library's variant aimed at where retraining lands
  (:class:`~unlearnrec.unlearning.unlearnrec.CalibratedConfig`).

``prepare`` pre-trains the Influence Encoder (the one-off cost); ``unlearn`` is one encoder pass plus
``finetune_epochs`` fine-tuning epochs (:func:`~unlearnrec.unlearning.unlearnrec.unlearn_request`). Sequential
requests follow the ``new`` mode: after :meth:`apply`, the encoder sees only the next request and the
request-independent offset is not re-applied (see :mod:`unlearnrec.unlearning.unlearnrec.unlearn`).
Configurations that differ only in how a request is unlearned (fine-tuning, fresh rows) share one encoder
(:meth:`prepare_fields`), and a prepared encoder can be saved and reloaded (:meth:`save_prepared`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unlearnrec.checkpoint import CheckpointError
from unlearnrec.graph import Graph
from unlearnrec.unlearning.base import Context, Outcome, Unlearner, register
from unlearnrec.unlearning.unlearnrec import (
    CalibratedConfig,
    UnlearnRecConfig,
    load_encoder,
    pretrain_encoder,
    read_encoder_meta,
    save_encoder,
)
from unlearnrec.unlearning.unlearnrec.unlearn import _unlearn


def recipe_retrainer(ctx: Context):
    """``retrain(graph, k)`` for :func:`pretrain_encoder`'s calibration: ``ctx``'s recipe from scratch on
    ``graph`` with seed ``recipe seed + 7919 + k`` (never the original's), through ``ctx.train_full`` when
    given (e.g. the bench's model cache)."""
    from unlearnrec.unlearning.methods.retrain import train_on

    def retrain(graph: Graph, k: int):
        seed = int(ctx.config.train.seed) + 7919 + int(k)
        if ctx.train_full is not None:
            return ctx.train_full(ctx.config.with_overrides({"train.seed": seed}), graph).eval()
        return train_on(ctx, graph, seed=seed)[0].eval()

    return retrain


#: Fields that only change how a request is unlearned, not the pre-trained encoder.
UNLEARN_FIELDS = frozenset({
    "finetune_epochs", "finetune_lambda_u", "finetune_lambda_p", "finetune_lambda_target", "reset_isolated",
    "finetune_learning_rate", "finetune_batch_size", "finetune_select", "finetune_min_recall_ratio",
    "finetune_scope", "finetune_triples_per_edge", "sequential_mode", "device",
})


@register
class UnlearnRec(Unlearner):
    """Pre-trained Influence Encoder plus a little fine-tuning, as the paper publishes it."""

    name = "unlearnrec"
    paper = "UnlearnRec (Chen, Xia, Huang, SIGIR 2025), as published; spec: shared/docs/unlearnrec-method.md"
    Config = UnlearnRecConfig

    def __init__(self, config=None, encoder=None):
        super().__init__(config)
        if self.config.variant != self.Config().variant:
            raise ValueError(f"{self.name} runs the {self.Config().variant!r} variant, the config says "
                             f"{self.config.variant!r} (use the method of that variant)")
        self.encoder = encoder
        self.pretrain_report: dict | None = None
        self.steps = 0

    @classmethod
    def prepare_fields(cls) -> set[str]:
        return set(cls.Config.model_fields) - UNLEARN_FIELDS

    def _prepare(self, ctx: Context) -> None:
        if self.encoder is None:
            self.encoder, self.pretrain_report = pretrain_encoder(ctx.model, ctx.graph, ctx.data, self.config,
                                                                  progress=ctx.progress, retrain=recipe_retrainer(ctx))
        self.steps = 0

    def prepared_summary(self) -> dict | None:
        rep = self.pretrain_report
        if rep is None:
            return None
        cal = rep.get("calibration")
        note = f"pre-training epoch {rep.get('selected_epoch')}"
        if cal:
            note += f", gain {cal['gain']:.3g}"
        if rep.get("warning"):
            note += " (UNTRAINED encoder kept)"
        keep = ("variant", "selected_epoch", "select_rule", "untrained_selected", "warning", "train_seconds",
                "select_seconds", "total_seconds", "holdout")
        out = {k: rep[k] for k in keep if k in rep}
        if cal:
            out["calibration"] = {k: cal[k] for k in ("gain", "kept", "target_excess", "seconds") if k in cal}
        return {**out, "note": note}

    def save_prepared(self, directory) -> bool:
        ctx = self._require()
        save_encoder(directory, self.encoder, ctx.model, ctx.data.fingerprint(), report=self.pretrain_report)
        return True

    def load_prepared(self, ctx: Context, directory) -> bool:
        if not (Path(directory) / "meta.json").is_file():
            return False
        try:
            self.encoder = load_encoder(directory, ctx.model, ctx.data.fingerprint(), device=self.config.device)
        except CheckpointError:
            return False
        self.pretrain_report = read_encoder_meta(directory).get("pretrain")
        return True

    def _unlearn(self, request: np.ndarray, residual: Graph) -> Outcome:
        ctx = self._require()
        res = _unlearn(ctx.model, ctx.graph, self.encoder, request, request, ctx.data, self.config,
                       self.config.finetune_epochs, ctx.progress, step_seed=self.steps,
                       include_offset=self.steps == 0, residual=residual)
        t = res.timings
        log = {**res.to_dict(), "variant": self.config.variant}
        if self.pretrain_report is not None:
            log["pretrain_selected_epoch"] = self.pretrain_report.get("selected_epoch")
            log["pretrain_seconds"] = self.pretrain_report.get("total_seconds")
        return self._outcome(res.model, res.graph, request, log, encoder_seconds=t["encoder_seconds"],
                             finetune_seconds=t["finetune_seconds"], state=res)

    def _apply(self, outcome: Outcome) -> None:
        self.steps += 1


@register
class UnlearnRecCalibrated(UnlearnRec):
    """UnlearnRec's encoder pre-trained and fine-tuned towards where retraining puts a deletion (this library)."""

    name = "unlearnrec-calibrated"
    paper = ("UnlearnRec (Chen, Xia, Huang, SIGIR 2025) with a retrain-proxy objective, fresh rows for deleted "
             "nodes and reach-restricted fine-tuning (unlearnrec; see unlearning/unlearnrec/config.py)")
    Config = CalibratedConfig
