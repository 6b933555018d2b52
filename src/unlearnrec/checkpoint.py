"""Checkpoints as a directory: ``model.safetensors``, ``config.yaml`` and ``meta.json``.

``meta.json`` binds the weights to the exact data they were trained on (the dataset fingerprint), so a
checkpoint (or an unlearning encoder) cannot silently be used with other data. Graphs are stored as int64
edge arrays (safetensors refuses sparse tensors). Nothing is pickled; any ``torch.load`` elsewhere uses
``weights_only=True``. Writes go to a temporary directory that is renamed into place, so a crash never
leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from unlearnrec.config import RunConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.models import Recommender, build_model

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
STATE_FILE = "train_state.safetensors"
DATA_FILE = "data.safetensors"
CHECKPOINT_FORMAT = "unlearnrec-checkpoint/1"
ENSEMBLE_FORMAT = "unlearnrec-ensemble/1"
VOCAB_FILE = "vocab.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, or belongs to another model or dataset."""


def versions() -> dict[str, str]:
    """Versions of the pieces that affect results (recorded in every checkpoint and result)."""
    import numpy
    import scipy

    from unlearnrec import __version__

    return {
        "unlearnrec": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def write_dir_atomically(target: str | Path, write: Any) -> Path:
    """Call ``write(tmp_dir)``, fsync what it wrote, then move ``tmp_dir`` to ``target`` (replacing an old one)
    and fsync the parent, so that after a crash either the old or the whole new directory is there."""
    from unlearnrec.data.formats import fsync_dir

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():
            if f.is_file():
                with f.open("rb+") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_checkpoint(
    directory: str | Path,
    model: Recommender,
    config: RunConfig,
    data_fingerprint: str,
    data_stats: dict,
    *,
    train_edges: np.ndarray | None = None,
    extra_meta: dict | None = None,
    train_state: dict[str, torch.Tensor] | None = None,
    data: Interactions | None = None,
    extra: Any = None,
) -> Path:
    """Save ``model`` with its resolved config and provenance.

    Args:
        train_edges: the graph the model serves on, when it is not the dataset's train split (e.g. after
            unlearning, or on an attacked graph); stored as an int64 ``(n, 2)`` tensor.
        train_state: optimiser moments and current weights for resuming (stored apart from the served weights).
        data: the interactions themselves (``data.safetensors`` and the raw-id ``vocab.json``), for data that is
            not a registered dataset (a user's own files, data built in Python): later commands then need
            nothing but the checkpoint.
        extra: ``extra(tmp_dir)`` writes further files (a result, a request) into the checkpoint before it is
            renamed into place, so they appear together or not at all.
    """

    def write(tmp: Path) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if train_edges is not None:
            tensors["graph.edges"] = torch.from_numpy(np.ascontiguousarray(train_edges, dtype=np.int64))
        save_file(tensors, str(tmp / MODEL_FILE))
        config.save(tmp / CONFIG_FILE)
        if train_state:
            save_file({k: v.detach().cpu().contiguous() for k, v in train_state.items()}, str(tmp / STATE_FILE))
        _finish(tmp, {"format": CHECKPOINT_FORMAT, "model": model.name, "n_users": model.n_users,
                      "n_items": model.n_items, "embedding_size": model.config.embedding_size,
                      "has_graph": train_edges is not None}, data_fingerprint, data_stats, extra_meta, data, extra)

    return write_dir_atomically(directory, write)


def _finish(tmp: Path, head: dict, data_fingerprint: str, data_stats: dict, extra_meta: dict | None,
            data: Interactions | None, extra: Any) -> None:
    """The parts every saved model directory shares: ``meta.json`` (``head``, the data binding, time,
    versions, ``extra_meta``), the stored data if any, then ``extra(tmp)``."""
    meta = {**head, "data_fingerprint": data_fingerprint, "data": data_stats,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions(),
            **(extra_meta or {})}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=json_default))
    if data is not None:
        save_data(tmp, data)
    if extra is not None:
        extra(tmp)


