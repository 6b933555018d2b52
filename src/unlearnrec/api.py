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
    save_ensemble,
    versions,
)
from unlearnrec.config import RunConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.registry import load_dataset
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.provenance import git_state
from unlearnrec.report import write_json
from unlearnrec.training import (
    Trainer,
    masks_for,
    restore_trainer,
    trainer_state_meta,
    trainer_state_tensors,
)

__all__ = ["RunConfig", "load_data", "train", "evaluate", "evaluate_model", "rank_model", "recommend",
           "recommend_for", "pretrain_unlearner", "unlearn", "open_checkpoint", "OutputExistsError"]


def load_data(config: RunConfig) -> Interactions:
    """The data of ``config.data`` with its validation split: the user's own files when ``data.source`` is set,
    else the registered dataset ``data.dataset``."""
    d = config.data
    if d.source is not None:
        from unlearnrec.data.source import load_source

        return load_source(d.source, valid_fraction=d.valid_fraction, seed=d.split_seed)
    return load_dataset(d.dataset, d.data_root, valid_fraction=d.valid_fraction, seed=d.split_seed)


class OutputExistsError(ValueError):
    """An output directory already holds something that a command would overwrite."""


def check_out(out: str | Path | None, force: bool, what: str = "an output") -> bool:
    """Refuse to write into a non-empty ``out`` unless ``force``; ``True`` when ``out`` holds something (and
    ``force`` allows replacing it)."""
    if out is None:
        return False
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if force:
        return True
    held = ""
    meta = out / "meta.json"
    if meta.is_file():
        import json

        try:
            m = json.loads(meta.read_text())
            held = f" (a {m.get('model', '?')} model on {(m.get('data') or {}).get('name', '?')})"
        except ValueError:
            held = ""
    raise OutputExistsError(f"{out}: already holds {what}{held}; pass --force to replace it (written only when "
                            f"the new one is complete) or choose another --out")


def rank_model(model, graph: Graph, data: Interactions, ks=(10, 20, 50), split: str = "test"):
    """Full-ranking :class:`~unlearnrec.evaluation.ranking.RankingResult` (with per-user values) of ``model``
    served on ``graph`` (the graph's edges are the masked 'seen' items)."""
    masks = masks_for(data, graph.edges)
    u, i = model.embeddings(graph)
    return evaluate_ranking(u, i, masks[f"{split}_truth"], masks[f"{split}_exclude"], ks=ks)


def evaluate_model(model, graph: Graph, data: Interactions, ks=(10, 20, 50), split: str = "test") -> dict:
    """Full-ranking metrics of ``model`` served on ``graph``, plus the evaluation's seconds."""
    res = rank_model(model, graph, data, ks, split)
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
    force: bool = False,
) -> dict[str, Any]:
    """Train the configured backbone with early stopping on validation; report test metrics of the best epoch.

    Args:
        config: the resolved run configuration.
        out: checkpoint directory (``model.safetensors``, ``config.yaml``, ``meta.json``, ``result.json``);
            the checkpoint is refreshed at every evaluation so an interrupted run can resume.
        data: use these interactions instead of loading ``config.data`` (e.g. an attacked graph's data).
        graph_edges: train on these edges instead of ``data.train`` (e.g. a residual graph).
        resume: continue from the checkpoint in ``out`` (same config and data required).
        force: replace what ``out`` holds (refused otherwise); the old checkpoint stays until the new one is
            complete (the periodic checkpoints go to a hidden sibling folder meanwhile).

    Returns:
        A JSON-ready dict: config, dataset stats and fingerprint, training summary, validation and test
        metrics, timings, versions and ``provenance`` (the code's git state when training started).
    """
    t_start = time.perf_counter()
    provenance = git_state()
    replacing = False if resume else check_out(out, force, "a checkpoint")
    torch.manual_seed(config.train.seed)
    embed = data is not None or config.data.source is not None  # not a registered dataset: store it
    if data is None and resume and out is not None and config.data.source is not None:
        previous = load_checkpoint(out)  # own files: resume on the data the run started with
        data = previous.data() if previous.has_data else None
    data = data if data is not None else load_data(config)
    if embed and config.data.dataset != data.name:
        config = config.with_overrides({"data.dataset": data.name})
    fingerprint = data.fingerprint()
    stored = data if embed else None
    staging = None if out is None or not replacing else Path(out).parent / f".{Path(out).name}.partial"
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
        ckpt.check_data(fingerprint, name=data.name)
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
                staging or out, best, config, fingerprint, data.stats(), train_edges=stored_edges,
                extra_meta={"train_state": trainer_state_meta(tr)}, train_state=trainer_state_tensors(tr),
                data=stored,
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
        "provenance": provenance,
        "history": result.history,
    }
    if out is not None:
        save_checkpoint(
            out, model, config, fingerprint, data.stats(), train_edges=stored_edges,
            extra_meta={"train_state": trainer_state_meta(trainer), "training": result.to_dict()},
            train_state=trainer_state_tensors(trainer), data=stored,
            extra=lambda tmp: write_json(tmp / "result.json", summary),
        )
        if staging is not None:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    summary["model_object"] = model
    summary["graph_object"] = trainer.graph
    summary["data_object"] = data
    return summary


