"""Readers for interaction files: LightGCN text splits, RecBole atomic files and CSV/TSV.

Every reader returns an :class:`~unlearnrec.data.interactions.Interactions` whose ids are
contiguous indices with one vocabulary shared by all splits (an id seen only in test still
gets an index). LightGCN files already hold 0-based integer ids; they keep ``index == raw id``
so results line up with published code. Other formats map raw tokens to indices in sorted
order (numeric order when every id is an integer).

Bad input raises :class:`~unlearnrec.data.errors.DataFormatError` naming the file, the
1-based line and the reason. Readers only read; the writers here write to a temp file
and rename it, so no file is ever half-written.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from unlearnrec.data.errors import DataFormatError, DataWarning
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.splits import split_labels

__all__ = [
    "atomic_write_bytes",
    "lightgcn_text",
    "read_csv",
    "read_csv_splits",
    "read_lightgcn",
    "read_pairs_table",
    "read_recbole",
    "write_lightgcn",
]

PathLike = str | Path
Header = bool | None | Literal["auto"]

_INT_TOKEN = re.compile(rb"[+-]?[0-9]{1,18}")
# Bytes that may appear in a LightGCN file: digits, signs and ASCII whitespace.
_LIGHTGCN_BYTES = np.zeros(256, dtype=bool)
_LIGHTGCN_BYTES[list(b"0123456789+- \t\n\r\x0b\x0c")] = True
_HEADER_WORDS = re.compile(r"(user|item|movie|artist|business|rating|time|score|uid|iid|^id$)", re.I)


@dataclass
class _Split:
    """One parsed split before remapping: raw ids and the 1-based line of each pair."""

    path: Path
    users: np.ndarray
    items: np.ndarray
    lines: np.ndarray
    line_users: np.ndarray | None = None  # LightGCN: every user that has a line, even with no items


# ----------------------------------------------------------------------------- common helpers
def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    data = path.read_bytes()
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not data.strip():
        raise DataFormatError("empty file: no interactions", path)
    return data


def _line_of_offset(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _check_duplicates(split: _Split, keys: np.ndarray, what: str) -> np.ndarray:
    """Raise if a ``(user, item)`` key repeats inside one split; else return the sorted keys."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    dup = sk[1:] == sk[:-1]
    if not dup.any():
        return sk
    second = order[1:][dup]
    first = order[:-1][dup]
    n_pairs = len(np.unique(sk[1:][dup]))
    j = int(np.argmin(split.lines[second]))
    a, b = int(first[j]), int(second[j])
    raise DataFormatError(
        f"duplicate (user, item) pairs in {what}: {int(dup.sum())} repeated row(s) over {n_pairs} pair(s); "
        f"first: user {split.users[b]} item {split.items[b]} on line {split.lines[b]} repeats line {split.lines[a]}",
        split.path,
        int(split.lines[b]),
    )


def _check_overlap(
    name_a: str, a: _Split, keys_a: np.ndarray, sorted_a: np.ndarray, name_b: str, b: _Split, keys_b: np.ndarray
) -> None:
    """Raise if any pair of split ``b`` is also in split ``a``, with the count and a first example."""
    if len(sorted_a) == 0:
        return
    pos = np.minimum(np.searchsorted(sorted_a, keys_b), len(sorted_a) - 1)
    hit = sorted_a[pos] == keys_b  # sort-based membership: much faster than np.isin's hashing here
    if not hit.any():
        return
    idx = np.flatnonzero(hit)
    k = int(idx[np.argmin(b.lines[idx])])
    where_a = int(np.flatnonzero(keys_a == keys_b[k])[0])
    raise DataFormatError(
        f"{name_a}/{name_b} overlap: {len(idx)} pair(s) of {name_b} are also in {name_a} ({a.path}); "
        f"first: user {b.users[k]} item {b.items[k]} on line {b.lines[k]} (line {a.lines[where_a]} of {a.path.name})",
        b.path,
        int(b.lines[k]),
    )


def _check_splits(splits: dict[str, _Split], u: dict[str, np.ndarray], i: dict[str, np.ndarray], n_items: int) -> None:
    keys = {s: u[s] * np.int64(n_items) + i[s] for s in splits}
    ordered = {
        s: _check_duplicates(sp, keys[s], "this file" if s == "all" else f"the {s} split") for s, sp in splits.items()
    }
    names = list(splits)
    for x in range(len(names)):
        for y in range(x + 1, len(names)):
            a, b = names[x], names[y]
            _check_overlap(a, splits[a], keys[a], ordered[a], b, splits[b], keys[b])