def save_ensemble(
    directory: str | Path,
    ensemble: Any,
    config: RunConfig,
    data_fingerprint: str,
    data_stats: dict,
    *,
    extra_meta: dict | None = None,
    data: Interactions | None = None,
    extra: Any = None,
) -> Path:
    """Save a partition method's :class:`~unlearnrec.unlearning.partition.Ensemble` (SISA, RecEraser) as a
    checkpoint that ``evaluate`` and ``recommend`` serve: every shard's weights and shard graph, the aggregator
    (if any) and the users' home shards, in one ``model.safetensors``."""

    from unlearnrec.unlearning.partition import shard_tensors

    def write(tmp: Path) -> None:
        tensors = shard_tensors(ensemble.models)
        for k, g in enumerate(ensemble.graphs):
            tensors[f"shard{k}.edges"] = torch.from_numpy(np.ascontiguousarray(g.edges, dtype=np.int64))
        agg = ensemble.aggregator
        if agg is not None:
            for name, v in agg.state_dict().items():
                tensors[f"aggregator.{name}"] = v.detach().cpu().contiguous()
        if ensemble.user_home is not None:
            tensors["user_home"] = torch.from_numpy(np.ascontiguousarray(ensemble.user_home, dtype=np.int64))
        save_file(tensors, str(tmp / MODEL_FILE))
        config.with_overrides({"model": ensemble.models[0].config.model_dump(mode="json")}).save(tmp / CONFIG_FILE)
        _finish(tmp, {"format": ENSEMBLE_FORMAT, "model": f"ensemble of {ensemble.models[0].name}",
                      "n_users": ensemble.n_users, "n_items": ensemble.n_items, "n_shards": ensemble.n_shards,
                      "aggregator": None if agg is None else {"attention_size": agg.attention_size,
                                                               "activation": agg.activation,
                                                               "transform": agg.transform,
                                                               "inputs": agg.inputs},
                      "mask_absent": ensemble.mask_absent, "has_graph": True},
                data_fingerprint, data_stats, extra_meta, data, extra)

    return write_dir_atomically(directory, write)


def _load_ensemble(directory: Path, meta: dict, config: RunConfig, device) -> Checkpoint:
    from unlearnrec.graph import Graph
    from unlearnrec.unlearning.partition import AttentionAggregator, Ensemble, shard_models

    tensors = load_tensors(directory / MODEL_FILE, device)
    try:
        n, nu, ni = int(meta["n_shards"]), int(meta["n_users"]), int(meta["n_items"])
        models = shard_models(tensors, n, nu, ni, config.model, device)
        graphs = [Graph(tensors[f"shard{k}.edges"].cpu().numpy(), nu, ni) for k in range(n)]
        agg = None
        if meta.get("aggregator"):
            a = meta["aggregator"]
            agg = AttentionAggregator(n, config.model.embedding_size, a["attention_size"], a["activation"],
                                      a["transform"], inputs=a.get("inputs", "served"))
            agg.load_state_dict({name: tensors[f"aggregator.{name}"] for name in agg.state_dict()})
        home = tensors.get("user_home")
        ensemble = Ensemble(models, graphs, aggregator=agg, user_home=None if home is None else home.cpu().numpy(),
                            mask_absent=bool(meta.get("mask_absent", True)))
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{directory}: not a readable ensemble checkpoint ({type(exc).__name__}: {exc})") \
            from None
    edges = np.concatenate([g.edges for g in graphs])
    return Checkpoint(ensemble, config, meta, edges, directory)


class Checkpoint:
    """A loaded checkpoint: the model, its config, its metadata and (optionally) its serving graph edges."""

    def __init__(self, model: Recommender, config: RunConfig, meta: dict, edges: np.ndarray | None, path: Path):
        self.model, self.config, self.meta, self.edges, self.path = model, config, meta, edges, path

    @property
    def fingerprint(self) -> str:
        return self.meta["data_fingerprint"]

    @property
    def data_name(self) -> str | None:
        """Name of the dataset the model was trained on (as recorded in ``meta.json``)."""
        return (self.meta.get("data") or {}).get("name")

    def check_data(self, fingerprint: str, what: str = "dataset", name: str | None = None) -> None:
        """Refuse data other than the data the model was trained on, naming both datasets."""
        if fingerprint != self.fingerprint:
            mine = f"{self.data_name!r} " if self.data_name else ""
            theirs = f"{name!r} " if name else ""
            why = ("another dataset" if name and self.data_name and name != self.data_name
                   else "the same name but other content (were the files changed, or split differently?)")
            raise CheckpointError(
                f"{self.path}: checkpoint was trained on dataset {mine}(fingerprint {self.fingerprint[:12]}), "
                f"but the {what} is {theirs}(fingerprint {fingerprint[:12]}): {why}"
            )

    def train_state(self) -> dict[str, torch.Tensor] | None:
        p = self.path / STATE_FILE
        return load_tensors(p) if p.exists() else None

    @property
    def has_data(self) -> bool:
        """Whether the interactions are stored in the checkpoint (see :func:`save_checkpoint`)."""
        return (self.path / DATA_FILE).is_file()

    def data(self) -> Interactions:
        """The interactions stored in the checkpoint, checked against its fingerprint."""
        inter = load_data(self.path)
        self.check_data(inter.fingerprint(), what=f"data stored in {self.path / DATA_FILE}", name=inter.name)
        return inter


