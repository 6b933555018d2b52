"""Deletion requests: the set of training ``(user, item)`` edges a model must forget.

A :class:`DeletionRequest` is immutable and always valid for the graph it was built against: its
``edges`` are sorted, unique, in range and are edges of that training graph. Every constructor checks
this before anything is returned, and refuses with a :class:`RequestError` (a :class:`ValueError`) that
lists the offenders (the first 20 and their count); the graph and the data are never touched (they are
immutable anyway; the residual graph is a new object built by :meth:`DeletionRequest.residual`).

Constructors (all vectorised, no Python loop over pairs):

* :meth:`DeletionRequest.from_pairs` -- explicit index pairs;
* :meth:`DeletionRequest.from_raw_pairs` / :meth:`DeletionRequest.from_file` -- raw ids (as in the
  dataset files), the latter from a CSV ``user,item`` (header optional);
* :meth:`DeletionRequest.users` / :meth:`DeletionRequest.from_raw_users` -- every training edge of whole
  users; :meth:`DeletionRequest.items` -- of whole items;
* :meth:`DeletionRequest.random_edges` / :meth:`DeletionRequest.random_users` -- seeded random requests.

Sequential requests: validate each new request against the *current* (already residual) graph and
accumulate with :meth:`DeletionRequest.merge`.

Persistence: :meth:`DeletionRequest.save` writes plain JSON (any suffix but ``.npy``) or a ``.npy`` of
the ``(n, 2)`` edges written with ``allow_pickle=False``; :meth:`DeletionRequest.load` reads both (never
unpickles).
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unlearnrec.data.interactions import Interactions, as_pairs, pair_keys
from unlearnrec.graph import Graph

__all__ = ["DeletionRequest", "RequestError"]

FORMAT = "unlearnrec.deletion-request"
VERSION = 1
_SHOW = 20  # offenders listed in an error message

_HEADER_FIELD = re.compile(r"^(user|item|u|i|uid|iid)[ _-]?(id)?(:token)?$", re.IGNORECASE)


class RequestWarning(UserWarning):
    """A request that is accepted but may not be what was meant (repeated rows, ...)."""


class RequestError(ValueError):
    """A deletion request that cannot be honoured (unknown ids, non-edges, empty, malformed file).

    Attributes:
        offenders: the offending ids or pairs (all of them, not only the ones shown in the message).
    """

    def __init__(self, message: str, offenders: list | None = None):
        super().__init__(message)
        self.offenders = list(offenders or [])


def _shown(items: list) -> str:
    head = ", ".join(str(x) for x in items[:_SHOW])
    return head + (f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")


def _fmt_pairs(pairs: np.ndarray) -> list[str]:
    return [f"({u}, {i})" for u, i in pairs.tolist()]


# ------------------------------------------------------------------------------ helpers
def _sizes_and_keys(graph_or_train) -> tuple[int | None, int | None, np.ndarray | None, Graph | None]:
    """``(n_users, n_items, sorted unique keys, graph)``; sizes are ``None`` for a bare pair array."""
    if isinstance(graph_or_train, Graph):
        return graph_or_train.n_users, graph_or_train.n_items, graph_or_train.keys, graph_or_train
    if isinstance(graph_or_train, Interactions):
        g = Graph(graph_or_train.train, graph_or_train.n_users, graph_or_train.n_items)
        return g.n_users, g.n_items, g.keys, g
    return None, None, None, None


def _graph_of(data: Interactions, graph: Graph | None) -> Graph:
    if graph is None:
        return Graph(data.train, data.n_users, data.n_items)
    if (graph.n_users, graph.n_items) != (data.n_users, data.n_items):
        raise RequestError(
            f"graph has {graph.n_users} users x {graph.n_items} items but the data {data.n_users} x {data.n_items}"
        )
    return graph


def _lookup(vocab: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised raw-id -> index lookup: ``(indices, found mask)``."""
    raw = np.asarray(raw).astype(str)
    if not len(vocab):
        return np.zeros(len(raw), np.int64), np.zeros(len(raw), bool)
    order = np.argsort(vocab, kind="stable")
    sorted_vocab = vocab[order]
    pos = np.minimum(np.searchsorted(sorted_vocab, raw), len(sorted_vocab) - 1)
    found = sorted_vocab[pos] == raw
    return order[pos].astype(np.int64), found