def _vocab(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted vocabulary of raw string ids (numeric order when all are integers) and each row's index."""
    uniq, inverse = np.unique(raw, return_inverse=True)
    if len(uniq) and np.char.isdigit(uniq).all():  # exact numeric order, any length
        stripped = np.char.lstrip(uniq, "0")
        order = np.lexsort((uniq, stripped, np.char.str_len(stripped)))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return uniq[order], rank[inverse]
    return uniq, inverse.astype(np.int64)


def _warn_mixed_ids(splits: list[_Split], kind: str) -> None:
    """Warn, with the first file and line, when a few ids of a mostly integer column are not integers: they
    switch the whole vocabulary to text order ('1', '10', '11', ...), usually because of one stray token."""
    raw = np.concatenate([getattr(sp, f"{kind}s") for sp in splits])
    uniq = np.unique(raw)
    bad = ~np.char.isdigit(uniq)
    if not bad.any() or bad.all() or bad.sum() > max(1, 0.01 * len(uniq)):
        return
    for sp in splits:
        rows = np.flatnonzero(~np.char.isdigit(getattr(sp, f"{kind}s")))
        if len(rows):
            k = int(rows[np.argmin(sp.lines[rows])])
            warnings.warn(DataWarning(
                f"{sp.path}:{int(sp.lines[k])}: {kind} id {str(getattr(sp, f'{kind}s')[k])!r} is not an integer "
                f"while {len(uniq) - int(bad.sum())} of {len(uniq)} {kind} ids are ({int(bad.sum())} are not), so "
                f"{kind} ids are ordered as text; check that row"), stacklevel=3)
            return


def _resolve_size(kind: str, found: int, override: int | None, path: Path) -> int:
    if override is None:
        return found
    if override < found:
        raise DataFormatError(f"{kind} ids need at least {found} {kind}s but n_{kind}s={override} was given", path)
    return int(override)


# ----------------------------------------------------------------------------- LightGCN
def _first_bad_token(tokens: list[bytes]) -> int:
    for k, t in enumerate(tokens):
        if not _INT_TOKEN.fullmatch(t):
            return k
    return -1


def _parse_lightgcn(path: Path) -> _Split:
    """Parse ``u i1 i2 ...`` lines: one whole-file split for the values, one per line for the counts."""
    data = _read_bytes(path)
    lines = data.split(b"\n")
    counts = np.fromiter((len(x.split()) for x in lines), dtype=np.int64, count=len(lines))
    tokens = data.split()
    line_of = np.repeat(np.arange(1, len(lines) + 1, dtype=np.int64), counts)
    vals = None
    if _LIGHTGCN_BYTES[np.frombuffer(data, dtype=np.uint8)].all():
        try:
            vals = np.array(tokens).astype(np.int64)
        except (ValueError, OverflowError):
            vals = None
    if vals is None:
        k = _first_bad_token(tokens)
        if k < 0:  # a stray byte that split() keeps inside no token (should not happen)
            raise DataFormatError("unreadable bytes", path)
        tok = tokens[k].decode("utf-8", "backslashreplace")
        raise DataFormatError(f"non-integer id {tok!r}", path, int(line_of[k]))
    if (vals < 0).any():
        k = int(np.argmax(vals < 0))
        raise DataFormatError(f"negative id {int(vals[k])}", path, int(line_of[k]))
    limit = max(10 * len(vals), 1_000_000)
    if vals.max() > limit:
        k = int(np.argmax(vals))
        raise DataFormatError(
            f"id {int(vals[k])} is far larger than the file (LightGCN ids must be 0-based and contiguous)",
            path,
            int(line_of[k]),
        )
    nonempty = counts > 0
    starts = (np.cumsum(counts) - counts)[nonempty]
    is_user = np.zeros(len(vals), dtype=bool)
    is_user[starts] = True
    users = np.repeat(vals[starts], counts[nonempty] - 1)
    return _Split(path, users, vals[~is_user], line_of[~is_user], line_users=vals[starts])


def read_lightgcn(
    train_path: PathLike,
    test_path: PathLike,
    valid_path: PathLike | None = None,
    *,
    name: str | None = None,
    n_users: int | None = None,
    n_items: int | None = None,
) -> Interactions:
    """Read a LightGCN text split (``u i1 i2 ...`` per line, 0-based ids).

    Ids keep their value as index: ``n_users``/``n_items`` are the largest id + 1 over all
    splits, unless larger published sizes are passed (e.g. an item that occurs in no file).
    Trailing spaces, CRLF, blank lines and users with no items are accepted; a user may
    appear on several lines. The validation split is optional (empty when absent).
    """
    paths = {"train": Path(train_path), "valid": valid_path, "test": Path(test_path)}
    splits = {s: _parse_lightgcn(Path(p)) for s, p in paths.items() if p is not None}
    max_user = max(int(sp.line_users.max()) if len(sp.line_users) else -1 for sp in splits.values())
    max_item = max(int(sp.items.max()) if len(sp.items) else -1 for sp in splits.values())
    nu = _resolve_size("user", max_user + 1, n_users, splits["train"].path)
    ni = _resolve_size("item", max_item + 1, n_items, splits["train"].path)
    pairs = {s: (sp.users, sp.items) for s, sp in splits.items()}
    _check_splits(splits, {s: p[0] for s, p in pairs.items()}, {s: p[1] for s, p in pairs.items()}, ni)
    out = {s: np.stack(pairs[s], axis=1) if s in pairs else None for s in ("train", "valid", "test")}
    return Interactions(
        name=name or Path(train_path).resolve().parent.name,
        n_users=nu,
        n_items=ni,
        train=out["train"],
        valid=out["valid"],
        test=out["test"],
        user_ids=np.arange(nu).astype(str),
        item_ids=np.arange(ni).astype(str),
    )


# ----------------------------------------------------------------------------- delimited tables
def _table_rows(path: Path, sep: str | None, quoting: bool) -> tuple[list[list[str]], np.ndarray]:
    """Non-blank rows of a delimited text file and their 1-based line numbers."""
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"not UTF-8 text ({e.reason})", path, _line_of_offset(data, e.start)) from None
    lines = text.split("\n")
    if sep is None:
        rows = [ln.split() for ln in lines]
        numbers = range(1, len(lines) + 1)
    elif quoting and len(sep) == 1:
        reader = csv.reader(lines, delimiter=sep, strict=True)
        rows, numbers = [], []
        try:
            for row in reader:
                rows.append(row)
                numbers.append(reader.line_num)
        except csv.Error as e:
            raise DataFormatError(f"bad CSV quoting ({e})", path, reader.line_num) from None
    else:
        rows = [ln.split(sep) for ln in lines]
        numbers = range(1, len(lines) + 1)
    keep = [k for k, row in enumerate(rows) if any(c.strip() for c in row)]
    numbers = np.asarray(numbers, dtype=np.int64)
    return [rows[k] for k in keep], numbers[keep]


