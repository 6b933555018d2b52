"""Readable tables for people and JSON results for machines; every command ends with both."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _fmt(value: Any, floatfmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "nan"
        return format(float(value), floatfmt)
    return str(value)


def format_table(
    rows: Sequence[dict], columns: Sequence[str] | None = None, floatfmt: str = ".4f", title: str | None = None
) -> str:
    """A plain-text table (Markdown pipe syntax, so it pastes into reports unchanged)."""
    if not rows:
        return f"{title}\n(no rows)" if title else "(no rows)"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c), floatfmt) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(cols)]
    numeric = [all(_is_num(r.get(c)) for r in rows if r.get(c) is not None) for c in cols]

    def line(values: list[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = (("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True))
    out = [line(cols), "|" + "|".join(rule) + "|"]
    out += [line(r) for r in cells]
    return (f"{title}\n" if title else "") + "\n".join(out)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def metrics_rows(metrics: dict[str, float], ks: Sequence[int] | None = None) -> list[dict]:
    """Turn ``{"recall@20": ..}`` into one row per K with a column per metric."""
    by_k: dict[int, dict] = {}
    for key, value in metrics.items():
        if "@" not in key:
            continue
        name, k = key.split("@")
        by_k.setdefault(int(k), {"K": int(k)})[name] = value
    return [by_k[k] for k in sorted(by_k) if ks is None or k in ks]


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(to_jsonable(obj), fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