def open_checkpoint(
    checkpoint: str | Path, data_root: str | None = None, device: str = "cpu"
) -> tuple[Checkpoint, Interactions, Graph]:
    """Load a checkpoint, its data (stored in it, or the registered dataset it names, checked against the
    fingerprint) and the graph it serves on."""
    ckpt = load_checkpoint(checkpoint, device=device)
    if ckpt.has_data:
        data = ckpt.data()
    else:
        cfg = ckpt.config
        if cfg.data.source is not None:
            raise CheckpointError(f"{checkpoint}: checkpoint of the files {cfg.data.source.path} but they are "
                                  f"not stored in it (missing data.safetensors)")
        if data_root is not None:
            cfg = cfg.with_overrides({"data.data_root": data_root})
        data = load_data(cfg)
        ckpt.check_data(data.fingerprint(), name=data.name)
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


def recommend_for(model, graph: Graph, data: Interactions, users, k: int = 20) -> list[dict[str, Any]]:
    """Top-``k`` items of each raw user id in ``users`` with their scores, excluding the items the user has in
    ``graph`` (what the model was trained or unlearned on: a forgotten interaction is no longer 'seen', so its
    item may come back). Raw ids in, raw ids out; an unknown user raises ``KeyError`` listing it."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    raw = list(dict.fromkeys(str(u) for u in users))  # each user once, in the order given
    if not raw:
        raise ValueError("no user given")
    idx = data.user_index(raw)
    edges = graph.edges
    row_of = np.full(data.n_users, -1, dtype=np.int64)
    row_of[idx] = np.arange(len(idx))
    seen = edges[row_of[edges[:, 0]] >= 0]
    with torch.no_grad():
        u_emb, i_emb = model.embeddings(graph)
        scores = u_emb[torch.as_tensor(idx, device=u_emb.device)] @ i_emb.T
        scores[torch.as_tensor(row_of[seen[:, 0]], device=scores.device),
               torch.as_tensor(seen[:, 1], device=scores.device)] = float("-inf")
        top = torch.topk(scores, min(k, data.n_items), dim=1)
    n_seen = np.bincount(row_of[seen[:, 0]], minlength=len(idx))
    values, items = top.values.cpu().numpy(), top.indices.cpu().numpy()
    out = []
    for j, user in enumerate(raw):  # one row per requested user (output formatting, not a hot path)
        keep = np.isfinite(values[j])
        out.append({"user": user, "items": data.item_ids[items[j][keep]].tolist(),
                    "scores": values[j][keep].astype(float).tolist(), "n_seen": int(n_seen[j])})
    return out


def recommend(checkpoint: str | Path, users, *, k: int = 20, data_root: str | None = None,
              device: str = "cpu") -> dict[str, Any]:
    """What a checkpoint recommends: :func:`recommend_for` on the checkpoint's model, graph and data."""
    ckpt, data, graph = open_checkpoint(checkpoint, data_root, device)
    model = ckpt.model.eval() if hasattr(ckpt.model, "eval") else ckpt.model  # an ensemble has no train mode
    recs = recommend_for(model, graph, data, users, k)
    return {"command": "recommend", "checkpoint": str(checkpoint), "dataset": data.name, "k": int(k),
            "model": ckpt.config.model.name, "recommendations": recs}