def _check_width(rows: list[list[str]], lines: np.ndarray, width: int, path: Path) -> None:
    widths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    bad = widths != width
    if bad.any():
        k = int(np.argmax(bad))
        raise DataFormatError(f"wrong column count: expected {width}, found {widths[k]}", path, int(lines[k]))


def _float_column(col: np.ndarray, lines: np.ndarray, path: Path, what: str) -> np.ndarray:
    try:
        return col.astype(np.float64)
    except ValueError:
        for k, v in enumerate(col):
            try:
                float(v)
            except ValueError:
                raise DataFormatError(f"non-numeric {what} {str(v)!r}", path, int(lines[k])) from None
        raise


def _id_column(col: np.ndarray, lines: np.ndarray, path: Path, what: str) -> np.ndarray:
    col = np.char.strip(col)
    empty = np.char.str_len(col) == 0
    if empty.any():
        k = int(np.argmax(empty))
        raise DataFormatError(f"empty {what} id", path, int(lines[k]))
    neg = np.char.startswith(col, "-") & np.char.isdigit(np.char.lstrip(col, "-"))
    if neg.any():
        k = int(np.argmax(neg))
        raise DataFormatError(f"negative {what} id {col[k]}", path, int(lines[k]))
    return col


@dataclass
class _Table:
    """Selected columns of a delimited file, after the rating threshold."""

    split: _Split
    timestamps: np.ndarray | None


