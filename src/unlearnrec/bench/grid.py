"""The benchmark grid: datasets × backbones × methods × scenarios × seeds, resumable, with a model cache.

**Cells.** One cell is one method unlearning one scenario's request from one original model (dataset,
backbone, seed). It writes ``<out>/cells/<dataset>/<backbone>/<scenario>/<method>-seed<seed>.json`` when it is
finished (a temporary file renamed into place), holding its table row, the full measures and the small arrays
the plots need. A cell whose file exists with the same key (a hash of everything that determines it: recipe,
scenario, method and its hyper-parameters, seed, measures) is skipped; an interrupted run therefore re-does
only the unfinished cells, and a changed setting re-does exactly the cells it affects.

**References.** Per ``(dataset, backbone, scenario, seed)`` a reference file (``_reference-seed<seed>.json``
next to the cells) holds the rows every method is compared with, computed once and shared by all methods:

* ``original``: the model before unlearning (utility on its graph; MI-NG, score and rank of the request before);
* ``retrain``: the recipe retrained on exactly the residual graph (the exact-unlearning reference the
  anchored measures compare with; its training time is the denominator of every speedup). The ``retrain``
  method with default hyper-parameters *is* this model and reuses it;
* ``noise floor``: a second retrain with another seed (``seed + noise_floor_seed_offset``), measured against
  the first: what a perfect unlearner shows on the anchored measures (retraining varies with the seed).

**Model cache.** Every full model is trained by :func:`unlearnrec.api.train` and kept as a checkpoint under
``<cache_dir>/<dataset>-<backbone>-s<seed>-<hash>`` where the hash covers the resolved recipe (device excluded),
the data fingerprint and the sorted training edges (the edges themselves are not stored, only their hash; the
cell that asks for the model again rebuilds them from its scenario): the original of each (dataset, backbone, seed), the
attacked original of the adversarial scenario, the retrain reference of each (scenario, seed) and the
second-seed retrain. Identical trainings share one checkpoint (e.g. the adversarial scenario's reference is
the clean original), across cells and across runs.

**Timing.** ``one-off s`` is the method's ``prepare`` (shard training, Fisher, encoder pre-training), done once
per original model and shared by its scenarios; ``per-request s`` is ``unlearn`` (the mean over the rounds of a
sequential scenario); ``speedup`` = the reference's training seconds / per-request seconds. With a
``max_seconds`` recipe budget the reference's time is about that budget.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec.bench.config import BenchConfig, BenchConfigError, ScenarioSpec
from unlearnrec.config import RunConfig
from unlearnrec.data.interactions import Interactions, pair_keys
from unlearnrec.graph import Graph
from unlearnrec.report import format_table, to_jsonable, write_json

__all__ = ["BenchResult", "BenchRunner", "Cell", "ModelCache", "Plan", "run_bench", "validate_config"]

CELL_FORMAT = "unlearnrec.bench-cell/1"
REF_FORMAT = "unlearnrec.bench-reference/1"
HARNESS_VERSION = 1  # bump when a measure's definition changes: every cell is then recomputed


# ================================================================================= plan
@dataclass(frozen=True)
class Cell:
    """One ``(dataset, backbone, method, scenario, seed)`` of the grid."""

    dataset: str
    backbone: str
    method: str
    scenario: int  # index into BenchConfig.scenarios
    label: str
    seed: int

    @property
    def group(self) -> tuple[str, str, int, int]:
        return (self.dataset, self.backbone, self.seed, self.scenario)


@dataclass
class Plan:
    """The validated grid: the cells to run, and the ``(method, backbone, reason)`` combinations skipped."""

    config: BenchConfig
    cells: list[Cell]
    skipped: list[dict[str, str]]
    run_configs: dict[tuple[str, str, int], RunConfig]

    def describe(self) -> str:
        c = self.config
        groups = {x.group for x in self.cells}
        n_train = len({(d, b, s) for d, b, s, _ in groups}) + len(groups) * (2 if c.measures.noise_floor else 1)
        lines = [
            f"{len(self.cells)} cells: {len(c.datasets)} dataset(s) x {len(c.backbones)} backbone(s) x "
            f"{len(c.methods)} method(s) x {len(c.scenarios)} scenario(s) x {len(c.seeds)} seed(s)"
            + (f" ({len(self.skipped)} skipped)" if self.skipped else ""),
            f"full trainings at most: {n_train} (originals, retrain references"
            + (", noise-floor retrains" if c.measures.noise_floor else "") + "; cached ones are reused)",
            "scenarios: " + ", ".join(s.label for s in c.scenarios),
            "methods: " + ", ".join(c.methods),
        ]
        lines += [f"skipped: {s['method']} on {s['backbone']} ({s['reason']})" for s in self.skipped]
        return "\n".join(lines)


def validate_config(config: BenchConfig, device: str | None = None) -> Plan:
    """Check everything that can be checked before training (datasets present, methods known and their
    hyper-parameters valid, recipes resolvable, scenario sizes possible, device available) and list the cells.

    Raises:
        BenchConfigError: every problem found, one per line.
    """
    from pydantic import ValidationError

    from unlearnrec.data.registry import get_spec, missing_files, resolve_data_root
    from unlearnrec.training import resolve_device
    from unlearnrec.unlearning import methods as _methods  # noqa: F401  (registers the methods)
    from unlearnrec.unlearning.base import UNLEARNERS

    errors: list[str] = []
    for ds in config.datasets:
        try:
            spec = get_spec(ds)
        except KeyError as exc:
            errors.append(str(exc))
            continue
        missing = missing_files(spec, config.data_root)
        if missing:
            errors.append(f"dataset {ds!r} is not under the data root {resolve_data_root(config.data_root)} "
                          f"(missing {', '.join(str(p) for p in missing)}); set data_root or $UNLEARNREC_DATA")
    for name, mcfg in config.methods.items():
        cls = UNLEARNERS.get(name)
        if cls is None:
            errors.append(f"unknown unlearning method {name!r}; known: {', '.join(sorted(UNLEARNERS))}")
            continue
        try:
            cls.Config.model_validate(mcfg)
        except ValidationError as exc:
            errors.append(f"method {name}: invalid hyper-parameters: " + "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()))
    for s in config.scenarios:
        if s.kind == "sequential" and s.rounds * s.ratio > 1.0:
            errors.append(f"scenario {s.label}: {s.rounds} rounds of {s.ratio} exceed the training edges")
    dev = device or config.device
    try:
        resolve_device(dev)
    except (ValueError, RuntimeError) as exc:
        errors.append(str(exc))
    run_configs: dict[tuple[str, str, int], RunConfig] = {}
    if config.base_path() is not None and not config.base_path().is_file():
        errors.append(f"recipe base {config.recipe.base!r} not found (looked next to the bench config and in "
                      f"{Path.cwd()})")
    else:
        for ds in config.datasets:
            for bb in config.backbones:
                for seed in config.seeds:
                    try:
                        run_configs[(ds, bb, seed)] = config.run_config(ds, bb, seed, dev)
                    except BenchConfigError as exc:
                        if str(exc) not in errors:
                            errors.append(str(exc))
    for bb in config.recipe.backbone_overrides:
        if bb not in config.backbones:
            errors.append(f"recipe.backbone_overrides names {bb!r}, which is not among the backbones")
    if errors:
        raise BenchConfigError("bad bench config:\n  - " + "\n  - ".join(errors))

    cells: list[Cell] = []
    skipped: list[dict[str, str]] = []
    for bb in config.backbones:
        for m in config.methods:
            cls = UNLEARNERS[m]
            if bb not in cls.backbones:
                skipped.append({"method": m, "backbone": bb,
                                "reason": f"supports {', '.join(sorted(cls.backbones))}"
                                + (f"; {cls.unsupported_reason}" if cls.unsupported_reason else "")})
    bad = {(s["method"], s["backbone"]) for s in skipped}
    for ds in config.datasets:
        for bb in config.backbones:
            for seed in config.seeds:
                for i, sc in enumerate(config.scenarios):
                    for m in config.methods:
                        if (m, bb) not in bad:
                            cells.append(Cell(ds, bb, m, i, sc.label, int(seed)))
    return Plan(config, cells, skipped, run_configs)


# ============================================================================ helpers
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(obj), sort_keys=True).encode()).hexdigest()


def _recipe_dump(cfg: RunConfig) -> dict:
    d = cfg.model_dump(mode="json")
    d["train"].pop("device", None)  # where a model trains does not change what it is
    return d


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", str(name))


def _small(x) -> list:
    a = np.asarray(x, np.float64).reshape(-1)
    return np.round(a, 5).tolist()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _fmt_s(x: float) -> str:
    return f"{x:.1f} s" if x >= 1 else f"{x * 1000:.0f} ms"


# ============================================================================ model cache
@dataclass
class Trained:
    """A full model from the cache: the model, the graph it serves on and its training seconds."""

    model: Any
    graph: Graph
    seconds: float
    key: str
    path: Path | None
    cached: bool


class ModelCache:
    """Trained full models as checkpoints keyed by (recipe, data fingerprint, training edges).

    ``trainings`` counts the models actually trained by this object (the rest were loaded).
    """

    def __init__(self, root: str | Path | None, device: str = "cpu", log: Callable[[str], None] | None = None):
        self.root = Path(root) if root is not None else None
        self.device = device
        self.log = log or (lambda msg: None)
        self.trainings = 0
        self.loads = 0

    @staticmethod
    def key(cfg: RunConfig, fingerprint: str, keys: np.ndarray) -> str:
        edges = hashlib.sha256(np.ascontiguousarray(keys, dtype=np.int64).tobytes()).hexdigest()
        return _hash({"recipe": _recipe_dump(cfg), "data": fingerprint, "edges": edges, "n": int(len(keys))})

    def get(self, cfg: RunConfig, data: Interactions, edges: np.ndarray | None = None, what: str = "model") -> Trained:
        """The model of ``cfg`` trained on ``edges`` (default ``data.train``): loaded if cached, else trained."""
        from unlearnrec import api
        from unlearnrec.checkpoint import (
            CheckpointError,
            load_checkpoint,
            save_checkpoint,
        )

        fp = data.fingerprint()
        train_edges = data.train if edges is None else edges
        keys = np.unique(pair_keys(train_edges, data.n_items))
        key = self.key(cfg, fp, keys)
        path = None
        if self.root is not None:
            path = self.root / f"{_safe(cfg.data.dataset)}-{cfg.model.name}-s{cfg.train.seed}-{key[:16]}"
            meta = _read_json(path / "meta.json")
            if meta is not None and meta.get("bench", {}).get("key") == key:
                try:
                    ck = load_checkpoint(path, device=self.device)
                    ck.check_data(fp)
                    self.loads += 1
                    graph = Graph(keys_to_pairs(keys, data.n_items), data.n_users, data.n_items, device=self.device)
                    return Trained(ck.model.eval(), graph, float(meta["bench"]["train_seconds"]), key, path, True)
                except CheckpointError as exc:  # unreadable: train it again
                    self.log(f"cache entry {path} unusable ({exc}); retraining")
        self.log(f"training {what}: {cfg.model.name} on {cfg.data.dataset}, seed {cfg.train.seed}, "
                 f"{len(keys)} edges" + (f", budget {cfg.train.max_seconds:g} s" if cfg.train.max_seconds else ""))
        res = api.train(cfg, None, data=data, graph_edges=None if edges is None else keys_to_pairs(keys, data.n_items),
                        progress=False)
        self.trainings += 1
        model, graph = res["model_object"].eval(), res["graph_object"]
        seconds = float(res["times"]["train_seconds"])
        self.log(f"  trained in {_fmt_s(seconds)} ({res['training']['epochs_run']} epochs, "
                 f"valid {cfg.train.monitor} {res['valid'].get(cfg.train.monitor, float('nan')):.4f})")
        if path is not None:
            # the training edges are not stored (10 MB per ML-1M model): the key is their hash, and whoever asks
            # for this model again passes them (a checkpoint of a non-clean graph is a cache entry, not a release)
            save_checkpoint(path, model, cfg, fp, data.stats(), train_edges=None,
                            extra_meta={"bench": {"key": key, "what": what, "train_seconds": seconds,
                                                  "n_edges": int(len(keys)), "clean_train": edges is None,
                                                  "edges_sha256": hashlib.sha256(np.ascontiguousarray(
                                                      keys, dtype=np.int64).tobytes()).hexdigest(),
                                                  "training": res["training"], "test": res["test"]}})
        return Trained(model, graph, seconds, key, path, False)


def keys_to_pairs(keys: np.ndarray, n_items: int) -> np.ndarray:
    return np.stack([keys // n_items, keys % n_items], axis=1)


# ============================================================================ measures
def _emb(model, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
    from unlearnrec.evaluation.forgetting import final_embeddings

    with torch.no_grad():
        u, i = final_embeddings(model, graph)
    return u.detach(), i.detach()


def _roc_points(roc: dict, n: int = 200) -> dict:
    fpr, tpr = np.asarray(roc["fpr"]), np.asarray(roc["tpr"])
    idx = np.unique(np.linspace(0, len(fpr) - 1, min(n, len(fpr))).round().astype(int))
    return {"fpr": _small(fpr[idx]), "tpr": _small(tpr[idx])}


class _Env:
    """Everything one ``(dataset, backbone, seed, scenario)`` needs, each part built on first use."""

    def __init__(self, runner: BenchRunner, dataset: str, backbone: str, seed: int, index: int):
        self.runner, self.dataset, self.backbone, self.seed, self.index = runner, dataset, backbone, seed, index
        self.spec: ScenarioSpec = runner.config.scenarios[index]
        self.cfg: RunConfig = runner.plan.run_configs[(dataset, backbone, seed)]
        self._cache: dict[str, Any] = {}

    def _get(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    # ---------------------------------------------------------------- models
    @property
    def data(self) -> Interactions:
        return self.runner.data(self.dataset)

    @property
    def clean(self) -> Trained:
        return self.runner.memo(("clean", self.dataset, self.backbone, self.seed),
                                lambda: self.runner.cache.get(self.cfg, self.data, what="original"))

    @property
    def injected(self) -> np.ndarray:
        from unlearnrec.unlearning.scenarios import adversarial_edges

        ratio = self.spec.ratio if self.spec.ratio is not None else 1.0
        return self.runner.memo(("injected", self.dataset, self.backbone, self.seed, ratio),
                                lambda: adversarial_edges(self.clean.model, self.clean.graph, self.data, ratio=ratio,
                                                          seed=self.seed))

    @property
    def original(self) -> Trained:
        if self.spec.kind != "adversarial":
            return self.clean
        ratio = self.spec.ratio if self.spec.ratio is not None else 1.0

        def build() -> Trained:
            from unlearnrec.unlearning.scenarios import attacked_dataset

            attacked_dataset(self.data, self.injected)  # refuses collisions with held-out pairs
            edges = np.concatenate([self.data.train, self.injected])
            return self.runner.cache.get(self.cfg, self.data, edges, what="attacked original")

        return self.runner.memo(("attacked", self.dataset, self.backbone, self.seed, ratio), build)

    @property
    def graph(self) -> Graph:
        return self.original.graph

    # --------------------------------------------------------------- request
    @property
    def rounds(self) -> list:
        """The request(s): one :class:`DeletionRequest`, or the rounds of a sequential scenario."""
        from unlearnrec.unlearning.requests import DeletionRequest
        from unlearnrec.unlearning.scenarios import (
            items_request,
            random_edges_request,
            sequential_requests,
            users_request,
        )

        def build() -> list:
            s, g, seed = self.spec, self.graph, self.seed
            if s.kind == "random":
                return [random_edges_request(g, s.ratio, seed)]
            if s.kind == "users":
                return [users_request(g, s.selection_or_default, n=s.n, fraction=s.ratio if s.n is None else None,
                                      seed=seed)]
            if s.kind == "items":
                return [items_request(g, s.selection_or_default, n=s.n, fraction=s.ratio if s.n is None else None,
                                      seed=seed)]
            if s.kind == "adversarial":
                desc = f"adversarial {(s.ratio or 1.0) * 100:g}% (seed {seed})"
                return [DeletionRequest.from_pairs(g, self.injected, kind="adversarial", description=desc)]
            return sequential_requests(g, s.ratio, s.rounds, seed)

        return self._get("rounds", build)

    @property
    def request(self) -> np.ndarray:
        """All request edges (the union of the rounds), sorted unique."""
        return self._get("request", lambda: np.unique(np.concatenate([r.edges for r in self.rounds]), axis=0))

    @property
    def residual(self) -> Graph:
        return self._get("residual", lambda: self.graph.without(self.request))

    @property
    def reference(self) -> Trained:
        return self._get("reference", lambda: self.runner.cache.get(self.cfg, self.data, self.residual.edges,
                                                                    what=f"retrain reference ({self.spec.label})"))

    @property
    def floor(self) -> Trained:
        off = self.runner.config.measures.noise_floor_seed_offset
        cfg = self.cfg.with_overrides({"train.seed": self.seed + off})
        return self._get("floor", lambda: self.runner.cache.get(cfg, self.data, self.residual.edges,
                                                                what=f"noise-floor retrain ({self.spec.label})"))

    @property
    def orig_emb(self):
        return self._get("orig_emb", lambda: _emb(self.original.model, self.graph))

    @property
    def ref_emb(self):
        return self._get("ref_emb", lambda: _emb(self.reference.model, self.reference.graph))

    @property
    def degrees(self) -> np.ndarray:
        from unlearnrec.unlearning.scenarios import user_degrees

        return self._get("degrees", lambda: user_degrees(Graph(self.data.train, self.data.n_users, self.data.n_items)))

    # ---------------------------------------------------------------- audit
    @property
    def auditor(self):
        from unlearnrec.evaluation.membership import shadow_auditor
        from unlearnrec.unlearning.base import Context

        m = self.runner.config.measures.membership

        def build():
            self.runner.log(f"fitting the membership auditor ({m.n_shadow} shadows x {m.epochs} epochs)")
            ctx = Context(self.original.model, self.graph, self.data, self.cfg, progress=False)
            return shadow_auditor(ctx, n_shadow=m.n_shadow, epochs=m.epochs, seed=self.seed,
                                  max_pairs_per_shadow=m.max_pairs_per_shadow, classifier=m.classifier)

        return self.runner.memo(("auditor", self.original.key, self.seed), build)

    @property
    def audit_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        from unlearnrec.evaluation.membership import held_out_pairs

        def build():
            m = self.runner.config.measures.membership.max_audit_pairs
            rng = np.random.default_rng([self.seed, 17])
            req = self.request
            non = held_out_pairs(self.data, users=np.unique(req[:, 0]), graph=self.graph)
            if len(non) < 2:
                non = held_out_pairs(self.data, graph=self.graph)
            mem = req[np.sort(rng.choice(len(req), min(m, len(req)), replace=False))]
            non = non[np.sort(rng.choice(len(non), min(m, len(non)), replace=False))]
            return mem, non

        return self._get("audit_pairs", build)

    # ---------------------------------------------------------------- plot samples
    @property
    def samples(self) -> dict[str, Any]:
        """Fixed pair samples for the score distributions and the rank-shift histogram."""
        from unlearnrec.evaluation.forgetting import random_non_edges

        def build():
            m = self.runner.config.measures.plot_samples
            rng = np.random.default_rng([self.seed, 29])
            req, g = self.request, self.graph
            idx = np.sort(rng.choice(len(req), min(m, len(req)), replace=False))
            keep = ~np.isin(g.keys, pair_keys(req, g.n_items))
            rem = g.edges[keep]
            rem = rem[np.sort(rng.choice(len(rem), min(m, len(rem)), replace=False))]
            non = random_non_edges(self.data, m, seed=int(rng.integers(2**31)), exclude=[g.edges, req])
            return {"request_index": idx, "pairs": {"request": req[idx], "non_edges": non, "remaining": rem}}

        return self._get("samples", build)

    def measure(self, model, graph: Graph, *, anchored: bool = True, robust: bool = True) -> dict[str, Any]:
        """Every enabled measure of ``model`` served on ``graph`` (against the original and the reference);
        ``robust=False`` leaves out the relearning and quantization stress tests (the original's own row)."""
        from unlearnrec.evaluation.anchored import anchored_report
        from unlearnrec.evaluation.forgetting import (
            forgetting_report,
            report_jsonable,
            scores_of_pairs,
        )
        from unlearnrec.evaluation.ranking import evaluate_ranking
        from unlearnrec.evaluation.robustness import (
            quantization_report,
            relearning_curve,
        )
        from unlearnrec.training import masks_for
        from unlearnrec.unlearning.scenarios import ndcg_activity_gap

        ms = self.runner.config.measures
        k = ms.k
        data = self.data
        t0 = time.perf_counter()
        emb = _emb(model, graph)
        out: dict[str, Any] = {}
        masks = masks_for(data, graph.edges)
        res = evaluate_ranking(emb[0], emb[1], masks["test_truth"], masks["test_exclude"], ks=(k,))
        out["utility"] = {**res.metrics, "n_users": res.n_users,
                          "ndcg_gap": ndcg_activity_gap(res, self.degrees, k, ms.active_fraction)}
        plot: dict[str, Any] = {}
        smp = self.samples
        plot["scores"] = {name: _small(scores_of_pairs(emb[0], emb[1], pairs)) for name, pairs in smp["pairs"].items()}
        if ms.forgetting:
            f = forgetting_report(self.orig_emb, self.graph, emb, graph, self.request, data, ms.n_samples,
                                  seed=self.seed, per_edge=True)
            pe = f.pop("per_edge")
            idx = smp["request_index"]
            plot["rank_pct"] = {"before": _small(pe["percentile_before"][idx]),
                                "after": _small(pe["percentile_after"][idx])}
            out["forgetting"] = report_jsonable(f)
        if anchored and ms.anchored:
            out["anchored"] = report_jsonable(anchored_report(emb, graph, self.ref_emb, self.reference.graph,
                                                              self.request, data, k))
        if ms.membership.enabled:
            mem, non = self.audit_pairs
            a = self.auditor.audit(emb, graph, mem, non)
            plot["roc"] = _roc_points(a.pop("roc"))
            out["membership"] = report_jsonable(a)
        if robust and ms.relearning.enabled:
            r = ms.relearning
            try:
                out["relearning"] = report_jsonable(relearning_curve(
                    model, graph, self.request, steps=r.steps, lr=r.learning_rate, batch_size=r.batch_size,
                    seed=self.seed, mode=r.mode))
            except (ValueError, TypeError) as exc:  # e.g. whole users deleted: nothing of theirs to relearn from
                out["relearning"] = {"skipped": str(exc)}
        if robust and ms.quantization.enabled:
            q = ms.quantization
            out["quantization"] = report_jsonable(quantization_report(
                emb, graph, self.request, data, model_before=self.orig_emb, graph_before=self.graph,
                modes=tuple(q.modes), granularity=q.granularity, n_samples=ms.n_samples, seed=self.seed))
        out["measure_seconds"] = time.perf_counter() - t0
        return {"measures": out, "plot": plot}


def _row(env: _Env, method: str, measured: dict | None, *, one_off=None, per_request=None, speedup=None,
         before: bool = False) -> dict[str, Any]:
    """One table row from :meth:`_Env.measure`'s measures (``before``: the original's own values)."""
    cfg = env.runner.config
    k = cfg.measures.k
    m = (measured or {}).get("measures", {})
    u, f, a, mi = m.get("utility", {}), m.get("forgetting"), m.get("anchored"), m.get("membership")
    w = "before" if before else "after"
    row: dict[str, Any] = {
        "dataset": env.dataset, "backbone": env.backbone, "method": method, "scenario": env.spec.label,
        "seed": env.seed,
        f"recall@{k}": u.get(f"recall@{k}"), f"ndcg@{k}": u.get(f"ndcg@{k}"),
        f"ndcg@{k} gap": (u.get("ndcg_gap") or {}).get("gap"),
        "MI-BF": (1.0 if before else f.get("mi_bf")) if f else None,
        "MI-NG": (f.get("mi_ng_before") if before else f.get("mi_ng")) if f else None,
        "request score": f["score"]["request"][w]["mean"] if f else None,
        "request rank pct": f["rank"][w]["mean_percentile"] if f else None,
        f"Jaccard@{k}": a.get("jaccard") if a else None,
        "JS": a.get("js") if a else None,
    }
    if cfg.measures.membership.enabled:
        row["attack AUC"] = mi.get("auc") if mi else None
    row.update({"one-off s": one_off, "per-request s": per_request, "speedup": speedup})
    return row


# ============================================================================ runner
@dataclass
class BenchResult:
    """What :func:`run_bench` returns: the rows, the printed table, the files written and the failures."""

    rows: list[dict[str, Any]]
    table: str
    files: dict[str, Path]
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    computed: int = 0
    reused: int = 0
    trainings: int = 0
    plots: list[Path] = field(default_factory=list)


class BenchRunner:
    """Runs a validated :class:`Plan` (see the module docstring); :meth:`run` does everything."""

    def __init__(self, plan: Plan, out: Path, cache_dir: Path, device: str, progress: bool | None = None,
                 plots: bool | None = None, log: Callable[[str], None] | None = None):
        self.plan, self.config = plan, plan.config
        self.out, self.device = Path(out), device
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.plots = self.config.plots if plots is None else bool(plots)
        self._log = log
        self.cache = ModelCache(cache_dir, device, log=self.log)
        self._data: dict[str, Interactions] = {}
        self._memo: dict[tuple, Any] = {}
        self._prepared: dict[tuple, Any] = {}
        self._bar = None
        self.failures: list[dict[str, str]] = []
        self.computed = 0

    # ---------------------------------------------------------------- plumbing
    def log(self, msg: str) -> None:
        if self._log is not None:
            self._log(msg)
        elif self._bar is not None and self.progress:
            self._bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def data(self, name: str) -> Interactions:
        if name not in self._data:
            from unlearnrec.data.registry import load_dataset

            rc = next(c for (d, _, _), c in self.plan.run_configs.items() if d == name)
            self._data[name] = load_dataset(name, rc.data.data_root, valid_fraction=rc.data.valid_fraction,
                                            seed=rc.data.split_seed)
        return self._data[name]

    def memo(self, key: tuple, build: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def _forget_models(self) -> None:
        self._memo = {k: v for k, v in self._memo.items() if k[0] not in ("clean", "attacked", "auditor", "injected")}
        self._prepared.clear()

    # ---------------------------------------------------------------- keys and paths
    def cell_dir(self, c: Cell | tuple) -> Path:
        ds, bb, _, idx = c.group if isinstance(c, Cell) else c
        return self.out / "cells" / _safe(ds) / _safe(bb) / _safe(self.config.scenarios[idx].label)

    def cell_path(self, c: Cell) -> Path:
        return self.cell_dir(c) / f"{_safe(c.method)}-seed{c.seed}.json"

    def ref_path(self, group: tuple) -> Path:
        return self.cell_dir(group) / f"_reference-seed{group[2]}.json"

    def ref_key(self, group: tuple) -> str:
        ds, bb, seed, idx = group
        return _hash({"v": HARNESS_VERSION, "recipe": _recipe_dump(self.plan.run_configs[(ds, bb, seed)]),
                      "scenario": self.config.scenarios[idx].model_dump(mode="json"), "seed": seed,
                      "measures": self.config.measures.model_dump(mode="json")})

    def cell_key(self, c: Cell) -> str:
        return _hash({"ref": self.ref_key(c.group), "method": c.method, "config": self.config.methods[c.method]})

    def _fresh(self, path: Path, key: str) -> dict | None:
        obj = _read_json(path)
        return obj if obj is not None and obj.get("key") == key else None

    # ---------------------------------------------------------------- unlearners
    def _reuses_reference(self, method: str) -> bool:
        return method == "retrain" and not self.config.methods[method]

    def _unlearner(self, env: _Env, method: str):
        from unlearnrec.unlearning.base import UNLEARNERS, Context, build_unlearner

        key = (env.original.key, method)
        if key not in self._prepared:
            mcfg = dict(self.config.methods[method])
            if "device" in UNLEARNERS[method].Config.model_fields and "device" not in mcfg:
                mcfg["device"] = self.device
            unl = build_unlearner(method, mcfg)
            self.log(f"preparing {method} ({env.backbone}, {env.dataset}, seed {env.seed})")
            unl.prepare(Context(env.original.model, env.graph, env.data, env.cfg, progress=False))
            self._prepared[key] = unl
        return self._prepared[key]

    # ---------------------------------------------------------------- reference
    def _compute_reference(self, env: _Env, group: tuple) -> dict:
        t0 = time.perf_counter()
        ms = self.config.measures
        ref = env.reference
        # the original against the reference: how far apart they start (what unlearning has to close)
        orig_m = env.measure(env.original.model, env.graph, robust=False)
        ref_m = env.measure(ref.model, ref.graph, anchored=False)
        rows = {
            "original": _row(env, "original", orig_m, before=True),
            "retrain": _row(env, "retrain", ref_m, one_off=0.0, per_request=ref.seconds, speedup=1.0),
        }
        plot = {"original": orig_m["plot"], "retrain": ref_m["plot"]}
        measures = {"original": orig_m["measures"], "retrain": ref_m["measures"]}
        trained = {"original": {"seconds": env.original.seconds, "cache": str(env.original.path),
                                "cached": env.original.cached},
                   "retrain": {"seconds": ref.seconds, "cache": str(ref.path), "cached": ref.cached}}
        if ms.noise_floor:
            fl = env.floor
            fl_m = env.measure(fl.model, fl.graph)
            label = f"noise floor (retrain seed {env.seed + ms.noise_floor_seed_offset})"
            rows["noise_floor"] = _row(env, label, fl_m, per_request=fl.seconds)
            plot["noise_floor"] = fl_m["plot"]
            measures["noise_floor"] = fl_m["measures"]
            trained["noise_floor"] = {"seconds": fl.seconds, "cache": str(fl.path), "cached": fl.cached,
                                      "seed": env.seed + ms.noise_floor_seed_offset}
        return {
            "format": REF_FORMAT, "key": self.ref_key(group), "status": "done",
            "dataset": env.dataset, "backbone": env.backbone, "scenario": env.spec.label,
            "scenario_spec": env.spec.model_dump(mode="json"), "seed": env.seed,
            "request": self._request_info(env), "rows": rows, "measures": measures, "plot": plot,
            "trained": trained, "recipe": env.cfg.model_dump(mode="json"),
            "data_fingerprint": env.data.fingerprint(), "seconds": time.perf_counter() - t0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    @staticmethod
    def _request_info(env: _Env) -> dict:
        req = env.request
        return {"n_edges": int(len(req)), "n_users": int(len(np.unique(req[:, 0]))),
                "n_items": int(len(np.unique(req[:, 1]))), "share_of_edges": len(req) / max(1, env.graph.n_edges),
                "rounds": [{"n_edges": len(r), "description": r.description} for r in env.rounds]}

    # ---------------------------------------------------------------- one cell
    def _compute_cell(self, env: _Env | None, cell: Cell, ref: dict) -> dict:
        t0 = time.perf_counter()
        base = {"format": CELL_FORMAT, "key": self.cell_key(cell), "status": "done", "dataset": cell.dataset,
                "backbone": cell.backbone, "method": cell.method, "scenario": cell.label,
                "scenario_spec": self.config.scenarios[cell.scenario].model_dump(mode="json"), "seed": cell.seed,
                "method_config": self.config.methods[cell.method], "request": ref["request"]}
        if self._reuses_reference(cell.method):
            row = {**ref["rows"]["retrain"], "method": "retrain"}
            return {**base, "row": row, "reuses_reference": True, "measures": ref["measures"]["retrain"],
                    "plot": ref["plot"]["retrain"], "timings": {"one_off_seconds": 0.0,
                                                                "per_request_seconds": row["per-request s"]},
                    "note": "the retrain reference itself (same recipe and seed on exactly the residual graph)",
                    "seconds": time.perf_counter() - t0,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        assert env is not None
        from unlearnrec.unlearning.scenarios import unlearn_sequentially

        unl = self._unlearner(env, cell.method)
        if env.spec.kind == "sequential":
            try:
                work = copy.deepcopy(unl)  # apply() changes the unlearner; keep the prepared one for other scenarios
            except Exception:  # noqa: BLE001 - not copyable: prepare a fresh one
                self._prepared.pop((env.original.key, cell.method), None)
                work = self._unlearner(env, cell.method)
                self._prepared.pop((env.original.key, cell.method), None)
            outcomes = unlearn_sequentially(work, env.rounds)
            out = outcomes[-1]
            secs = [o.timings["request_seconds"] for o in outcomes]
            per_request = float(np.mean(secs))
            outcome_info = {"rounds": [o.to_dict() for o in outcomes]}
        else:
            out = unl.unlearn(env.rounds[0])
            per_request = float(out.timings["request_seconds"])
            secs = [per_request]
            outcome_info = out.to_dict()
        if not np.array_equal(out.graph.keys, env.residual.keys):
            raise RuntimeError(f"{cell.method} serves on a graph that is not the residual graph")
        measured = env.measure(out.model, out.graph)
        ref_s = ref["trained"]["retrain"]["seconds"]
        row = _row(env, cell.method, measured, one_off=float(unl.prepare_seconds), per_request=per_request,
                   speedup=(ref_s / per_request) if per_request > 0 else None)
        return {**base, "row": row, "measures": measured["measures"], "plot": measured["plot"],
                "timings": {"one_off_seconds": float(unl.prepare_seconds), "per_request_seconds": per_request,
                            "request_seconds": secs, "retrain_seconds": ref_s},
                "outcome": outcome_info, "method_config_resolved": unl.config.model_dump(mode="json"),
                "paper": type(unl).paper, "seconds": time.perf_counter() - t0,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    # ---------------------------------------------------------------- main loop
    def run(self) -> BenchResult:
        from tqdm.auto import tqdm

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        self.config.save(self.out / "bench_config.yaml")
        cells = self.plan.cells
        groups: dict[tuple, list[Cell]] = {}
        for c in cells:
            groups.setdefault(c.group, []).append(c)
        done = {c for c in cells if self._fresh(self.cell_path(c), self.cell_key(c)) is not None}
        reused = len(done)
        self._bar = tqdm(total=len(cells), initial=len(done), desc=f"bench {self.config.name}", unit="cell",
                         disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        block = None
        try:
            for group, members in groups.items():
                ref_path = self.ref_path(group)
                ref = self._fresh(ref_path, self.ref_key(group))
                pending = [c for c in members if c not in done]
                if ref is not None and not pending:
                    continue
                if block != group[:3]:
                    self._forget_models()  # one original (and its prepared unlearners) in memory at a time
                    block = group[:3]
                env = _Env(self, group[0], group[1], group[2], group[3])
                if ref is None:
                    try:
                        ref = self._compute_reference(env, group)
                        _write_compact(ref_path, ref)
                    except Exception as exc:  # recorded (fail_fast: raised); its cells cannot run
                        if self.config.fail_fast:
                            raise
                        self._fail(f"reference {group[0]}/{group[1]}/{env.spec.label}/seed {group[2]}", exc)
                        self._bar.update(len(pending))
                        continue
                    self._write_results()
                for c in pending:
                    self._bar.set_postfix_str(f"{c.backbone} {c.label} {c.method} s{c.seed}")
                    try:
                        obj = self._compute_cell(env, c, ref)
                        _write_compact(self.cell_path(c), obj)
                        self.computed += 1
                    except Exception as exc:  # recorded (fail_fast: raised); no file, so a re-run retries it
                        if self.config.fail_fast:
                            raise
                        self._fail(f"{c.dataset}/{c.backbone}/{c.label}/{c.method}/seed {c.seed}", exc)
                    self._bar.update(1)
                    self._write_results()
        finally:
            self._bar.close()
            self._bar = None
        rows, files = self._write_results()
        plots: list[Path] = []
        if self.plots:
            plots = self._make_plots()
        return BenchResult(rows, self._table(rows), files, list(self.failures), list(self.plan.skipped),
                           self.computed, reused, self.cache.trainings, plots)

    def _fail(self, what: str, exc: BaseException) -> None:
        tb = traceback.format_exc()
        self.failures.append({"cell": what, "error": f"{type(exc).__name__}: {exc}", "traceback": tb})
        self.log(f"FAILED {what}: {type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------- results
    def collect(self) -> tuple[list[dict], list[dict]]:
        """``(cell objects, reference objects)`` of the plan that are on disk and current."""
        cells, refs, seen = [], [], set()
        for c in self.plan.cells:
            obj = self._fresh(self.cell_path(c), self.cell_key(c))
            if obj is not None:
                cells.append(obj)
            if c.group not in seen:
                seen.add(c.group)
                r = self._fresh(self.ref_path(c.group), self.ref_key(c.group))
                if r is not None:
                    refs.append(r)
        return cells, refs

    def rows(self, cells: list[dict], refs: list[dict]) -> list[dict]:
        """The table rows in grid order: original, retrain (when not a method), the methods, the noise floor."""
        methods = list(self.config.methods)
        sc_order = {s.label: i for i, s in enumerate(self.config.scenarios)}

        def order(o: dict) -> tuple:
            return (self.config.datasets.index(o["dataset"]), self.config.backbones.index(o["backbone"]),
                    sc_order[o["scenario"]], self.config.seeds.index(o["seed"]))

        by_group: dict[tuple, list[tuple[int, dict]]] = {}
        for r in refs:
            g = order(r)
            by_group.setdefault(g, []).append((-1, r["rows"]["original"]))
            if "retrain" not in methods:
                by_group[g].append((0, {**r["rows"]["retrain"], "method": "retrain (reference)"}))
            if "noise_floor" in r["rows"]:
                by_group[g].append((len(methods) + 1, r["rows"]["noise_floor"]))
        for c in cells:
            by_group.setdefault(order(c), []).append((1 + methods.index(c["method"]), c["row"]))
        out = []
        for g in sorted(by_group):
            out += [row for _, row in sorted(by_group[g], key=lambda t: t[0])]
        return out

    def _table(self, rows: list[dict], title: str | None = None) -> str:
        return format_table(rows, floatfmt=".4g", title=title or f"{self.config.name}: unlearning benchmark "
                            f"(per-request s / speedup vs the retrain reference)")

    def _mean_rows(self, rows: list[dict]) -> list[dict]:
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            group = (r["dataset"], r["backbone"], r["scenario"], r["method"].split(" (retrain seed")[0])
            groups.setdefault(group, []).append(r)
        out = []
        for (ds, bb, sc, m), rs in groups.items():
            row: dict[str, Any] = {"dataset": ds, "backbone": bb, "method": m, "scenario": sc, "seeds": len(rs)}
            for key in rs[0]:
                if key in ("dataset", "backbone", "method", "scenario", "seed"):
                    continue
                vals = [r.get(key) for r in rs if isinstance(r.get(key), (int, float)) and r.get(key) is not None]
                vals = [v for v in vals if math.isfinite(v)]
                row[key] = float(np.mean(vals)) if vals else None
            out.append(row)
        return out

    def _write_results(self) -> tuple[list[dict], dict[str, Path]]:
        cells, refs = self.collect()
        rows = self.rows(cells, refs)
        files = {"csv": self.out / "results.csv", "json": self.out / "results.json", "md": self.out / "results.md"}
        columns = list(dict.fromkeys(k for r in rows for k in r)) if rows else []
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
        _write_text(files["csv"], buf.getvalue())
        summary = {
            "benchmark": self.config.name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": self.config.model_dump(mode="json"), "columns": columns, "rows": rows,
            "mean_over_seeds": self._mean_rows(rows) if len(self.config.seeds) > 1 else None,
            "cells_planned": len(self.plan.cells), "cells_done": len(cells),
            "skipped": self.plan.skipped, "failures": [{k: v for k, v in f.items()} for f in self.failures],
            "cells": [{"path": str(self.cell_path(Cell(c["dataset"], c["backbone"], c["method"],
                                                         self._sc_index(c["scenario"]), c["scenario"], c["seed"]))),
                       "dataset": c["dataset"], "backbone": c["backbone"], "method": c["method"],
                       "scenario": c["scenario"], "seed": c["seed"], "timings": c.get("timings"),
                       "request": c.get("request")} for c in cells],
            "references": [{"dataset": r["dataset"], "backbone": r["backbone"], "scenario": r["scenario"],
                            "seed": r["seed"], "request": r["request"], "trained": r["trained"]} for r in refs],
            "versions": _versions(), "machine": _machine(self.device),
        }
        write_json(files["json"], summary)
        intro = (f"{len(cells)}/{len(self.plan.cells)} cells done; generated {summary['created']} by "
                 f"`unlearnrec bench`. Per-request seconds and speedup are against the retrain reference's training "
                 f"time; Jaccard@{self.config.measures.k} and JS compare with that reference (the noise-floor rows: "
                 f"a second retrain, i.e. what exact unlearning shows).")
        md = [f"# {self.config.name}", "", intro, "",
              self._table(rows, title="## Results (one row per cell)") if rows else "(no finished cell yet)"]
        if summary["mean_over_seeds"]:
            md += ["", format_table(summary["mean_over_seeds"], floatfmt=".4g", title="## Mean over seeds")]
        if self.plan.skipped:
            md += ["", "Skipped (method does not apply to the backbone):", ""]
            md += [f"* {s['method']} on {s['backbone']}: {s['reason']}" for s in self.plan.skipped]
        if self.failures:
            md += ["", "Failed (re-run to retry):", ""] + [f"* {f['cell']}: {f['error']}" for f in self.failures]
        _write_text(files["md"], "\n".join(md) + "\n")
        return rows, files

    def _sc_index(self, label: str) -> int:
        return next(i for i, s in enumerate(self.config.scenarios) if s.label == label)

    def _make_plots(self) -> list[Path]:
        from unlearnrec.bench.plots import make_plots

        cells, refs = self.collect()
        try:
            return make_plots(self.out / "plots", cells, refs, k=self.config.measures.k)
        except ImportError as exc:
            self.log(f"plots skipped: {exc} (install the 'plots' extra: pip install 'unlearnrec[plots]')")
            return []


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_compact(path: Path, obj: Any) -> None:
    """A cell or reference file: one-line JSON (its plot arrays would take one line per number), atomically."""
    _write_text(path, json.dumps(to_jsonable(obj), separators=(",", ":")) + "\n")


def _machine(device: str) -> dict:
    import platform

    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": device}
    try:
        info["load_average_1_5_15"] = list(os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _versions() -> dict:
    from unlearnrec.checkpoint import versions

    return versions()


def run_bench(
    config: BenchConfig, *, out: str | Path | None = None, cache_dir: str | Path | None = None,
    device: str | None = None, progress: bool | None = None, plots: bool | None = None,
    log: Callable[[str], None] | None = None, plan: Plan | None = None,
) -> BenchResult:
    """Validate ``config`` (before any training) and run its grid; see the module docstring.

    Args:
        out, cache_dir, device, progress, plots: override the config's settings.
        log: where progress messages go (default: stderr, above the progress bar).
        plan: an already validated plan of ``config`` (skips re-validation).
    """
    from unlearnrec.training import resolve_device

    dev = device or config.device
    plan = plan or validate_config(config, dev)
    dev = str(resolve_device(dev))  # "auto" -> the device it means (graphs are built on it)
    out = Path(out) if out is not None else Path(config.out)
    if cache_dir is not None:
        cache = Path(cache_dir)
    else:
        cache = Path(config.cache_dir) if config.cache_dir else out / "cache"
    return BenchRunner(plan, out, cache, dev, progress, plots, log).run()
