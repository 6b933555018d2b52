"""One-call Python API: each function does what the CLI command of the same name does and returns a dict.

>>> from unlearnrec import api
>>> result = api.train(api.RunConfig(), out="runs/demo")  # doctest: +SKIP
>>> result["test"]["recall@20"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    versions,
)
from unlearnrec.config import RunConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.registry import load_dataset
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.report import write_json
from unlearnrec.training import (
    Trainer,
    masks_for,
    restore_trainer,
    trainer_state_meta,
    trainer_state_tensors,
)

__all__ = ["RunConfig", "load_data", "train", "evaluate", "evaluate_model"]


def load_data(config: RunConfig) -> Interactions:
    """The dataset named by ``config.data`` with its validation split."""
    d = config.data
    return load_dataset(d.dataset, d.data_root, valid_fraction=d.valid_fraction, seed=d.split_seed)


def evaluate_model(model, graph: Graph, data: Interactions, ks=(10, 20, 50), split: str = "test") -> dict:
    """Full-ranking metrics of ``model`` served on ``graph`` (the graph's edges are the masked 'seen' items)."""
    masks = masks_for(data, graph.edges)
    u, i = model.embeddings(graph)
    res = evaluate_ranking(u, i, masks[f"{split}_truth"], masks[f"{split}_exclude"], ks=ks)
    return {**res.metrics, "eval_seconds": res.seconds}


def train(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    data: Interactions | None = None,
    graph_edges: np.ndarray | None = None,
    progress: bool | None = None,
    callbacks: list[Callable] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the configured backbone with early stopping on validation; report test metrics of the best epoch.

    Args:
        config: the resolved run configuration.
        out: checkpoint directory (``model.safetensors``, ``config.yaml``, ``meta.json``, ``result.json``);
            the checkpoint is refreshed at every evaluation so an interrupted run can resume.
        data: use these interactions instead of loading ``config.data`` (e.g. an attacked graph's data).
        graph_edges: train on these edges instead of ``data.train`` (e.g. a residual graph).
        resume: continue from the checkpoint in ``out`` (same config and data required).

    Returns:
        A JSON-ready dict: config, dataset stats and fingerprint, training summary, validation and test
        metrics, timings and versions.
    """
    t_start = time.perf_counter()
    torch.manual_seed(config.train.seed)
    data = data if data is not None else load_data(config)
    fingerprint = data.fingerprint()
    model = build_model(data.n_users, data.n_items, config.model)
    gen = torch.Generator().manual_seed(config.train.seed)
    model.reset_parameters(gen)
    graph = Graph(data.train if graph_edges is None else graph_edges, data.n_users, data.n_items)
    callbacks = list(callbacks or [])
    trainer = Trainer(model, data, config.train, graph=graph, callbacks=callbacks, progress=progress)
    stored_edges = None if graph_edges is None else graph.edges

    if resume:
        if out is None:
            raise ValueError("resume needs the output directory of the run to continue")
        ckpt = load_checkpoint(out)
        ckpt.check_data(fingerprint)
        state = ckpt.train_state()
        if state is None or "train_state" not in ckpt.meta:
            raise CheckpointError(f"{out}: checkpoint has no training state to resume from")
        if ckpt.config.model != config.model:
            raise CheckpointError(f"{out}: checkpoint was trained with another model config")
        restore_trainer(trainer, state, ckpt.meta["train_state"], ckpt.model.state_dict())

    def save(epoch: int, record: dict, tr: Trainer) -> None:
        if out is not None and "valid" in record:
            best = build_model(data.n_users, data.n_items, config.model)
            best.load_state_dict(tr.best_weights)
            save_checkpoint(
                out, best, config, fingerprint, data.stats(), train_edges=stored_edges,
                extra_meta={"train_state": trainer_state_meta(tr)}, train_state=trainer_state_tensors(tr),
            )

    trainer.callbacks.append(save)
    result = trainer.fit()
    trainer.restore_best()
    test = evaluate_model(model, trainer.graph, data, config.train.ks, "test")
    summary = {
        "command": "train",
        "config": config.model_dump(mode="json"),
        "dataset": data.stats(),
        "data_fingerprint": fingerprint,
        "model": config.model.name,
        "training": result.to_dict(),
        "valid": result.best_valid,
        "test": test,
        "seconds_per_epoch": result.seconds / max(1, len(result.history) - 0),
        "times": {"total_seconds": time.perf_counter() - t_start, "train_seconds": result.seconds},
        "versions": versions(),
        "history": result.history,
    }
    if out is not None:
        save_checkpoint(
            out, model, config, fingerprint, data.stats(), train_edges=stored_edges,
            extra_meta={"train_state": trainer_state_meta(trainer), "training": result.to_dict()},
            train_state=trainer_state_tensors(trainer),
        )
        write_json(Path(out) / "result.json", summary)
    summary["model_object"] = model
    summary["graph_object"] = trainer.graph
    summary["data_object"] = data
    return summary


def open_checkpoint(checkpoint: str | Path, data_root: str | None = None, device: str = "cpu") -> tuple[Checkpoint, Interactions, Graph]:
    """Load a checkpoint, its dataset (checked against the fingerprint) and the graph it serves on."""
    ckpt = load_checkpoint(checkpoint, device=device)
    cfg = ckpt.config
    if data_root is not None:
        cfg = cfg.with_overrides({"data.data_root": data_root})
    data = load_data(cfg)
    ckpt.check_data(data.fingerprint())
    edges = ckpt.edges if ckpt.edges is not None else data.train
    return ckpt, data, Graph(edges, data.n_users, data.n_items, device=device)


def evaluate(
    checkpoint: str | Path, *, data_root: str | None = None, split: str = "test", out: str | Path | None = None,
    ks: tuple[int, ...] | None = None, device: str = "cpu",
) -> dict[str, Any]:
    """Full-ranking evaluation of a checkpoint on ``split`` (test or valid); writes ``evaluation.json``."""
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', not {split!r}")
    ckpt, data, graph = open_checkpoint(checkpoint, data_root, device)
    ks = tuple(ks or ckpt.config.train.ks)
    metrics = evaluate_model(ckpt.model, graph, data, ks, split)
    result = {
        "command": "evaluate",
        "checkpoint": str(checkpoint),
        "split": split,
        "config": ckpt.config.model_dump(mode="json"),
        "dataset": data.stats(),
        "data_fingerprint": data.fingerprint(),
        "metrics": metrics,
        "versions": versions(),
    }
    write_json(Path(out or checkpoint) / f"evaluation-{split}.json", result)
    return result