def _select(
    rows: list[list[str]],
    lines: np.ndarray,
    path: Path,
    idx: Sequence[int | None],
    rating_threshold: float | None,
) -> _Table:
    cu, ci, cr, ct = (list(idx) + [None, None])[:4]
    if not rows:
        raise DataFormatError("empty file: no interactions", path)
    table = np.array(rows, dtype=str)
    users = _id_column(table[:, cu], lines, path, "user")
    items = _id_column(table[:, ci], lines, path, "item")
    ts = _float_column(np.char.strip(table[:, ct]), lines, path, "timestamp") if ct is not None else None
    if rating_threshold is not None:
        if cr is None:
            raise ValueError(f"{path}: a rating threshold needs a rating column")
        keep = _float_column(np.char.strip(table[:, cr]), lines, path, "rating") >= rating_threshold
        users, items, lines = users[keep], items[keep], lines[keep]
        ts = ts[keep] if ts is not None else None
        if not keep.any():
            raise DataFormatError(f"no interaction has rating >= {rating_threshold}", path)
    return _Table(_Split(path, users, items, lines), ts)


def _from_tables(
    name: str,
    tables: dict[str, _Table],
    *,
    ratios: Sequence[float],
    seed: int,
    split: Literal["random", "temporal"],
    drop_duplicates: bool,
    n_users: int | None,
    n_items: int | None,
) -> Interactions:
    """Shared vocabulary, checks, and (for a single table) the per-user split."""
    for kind in ("user", "item"):
        _warn_mixed_ids([t.split for t in tables.values()], kind)
    user_vocab, u_all = _vocab(np.concatenate([t.split.users for t in tables.values()]))
    item_vocab, i_all = _vocab(np.concatenate([t.split.items for t in tables.values()]))
    first = next(iter(tables.values())).split.path
    for kind, found, want in (("user", len(user_vocab), n_users), ("item", len(item_vocab), n_items)):
        if want is not None and want != found:
            raise DataFormatError(f"expected {want} distinct {kind}s, found {found}", first)
    bounds = np.cumsum([0] + [len(t.split.users) for t in tables.values()])
    u = {s: u_all[bounds[k] : bounds[k + 1]] for k, s in enumerate(tables)}
    i = {s: i_all[bounds[k] : bounds[k + 1]] for k, s in enumerate(tables)}
    splits = {s: t.split for s, t in tables.items()}
    if drop_duplicates:
        for s in list(splits):
            keys = u[s] * np.int64(len(item_vocab)) + i[s]
            _, first_rows = np.unique(keys, return_index=True)
            keep = np.sort(first_rows)
            sp, t = splits[s], tables[s]
            splits[s] = _Split(sp.path, sp.users[keep], sp.items[keep], sp.lines[keep])
            tables[s] = _Table(splits[s], t.timestamps[keep] if t.timestamps is not None else None)
            u[s], i[s] = u[s][keep], i[s][keep]
    _check_splits(splits, u, i, len(item_vocab))
    if list(tables) == ["all"]:
        ts = tables["all"].timestamps if split == "temporal" else None
        if split == "temporal" and ts is None:
            raise ValueError("a temporal split needs a timestamp column")
        labels = split_labels(u["all"], ratios, seed, timestamps=ts)
        pairs = np.stack([u["all"], i["all"]], axis=1)
        out = {"train": pairs[labels == 0], "valid": pairs[labels == 1], "test": pairs[labels == 2]}
    else:
        out = {s: np.stack([u[s], i[s]], axis=1) for s in tables}
    return Interactions(
        name=name,
        n_users=len(user_vocab),
        n_items=len(item_vocab),
        train=out.get("train"),
        valid=out.get("valid"),
        test=out.get("test"),
        user_ids=user_vocab,
        item_ids=item_vocab,
    )


# ----------------------------------------------------------------------------- RecBole
_RECBOLE_TYPES = {"token", "token_seq", "float", "float_seq"}


def _recbole_table(
    path: Path, fields: tuple[str, str, str, str], rating_threshold: float | None, need_time: bool
) -> _Table:
    rows, lines = _table_rows(path, "\t", quoting=False)
    if not rows:
        raise DataFormatError("empty file: no interactions", path)
    header, rows, hline, lines = rows[0], rows[1:], int(lines[0]), lines[1:]
    names = []
    for cell in header:
        fname, _, ftype = cell.strip().partition(":")
        if ftype not in _RECBOLE_TYPES:
            raise DataFormatError(
                f"bad RecBole header field {cell.strip()!r}: expected name:type with type in {sorted(_RECBOLE_TYPES)}",
                path,
                hline,
            )
        names.append(fname)
    idx: list[int | None] = []
    for role, fname in zip(("user", "item", "rating", "timestamp"), fields, strict=True):
        required = role in ("user", "item") or (role == "rating" and rating_threshold is not None)
        required = required or (role == "timestamp" and need_time)
        if fname in names:
            idx.append(names.index(fname))
        elif required:
            raise DataFormatError(f"header has no {role} field {fname!r} (fields: {', '.join(names)})", path, hline)
        else:
            idx.append(None)
    _check_width(rows, lines, len(header), path)
    if not need_time:
        idx[3] = None
    return _select(rows, lines, path, idx, rating_threshold)