# ----------------------------------------------------------------------------- unlearning
def pretrain_unlearner(
    checkpoint: str | Path, out: str | Path, *, config=None, data_root: str | None = None,
    progress: bool | None = None, force: bool = False, log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Pre-train an UnlearnRec Influence Encoder for a trained checkpoint (a one-off cost) and save it
    (``out`` that holds something is refused unless ``force``); ``log`` gets a line when the work starts."""
    from unlearnrec.unlearning.unlearnrec import UnlearnRecConfig, pretrain_encoder, save_encoder

    provenance = git_state()  # the code this run starts with
    check_out(out, force, "an encoder")
    config = config or UnlearnRecConfig()  # the paper; CalibratedConfig for unlearnrec-calibrated
    ckpt, data, graph = open_checkpoint(checkpoint, data_root, config.device)
    if log is not None:
        log(f"pre-training the {config.variant} encoder for {ckpt.config.model.name} on {data.name} "
            f"({config.pretrain_epochs} epochs; a one-off cost)...")
    t0 = time.perf_counter()
    from unlearnrec.unlearning.base import Context
    from unlearnrec.unlearning.methods.unlearnrec_method import recipe_retrainer

    retrain = recipe_retrainer(Context(ckpt.model, graph, data, ckpt.config.with_overrides(
        {"train.device": config.device}), progress))
    def beat(record: dict) -> None:  # a line per held-out selection when there is no progress bar
        if log is not None and "holdout" in record:
            h = record["holdout"]
            loss = f"{record['loss']:.4f}" if "loss" in record else "-"
            log(f"epoch {record['epoch']}/{config.pretrain_epochs}  loss {loss}  held-out score "
                f"{h.get('score', float('nan')):.4f}  {time.perf_counter() - t0:.0f} s")

    encoder, report = pretrain_encoder(ckpt.model, graph, data, config, progress=progress, retrain=retrain,
                                       callbacks=[beat])
    seconds = time.perf_counter() - t0
    result = {
        "command": "pretrain-unlearner",
        "variant": config.variant,
        "method": "unlearnrec-calibrated" if config.variant == "calibrated" else "unlearnrec",
        "checkpoint": str(checkpoint),
        "encoder": str(out),
        "config": config.model_dump(mode="json"),
        "data_fingerprint": ckpt.fingerprint,
        "pretrain_seconds": seconds,
        "report": report,
        "versions": versions(),
        "provenance": provenance,
    }
    save_encoder(out, encoder, ckpt.model, ckpt.fingerprint, report=report,
                 extra_meta={"backbone_checkpoint": str(checkpoint)},
                 extra=lambda tmp: write_json(tmp / "result.json", result))
    return result


def build_request(data: Interactions, graph: Graph, *, request_file: str | Path | None = None,
                  random_edges: float | None = None, users: list[str] | None = None,
                  items: list[str] | None = None, seed: int = 0):
    """A :class:`DeletionRequest` from exactly one of: a CSV of raw ids, a random fraction, raw user ids, raw item
    ids."""
    from unlearnrec.unlearning.requests import DeletionRequest

    given = [x is not None for x in (request_file, random_edges, users, items)]
    if sum(given) != 1:
        raise ValueError("give exactly one of a request file, a random-edge fraction, users or items")
    if request_file is not None:
        return DeletionRequest.from_file(request_file, data, graph)
    if random_edges is not None:
        return DeletionRequest.random_edges(graph, random_edges, seed=seed)
    if users is not None:
        return DeletionRequest.from_raw_users(data, graph, users)
    return DeletionRequest.items(graph, data.item_index(items))


def unlearn(
    checkpoint: str | Path, encoder: str | Path | None, out: str | Path, *, request=None,
    method: str = "unlearnrec", method_config: dict[str, Any] | None = None,
    finetune_epochs: int | None = None, data_root: str | None = None, device: str = "cpu",
    progress: bool | None = None, n_samples: int = 20000, force: bool = False, **request_spec,
) -> dict[str, Any]:
    """Unlearn a deletion request with ``method`` (default UnlearnRec); save the unlearned model.

    UnlearnRec needs the ``encoder`` saved by :func:`pretrain_unlearner`; every other registered method
    (``unlearnrec methods``) is prepared here from the checkpoint (its one-off cost is timed apart). The result
    holds the request, timings, utility on the residual graph (forgotten items are no longer masked) and the
    forgetting measures before/after. Backbone results are saved as a checkpoint serving on the residual
    graph; ensembles (SISA, RecEraser) save their result only.
    """
    from unlearnrec.evaluation.forgetting import forgetting_report, report_jsonable
    from unlearnrec.models.base import Recommender
    from unlearnrec.unlearning.base import Context, build_unlearner
    from unlearnrec.unlearning.methods.unlearnrec_method import UnlearnRec, UnlearnRecCalibrated
    from unlearnrec.unlearning.unlearnrec import load_encoder

    provenance = git_state()  # the code this run starts with
    check_out(out, force, "an unlearned model")
    if encoder is not None and method not in ("unlearnrec", "unlearnrec-calibrated"):
        raise ValueError(f"--encoder applies to the unlearnrec methods only, not {method!r} (which prepares "
                         "itself from the checkpoint); leave it out")
    ckpt, data, graph = open_checkpoint(checkpoint, data_root, device)
    ensemble = None if isinstance(ckpt.model, Recommender) else ckpt.model
    if ensemble is not None and method != ckpt.meta.get("method"):
        raise ValueError(f"{checkpoint}: a saved {ckpt.meta.get('n_shards')}-shard {ckpt.meta.get('method')} "
                         f"ensemble can only be unlearned further by {ckpt.meta.get('method')} (not {method!r}): "
                         "it retrains the shards a request touches")
    if request is None:
        request = build_request(data, graph, **request_spec)
    request.validate(graph)  # unknown pairs are refused before any work
    config = dict(method_config or {})
    if method in ("unlearnrec", "unlearnrec-calibrated"):
        if encoder is None:
            raise ValueError(f"{method} needs --encoder (from `unlearnrec pretrain-unlearner`)")
        enc = load_encoder(encoder, ckpt.model, ckpt.fingerprint, device=device,
                           lineage=ckpt.meta.get("lineage"))
        cls = UnlearnRecCalibrated if method == "unlearnrec-calibrated" else UnlearnRec
        if enc.config.variant != cls.Config().variant:
            other = "unlearnrec-calibrated" if enc.config.variant == "calibrated" else "unlearnrec"
            raise ValueError(f"{encoder}: encoder was pre-trained for the {enc.config.variant} variant; "
                             f"use --method {other}")
        ucfg = enc.config.with_overrides(config) if config else enc.config
        if finetune_epochs is not None:
            ucfg = ucfg.with_overrides({"finetune_epochs": int(finetune_epochs)})
        unlearner = cls(ucfg, encoder=enc)
    else:
        if finetune_epochs is not None:
            raise ValueError("--finetune-epochs applies to the unlearnrec methods only; use --method-config for "
                             "other methods")
        unlearner = build_unlearner(method, config or None)
    run_cfg = ckpt.config.with_overrides({"train.device": device})
    if ensemble is not None:  # continue the partition method from its saved shards
        unlearner.resume(ensemble, Context(ensemble.models[0], graph, data, run_cfg, progress))
    else:
        unlearner.prepare(Context(ckpt.model, graph, data, run_cfg, progress))
    if hasattr(unlearner, "steps") and encoder is not None:
        unlearner.steps = int(getattr(unlearner.encoder, "rounds", 0))  # a later request of a sequence
    res = unlearner.unlearn(request)
    ks = tuple(ckpt.config.train.ks)
    before = evaluate_model(ckpt.model, graph, data, ks)
    after = evaluate_model(res.model, res.graph, data, ks)
    forget = report_jsonable(forgetting_report(ckpt.model, graph, res.model, res.graph, request.edges, data,
                                               n_samples=n_samples))
    out = Path(out)
    timings = dict(res.timings)
    timings["total_seconds"] = timings["request_seconds"]
    result = {
        "command": "unlearn",
        "method": method,
        "variant": getattr(unlearner.config, "variant", None),
        "method_config": unlearner.config.model_dump(mode="json"),
        "checkpoint": str(checkpoint),
        "encoder": None if encoder is None else str(encoder),
        "out": str(out),
        "model_saved": True,  # a backbone as a checkpoint, an ensemble as an ensemble checkpoint
        "request": {"kind": request.kind, "description": request.description, "n_edges": len(request)},
        "timings": timings,
        "unlearn": res.to_dict(),
        "utility_before": before,
        "utility_after": after,
        "forgetting": forget,
        "data_fingerprint": ckpt.fingerprint,
        "versions": versions(),
        "provenance": provenance,
    }

    def files(tmp: Path) -> None:  # written with the model, renamed into place together
        request.save(tmp / "request.json")
        write_json(tmp / "result.json", result)

    info = {"unlearned_from": str(checkpoint), "method": method,
            "request": {"kind": request.kind, "n_edges": len(request)}}
    stored = data if ckpt.has_data else None
    if not isinstance(res.model, Recommender):  # a partition method's ensemble
        save_ensemble(out, res.model, ckpt.config, ckpt.fingerprint, data.stats(), extra_meta=info, data=stored,
                      extra=files)
    else:
        from unlearnrec.unlearning.unlearnrec.io import model_fingerprint

        info["lineage"] = [*ckpt.meta.get("lineage", []), model_fingerprint(ckpt.model)]
        info["encoder"] = None if encoder is None else str(encoder)
        save_checkpoint(out, res.model, ckpt.config, ckpt.fingerprint, data.stats(), train_edges=res.graph.edges,
                        extra_meta=info, data=stored, extra=files)
    return result

