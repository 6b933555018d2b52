"""Typed run configuration (pydantic) that round-trips to YAML.

Precedence: defaults < config file < ``key=value`` overrides (dotted paths such as
``train.learning_rate=0.005``). The resolved config is stored with every checkpoint and result.
Hyper-parameter names follow LensKit (``embedding_size``, ``epochs``, ``learning_rate``, ``reg``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Self

ModelName = Literal["mf", "lightgcn", "sgl", "simgcl"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class YamlConfig(_Strict):
    """A strict pydantic config with YAML round trip and dotted ``key=value`` overrides."""

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def from_yaml(cls, text: str) -> Self:
        return cls.model_validate(yaml.safe_load(text) or {})

    @classmethod
    def load(cls, path: str | Path) -> Self:
        return cls.from_yaml(Path(path).read_text())

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> Self:
        """Copy with dotted ``key=value`` overrides (values parsed as YAML); unknown keys are an error."""
        return apply_overrides(self, overrides)


class DataSource(_Strict):
    """A user's own interaction files (``unlearnrec train --data PATH``), read by :mod:`unlearnrec.data.source`.

    ``path`` is one file (split per user here) or a folder holding ``train`` and ``test`` files (and optionally
    ``valid``), which are used as they are. The data read is stored in the checkpoint, so later commands need
    neither the files nor these settings.
    """

    path: str
    format: Literal["auto", "csv", "tsv", "lightgcn", "recbole"] = "auto"
    """``auto`` sniffs: ``train.txt`` + ``test.txt`` -> lightgcn, ``*.inter`` -> recbole, ``.csv`` -> csv,
    ``.tsv``/``.tab`` -> tsv; anything else must be named."""
    sep: str | None = None
    """Column separator of csv/tsv (default ``,`` for csv, a tab for tsv; ``whitespace`` for runs of blanks)."""
    header: Literal["auto"] | bool = "auto"
    """csv/tsv: whether the first row names the columns (``auto``: when it names usual columns or is text
    above numbers)."""
    columns: list[int | str | None] | None = None
    """csv/tsv/recbole: ``[user, item]`` plus optional ``rating`` and ``timestamp`` columns, by header name or
    0-based position (default: the first two columns; the third is the rating when a threshold is set)."""
    id_base: int = Field(0, ge=0)
    """lightgcn: the smallest raw id (1 for files numbered from 1); raw ids are kept in the vocabulary."""
    rating_threshold: float | None = None
    """Only rows whose rating is at least this are interactions (explicit feedback made implicit)."""
    split: Literal["auto", "files", "random", "temporal"] = "auto"
    """``files``: the folder's own train/valid/test files; ``random``: per user, ``ratios`` of each user's
    interactions at random (seeded by ``data.split_seed``); ``temporal``: per user by timestamp, the latest
    last (leave-last-out when a user has few); ``auto``: files when there are several, else random."""
    ratios: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1])
    """train/valid/test shares of each user's interactions for a ``random`` or ``temporal`` split."""
    drop_duplicates: bool = False
    """Keep the first of repeated (user, item) rows instead of refusing the file."""


class DataConfig(_Strict):
    """Which data to load and how to carve validation."""

    dataset: str = "synthetic"
    """Registry name (``unlearnrec data list``); ``synthetic`` needs no files. With ``source`` (own files) it
    is the data's name in tables and checks."""
    source: DataSource | None = None
    """Own interaction files instead of a registered dataset."""
    data_root: str | None = None
    """Folder holding the datasets (default: env ``UNLEARNREC_DATA``, then ``~/.cache/unlearnrec/data``)."""
    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of each user's training items held out for validation where a dataset has no validation split."""
    split_seed: int = 2024
    """Seed of the validation carve (fixed, so every model sees the same split)."""


class ModelConfig(_Strict):
    """Backbone settings (UnlearnRec spec §6: d = 128 there, 3 layers, Adam lr 1e-3)."""

    name: ModelName = "lightgcn"
    embedding_size: int = Field(64, gt=0)
    n_layers: int = Field(3, ge=0)
    """Propagation depth (ignored by MF)."""
    reg: float = Field(1e-4, ge=0.0)
    """L2 weight on the batch's layer-0 embeddings (LightGCN's regulariser)."""
    init_std: float = Field(0.1, gt=0.0)
    """Std of the normal initialisation of the embedding table."""
    ssl_weight: float = Field(0.01, ge=0.0)
    """Weight of the contrastive (InfoNCE) term of SGL and SimGCL."""
    ssl_temperature: float = Field(0.1, gt=0.0)
    """InfoNCE temperature of SGL and SimGCL."""
    ssl_anchors: int | None = Field(None, gt=0)
    """Optional cap on the InfoNCE anchors per batch and node kind: a random subset of the batch's unique users
    (items) is contrasted with all of them, an unbiased estimate of the full term. None: all (the papers)."""
    edge_keep: float = Field(0.8, gt=0.0, le=1.0)
    """SGL-ED: probability of keeping an edge in each augmented view."""
    noise_eps: float = Field(0.2, ge=0.0)
    """SimGCL: magnitude of the uniform noise added at each layer of the contrastive views."""


class TrainConfig(_Strict):
    """Optimisation, early stopping and evaluation settings."""

    epochs: int = Field(300, ge=0)
    batch_size: int = Field(8192, gt=0)
    learning_rate: float = Field(5e-3, gt=0.0)
    patience: int = Field(10, ge=1)
    """Evaluations without a validation improvement before stopping."""
    eval_every: int = Field(1, ge=1)
    monitor: str = "recall@20"
    """Validation metric for early stopping and model selection (never a test metric)."""
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50])
    seed: int = 0
    device: str = "cpu"
    max_seconds: float | None = None
    """Optional wall-clock budget for training; the best validation epoch so far is kept."""


class RunConfig(YamlConfig):
    """Everything needed to reproduce one training run."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def apply_overrides(config: BaseModel, overrides: list[str] | dict[str, Any]) -> Any:
    """Return a copy of ``config`` with dotted ``key=value`` overrides applied (values parsed as YAML).

    Raises:
        ValueError: for a malformed override or a key that does not exist (the key is named).
    """
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    data = config.model_dump(mode="json")
    for key, value in items:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"unknown config key {key!r}")
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ValueError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return type(config).model_validate(data)


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None