def _recbole_files(path_or_prefix: PathLike) -> dict[str, Path]:
    """Locate ``NAME.inter`` or ``NAME.{train,valid,test}.inter`` from a file, folder or prefix."""
    p = Path(path_or_prefix)
    if p.is_file():
        m = re.fullmatch(r"(.*)\.(train|valid|test)\.inter", p.name)
        if not m:
            return {"all": p}
        p = p.with_name(m.group(1))
    elif p.is_dir():
        p = p / p.name
    if Path(f"{p}.inter").is_file() and not Path(f"{p}.train.inter").is_file():
        return {"all": Path(f"{p}.inter")}
    split_files = {s: Path(f"{p}.{s}.inter") for s in ("train", "valid", "test")}
    if split_files["train"].is_file() and split_files["test"].is_file():
        return {s: f for s, f in split_files.items() if f.is_file()}
    raise FileNotFoundError(
        f"no RecBole atomic files for {path_or_prefix}: looked for {p}.inter and {p}.train.inter + {p}.test.inter"
    )


def read_recbole(
    path_or_prefix: PathLike,
    *,
    name: str | None = None,
    rating_threshold: float | None = None,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2024,
    split: Literal["random", "temporal"] = "random",
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str = "rating",
    time_field: str = "timestamp",
    drop_duplicates: bool = False,
    n_users: int | None = None,
    n_items: int | None = None,
) -> Interactions:
    """Read RecBole atomic interaction files (tab-separated, typed ``name:type`` header).

    ``path_or_prefix`` is ``NAME.inter``, one of ``NAME.{train,valid,test}.inter``, a folder
    ``NAME/`` holding them, or the prefix ``.../NAME``. A single file is split per user with
    :func:`~unlearnrec.data.splits.split_labels` (``ratios``, ``seed``, random or temporal).
    With ``rating_threshold`` only rows with rating >= threshold are positives (and ids that
    only occur below it get no index). ``n_users``/``n_items``, when given, are checked.
    Duplicate pairs raise unless ``drop_duplicates`` keeps the first occurrence.
    """
    files = _recbole_files(path_or_prefix)
    fields = (user_field, item_field, rating_field, time_field)
    need_time = split == "temporal" and "all" in files
    tables = {s: _recbole_table(f, fields, rating_threshold, need_time) for s, f in files.items()}
    stem = next(iter(files.values())).name.split(".")[0]
    return _from_tables(
        name or stem,
        tables,
        ratios=ratios,
        seed=seed,
        split=split,
        drop_duplicates=drop_duplicates,
        n_users=n_users,
        n_items=n_items,
    )


# ----------------------------------------------------------------------------- CSV / TSV
def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _looks_like_header(row0: list[str], row1: list[str] | None) -> bool:
    """A first row is a header if it names a usual column, or is text above a numeric row."""
    if any(_HEADER_WORDS.search(c.strip()) for c in row0):
        return True
    if row1 is None or len(row1) != len(row0):
        return False
    return any(not _is_number(a) and _is_number(b) for a, b in zip(row0, row1, strict=True))


