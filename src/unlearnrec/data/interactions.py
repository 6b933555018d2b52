"""The immutable interaction container every other layer consumes.

An :class:`Interactions` holds the implicit-feedback splits of one dataset as
``(n, 2)`` int64 arrays of contiguous ``(user, item)`` indices, plus the
vocabularies that map those indices back to the raw ids of the source files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from unlearnrec.data.errors import DataFormatError


def as_pairs(pairs: np.ndarray | list | None) -> np.ndarray:
    """Coerce ``pairs`` to a contiguous ``(n, 2)`` int64 array (empty if ``None``)."""
    if pairs is None:
        return np.zeros((0, 2), dtype=np.int64)
    arr = np.ascontiguousarray(np.asarray(pairs, dtype=np.int64))
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"expected an (n, 2) array of (user, item) pairs, got shape {arr.shape}")
    return arr


def user_item_matrix(pairs: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary ``n_users x n_items`` CSR matrix of ``pairs`` (duplicates collapse to 1)."""
    pairs = as_pairs(pairs)
    m = sp.csr_matrix(
        (np.ones(len(pairs), dtype=np.float32), (pairs[:, 0], pairs[:, 1])), shape=(n_users, n_items)
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def pair_keys(pairs: np.ndarray, n_items: int) -> np.ndarray:
    """Encode ``(user, item)`` pairs as unique int64 keys ``user * n_items + item``."""
    return pairs[:, 0].astype(np.int64) * int(n_items) + pairs[:, 1].astype(np.int64)


@dataclass(frozen=True)
class Interactions:
    """Train/validation/test interactions of one dataset with contiguous ids.

    Attributes:
        name: dataset name (registry name or file stem).
        n_users: number of users; user indices are ``0..n_users-1``.
        n_items: number of items; item indices are ``0..n_items-1``.
        train: ``(n, 2)`` training pairs.
        valid: ``(n, 2)`` validation pairs (may be empty).
        test: ``(n, 2)`` test pairs.
        user_ids: raw user id (as text) of each user index.
        item_ids: raw item id (as text) of each item index.
    """

    name: str
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    user_ids: np.ndarray = field(repr=False)
    item_ids: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            arr = as_pairs(getattr(self, split))
            object.__setattr__(self, split, arr)
            if len(arr) and (
                arr[:, 0].min() < 0
                or arr[:, 0].max() >= self.n_users
                or arr[:, 1].min() < 0
                or arr[:, 1].max() >= self.n_items
            ):
                raise DataFormatError(f"{self.name}: {split} split has ids outside 0..n_users/n_items")
        object.__setattr__(self, "user_ids", np.asarray(self.user_ids, dtype=str))
        object.__setattr__(self, "item_ids", np.asarray(self.item_ids, dtype=str))
        if len(self.user_ids) != self.n_users or len(self.item_ids) != self.n_items:
            raise DataFormatError(f"{self.name}: vocabulary sizes do not match n_users/n_items")

    # ------------------------------------------------------------------ views
    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    def stats(self) -> dict:
        """Sizes and density, for tables and ``meta.json``."""
        n = len(self.train) + len(self.valid) + len(self.test)
        return {
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_train": int(len(self.train)),
            "n_valid": int(len(self.valid)),
            "n_test": int(len(self.test)),
            "density": n / max(1, self.n_users * self.n_items),
        }

    def fingerprint(self) -> str:
        """sha256 over sizes and the three splits: identifies the exact data a model saw."""
        h = hashlib.sha256()
        h.update(f"{self.n_users}:{self.n_items}".encode())
        for split in (self.train, self.valid, self.test):
            h.update(np.int64(len(split)).tobytes())
            h.update(np.ascontiguousarray(split, dtype=np.int64).tobytes())
        return h.hexdigest()

    def with_train(self, train: np.ndarray, name: str | None = None) -> Interactions:
        """A copy with another training set (same ids, valid and test)."""
        return Interactions(
            name=name or self.name,
            n_users=self.n_users,
            n_items=self.n_items,
            train=as_pairs(train),
            valid=self.valid,
            test=self.test,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
        )

    def with_valid(self, train: np.ndarray, valid: np.ndarray) -> Interactions:
        """A copy with new train and validation splits (used by the validation carve)."""
        return Interactions(
            name=self.name,
            n_users=self.n_users,
            n_items=self.n_items,
            train=as_pairs(train),
            valid=as_pairs(valid),
            test=self.test,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
        )

    # ------------------------------------------------------------ id lookup
    def user_index(self, raw_ids) -> np.ndarray:
        """Map raw user ids to indices; :class:`KeyError` listing every unknown id."""
        return _lookup(self.user_ids, raw_ids, "user")

    def item_index(self, raw_ids) -> np.ndarray:
        """Map raw item ids to indices; :class:`KeyError` listing every unknown id."""
        return _lookup(self.item_ids, raw_ids, "item")

    # ------------------------------------------------------------ persistence
    def save_vocab(self, directory: str | Path) -> None:
        """Write ``user_vocab.json`` / ``item_vocab.json`` (index -> raw id lists)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "user_vocab.json").write_text(json.dumps(self.user_ids.tolist()))
        (directory / "item_vocab.json").write_text(json.dumps(self.item_ids.tolist()))


def _lookup(vocab: np.ndarray, raw_ids, kind: str) -> np.ndarray:
    raw = np.atleast_1d(np.asarray(raw_ids).astype(str))
    order = np.argsort(vocab, kind="stable")
    sorted_vocab = vocab[order]
    pos = np.searchsorted(sorted_vocab, raw)
    pos_clipped = np.minimum(pos, len(sorted_vocab) - 1)
    found = (pos < len(sorted_vocab)) & (sorted_vocab[pos_clipped] == raw) if len(vocab) else np.zeros(len(raw), bool)
    if not found.all():
        missing = sorted(set(raw[~found].tolist()))
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise KeyError(f"unknown {kind} id(s) ({len(missing)}): {shown}")
    return order[pos_clipped].astype(np.int64)
