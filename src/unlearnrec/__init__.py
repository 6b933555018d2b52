"""unlearnrec: machine unlearning for GNN recommenders.

Data flow: data -> graph -> models (backbones) -> training -> unlearning -> evaluation -> report.

The public names below are importable from the package itself (``from unlearnrec import build_unlearner,
Context``); they are loaded on first use, so ``import unlearnrec`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_PUBLIC = {
    # configuration and data
    "RunConfig": "unlearnrec.config",
    "DataSource": "unlearnrec.config",
    "Interactions": "unlearnrec.data.interactions",
    "load_dataset": "unlearnrec.data.registry",
    "list_datasets": "unlearnrec.data.registry",
    "load_source": "unlearnrec.data.source",
    "read_csv": "unlearnrec.data.formats",
    "read_csv_splits": "unlearnrec.data.formats",
    "read_lightgcn": "unlearnrec.data.formats",
    "read_recbole": "unlearnrec.data.formats",
    "Graph": "unlearnrec.graph",
    # backbones, training, checkpoints
    "build_model": "unlearnrec.models",
    "Trainer": "unlearnrec.training",
    "load_checkpoint": "unlearnrec.checkpoint",
    "save_checkpoint": "unlearnrec.checkpoint",
    # unlearning
    "Context": "unlearnrec.unlearning.base",
    "Unlearner": "unlearnrec.unlearning.base",
    "build_unlearner": "unlearnrec.unlearning.base",
    "list_unlearners": "unlearnrec.unlearning.base",
    "DeletionRequest": "unlearnrec.unlearning.requests",
    # evaluation
    "evaluate_ranking": "unlearnrec.evaluation.ranking",
    "forgetting_report": "unlearnrec.evaluation.forgetting",
    # one-call API (what the CLI commands do)
    "api": "unlearnrec.api",
    "train": "unlearnrec.api",
    "evaluate": "unlearnrec.api",
    "recommend": "unlearnrec.api",
    "recommend_for": "unlearnrec.api",
    "pretrain_unlearner": "unlearnrec.api",
    "unlearn": "unlearnrec.api",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'unlearnrec' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if name == "api" else getattr(mod, name)
    if module.startswith("unlearnrec.unlearning"):
        importlib.import_module("unlearnrec.unlearning.methods")  # register every method
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
