"""The Influence Encoder as its own checkpoint directory, bound to one trained model and one dataset.

Layout (written atomically): ``encoder.safetensors`` (``h0``, ``w_eta``, the MLP), ``config.yaml`` (the
:class:`UnlearnRecConfig`) and ``meta.json`` with the backbone's name and sizes, the backbone checkpoint's
*data fingerprint*, and a *model fingerprint* (sha256 of the backbone's E0 bytes). The encoder's tables are
node-indexed and learned against one E0, so :func:`load_encoder` refuses another model or dataset with a
:class:`~unlearnrec.checkpoint.CheckpointError` naming both fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from unlearnrec.checkpoint import (
    CheckpointError,
    json_default,
    load_tensors,
    read_meta,
    versions,
    write_dir_atomically,
)
from unlearnrec.models.base import Recommender
from unlearnrec.unlearning.unlearnrec.config import config_for
from unlearnrec.unlearning.unlearnrec.encoder import InfluenceEncoder

ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
FORMAT = "unlearnrec-encoder/1"


def model_fingerprint(model: Recommender) -> str:
    """sha256 over the backbone's name, table shape and E0 bytes (float32, CPU, row-major)."""
    e0 = model.embedding.detach().to("cpu", torch.float32).contiguous().numpy()
    h = hashlib.sha256()
    h.update(f"{model.name}:{e0.shape[0]}x{e0.shape[1]}:".encode())
    h.update(np.ascontiguousarray(e0).tobytes())
    return h.hexdigest()


def _data_fp(data_fingerprint) -> str:
    fp = data_fingerprint.fingerprint() if hasattr(data_fingerprint, "fingerprint") else data_fingerprint
    if not isinstance(fp, str) or not fp:
        raise TypeError("data_fingerprint must be a fingerprint string or an object with .fingerprint()")
    return fp


def save_encoder(
    directory: str | Path,
    encoder: InfluenceEncoder,
    model: Recommender,
    data_fingerprint,
    *,
    report: dict | None = None,
    extra_meta: dict | None = None,
    extra: Any = None,
) -> Path:
    """Save ``encoder`` bound to ``model`` and its data (``extra(tmp_dir)`` adds files, renamed in with it).

    Args:
        data_fingerprint: the backbone checkpoint's ``data_fingerprint`` (``Checkpoint.fingerprint``), or an
            :class:`~unlearnrec.data.interactions.Interactions` (its ``fingerprint()``).
        report: the pre-training report (its JSON-safe summary is stored in ``meta.json``).
    """
    if (model.n_users, model.n_items, model.config.embedding_size) != (encoder.n_users, encoder.n_items, encoder.dim):
        raise CheckpointError(
            f"encoder ({encoder.n_users} x {encoder.n_items}, d={encoder.dim}) does not fit model "
            f"({model.n_users} x {model.n_items}, d={model.config.embedding_size})"
        )
    data_fp = _data_fp(data_fingerprint)
    model_fp = model_fingerprint(model)

    def write(tmp: Path) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
        save_file(tensors, str(tmp / ENCODER_FILE))
        encoder.config.save(tmp / CONFIG_FILE)
        meta: dict[str, Any] = {
            "format": FORMAT,
            "model": model.name,
            "n_users": encoder.n_users,
            "n_items": encoder.n_items,
            "embedding_size": encoder.dim,
            "n_layers": encoder.n_layers,
            "data_fingerprint": data_fp,
            "model_fingerprint": model_fp,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": versions(),
        }
        if report is not None:
            meta["pretrain"] = {k: v for k, v in report.items() if k != "epochs"}
        meta.update(extra_meta or {})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=json_default))
        if extra is not None:
            extra(tmp)

    return write_dir_atomically(directory, write)


def read_encoder_meta(directory: str | Path) -> dict:
    """``meta.json`` of an encoder directory (CheckpointError when it is not one)."""
    return read_meta(directory, (ENCODER_FILE, CONFIG_FILE, META_FILE), FORMAT, "an encoder")


def load_encoder(
    directory: str | Path, model: Recommender, data_fingerprint, device: str | torch.device = "cpu",
    lineage: list[str] | None = None,
) -> InfluenceEncoder:
    """Load an encoder saved by :func:`save_encoder`, refusing any model or data but its own.

    Args:
        model: the backbone it will unlearn from (its name, sizes and E0 fingerprint must match).
        data_fingerprint: the backbone checkpoint's data fingerprint (or an ``Interactions``).
        lineage: model fingerprints ``model`` was unlearned from, oldest first (an unlearned checkpoint's
            ``meta["lineage"]``): an encoder bound to one of them serves the later requests of a sequence.
            ``encoder.rounds`` is then how many unlearning rounds lie between its model and ``model``.

    Raises:
        CheckpointError: not an encoder directory, or bound to another model / dataset (both fingerprints named).
    """
    directory = Path(directory)
    meta = read_encoder_meta(directory)
    data_fp = _data_fp(data_fingerprint)
    if meta["data_fingerprint"] != data_fp:
        raise CheckpointError(
            f"{directory}: encoder was pre-trained for data with fingerprint {meta['data_fingerprint']}, "
            f"but the data given has fingerprint {data_fp}"
        )
    sizes = (model.n_users, model.n_items, model.config.embedding_size)
    if meta["model"] != model.name or (meta["n_users"], meta["n_items"], meta["embedding_size"]) != sizes:
        raise CheckpointError(
            f"{directory}: encoder belongs to a {meta['model']} model with {meta['n_users']} users x "
            f"{meta['n_items']} items, d={meta['embedding_size']}; got a {model.name} model with "
            f"{sizes[0]} x {sizes[1]}, d={sizes[2]}"
        )
    model_fp = model_fingerprint(model)
    chain = [*(lineage or []), model_fp]
    if meta["model_fingerprint"] not in chain:
        raise CheckpointError(
            f"{directory}: encoder is bound to model weights with fingerprint {meta['model_fingerprint']}, "
            f"but the model given has fingerprint {model_fp} (another training run, or an already-unlearned model)"
        )
    try:
        values = yaml.safe_load((directory / CONFIG_FILE).read_text()) or {}
        config = config_for(values.get("variant", "paper"), values)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{directory}: unreadable {CONFIG_FILE}: {exc}") from exc
    encoder = InfluenceEncoder(meta["n_users"], meta["n_items"], meta["embedding_size"], meta["n_layers"], config)
    tensors = load_tensors(directory / ENCODER_FILE)
    expected = encoder.state_dict()
    if set(tensors) != set(expected) or any(tuple(tensors[k].shape) != tuple(v.shape) for k, v in expected.items()):
        raise CheckpointError(
            f"{directory}: tensors {sorted((k, tuple(v.shape)) for k, v in tensors.items())} do not match an encoder "
            f"with config {config.model_dump(include={'mlp_layers'})}"
        )
    encoder.load_state_dict(tensors)
    encoder.meta = meta  # type: ignore[attr-defined]
    encoder.rounds = len(chain) - 1 - chain.index(meta["model_fingerprint"])  # type: ignore[attr-defined]
    encoder.set_mlp_trainable(False)
    return encoder.to(device).eval()


__all__ = ["load_encoder", "model_fingerprint", "read_encoder_meta", "save_encoder"]