def read_pairs_table(
    path: PathLike,
    *,
    sep: str | None = ",",
    header: Header = "auto",
    columns: Sequence[int | str | None] | None = None,
    rating_threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Raw ``(users, items, lines, timestamps)`` of a CSV/TSV, after the rating threshold.

    The building block of :func:`read_csv`; ids are returned as text, unmapped.
    """
    t = _csv_table(Path(path), sep, header, columns, rating_threshold)
    return t.split.users, t.split.items, t.split.lines, t.timestamps


def _csv_table(
    path: Path,
    sep: str | None,
    header: Header,
    columns: Sequence[int | str | None] | None,
    rating_threshold: float | None,
) -> _Table:
    rows, lines = _table_rows(path, sep, quoting=True)
    if not rows:
        raise DataFormatError("empty file: no interactions", path)
    if columns is None:
        columns = (0, 1, 2 if rating_threshold is not None else None, None)
    columns = list(columns)
    if not 2 <= len(columns) <= 4 or columns[0] is None or columns[1] is None:
        raise ValueError("columns must be (user, item[, rating[, timestamp]]), with user and item given")
    by_name = any(isinstance(c, str) for c in columns)
    if header == "auto":
        header = by_name or _looks_like_header(rows[0], rows[1] if len(rows) > 1 else None)
    names = [c.strip() for c in rows[0]] if header else None
    width = len(rows[0])
    if header:
        rows, lines = rows[1:], lines[1:]
    idx: list[int | None] = []
    for role, c in zip(("user", "item", "rating", "timestamp"), columns, strict=False):
        if isinstance(c, str):
            if names is None or c not in names:
                raise ValueError(f"{path}: no column named {c!r} (header: {names})")
            c = names.index(c)
        if c is not None and not -width <= c < width:
            raise DataFormatError(f"{role} column {c} does not exist: the file has {width} columns", path, 1)
        idx.append(c)
    _check_width(rows, lines, width, path)
    return _select(rows, lines, path, idx, rating_threshold)


def read_csv(
    path: PathLike,
    *,
    sep: str | None = ",",
    header: Header = "auto",
    columns: Sequence[int | str | None] | None = None,
    rating_threshold: float | None = None,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2024,
    split: Literal["random", "temporal"] = "random",
    drop_duplicates: bool = False,
    name: str | None = None,
) -> Interactions:
    """Read one CSV/TSV of interactions and split it per user like a single ``.inter`` file.

    ``sep=None`` splits on whitespace; a one-character ``sep`` honours CSV quoting.
    ``header``: ``True``, ``False``/``None``, or ``"auto"`` (a first row naming usual columns,
    or text above numbers, is a header). ``columns`` gives ``(user, item[, rating[, timestamp]])``
    as positions or header names (default ``(0, 1)``, plus column 2 as rating when a
    ``rating_threshold`` is set). ``split="temporal"`` needs the timestamp column.
    """
    path = Path(path)
    if split == "temporal" and (columns is None or len(columns) < 4 or list(columns)[3] is None):
        raise ValueError("a temporal split needs a timestamp column: columns=(user, item, rating|None, timestamp)")
    table = _csv_table(path, sep, header, columns, rating_threshold)
    return _from_tables(
        name or path.name.split(".")[0],
        {"all": table},
        ratios=ratios,
        seed=seed,
        split=split,
        drop_duplicates=drop_duplicates,
        n_users=None,
        n_items=None,
    )


def read_csv_splits(
    paths: dict[str, PathLike],
    *,
    sep: str | None = ",",
    header: Header = "auto",
    columns: Sequence[int | str | None] | None = None,
    rating_threshold: float | None = None,
    drop_duplicates: bool = False,
    name: str | None = None,
) -> Interactions:
    """Read a dataset that ships its own ``train``/``test`` (and optional ``valid``) CSV/TSV files, as they are:
    one vocabulary over all files, no re-split; a pair in two splits or twice in one is refused (file, line)."""
    unknown = sorted(set(paths) - {"train", "valid", "test"})
    if unknown or "train" not in paths or "test" not in paths:
        raise ValueError(f"split files must be train, test and optionally valid (got {', '.join(sorted(paths))})")
    tables = {s: _csv_table(Path(paths[s]), sep, header, columns, rating_threshold)
              for s in ("train", "valid", "test") if s in paths}
    return _from_tables(
        name or Path(paths["train"]).resolve().parent.name,
        tables,
        ratios=(0.8, 0.1, 0.1),
        seed=0,
        split="random",
        drop_duplicates=drop_duplicates,
        n_users=None,
        n_items=None,
    )


# ----------------------------------------------------------------------------- writing
def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync, then rename.

    Readers never see a half-written file, and a failure leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def lightgcn_text(pairs: np.ndarray) -> bytes:
    """``(user, item)`` pairs as LightGCN text: one ``u i1 i2 ...`` line per user with pairs, ascending."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    users, items = pairs[order, 0], pairs[order, 1]
    uniq, starts = np.unique(users, return_index=True)
    groups = np.split(items.astype(str), starts[1:]) if len(users) else []
    return "".join(f"{u} {' '.join(g)}\n" for u, g in zip(uniq.tolist(), groups, strict=True)).encode()


def write_lightgcn(path: PathLike, pairs: np.ndarray) -> Path:
    """Write pairs in LightGCN text format, atomically (see :func:`lightgcn_text`)."""
    return atomic_write_bytes(path, lightgcn_text(pairs))