def _unique_in_order(values: np.ndarray) -> list:
    """Distinct values in first-appearance order (for readable offender lists)."""
    uniq, first = np.unique(values, return_index=True)
    return uniq[np.argsort(first, kind="stable")].tolist()


def _check_indices(indices, n: int, kind: str) -> np.ndarray:
    idx = np.atleast_1d(np.asarray(indices)).reshape(-1)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        ok = np.issubdtype(idx.dtype, np.floating) and bool(np.all(np.mod(idx, 1) == 0))
        if not ok:
            raise RequestError(f"{kind} indices must be integers, got {idx.dtype} (raw ids: use from_raw_*)")
    idx = idx.astype(np.int64)
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        offenders = _unique_in_order(idx[bad])
        raise RequestError(
            f"{len(offenders)} {kind} index(es) outside 0..{n - 1}: {_shown(offenders)}", offenders
        )
    return np.unique(idx)


# ------------------------------------------------------------------------------ request
@dataclass(frozen=True, eq=False)
class DeletionRequest:
    """An immutable set of training edges to unlearn.

    Attributes:
        edges: ``(n, 2)`` int64 ``(user, item)`` index pairs, sorted (user, then item), unique, read-only
            (``torch.tensor(req.edges)`` or ``req.edges.copy()`` for a writable copy).
        kind: how it was built: ``"pairs"``, ``"raw-pairs"``, ``"file"``, ``"users"``, ``"items"``,
            ``"random-edges"``, ``"random-users"``, ``"adversarial"``, ``"merged"``, ...
        description: human-readable detail (e.g. ``"random-edges 1% (seed 0)"``).
        n_users: users of the graph it was validated against (``None`` when built from a bare pair array).
        n_items: items of that graph (same).

    Construct through the classmethods; the constructor itself only normalises ``edges`` and refuses an
    empty request or negative ids. It is *not* a validation against a graph: use :meth:`validate`.
    """

    edges: np.ndarray
    kind: str = "pairs"
    description: str = ""
    n_users: int | None = None
    n_items: int | None = None

    def __post_init__(self) -> None:
        try:
            e = as_pairs(self.edges)
        except (ValueError, TypeError) as exc:
            raise RequestError(f"request edges: {exc}") from None
        if not len(e):
            raise RequestError("empty deletion request: it names no training edge")
        if e.min() < 0:
            bad = e[(e < 0).any(axis=1)]
            raise RequestError(f"{len(bad)} pair(s) with negative ids: {_shown(_fmt_pairs(bad))}", bad.tolist())
        if self.n_users is not None and e[:, 0].max() >= self.n_users:
            bad = e[e[:, 0] >= self.n_users]
            raise RequestError(f"{len(bad)} pair(s) with user ids >= {self.n_users}: {_shown(_fmt_pairs(bad))}")
        if self.n_items is not None and e[:, 1].max() >= self.n_items:
            bad = e[e[:, 1] >= self.n_items]
            raise RequestError(f"{len(bad)} pair(s) with item ids >= {self.n_items}: {_shown(_fmt_pairs(bad))}")
        e = np.unique(e, axis=0)  # sorted by user, then item
        e.flags.writeable = False
        object.__setattr__(self, "edges", e)
        if self.n_users is not None:
            object.__setattr__(self, "n_users", int(self.n_users))
        if self.n_items is not None:
            object.__setattr__(self, "n_items", int(self.n_items))

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return int(len(self.edges))

    @property
    def n_edges(self) -> int:
        return int(len(self.edges))

    @property
    def users_touched(self) -> np.ndarray:
        """Sorted distinct users with at least one request edge."""
        return np.unique(self.edges[:, 0])

    @property
    def items_touched(self) -> np.ndarray:
        """Sorted distinct items with at least one request edge."""
        return np.unique(self.edges[:, 1])

    def keys(self, n_items: int | None = None) -> np.ndarray:
        """Sorted ``user * n_items + item`` keys (``n_items`` defaults to the request's)."""
        n = n_items if n_items is not None else self.n_items
        if n is None:
            raise ValueError("n_items unknown: pass it")
        return pair_keys(self.edges, int(n))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeletionRequest):
            return NotImplemented
        return (
            np.array_equal(self.edges, other.edges)
            and self.kind == other.kind
            and self.description == other.description
            and self.n_users == other.n_users
            and self.n_items == other.n_items
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"DeletionRequest(kind={self.kind!r}, edges={self.n_edges}, users={len(self.users_touched)}, "
            f"items={len(self.items_touched)}, description={self.description!r})"
        )

    # ------------------------------------------------------------- validation
    def validate(self, graph: Graph) -> DeletionRequest:
        """Check that every edge is an edge of ``graph`` (e.g. the current residual graph of a sequence).

        Returns ``self`` with the graph's sizes filled in; raises :class:`RequestError` otherwise.
        """
        _validate_edges(graph, self.edges)
        if (self.n_users, self.n_items) == (graph.n_users, graph.n_items):
            return self
        return DeletionRequest(self.edges, self.kind, self.description, graph.n_users, graph.n_items)

    def residual(self, graph: Graph) -> Graph:
        """The residual graph ``E \\ E_Δ`` (a new :class:`Graph`; ``graph`` itself is unchanged)."""
        _validate_edges(graph, self.edges)
        return graph.without(self.edges)

    def merge(self, other: DeletionRequest) -> DeletionRequest:
        """The union of two requests (accumulated sequential requests)."""
        if not isinstance(other, DeletionRequest):
            raise TypeError(f"can only merge with a DeletionRequest, got {type(other).__name__}")
        for attr in ("n_users", "n_items"):
            a, b = getattr(self, attr), getattr(other, attr)
            if a is not None and b is not None and a != b:
                raise RequestError(f"cannot merge requests over different graphs ({attr} {a} != {b})")
        kind = self.kind if self.kind == other.kind else "merged"
        desc = " + ".join(d for d in (self.description or self.kind, other.description or other.kind) if d)
        return DeletionRequest(
            np.concatenate([self.edges, other.edges]),
            kind,
            desc,
            self.n_users if self.n_users is not None else other.n_users,
            self.n_items if self.n_items is not None else other.n_items,
        )

    # ---------------------------------------------------------- constructors
    @classmethod
    def from_pairs(
        cls,
        graph_or_train_pairs: Graph | Interactions | np.ndarray,
        pairs,
        *,
        kind: str = "pairs",
        description: str | None = None,
    ) -> DeletionRequest:
        """A request from ``(user, item)`` index pairs, checked against the training edges.

        Args:
            graph_or_train_pairs: the training :class:`Graph`, an :class:`Interactions` (its ``train``
                split), or an ``(n, 2)`` array of training pairs.
            pairs: ``(n, 2)`` index pairs (duplicates collapse).

        Raises:
            RequestError: empty, out-of-range ids, or pairs that are not training edges (listed).
        """
        try:
            pairs = as_pairs(pairs)
        except (ValueError, TypeError) as exc:
            raise RequestError(f"request pairs: {exc}") from None
        if not len(pairs):
            raise RequestError("empty deletion request: it names no training edge")
        n_users, n_items, keys, graph = _sizes_and_keys(graph_or_train_pairs)
        if graph is not None:
            _validate_edges(graph, pairs)
        else:
            train = as_pairs(graph_or_train_pairs)
            neg = (pairs < 0).any(axis=1)
            if neg.any():
                bad = pairs[neg]
                raise RequestError(f"{len(bad)} pair(s) with negative ids: {_shown(_fmt_pairs(bad))}", bad.tolist())
            width = int(max(train[:, 1].max(initial=-1), pairs[:, 1].max())) + 1
            tkeys = np.unique(pair_keys(train, width))
            _raise_non_edges(pairs, _member(tkeys, pair_keys(pairs, width)))
        desc = description if description is not None else f"{kind} ({len(np.unique(pairs, axis=0))} edges)"
        return cls(pairs, kind, desc, n_users, n_items)

    @classmethod
    def from_raw_pairs(
        cls,
        data: Interactions,
        graph: Graph | None,
        raw_user_ids,
        raw_item_ids,
        *,
        kind: str = "raw-pairs",
        description: str | None = None,
    ) -> DeletionRequest:
        """A request from aligned raw user and item ids (as written in the dataset's files).

        ``graph`` is the current training graph (``None``: ``data.train``).

        Raises:
            RequestError: unknown raw ids (all listed per side), pairs that are not training edges
                (listed with their raw ids), or an empty request.
        """
        ru = np.atleast_1d(np.asarray(raw_user_ids).astype(str)).reshape(-1)
        ri = np.atleast_1d(np.asarray(raw_item_ids).astype(str)).reshape(-1)
        if len(ru) != len(ri):
            raise RequestError(f"{len(ru)} user ids but {len(ri)} item ids: they must be aligned")
        if not len(ru):
            raise RequestError("empty deletion request: it names no training edge")
        graph = _graph_of(data, graph)
        u, fu = _lookup(data.user_ids, ru)
        i, fi = _lookup(data.item_ids, ri)
        if not (fu.all() and fi.all()):
            parts, offenders = [], []
            if not fu.all():
                bad = _unique_in_order(ru[~fu])
                offenders += [("user", x) for x in bad]
                parts.append(f"{len(bad)} unknown user id(s): {_shown(bad)}")
            if not fi.all():
                bad = _unique_in_order(ri[~fi])
                offenders += [("item", x) for x in bad]
                parts.append(f"{len(bad)} unknown item id(s): {_shown(bad)}")
            raise RequestError(f"{data.name}: " + "; ".join(parts), offenders)
        pairs = np.stack([u, i], axis=1)
        present = graph.contains(pairs)
        if not present.all():
            raw_bad = [f"({a}, {b})" for a, b in zip(ru[~present].tolist(), ri[~present].tolist(), strict=True)]
            bad = _unique_in_order(np.asarray(raw_bad))
            raise RequestError(
                f"{data.name}: {len(bad)} (user, item) pair(s) are not training edges (raw ids): {_shown(bad)}",
                bad,
            )
        desc = description if description is not None else f"{kind} ({len(np.unique(pairs, axis=0))} edges)"
        return cls(pairs, kind, desc, graph.n_users, graph.n_items)

    @classmethod
    def from_file(
        cls, path: str | Path, data: Interactions, graph: Graph | None = None, *, header: bool | None = None
    ) -> DeletionRequest:
        """A request from a CSV of raw ids, one ``user,item`` pair a line.

        The separator is a comma, a tab, or whitespace (read off the first data line); further columns
        are ignored; blank lines and lines starting with ``#`` are skipped. ``header=None`` (auto): the
        first row is a header when it is not a pair of known ids and both fields look like column names
        (``user``, ``user_id``, ``userId``, ``item``, ``item_id:token``, ...).

        Raises:
            RequestError: missing or malformed file, unknown ids, non-edges, or no pair at all.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise RequestError(f"{path}: cannot read the request file ({getattr(exc, 'strerror', None) or exc})") \
                from None
        numbered = [(n, ln) for n, ln in enumerate(text.splitlines(), 1)
                    if ln.strip() and not ln.lstrip().startswith("#")]
        if not numbered:
            raise RequestError(f"{path}: empty request file (no user,item pair)")
        first = numbered[0][1]
        sep = "," if "," in first else ("\t" if "\t" in first else None)
        if sep is None:
            rows = [ln.split() for _, ln in numbered]
        else:
            rows = list(csv.reader([ln for _, ln in numbered], delimiter=sep))
        lines = np.array([n for n, _ in numbered])
        width = len(rows[0])
        if width < 2:
            raise RequestError(f"{path}:{lines[0]}: not a user,item CSV (one column)")
        ragged = [k for k, r in enumerate(rows) if len(r) != width]
        if ragged:
            k = ragged[0]
            raise RequestError(f"{path}:{lines[k]}: expected {width} columns like line {lines[0]}, found "
                               f"{len(rows[k])} ({len(ragged)} such row(s))")
        table = np.char.strip(np.char.strip(np.array([r[:2] for r in rows], dtype=str)), '"')
        u0, i0 = table[0]
        if header is None:
            known = _lookup(data.user_ids, [u0])[1][0] and _lookup(data.item_ids, [i0])[1][0]
            header = bool(not known and _HEADER_FIELD.match(u0) and _HEADER_FIELD.match(i0))
        if header:
            table, lines = table[1:], lines[1:]
        if not len(table):
            raise RequestError(f"{path}: empty request file (a header and no user,item pair)")
        line_of = {}
        for (a, b), n in zip(table.tolist(), lines.tolist(), strict=True):  # first line of each id and pair
            line_of.setdefault(("user", a), n)
            line_of.setdefault(("item", b), n)
            line_of.setdefault(f"({a}, {b})", n)
        keys = np.char.add(np.char.add(table[:, 0], "\x1f"), table[:, 1])
        _, first_rows, counts = np.unique(keys, return_index=True, return_counts=True)
        if (counts > 1).any():
            rep = np.flatnonzero(keys == keys[first_rows[counts > 1][0]])
            warnings.warn(RequestWarning(
                f"{path}:{lines[rep[1]]}: repeats line {lines[rep[0]]} ({int((counts - 1).sum())} repeated row(s) "
                f"in all); each pair is forgotten once"), stacklevel=2)
        try:
            return cls.from_raw_pairs(
                data, graph, table[:, 0], table[:, 1], kind="file", description=f"file {path.name} ({len(table)} rows)"
            )
        except RequestError as exc:
            where = [f"{o[1] if isinstance(o, tuple) else o} on line {line_of[o]}" for o in (exc.offenders or [])
                     if o in line_of][:5]
            raise RequestError(f"{path}: {exc}" + (f" ({'; '.join(where)})" if where else ""), exc.offenders) \
                from None

    @classmethod
    def users(cls, graph: Graph, user_indices, *, description: str | None = None) -> DeletionRequest:
        """Every training edge of the given users (whole-user deletion).

        Raises:
            RequestError: indices out of range (listed) or users without any training edge at all.
        """
        users = _check_indices(user_indices, graph.n_users, "user")
        edges = graph.edges
        sel = edges[np.isin(edges[:, 0], users)]
        if not len(sel):
            raise RequestError(f"empty deletion request: user(s) {_shown(users.tolist())} have no training edge")
        desc = description if description is not None else f"users ({len(users)} users, {len(sel)} edges)"
        return cls(sel, "users", desc, graph.n_users, graph.n_items)

    @classmethod
    def from_raw_users(
        cls, data: Interactions, graph: Graph | None, raw_user_ids, *, description: str | None = None
    ) -> DeletionRequest:
        """Every training edge of the users with these raw ids (unknown ids are listed in the error)."""
        graph = _graph_of(data, graph)
        raw = np.atleast_1d(np.asarray(raw_user_ids).astype(str)).reshape(-1)
        idx, found = _lookup(data.user_ids, raw)
        if not found.all():
            bad = _unique_in_order(raw[~found])
            raise RequestError(f"{data.name}: {len(bad)} unknown user id(s): {_shown(bad)}", bad)
        return cls.users(graph, idx, description=description)

    @classmethod
    def items(cls, graph: Graph, item_indices, *, description: str | None = None) -> DeletionRequest:
        """Every training edge of the given items (whole-item deletion)."""
        items = _check_indices(item_indices, graph.n_items, "item")
        edges = graph.edges
        sel = edges[np.isin(edges[:, 1], items)]
        if not len(sel):
            raise RequestError(f"empty deletion request: item(s) {_shown(items.tolist())} have no training edge")
        desc = description if description is not None else f"items ({len(items)} items, {len(sel)} edges)"
        return cls(sel, "items", desc, graph.n_users, graph.n_items)

    @classmethod
    def random_edges(
        cls, graph: Graph, fraction: float | None = None, *, count: int | None = None, seed: int = 0
    ) -> DeletionRequest:
        """A uniform random subset of the training edges: ``fraction`` of them (rounded, at least one) or
        exactly ``count``, drawn without replacement with ``numpy.random.default_rng(seed)``."""
        if (fraction is None) == (count is None):
            raise RequestError("give exactly one of fraction and count")
        n_edges = graph.n_edges
        if fraction is not None:
            if not 0.0 < float(fraction) <= 1.0:
                raise RequestError(f"fraction must be in (0, 1], got {fraction}")
            n = max(1, int(round(float(fraction) * n_edges)))
            what = f"{float(fraction) * 100:g}%"
        else:
            n = int(count)  # type: ignore[arg-type]
            if n < 1:
                raise RequestError(f"count must be >= 1, got {count}")
            what = f"{n} edges"
        if n > n_edges or n_edges == 0:
            raise RequestError(f"cannot draw {n} edges from a graph with {n_edges}")
        rng = np.random.default_rng(seed)
        pick = rng.choice(n_edges, size=n, replace=False)
        keys = graph.keys[pick]
        edges = np.stack([keys // graph.n_items, keys % graph.n_items], axis=1)
        return cls(edges, "random-edges", f"random-edges {what} (seed {seed})", graph.n_users, graph.n_items)

    @classmethod
    def random_users(cls, graph: Graph, n: int, *, seed: int = 0) -> DeletionRequest:
        """All training edges of ``n`` users drawn uniformly (seeded) among the users with edges."""
        active = np.unique(graph.keys // graph.n_items)
        n = int(n)
        if n < 1 or n > len(active):
            raise RequestError(f"cannot draw {n} users: {len(active)} users have training edges")
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(active, size=n, replace=False))
        req = cls.users(graph, users, description=f"random-users {n} (seed {seed})")
        return DeletionRequest(req.edges, "random-users", req.description, graph.n_users, graph.n_items)

    # ----------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict (round-trips through :meth:`from_json`)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "description": self.description,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_edges": self.n_edges,
            "edges": self.edges.tolist(),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any] | str, graph: Graph | None = None) -> DeletionRequest:
        """Inverse of :meth:`to_json` (a dict or its JSON text); validated against ``graph`` if given."""
        if isinstance(obj, str):
            obj = json.loads(obj)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT or "edges" not in obj:
            raise RequestError(f"not a serialised deletion request (expected format {FORMAT!r})")
        req = cls(
            np.asarray(obj["edges"], dtype=np.int64).reshape(-1, 2) if obj["edges"] else obj["edges"],
            str(obj.get("kind", "pairs")),
            str(obj.get("description", "")),
            obj.get("n_users"),
            obj.get("n_items"),
        )
        return req.validate(graph) if graph is not None else req

    def save(self, path: str | Path) -> Path:
        """Write JSON, or the bare ``(n, 2)`` edge array when ``path`` ends in ``.npy`` (no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npy":
            with path.open("wb") as fh:
                np.save(fh, np.ascontiguousarray(self.edges, dtype=np.int64), allow_pickle=False)
        else:
            path.write_text(json.dumps(self.to_json()))
        return path

    @classmethod
    def load(cls, path: str | Path, graph: Graph | None = None) -> DeletionRequest:
        """Read :meth:`save`'s output (``.npy`` or JSON), validated against ``graph`` when given."""
        path = Path(path)
        try:
            if path.suffix == ".npy":
                edges = np.load(path, allow_pickle=False)
                req = cls(edges, "file", f"file {path.name}")
                return req.validate(graph) if graph is not None else req
            return cls.from_json(json.loads(path.read_text()), graph)
        except (OSError, json.JSONDecodeError) as exc:
            raise RequestError(f"{path}: cannot read the deletion request ({exc})") from None


# ----------------------------------------------------------------------------- validation
def _member(sorted_keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.zeros(len(q), bool)
    pos = np.minimum(np.searchsorted(sorted_keys, q), len(sorted_keys) - 1)
    return sorted_keys[pos] == q


def _raise_non_edges(pairs: np.ndarray, present: np.ndarray) -> None:
    if not present.all():
        bad = np.unique(pairs[~present], axis=0)
        raise RequestError(
            f"{len(bad)} pair(s) are not training edges: {_shown(_fmt_pairs(bad))}", bad.tolist()
        )


def _validate_edges(graph: Graph, pairs: np.ndarray) -> None:
    """Range check, then membership in ``graph``; :class:`RequestError` listing offenders."""
    pairs = as_pairs(pairs)
    if not len(pairs):
        raise RequestError("empty deletion request: it names no training edge")
    out = (pairs[:, 0] < 0) | (pairs[:, 0] >= graph.n_users) | (pairs[:, 1] < 0) | (pairs[:, 1] >= graph.n_items)
    if out.any():
        bad = np.unique(pairs[out], axis=0)
        raise RequestError(
            f"{len(bad)} pair(s) outside the graph's {graph.n_users} users x {graph.n_items} items: "
            f"{_shown(_fmt_pairs(bad))}",
            bad.tolist(),
        )
    _raise_non_edges(pairs, graph.contains(pairs))
