"""Figures of a benchmark run (matplotlib, imported lazily; the ``plots`` extra), saved as PNG under ``out/plots``.

Per ``(dataset, backbone, scenario)``:

* ``scores_*.png``: score distributions of the remaining positives, random non-edges and request edges: the
  original (before), the first retrain reference and every method (after). Forgetting shows as the request
  histogram moving from the positives towards the non-edges, as it does for the retrain reference.
* ``tradeoff_*.png``: the utility–forgetting–time trade-off: x = per-request seconds (log scale), y = recall@k,
  colour = MI-NG, marker size = mean Jaccard@k with the retrain references (bigger: closer to exact unlearning).
  Averaged over seeds; the dashed line is the original's recall.
* ``roc_*.png``: the membership attack's ROC on the request edges (vs held-out pairs) for the original, the
  retrain reference and every method (when the membership audit is enabled).
* ``rankshift_*.png``: each request edge's rank percentile in its user's ranking (0 = top) before (the
  original) and after unlearning, per method.

The distributions, ROC curves and rank shifts use the first seed; every array comes from the cells' JSON.
Figures are drawn on :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot state, no display.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["make_plots"]

_SETS = (("remaining", "remaining positives", "tab:green"), ("non_edges", "random non-edges", "tab:gray"),
         ("request", "request edges", "tab:red"))


def _arr(x) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in (x or [])], dtype=np.float64)


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", str(s))


def _figure(n_panels: int, ncols: int = 3, w: float = 4.2, h: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = int(math.ceil(n_panels / ncols))
    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _groups(cells: list[dict], refs: list[dict]) -> dict[tuple, dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    for r in refs:
        g = out.setdefault((r["dataset"], r["backbone"], r["scenario"]), {"refs": {}, "cells": {}})
        g["refs"][r["seed"]] = r
    for c in cells:
        g = out.setdefault((c["dataset"], c["backbone"], c["scenario"]), {"refs": {}, "cells": {}})
        g["cells"].setdefault(c["seed"], []).append(c)
    return out


def _ref_title(ref: dict) -> str:
    refs = (ref.get("trained") or {}).get("references") or []
    return f"retrain (reference, seed {refs[0]['seed']})" if refs else "retrain (reference)"


def _panels(ref: dict | None, cells: list[dict]) -> list[tuple[str, dict]]:
    """(title, plot dict) of the original, the first retrain reference and each method (the retrain cell with
    default hyper-parameters reuses that reference)."""
    out = []
    if ref is not None:
        out.append(("original (before)", ref["plot"]["original"]))
        out.append((_ref_title(ref), ref["plot"]["retrain"]))
    out += [(c["method"], c["plot"]) for c in cells if not c.get("reuses_reference")]
    return out


def _score_plot(path: Path, title: str, panels: list[tuple[str, dict]]) -> Path | None:
    panels = [(t, p) for t, p in panels if p.get("scores")]
    if not panels:
        return None
    allv = np.concatenate([_arr(p["scores"].get(s)) for _, p in panels for s, _, _ in _SETS])
    allv = allv[np.isfinite(allv)]
    if not len(allv):
        return None
    lo, hi = np.percentile(allv, [0.5, 99.5])
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    bins = np.linspace(lo, hi, 41)
    fig, axes = _figure(len(panels))
    for ax, (name, p) in zip(axes, panels, strict=True):
        for key, label, colour in _SETS:
            v = _arr(p["scores"].get(key))
            v = v[np.isfinite(v)]
            if len(v):
                ax.hist(np.clip(v, lo, hi), bins=bins, density=True, alpha=0.45, color=colour, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("score ŷ(u, i)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def _tradeoff_plot(path: Path, title: str, groups_by_seed: dict, refs: dict, k: int) -> Path | None:
    # mean over seeds per method
    agg: dict[str, dict[str, list[float]]] = {}
    rec, jac, ming, secs = f"recall@{k}", f"Jaccard@{k}", "MI-NG", "per-request s"
    rows = [c["row"] for cs in groups_by_seed.values() for c in cs]
    rows += [{**r["rows"]["retrain"], "method": "retrain"} for r in refs.values()
             if not any(c["row"]["method"] == "retrain" for cs in groups_by_seed.values() for c in cs)]
    for r in rows:
        a = agg.setdefault(r["method"], {rec: [], jac: [], ming: [], secs: []})
        for key in a:
            v = r.get(key)
            if isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                a[key].append(float(v))
    pts = [(m, {key: (float(np.mean(v)) if v else None) for key, v in a.items()}) for m, a in agg.items()]
    pts = [(m, v) for m, v in pts if v[rec] is not None and v[secs] is not None and v[secs] > 0]
    if not pts:
        return None
    fig, (ax,) = _figure(1, w=6.4, h=4.6)
    x = np.array([v[secs] for _, v in pts])
    y = np.array([v[rec] for _, v in pts])
    c = np.array([np.nan if v[ming] is None else v[ming] for _, v in pts])
    j = np.array([np.nan if v[jac] is None else v[jac] for _, v in pts])
    size = np.where(np.isfinite(j), 40 + 360 * np.nan_to_num(j), 120)
    size = np.where([m == "retrain" for m, _ in pts], 400, size)  # the references' mean: exact by definition
    finite_c = np.isfinite(c)
    sc = ax.scatter(x[finite_c], y[finite_c], c=c[finite_c], s=size[finite_c], cmap="viridis", edgecolors="k",
                    alpha=0.85)
    if (~finite_c).any():
        ax.scatter(x[~finite_c], y[~finite_c], s=size[~finite_c], facecolors="none", edgecolors="k")
    if finite_c.any():
        fig.colorbar(sc, ax=ax, label="MI-NG (higher: request below random non-edges)")
    for (m, _), xi, yi in zip(pts, x, y, strict=True):
        ax.annotate(m, (xi, yi), textcoords="offset points", xytext=(6, 4), fontsize=8)
    orig = [r["rows"]["original"].get(rec) for r in refs.values()]
    orig = [v for v in orig if isinstance(v, (int, float))]
    if orig:
        ax.axhline(float(np.mean(orig)), ls="--", color="gray", lw=1, label="original")
        ax.legend(fontsize=8, loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("per-request seconds (log)")
    ax.set_ylabel(f"recall@{k} (test, own serving graph)")
    ax.set_title(title + f"\nmarker size: Jaccard@{k} with retrain", fontsize=10)
    return _save(fig, path)


def _roc_plot(path: Path, title: str, panels: list[tuple[str, dict]]) -> Path | None:
    curves = [(t, p["roc"]) for t, p in panels if p.get("roc")]
    if not curves:
        return None
    fig, (ax,) = _figure(1, w=6.0, h=5.0)
    for name, roc in curves:
        fpr, tpr = _arr(roc["fpr"]), _arr(roc["tpr"])
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if len(fpr) > 1 else float("nan")
        style = ("k", "-", 2.0) if name == "original (before)" else (
            ("tab:blue", "--", 2.0) if name.startswith("retrain (reference") else None)
        if style:
            ax.plot(fpr, tpr, color=style[0], ls=style[1], lw=style[2], label=f"{name} (AUC≈{auc:.3f})")
        else:
            ax.plot(fpr, tpr, lw=1.3, label=f"{name} (AUC≈{auc:.3f})")
    ax.plot([0, 1], [0, 1], color="lightgray", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _rank_plot(path: Path, title: str, panels: list[tuple[str, dict]]) -> Path | None:
    panels = [(t, p) for t, p in panels if p.get("rank_pct") and not t.startswith("original")]
    if not panels:
        return None
    bins = np.linspace(0.0, 1.0, 21)
    fig, axes = _figure(len(panels))
    for ax, (name, p) in zip(axes, panels, strict=True):
        b, a = _arr(p["rank_pct"]["before"]), _arr(p["rank_pct"]["after"])
        ax.hist(b[np.isfinite(b)], bins=bins, alpha=0.5, color="tab:gray", label="before (original)")
        ax.hist(a[np.isfinite(a)], bins=bins, alpha=0.5, color="tab:red", label="after")
        ax.set_title(f"{name}: mean {np.nanmean(b):.2f} → {np.nanmean(a):.2f}", fontsize=10)
        ax.set_xlabel("rank percentile of the request item (0 = top)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def make_plots(out_dir: str | Path, cells: list[dict], refs: list[dict], k: int = 20) -> list[Path]:
    """Draw every figure of the module docstring from the cell and reference JSON objects; returns the PNGs.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'unlearnrec[plots]'``).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"the benchmark plots need matplotlib ({exc})") from None
    out_dir = Path(out_dir)
    written: list[Path] = []
    for (ds, bb, sc), g in sorted(_groups(cells, refs).items(), key=lambda t: tuple(map(str, t[0]))):
        seeds = sorted(set(g["refs"]) | set(g["cells"]))
        seed = seeds[0]
        ref = g["refs"].get(seed)
        panels = _panels(ref, g["cells"].get(seed, []))
        stem = _safe(f"{ds}_{bb}_{sc}")
        title = f"{ds} · {bb} · {sc} (seed {seed})"
        for p in (
            _score_plot(out_dir / f"scores_{stem}.png", f"score distributions: {title}", panels),
            _tradeoff_plot(out_dir / f"tradeoff_{stem}.png", f"{ds} · {bb} · {sc} (mean over {len(seeds)} seed(s))",
                           g["cells"], g["refs"], k),
            _roc_plot(out_dir / f"roc_{stem}.png", f"membership attack ROC: {title}", panels),
            _rank_plot(out_dir / f"rankshift_{stem}.png", f"request rank percentile: {title}", panels),
        ):
            if p is not None:
                written.append(p)
    return written