def save_data(directory: Path, data: Interactions) -> None:
    """Write ``data``'s splits (``data.safetensors``) and raw-id vocabularies (``vocab.json``) into ``directory``."""
    save_file({s: torch.from_numpy(np.ascontiguousarray(getattr(data, s), dtype=np.int64))
               for s in ("train", "valid", "test")}, str(directory / DATA_FILE),
              metadata={"name": data.name, "n_users": str(data.n_users), "n_items": str(data.n_items)})
    (directory / VOCAB_FILE).write_text(json.dumps({"users": data.user_ids.tolist(), "items": data.item_ids.tolist()}))


def load_data(directory: str | Path) -> Interactions:
    """The :class:`Interactions` written by :func:`save_data` (CheckpointError naming the file otherwise)."""
    from safetensors import safe_open

    directory = Path(directory)
    tensors = load_tensors(directory / DATA_FILE)
    try:
        with safe_open(str(directory / DATA_FILE), framework="pt") as f:
            info = f.metadata() or {}
        vocab = json.loads((directory / VOCAB_FILE).read_text())
        return Interactions(info["name"], int(info["n_users"]), int(info["n_items"]), tensors["train"].numpy(),
                            tensors["valid"].numpy(), tensors["test"].numpy(), vocab["users"], vocab["items"])
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{directory}: unreadable stored data ({DATA_FILE} / {VOCAB_FILE}: "
                              f"{type(exc).__name__}: {exc})") from None


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``safetensors`` ``load_file`` with a one-line CheckpointError naming the file for a truncated, empty or
    foreign file (the library's own errors say nothing of which file)."""
    try:
        return load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: all mean "not a readable file"
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(f"{path}: corrupted or not a safetensors file ({size} bytes; "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def read_meta(directory: str | Path, required: tuple[str, ...], fmt: str | tuple[str, ...], kind: str) -> dict:
    """``meta.json`` of a saved directory, after checking its files and format (CheckpointError otherwise)."""
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"{directory}: no such {kind.split()[-1]} directory")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not {kind} directory (a file)")
    for name in required:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: not {kind} directory (missing {name})")
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except Exception as exc:  # noqa: BLE001 - reported with the file it came from
        raise CheckpointError(f"{directory}: unreadable {META_FILE}: {exc}") from exc
    if meta.get("format") not in ((fmt,) if isinstance(fmt, str) else fmt):
        raise CheckpointError(f"{directory}: unknown {kind.split()[-1]} format {meta.get('format')!r}")
    return meta


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory written by :func:`save_checkpoint` (clear errors for anything else)."""
    directory = Path(directory)
    meta = read_meta(directory, (MODEL_FILE, CONFIG_FILE, META_FILE), (CHECKPOINT_FORMAT, ENSEMBLE_FORMAT),
                     "a checkpoint")
    try:
        config = RunConfig.load(directory / CONFIG_FILE)
    except Exception as exc:  # noqa: BLE001 - reported with the file it came from
        raise CheckpointError(f"{directory}: unreadable {CONFIG_FILE}: {exc}") from exc
    if meta["format"] == ENSEMBLE_FORMAT:
        return _load_ensemble(directory, meta, config, device)
    tensors = load_tensors(directory / MODEL_FILE, device)
    edges = tensors.pop("graph.edges", None)
    model = build_model(meta["n_users"], meta["n_items"], config.model)
    expected = set(model.state_dict())
    if set(tensors) != expected:
        raise CheckpointError(
            f"{directory}: weights do not match a {config.model.name} model "
            f"(expected {sorted(expected)}, found {sorted(tensors)})"
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(model.state_dict()[k].shape):
            raise CheckpointError(
                f"{directory}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(model.state_dict()[k].shape)}"
            )
    model.load_state_dict(tensors)
    model.to(device)
    return Checkpoint(model, config, meta, None if edges is None else edges.cpu().numpy(), directory)


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars/arrays and paths."""
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
