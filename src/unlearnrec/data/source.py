"""A user's own interaction files (``unlearnrec train --data PATH``): find, sniff, read and split them.

One entry point, :func:`load_source`, turns a :class:`~unlearnrec.config.DataSource` into
:class:`~unlearnrec.data.interactions.Interactions` with the raw ids kept in its vocabulary. A folder with
``train`` and ``test`` files is used as it is (no re-split: the test split is exactly the file's); a single file
is split per user, at random or by timestamp, seeded. A missing validation split is carved from train (the
same carve as the registered datasets'). Bad input raises :class:`~unlearnrec.data.errors.DataFormatError` or
``ValueError`` naming the file (and line).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from unlearnrec.config import DataSource
from unlearnrec.data.errors import DataFormatError
from unlearnrec.data.formats import read_csv, read_csv_splits, read_lightgcn, read_recbole
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.splits import carve_validation

__all__ = ["load_source", "resolve_format", "split_files"]

_SPLITS = ("train", "valid", "test")
_EXT_FORMAT = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".inter": "recbole"}


def split_files(folder: Path) -> dict[str, Path]:
    """``train``/``valid``/``test`` files of a folder (any of .txt .csv .tsv .tab .inter; ``validation`` and
    ``val`` name the validation file too); empty when it has no train file."""
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        m = re.fullmatch(r"(?:.*[._-])?(train|valid|validation|val|test)\.(txt|csv|tsv|tab|inter)", f.name, re.I)
        if m:
            role = {"validation": "valid", "val": "valid"}.get(m.group(1).lower(), m.group(1).lower())
            if role in found:
                raise ValueError(f"{folder}: two {role} files ({found[role].name}, {f.name}); keep one")
            found[role] = f
    return found if "train" in found else {}


def resolve_format(source: DataSource) -> tuple[str, dict[str, Path]]:
    """``(format, files)``: the named or sniffed format and the files to read (role -> path; ``all`` for one
    file to split)."""
    path = Path(source.path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such data file or folder: {path}")
    if path.is_dir():
        files = split_files(path)
        if not files:
            inters = sorted(path.glob("*.inter"))
            if len(inters) == 1:
                files = {"all": inters[0]}
            else:
                listing = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
                raise ValueError(f"{path}: no train/test files (train.txt and test.txt, train.csv and "
                                 f"test.csv, ...) and no single .inter file; the folder holds {listing}")
        elif "test" not in files:
            raise ValueError(f"{path}: has {files['train'].name} but no test file (test.txt, test.csv, ...)")
    else:
        files = {"all": path}
    fmt = source.format
    if fmt == "auto":
        exts = {p.suffix.lower() for p in files.values()}
        if exts == {".txt"} and "all" not in files:
            fmt = "lightgcn"  # LightGCN's own layout: train.txt + test.txt, 'user item item ...' lines
        elif len(exts) == 1 and next(iter(exts)) in _EXT_FORMAT:
            fmt = _EXT_FORMAT[next(iter(exts))]
        else:
            shown = ", ".join(str(p) for p in files.values())
            raise ValueError(f"{shown}: cannot tell the format from the file name; give --format "
                             "csv, tsv, lightgcn or recbole")
    if fmt == "lightgcn" and "all" in files:
        raise ValueError(f"{path}: the lightgcn format is a train.txt + test.txt folder, not one file")
    split = source.split
    if split == "files" and "all" in files:
        raise ValueError(f"{path}: split 'files' needs a folder with train and test files")
    if split in ("random", "temporal") and "all" not in files:
        raise ValueError(f"{path}: the folder ships its own train/test files; re-splitting them (split "
                         f"{split!r}) is not supported: use split 'files' or point at one file")
    return fmt, files


def _columns(source: DataSource) -> list[int | str | None] | None:
    cols = source.columns
    if cols is None:
        return None
    if not 2 <= len(cols) <= 4:
        raise ValueError("columns must be user,item[,rating[,timestamp]]")
    return list(cols)


def _shift_ids(inter: Interactions, base: int, path: Path) -> Interactions:
    """LightGCN files numbered from ``base``: indices start at 0, the raw ids stay in the vocabulary."""
    if base == 0:
        return inter
    for split in _SPLITS:
        arr = getattr(inter, split)
        if len(arr) and int(arr.min()) < base:
            raise DataFormatError(f"id {int(arr.min())} is below the id base {base}", path)
    shifted = {s: getattr(inter, s) - base for s in _SPLITS}
    nu, ni = inter.n_users - base, inter.n_items - base
    return Interactions(inter.name, nu, ni, shifted["train"], shifted["valid"], shifted["test"],
                        (np.arange(nu) + base).astype(str), (np.arange(ni) + base).astype(str))


def load_source(source: DataSource, *, name: str | None = None, valid_fraction: float = 0.1,
                seed: int = 2024) -> Interactions:
    """Read ``source`` (see :class:`~unlearnrec.config.DataSource`); ``seed`` seeds the per-user split and the
    validation carve."""
    fmt, files = resolve_format(source)
    path = Path(source.path).expanduser()
    name = name or (path.name if path.is_dir() else path.name.split(".")[0])
    cols = _columns(source)
    if source.split == "temporal" and (cols is None or len(cols) < 4 or cols[3] is None):
        raise ValueError("a temporal split needs a timestamp column: --columns user,item,rating,timestamp "
                         "(an empty rating: user,item,,timestamp)")
    ratios = tuple(source.ratios)
    split = "temporal" if source.split == "temporal" else "random"
    if fmt == "lightgcn":
        if source.rating_threshold is not None or cols is not None:
            raise ValueError("the lightgcn format has no columns or ratings")
        inter = read_lightgcn(files["train"], files["test"], files.get("valid"), name=name)
        inter = _shift_ids(inter, source.id_base, files["train"])
    elif fmt == "recbole":
        if len(files) > 1 and "all" not in files:
            prefix = files["train"]
        else:
            prefix = files["all"]
        fields = {}
        for key, value in zip(("user_field", "item_field", "rating_field", "time_field"), cols or (), strict=False):
            if value is not None:
                if not isinstance(value, str):
                    raise ValueError("recbole columns are header field names (user_id, item_id, ...)")
                fields[key] = value
        inter = read_recbole(prefix, name=name, rating_threshold=source.rating_threshold, ratios=ratios, seed=seed,
                             split=split, drop_duplicates=source.drop_duplicates, **fields)
    else:
        sep = source.sep if source.sep is not None else ("," if fmt == "csv" else "\t")
        sep = None if sep == "whitespace" else sep
        header = source.header
        if "all" in files:
            inter = read_csv(files["all"], sep=sep, header=header, columns=cols,
                             rating_threshold=source.rating_threshold, ratios=ratios, seed=seed, split=split,
                             drop_duplicates=source.drop_duplicates, name=name)
        else:
            inter = read_csv_splits(files, sep=sep, header=header, columns=cols,
                                    rating_threshold=source.rating_threshold,
                                    drop_duplicates=source.drop_duplicates, name=name)
    if not len(inter.train) or not len(inter.test):
        raise DataFormatError("no training or no test interactions after reading and splitting", path)
    if len(inter.valid) == 0 and valid_fraction > 0:
        inter = carve_validation(inter, valid_fraction, seed=seed)
    return inter
