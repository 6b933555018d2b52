"""The benchmark grid: datasets × backbones × methods × scenarios × seeds, resumable, with a model cache.

**Cells.** One cell is one method unlearning one scenario's request from one original model (dataset,
backbone, seed). It writes ``<out>/cells/<dataset>/<backbone>/<scenario>/<label>-seed<seed>.json`` when it is
finished (a temporary file renamed into place), holding its table row, the full measures and the small arrays
the plots need. A cell whose file exists with the same key (a hash of everything that determines it: recipe,
scenario, method and its hyper-parameters, seed, measures) is skipped; an interrupted run therefore re-does
only the unfinished cells, and a changed setting re-does exactly the cells it affects.

**Methods and aliases.** A ``methods`` entry is ``label: {hyper-parameters}``; the label is the registered
method unless the entry names one (``unlearnrec zero-shot: {method: unlearnrec, finetune_epochs: 0}``).
Tables, JSON and file names (sanitised) use the label; cells also record the registered method. Prepared
unlearners are shared: they are keyed by (original model, registered method, hash of the config restricted to
:meth:`~unlearnrec.unlearning.base.Unlearner.prepare_fields`), and each alias gets the shared one re-configured
by :meth:`~unlearnrec.unlearning.base.Unlearner.with_config`. A method that supports it saves its prepared state
under ``<cache_dir>/prepared/<method>-<hash>`` (hash of the original model's key and that restricted config),
and later runs load it instead of preparing; ``one-off s`` stays the time the preparation took.

**References.** Per ``(dataset, backbone, scenario, seed)`` a reference file (``_reference-seed<seed>.json``
next to the cells) holds what every method is compared with, computed once and shared by all methods:

* the references ``R_1..R_n``: the recipe retrained on exactly the residual graph with ``train.seed`` = cell seed +
  each of ``measures.reference_seed_offsets`` (default 1, 2, 3). Never the original's seed: a retrain from the
  original's initial embeddings stays close to the original whatever it forgot, so a no-op would look like
  exact unlearning. Each is a row ``retrain (seed N)`` (JSON, and the Markdown's references table);
* ``original``: the model before unlearning (utility on its graph; MI-NG, score and rank of the request before;
  its anchored measures against the references: how far apart they start);
* ``retrain (reference)``: the mean over the references of utility, MI-BF, MI-NG, request score and request
  rank percentile (``rank pct sd``: the references' sample sd of the latter); its ``per-request s`` is the mean
  reference training time, the denominator of every ``speedup``. The ``retrain`` method with default
  hyper-parameters *is* the first reference and reuses it (its row says so in ``note``);
* ``noise floor`` (``measures.noise_floor``, at least 2 references): :func:`anchored_report` of every pair
  ``R_i`` vs ``R_j``, ``i < j``, as mean, sample sd, min and max over the pairs: what exact unlearning shows.

**Columns.** Beside utility, MI-BF, MI-NG, request score and rank percentile (``unlearnrec.evaluation``):

* ``Jaccard@k``, ``Jaccard sd``, ``JS``: a row's anchored measures, the mean (sample sd) over the references of
  its :func:`~unlearnrec.evaluation.anchored.anchored_report` against each (a reference row: against the other
  references; the rank-percentile difference is in the JSON);
* ``Jaccard@k retained``: the same Jaccard with the request pairs masked in every list (what training on the
  request did to the order of everything else; the floor row has the references' own value);
* ``gap closed`` = (request rank pct of the row − the original's) / (the mean reference's − the original's): 0 =
  ranks the request where the original did, 1 = where retraining does, > 1 = pushes it further down; ``None``
  when the denominator is below 1e-6 (retraining does not move the request);
* ``in floor``: ``True`` when the row's mean Jaccard@k over the references is at least floor mean − 2 · floor sd
  (``band.jaccard_low`` in ``results.json``'s ``floors``), ``False`` below; ``None`` with fewer than 2 floor pairs
  (3 references). The mean over seeds reports the share of seeds in the floor.

**Model cache.** Every full model is trained by :func:`unlearnrec.api.train` and kept as a checkpoint under
``<cache_dir>/<dataset>-<backbone>-s<seed>-<hash>`` where the hash covers the resolved recipe (device excluded),
the data fingerprint and the sorted training edges (the edges themselves are not stored, only their hash; the
cell that asks for the model again rebuilds them from its scenario): the original of each (dataset, backbone,
seed), the attacked original of the adversarial scenario and the references of each (scenario, seed).
Identical trainings share one checkpoint (e.g. the adversarial scenario's references are clean retrains),
across cells and across runs. A scenario's graph is the data's (plus the injected edges when adversarial), known
before its original is trained, so ``jobs > 1`` trains the missing models in worker processes first
(:mod:`unlearnrec.bench.parallel`).

**Timing.** ``one-off s`` is the method's ``prepare`` (shard training, Fisher, encoder pre-training), done once
per original model and shared by its scenarios and aliases; ``per-request s`` is ``unlearn`` (the mean over the
rounds of a sequential scenario); ``speedup`` = mean reference training seconds / per-request seconds. With a
``max_seconds`` recipe budget the references' time is about that budget.

**Provenance.** The git commit and dirty flag of the code (:func:`unlearnrec.provenance.git_state`) are taken
when the run starts and recorded in ``results.json`` and in every cell and reference file it computes.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import os
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

from unlearnrec.bench.config import BenchConfig, BenchConfigError, ScenarioSpec, safe_name
from unlearnrec.config import RunConfig
from unlearnrec.data.interactions import Interactions, pair_keys
from unlearnrec.graph import Graph
from unlearnrec.report import format_table, to_jsonable, write_json

__all__ = ["BenchResult", "BenchRunner", "Cell", "ModelCache", "Plan", "run_bench", "validate_config"]

CELL_FORMAT = "unlearnrec.bench-cell/2"
REF_FORMAT = "unlearnrec.bench-reference/2"
PREPARED_FORMAT = "unlearnrec.bench-prepared/1"
PREPARED_META = "bench_prepared.json"
HARNESS_VERSION = 2  # bump when a measure's definition changes: every cell is then recomputed
# 2: several references with seeds other than the original's, the floor between them, gap closed, in floor
GAP_EPS = 1e-6  # |mean reference's − original's rank pct| below this: gap closed is None
FLOOR_Z = 2.0  # in floor: mean Jaccard >= floor mean − FLOOR_Z · floor sd


# ================================================================================= plan
@dataclass(frozen=True)
class Cell:
    """One ``(dataset, backbone, method, scenario, seed)`` of the grid (``method``: the entry's label)."""

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
        offsets = c.measures.reference_seed_offsets
        n_train = len({(d, b, s) for d, b, s, _ in groups}) + len(groups) * len(offsets)
        lines = [
            f"{len(self.cells)} cells: {len(c.datasets)} dataset(s) x {len(c.backbones)} backbone(s) x "
            f"{len(c.methods)} method(s) x {len(c.scenarios)} scenario(s) x {len(c.seeds)} seed(s)"
            + (f" ({len(self.skipped)} skipped)" if self.skipped else ""),
            f"full trainings at most: {n_train} (originals and {len(offsets)} retrain reference(s) per scenario "
            f"and seed, seeds + {', '.join(map(str, offsets))}; cached ones are reused)",
            "scenarios: " + ", ".join(s.label for s in c.scenarios),
            "methods: " + ", ".join(m if c.method_of(m) == m else f"{m} ({c.method_of(m)})" for m in c.methods),
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
    for label in config.methods:
        name = config.method_of(label)
        cls = UNLEARNERS.get(name)
        if cls is None:
            errors.append(f"unknown unlearning method {name!r}" + ("" if name == label else f" (entry {label!r})")
                          + f"; known: {', '.join(sorted(UNLEARNERS))}")
            continue
        try:
            cls.Config.model_validate(config.method_params(label))
        except ValidationError as exc:
            errors.append(f"method {label}: invalid hyper-parameters: " + "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()))
    for s in config.scenarios:
        unknown = sorted(set(s.methods or ()) - set(config.methods))
        if unknown:
            errors.append(f"scenario {s.label}: methods {', '.join(unknown)} are not entries of methods "
                          f"({', '.join(config.methods)})")
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
            cls = UNLEARNERS[config.method_of(m)]
            if bb not in cls.backbones:
                skipped.append({"method": m, "registered": cls.name, "backbone": bb,
                                "reason": f"supports {', '.join(sorted(cls.backbones))}"
                                + (f"; {cls.unsupported_reason}" if cls.unsupported_reason else "")})
    bad = {(s["method"], s["backbone"]) for s in skipped}
    for ds in config.datasets:
        for bb in config.backbones:
            for seed in config.seeds:
                for i, sc in enumerate(config.scenarios):
                    for m in config.methods:
                        if (m, bb) not in bad and (sc.methods is None or m in sc.methods):
                            cells.append(Cell(ds, bb, m, i, sc.label, int(seed)))
    return Plan(config, cells, skipped, run_configs)


# ============================================================================ helpers
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(obj), sort_keys=True).encode()).hexdigest()


def _recipe_dump(cfg: RunConfig) -> dict:
    d = cfg.model_dump(mode="json")
    d["train"].pop("device", None)  # where a model trains does not change what it is
    if d["data"].get("source") is None:  # registered data: the key of every model cached before `source` existed
        d["data"].pop("source", None)
    return d


_safe = safe_name


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

    def _path(self, cfg: RunConfig, key: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / f"{_safe(cfg.data.dataset)}-{cfg.model.name}-s{cfg.train.seed}-{key[:16]}"

    def key_of(self, cfg: RunConfig, data: Interactions, edges: np.ndarray | None = None) -> str:
        """The cache key of ``cfg`` trained on ``edges`` (default ``data.train``)."""
        return self.key(cfg, data.fingerprint(), np.unique(pair_keys(data.train if edges is None else edges,
                                                                     data.n_items)))

    def has(self, cfg: RunConfig, key: str) -> bool:
        """Whether a checkpoint of ``key`` (see :meth:`key_of`) is in the cache (not whether it loads)."""
        path = self._path(cfg, key)
        meta = None if path is None else _read_json(path / "meta.json")
        return meta is not None and meta.get("bench", {}).get("key") == key

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
        path = self._path(cfg, key)
        if path is not None:
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
    def request_seed(self) -> int:
        """The seed of the request draw: the scenario's ``seed``, else the cell's."""
        return self.seed if self.spec.seed is None else int(self.spec.seed)

    @property
    def injected(self) -> np.ndarray:
        """The adversarial scenario's injected edges (a ``ratio < 1`` subset drawn with :attr:`request_seed`)."""
        from unlearnrec.unlearning.scenarios import adversarial_edges

        ratio = self.spec.ratio if self.spec.ratio is not None else 1.0
        seed = self.request_seed
        return self.runner.memo(("injected", self.dataset, self.backbone, self.seed, ratio, seed),
                                lambda: adversarial_edges(self.clean.model, self.clean.graph, self.data, ratio=ratio,
                                                          seed=seed))

    @property
    def original(self) -> Trained:
        if self.spec.kind != "adversarial":
            return self.clean
        ratio = self.spec.ratio if self.spec.ratio is not None else 1.0
        seed = self.request_seed

        def build() -> Trained:
            from unlearnrec.unlearning.scenarios import attacked_dataset

            attacked_dataset(self.data, self.injected)  # refuses collisions with held-out pairs
            edges = np.concatenate([self.data.train, self.injected])
            return self.runner.cache.get(self.cfg, self.data, edges, what="attacked original")

        return self.runner.memo(("attacked", self.dataset, self.backbone, self.seed, ratio, seed), build)

    @property
    def graph(self) -> Graph:
        """The original's training graph, known before the original is trained (so a reference can be trained
        first, or in another process): the data's training edges, plus the injected ones when adversarial."""
        d, dev = self.data, self.runner.device
        if self.spec.kind != "adversarial":
            return self.runner.memo(("graph", self.dataset), lambda: Graph(d.train, d.n_users, d.n_items, device=dev))
        ratio = self.spec.ratio if self.spec.ratio is not None else 1.0
        return self.runner.memo(("attacked graph", self.dataset, self.backbone, self.seed, ratio, self.request_seed),
                                lambda: Graph(np.concatenate([d.train, self.injected]), d.n_users, d.n_items,
                                              device=dev))

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
            s, g = self.spec, self.graph
            seed = self.request_seed
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
    def reference_seeds(self) -> list[int]:
        """Training seeds of the references: the cell's seed plus each offset (never the original's seed)."""
        return [self.seed + int(off) for off in self.runner.config.measures.reference_seed_offsets]

    def reference_model(self, k: int) -> Trained:
        """Reference ``k``: the recipe with seed :attr:`reference_seeds` ``[k]`` on exactly the residual graph."""
        seed = self.reference_seeds[k]

        def build() -> Trained:
            return self.runner.cache.get(self.reference_config(k), self.data, self.residual.edges,
                                         what=f"retrain reference ({self.spec.label}, seed {seed})")

        return self._get(f"reference{k}", build)

    def reference_config(self, k: int) -> RunConfig:
        """The recipe of reference ``k`` (its ``train.seed`` is :attr:`reference_seeds` ``[k]``)."""
        return self.cfg.with_overrides({"train.seed": self.reference_seeds[k]})

    @property
    def references(self) -> list[Trained]:
        return [self.reference_model(k) for k in range(len(self.reference_seeds))]

    @property
    def orig_emb(self):
        return self._get("orig_emb", lambda: _emb(self.original.model, self.graph))

    def ref_emb(self, k: int):
        return self._get(f"ref_emb{k}", lambda: _emb(self.reference_model(k).model, self.reference_model(k).graph))

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

    def measure(self, model, graph: Graph, *, anchored: bool = True, robust: bool = True,
                exclude: int | None = None) -> dict[str, Any]:
        """Every enabled measure of ``model`` served on ``graph`` (against the original and the references);
        ``robust=False`` leaves out the relearning and quantization stress tests (the original's own row);
        ``exclude``: the reference ``model`` is (compared with the other references only)."""
        from unlearnrec.evaluation.anchored import aggregate_reports, anchored_report
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
        if len(data.valid):  # what model selection may look at (tuning grids choose on it, never on test)
            val = evaluate_ranking(emb[0], emb[1], masks["valid_truth"], masks["valid_exclude"], ks=(k,))
            out["utility"]["valid"] = {**val.metrics, "n_users": val.n_users}
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
        others = [j for j in range(len(self.reference_seeds)) if j != exclude]
        if anchored and ms.anchored and others:
            reps = [report_jsonable(anchored_report(emb, graph, self.ref_emb(j), self.reference_model(j).graph,
                                                    self.request, data, k)) for j in others]
            agg = aggregate_reports(reps)
            out["anchored"] = {
                "jaccard": agg["jaccard"]["mean"], "jaccard_sd": agg["jaccard"]["sd"],
                "jaccard_retained": agg["jaccard_retained"]["mean"],
                "js": agg["js"]["mean"], "js_sd": agg["js"]["sd"],
                "percentile_diff": agg["percentile_diff"]["mean"], "percentile_diff_sd": agg["percentile_diff"]["sd"],
                "abs_percentile_diff": agg["abs_percentile_diff"]["mean"],
                "n_references": len(others), "reference_seeds": [self.reference_seeds[j] for j in others],
                "spread": agg, "per_reference": [{"reference_seed": self.reference_seeds[j], **r}
                                                 for j, r in zip(others, reps, strict=True)],
            }
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
         before: bool = False, floor: dict | None = None) -> dict[str, Any]:
    """One table row from :meth:`_Env.measure`'s measures (``before``: the original's own values; ``floor``:
    the group's noise floor, for ``in floor``). ``gap closed`` is set by :func:`_set_gap`."""
    from unlearnrec.evaluation.anchored import in_floor

    cfg = env.runner.config
    k = cfg.measures.k
    m = (measured or {}).get("measures", {})
    u, f, a, mi = m.get("utility", {}), m.get("forgetting"), m.get("anchored"), m.get("membership")
    w = "before" if before else "after"
    jac = a.get("jaccard") if a else None
    row: dict[str, Any] = {
        "dataset": env.dataset, "backbone": env.backbone, "method": method, "scenario": env.spec.label,
        "seed": env.seed,
        f"recall@{k}": u.get(f"recall@{k}"), f"ndcg@{k}": u.get(f"ndcg@{k}"),
        f"ndcg@{k} gap": (u.get("ndcg_gap") or {}).get("gap"),
        f"valid recall@{k}": (u.get("valid") or {}).get(f"recall@{k}"),
        "MI-BF": (1.0 if before else f.get("mi_bf")) if f else None,
        "MI-NG": (f.get("mi_ng_before") if before else f.get("mi_ng")) if f else None,
        "request score": f["score"]["request"][w]["mean"] if f else None,
        "request rank pct": f["rank"][w]["mean_percentile"] if f else None,
        "rank pct sd": None,
        "gap closed": None,
        f"Jaccard@{k}": jac,
        "Jaccard sd": a.get("jaccard_sd") if a else None,
        f"Jaccard@{k} retained": a.get("jaccard_retained") if a else None,
        "JS": a.get("js") if a else None,
        "in floor": in_floor(jac, (floor or {}).get("band")),
    }
    if cfg.measures.membership.enabled:
        row["attack AUC"] = mi.get("auc") if mi else None
    row.update({"one-off s": one_off, "per-request s": per_request, "speedup": speedup, "note": None})
    return row


def _gap_closed(pct, original, reference) -> float | None:
    """(``pct`` − ``original``) / (``reference`` − ``original``), ``None`` when undefined or the gap is ~0."""
    if any(not isinstance(x, (int, float)) or not math.isfinite(x) for x in (pct, original, reference)):
        return None
    den = reference - original
    return None if abs(den) < GAP_EPS else float((pct - original) / den)


def _set_gap(row: dict, rows: dict) -> dict:
    """Fill ``row['gap closed']`` from the reference file's ``original`` and ``retrain`` (mean) rows."""
    key = "request rank pct"
    row["gap closed"] = _gap_closed(row.get(key), rows["original"].get(key), rows["retrain"].get(key))
    return row


def _mean_reference_row(env: _Env, per_ref: list[dict], seconds: list[float]) -> dict[str, Any]:
    """The ``retrain (reference)`` row: the references' mean of every measured number (not the anchored ones,
    which compare the references with each other); ``rank pct sd`` = their sample sd of the request rank pct."""
    from unlearnrec.evaluation.anchored import spread

    skip = {"dataset", "backbone", "method", "scenario", "seed", "rank pct sd", "gap closed", "Jaccard sd", "JS",
            "in floor", "one-off s", "per-request s", "speedup", "note", f"Jaccard@{env.runner.config.measures.k}"}
    row = dict(per_ref[0])
    row.update({"method": "retrain (reference)", "Jaccard sd": None, "JS": None, "in floor": None,
                f"Jaccard@{env.runner.config.measures.k}": None})
    for key in row:
        if key not in skip:
            row[key] = spread([r.get(key) for r in per_ref])["mean"]
    row["rank pct sd"] = spread([r.get("request rank pct") for r in per_ref])["sd"]
    row.update({"one-off s": 0.0, "per-request s": float(np.mean(seconds)), "speedup": 1.0,
                "note": f"mean of seeds {', '.join(map(str, env.reference_seeds))}"})
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
    prepares: int = 0
    """Unlearners prepared (aliases sharing a prepare step count once; loaded prepared states not at all)."""
    prepared_loads: int = 0
    """Prepared states loaded from ``<cache_dir>/prepared``."""
    provenance: dict[str, Any] | None = None
    """The git state of the code when the run started."""
    parallel_trainings: int = 0
    """Models trained by ``jobs`` worker processes before the cells ran (not in ``trainings``)."""


class BenchRunner:
    """Runs a validated :class:`Plan` (see the module docstring); :meth:`run` does everything."""

    def __init__(self, plan: Plan, out: Path, cache_dir: Path, device: str, progress: bool | None = None,
                 plots: bool | None = None, log: Callable[[str], None] | None = None, jobs: int = 1):
        self.plan, self.config = plan, plan.config
        self.jobs = max(1, int(jobs))
        self.parallel_trainings = 0
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
        self.prepares = 0  # unlearners prepared by this runner (the rest were shared or loaded)
        self.prepared_loads = 0  # prepared states loaded from <cache_dir>/prepared
        self.provenance: dict[str, Any] | None = None  # git state when run() started

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
        block = ("clean", "attacked", "attacked graph", "auditor", "injected")  # what one original's block built
        self._memo = {k: v for k, v in self._memo.items() if k[0] not in block}
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
                      "scenario": self.config.scenarios[idx].key_dump(), "seed": seed,
                      "measures": self.config.measures.model_dump(mode="json")})

    def cell_key(self, c: Cell) -> str:
        return _hash({"ref": self.ref_key(c.group), "method": c.method, "registered": self.config.method_of(c.method),
                      "config": self.config.method_params(c.method)})

    def _fresh(self, path: Path, key: str) -> dict | None:
        obj = _read_json(path)
        return obj if obj is not None and obj.get("key") == key else None

    def _provenance(self) -> dict[str, Any]:
        if self.provenance is None:
            from unlearnrec.provenance import git_state

            self.provenance = git_state()
        return self.provenance

    # ---------------------------------------------------------------- unlearners
    def _reuses_reference(self, label: str) -> bool:
        return self.config.method_of(label) == "retrain" and not self.config.method_params(label)

    def _method_config(self, label: str):
        """``(unlearner class, validated config)`` of a ``methods`` entry (the run's device filled in)."""
        from unlearnrec.unlearning.base import UNLEARNERS

        cls = UNLEARNERS[self.config.method_of(label)]
        mcfg = self.config.method_params(label)
        if "device" in cls.Config.model_fields and "device" not in mcfg:
            mcfg["device"] = self.device
        return cls, cls.Config.model_validate(mcfg)

    @staticmethod
    def prepare_hash(cls, config) -> str:
        """Hash of ``config`` restricted to ``cls.prepare_fields()`` (all fields when it is ``None``)."""
        fields = cls.prepare_fields()
        dump = config.model_dump(mode="json")
        if fields is not None:
            dump = {k: v for k, v in dump.items() if k in fields}
        return _hash({"method": cls.name, "prepare": dump})

    @staticmethod
    def prepared_key(registered: str, original_key: str, prepare_hash: str) -> str:
        """Key of a prepared state: the original model's cache key, the method and its prepare-config hash."""
        return _hash({"original": original_key, "method": registered, "prepare": prepare_hash})

    def prepared_dir(self, registered: str, original_key: str, prepare_hash: str) -> Path | None:
        """``<cache_dir>/prepared/<method>-<key>`` of one original model and prepare config (``None``: no cache)."""
        if self.cache.root is None:
            return None
        key = self.prepared_key(registered, original_key, prepare_hash)
        return self.cache.root / "prepared" / f"{_safe(registered)}-{key[:16]}"

    def _unlearner(self, env: _Env, label: str):
        """``(unlearner, info)``: the prepared unlearner of ``label`` for ``env``'s original, shared with every
        alias whose prepare step is the same (re-configured by ``with_config``), loaded from the prepared cache
        when there, else prepared (and saved there when the method supports it)."""
        from unlearnrec.unlearning.base import Context

        cls, config = self._method_config(label)
        phash = self.prepare_hash(cls, config)
        key = (env.original.key, cls.name, phash)
        directory = self.prepared_dir(cls.name, env.original.key, phash)
        info: dict[str, Any] = {"registered": cls.name, "prepare_hash": phash[:16],
                                "directory": None if directory is None else str(directory)}
        if key in self._prepared:
            info["source"] = "shared"
        else:
            retrain_seconds: list[float] = []

            def train_full(cfg, graph):
                trained = self.cache.get(cfg, env.data, graph.edges, what=f"{label}: calibration retrain")
                retrain_seconds.append(trained.seconds)  # its cost, whether trained now or cached
                return trained.model

            ctx = Context(env.original.model, env.graph, env.data, env.cfg, progress=False, train_full=train_full)
            unl, dkey = cls(config), self.prepared_key(cls.name, env.original.key, phash)
            info["source"] = self._load_prepared(unl, ctx, directory, dkey)
            if info["source"] is None:
                self.log(f"preparing {label} ({env.backbone}, {env.dataset}, seed {env.seed})")
                unl.prepare(ctx)
                if retrain_seconds:  # a cached retrain costs its training time all the same: one-off cost
                    unl.prepare_seconds = float(unl.prepare_seconds) + float(sum(retrain_seconds))
                    info["calibration_retrain_seconds"] = float(sum(retrain_seconds))
                self.prepares += 1
                info["source"] = "prepared"
                if directory is not None:
                    saved = self._save_prepared(unl, directory, {
                        "key": dkey, "method": cls.name, "original": env.original.key, "prepare_hash": phash,
                        "prepare_fields": sorted(cls.prepare_fields()) if cls.prepare_fields() is not None else None,
                        "config": config.model_dump(mode="json"), "prepare_seconds": float(unl.prepare_seconds)})
                    info["saved"] = saved
            self._prepared[key] = unl
        unl = self._prepared[key]
        if unl.config != config:
            unl = unl.with_config(config)
        return unl, info

    def _load_prepared(self, unl, ctx, directory: Path | None, dkey: str | None) -> str | None:
        """``"loaded"`` when ``directory`` holds a complete prepared state of this key that ``unl`` restored."""
        if directory is None:
            return None
        meta = _read_json(directory / PREPARED_META)
        if meta is None or meta.get("format") != PREPARED_FORMAT or meta.get("key") != dkey:
            return None
        try:
            if not unl.load_prepared(ctx, directory):
                return None
        except Exception as exc:  # noqa: BLE001 - an unusable cache entry: prepare again
            self.log(f"prepared state {directory} unusable ({type(exc).__name__}: {exc}); preparing again")
            return None
        unl.ctx = ctx  # what prepare() sets; the one-off cost is the original preparation's
        unl.prepare_seconds = float(meta.get("prepare_seconds") or 0.0)
        self.prepared_loads += 1
        self.log(f"loaded prepared {meta.get('method')} from {directory}")
        return "loaded"

    def _save_prepared(self, unl, directory: Path, meta: dict) -> bool:
        """Save ``unl``'s prepared state into ``directory`` (a temporary folder renamed into place, its
        :data:`PREPARED_META` written last); ``False`` when the method does not support it or saving failed."""
        import shutil

        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            ok = bool(unl.save_prepared(tmp))
        except Exception as exc:  # noqa: BLE001 - the cache is an optimisation: go on without it
            self.log(f"could not save the prepared {meta['method']} ({type(exc).__name__}: {exc})")
            ok = False
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        _write_text(tmp / PREPARED_META, json.dumps(to_jsonable({
            "format": PREPARED_FORMAT, **meta, "provenance": self._provenance(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}), indent=1) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
        return True

    # ---------------------------------------------------------------- reference
    def _compute_reference(self, env: _Env, group: tuple) -> dict:
        from unlearnrec.evaluation.anchored import aggregate_reports, floor_band

        t0 = time.perf_counter()
        ms = self.config.measures
        refs, seeds = env.references, env.reference_seeds
        # the references, each against the others (the floor's pairs); only the first one's stress tests (the
        # retrain method reuses it)
        ref_ms = [env.measure(r.model, r.graph, anchored=ms.noise_floor, robust=(j == 0), exclude=j)
                  for j, r in enumerate(refs)]
        floor = None
        if ms.noise_floor and ms.anchored:
            pairs, reports = [], []
            for i in range(len(refs)):
                for j in range(i + 1, len(refs)):
                    pairs.append([seeds[i], seeds[j]])
                    reports.append(ref_ms[i]["measures"]["anchored"]["per_reference"][j - 1])
            agg = aggregate_reports(reports)
            floor = {"reference_seeds": seeds, "pairs": pairs, "n_pairs": len(pairs), **agg,
                     "band": floor_band(agg, FLOOR_Z)}
        # the original against the references: how far apart they start (what unlearning has to close)
        orig_m = env.measure(env.original.model, env.graph, robust=False)
        secs = [r.seconds for r in refs]
        mean_s = float(np.mean(secs))
        per_ref = [_row(env, f"retrain (seed {s})", m, one_off=0.0, per_request=r.seconds,
                        speedup=mean_s / r.seconds if r.seconds > 0 else None, floor=floor)
                   for s, m, r in zip(seeds, ref_ms, refs, strict=True)]
        rows: dict[str, Any] = {"original": _row(env, "original", orig_m, before=True, floor=floor),
                                "retrain": _mean_reference_row(env, per_ref, secs)}
        for r in [rows["original"], rows["retrain"], *per_ref]:
            _set_gap(r, rows)
        rows["references"] = per_ref
        if floor is not None:
            k = ms.k
            band = floor["band"]
            low = band["jaccard_low"]
            rows["noise_floor"] = {
                **{c: None for c in rows["original"]}, "dataset": env.dataset, "backbone": env.backbone,
                "method": "noise floor", "scenario": env.spec.label, "seed": env.seed,
                f"Jaccard@{k}": floor["jaccard"]["mean"], "Jaccard sd": floor["jaccard"]["sd"],
                f"Jaccard@{k} retained": (floor.get("jaccard_retained") or {}).get("mean"),
                "JS": floor["js"]["mean"],
                "note": f"{floor['n_pairs']} pair(s)" + (f", band >= {low:.4g}" if low is not None else "")}
        plot = {"original": orig_m["plot"], "retrain": ref_ms[0]["plot"]}
        measures = {"original": orig_m["measures"], "retrain": ref_ms[0]["measures"],
                    "references": [m["measures"] for m in ref_ms]}
        trained = {"original": {"seconds": env.original.seconds, "cache": str(env.original.path),
                                "cached": env.original.cached, "seed": env.seed},
                   "references": [{"seed": s, "offset": s - env.seed, "seconds": r.seconds, "cache": str(r.path),
                                   "cached": r.cached} for s, r in zip(seeds, refs, strict=True)],
                   "retrain": {"seconds": mean_s, "seeds": seeds, "what": "mean over the references"}}
        return {
            "format": REF_FORMAT, "key": self.ref_key(group), "status": "done",
            "dataset": env.dataset, "backbone": env.backbone, "scenario": env.spec.label,
            "scenario_spec": env.spec.model_dump(mode="json"), "seed": env.seed, "request_seed": env.request_seed,
            "request": self._request_info(env), "rows": rows, "floor": floor, "measures": measures, "plot": plot,
            "trained": trained, "recipe": env.cfg.model_dump(mode="json"),
            "data_fingerprint": env.data.fingerprint(), "seconds": time.perf_counter() - t0,
            "provenance": self._provenance(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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
        label = cell.method
        base = {"format": CELL_FORMAT, "key": self.cell_key(cell), "status": "done", "dataset": cell.dataset,
                "backbone": cell.backbone, "method": label, "registered": self.config.method_of(label),
                "scenario": cell.label, "scenario_spec": self.config.scenarios[cell.scenario].model_dump(mode="json"),
                "seed": cell.seed, "method_config": self.config.method_params(label), "request": ref["request"],
                "provenance": self._provenance()}
        ref_s = ref["trained"]["retrain"]["seconds"]
        if self._reuses_reference(label):
            first = ref["trained"]["references"][0]
            note = f"= reference seed {first['seed']}"
            row = {**ref["rows"]["references"][0], "method": label, "note": note}
            return {**base, "row": row, "reuses_reference": True, "measures": ref["measures"]["references"][0],
                    "plot": ref["plot"]["retrain"], "timings": {"one_off_seconds": 0.0,
                                                                "per_request_seconds": row["per-request s"],
                                                                "retrain_seconds": ref_s},
                    "note": f"the first retrain reference itself (the recipe with seed {first['seed']} on exactly "
                            f"the residual graph), measured against the other references",
                    "seconds": time.perf_counter() - t0,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        assert env is not None
        from unlearnrec.unlearning.scenarios import unlearn_sequentially

        unl, prep = self._unlearner(env, label)
        if env.spec.kind == "sequential":
            try:  # apply() changes the unlearner: work on a copy, keeping the prepared one for other cells; the
                # context is shared (apply() replaces it, and no unlearner modifies its model, graph or data; graphs
                # hold CSR tensors, which deepcopy refuses)
                ctx = unl.ctx
                work = copy.deepcopy(unl, {id(x): x for x in (ctx, ctx.model, ctx.graph, ctx.data)})
            except Exception:  # noqa: BLE001 - not copyable: prepare a fresh one
                key = (env.original.key, prep["registered"], self.prepare_hash(*self._method_config(label)))
                shared = self._prepared.pop(key, None)
                work, _ = self._unlearner(env, label)
                if shared is not None:
                    self._prepared[key] = shared
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
            raise RuntimeError(f"{label} serves on a graph that is not the residual graph")
        measured = env.measure(out.model, out.graph)
        row = _row(env, label, measured, one_off=float(unl.prepare_seconds), per_request=per_request,
                   speedup=(ref_s / per_request) if per_request > 0 else None, floor=ref.get("floor"))
        _set_gap(row, ref["rows"])
        summary = unl.prepared_summary()
        if summary and summary.get("note"):
            row["note"] = summary["note"]
        return {**base, "row": row, "measures": measured["measures"], "plot": measured["plot"],
                "prepared_summary": summary,
                "timings": {"one_off_seconds": float(unl.prepare_seconds), "per_request_seconds": per_request,
                            "request_seconds": secs, "retrain_seconds": ref_s},
                "prepared": prep, "outcome": outcome_info, "method_config_resolved": unl.config.model_dump(mode="json"),
                "paper": type(unl).paper, "seconds": time.perf_counter() - t0,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    # ---------------------------------------------------------------- main loop
    def run(self) -> BenchResult:
        from tqdm.auto import tqdm

        from unlearnrec.provenance import git_state

        self.provenance = git_state()  # the code this run starts with (recorded in everything it writes)
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
        if self.jobs > 1:  # the full models first, in worker processes (unlearnrec.bench.parallel)
            from unlearnrec.bench.parallel import train_models

            needed = [g for g, members in groups.items()
                      if any(c not in done for c in members) or self._fresh(self.ref_path(g), self.ref_key(g)) is None]
            self.parallel_trainings = train_models(self, needed, self.jobs)["trained"]
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
                    if self._fresh(self.cell_path(c), self.cell_key(c)) is not None:
                        reused += 1  # written meanwhile by another run on the same results folder
                        self._bar.update(1)
                        continue
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
                           self.computed, reused, self.cache.trainings, plots, self.prepares, self.prepared_loads,
                           self.provenance, self.parallel_trainings)

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
        """The table rows in grid order: original, retrain (reference) (the mean over the references), the
        methods, the noise floor."""
        methods = list(self.config.methods)
        sc_order = {s.label: i for i, s in enumerate(self.config.scenarios)}

        by_group: dict[tuple, list[tuple[int, dict]]] = {}
        for r in refs:
            g = self._order(r, sc_order)
            by_group.setdefault(g, []).append((-1, r["rows"]["original"]))
            by_group[g].append((0, r["rows"]["retrain"]))
            if "noise_floor" in r["rows"]:
                by_group[g].append((len(methods) + 1, r["rows"]["noise_floor"]))
        for c in cells:
            by_group.setdefault(self._order(c, sc_order), []).append((1 + methods.index(c["method"]), c["row"]))
        out = []
        for g in sorted(by_group):
            out += [row for _, row in sorted(by_group[g], key=lambda t: t[0])]
        return out

    def _order(self, o: dict, sc_order: dict[str, int]) -> tuple:
        return (self.config.datasets.index(o["dataset"]), self.config.backbones.index(o["backbone"]),
                sc_order[o["scenario"]], self.config.seeds.index(o["seed"]))

    def _table(self, rows: list[dict], title: str | None = None) -> str:
        """The Markdown table of ``rows`` without the columns that are empty in every row."""
        cols = [c for c in dict.fromkeys(k for r in rows for k in r) if any(r.get(c) is not None for r in rows)]
        return format_table(rows, columns=cols or None, floatfmt=".4g", title=title or (
            f"{self.config.name}: unlearning benchmark (per-request s / speedup vs the mean retrain reference)"))

    def _mean_rows(self, rows: list[dict]) -> list[dict]:
        """Mean over seeds of each (dataset, backbone, scenario, method) row; ``in floor``: share of seeds."""
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault((r["dataset"], r["backbone"], r["scenario"], r["method"]), []).append(r)
        out = []
        for (ds, bb, sc, m), rs in groups.items():
            row: dict[str, Any] = {"dataset": ds, "backbone": bb, "method": m, "scenario": sc, "seeds": len(rs)}
            for key in rs[0]:
                if key in ("dataset", "backbone", "method", "scenario", "seed", "note"):
                    continue
                vals = [float(r[key]) for r in rs if isinstance(r.get(key), (int, float))]
                vals = [v for v in vals if math.isfinite(v)]
                row[key] = float(np.mean(vals)) if vals else None
            out.append(row)
        return out

    def _floors(self, refs: list[dict]) -> list[dict]:
        """Per reference file: the reference seeds, the floor's spreads over the pairs and its band."""
        out = []
        for r in refs:
            fl = r.get("floor")
            out.append({"dataset": r["dataset"], "backbone": r["backbone"], "scenario": r["scenario"],
                        "seed": r["seed"], "reference_seeds": [t["seed"] for t in r["trained"]["references"]],
                        **({k: fl.get(k) for k in ("pairs", "n_pairs", "jaccard", "jaccard_retained", "js",
                                                   "percentile_diff", "abs_percentile_diff", "band")}
                           if fl else {"n_pairs": 0})})
        return out

    def _write_results(self) -> tuple[list[dict], dict[str, Path]]:
        cells, refs = self.collect()
        rows = self.rows(cells, refs)
        sc_order = {s.label: i for i, s in enumerate(self.config.scenarios)}
        ref_rows = [row for r in sorted(refs, key=lambda r: self._order(r, sc_order))
                    for row in r["rows"]["references"]]
        files = {"csv": self.out / "results.csv", "json": self.out / "results.json", "md": self.out / "results.md"}
        columns = list(dict.fromkeys(k for r in rows for k in r)) if rows else []
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
        _write_text(files["csv"], buf.getvalue())
        floors = self._floors(refs)
        commits = sorted({(o.get("provenance") or {}).get("commit") or "" for o in [*cells, *refs]})
        dirty = any((o.get("provenance") or {}).get("dirty") for o in [*cells, *refs])
        summary = {
            "benchmark": self.config.name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "provenance": self._provenance(),
            "results_provenance": {"commits": [c or None for c in commits], "any_dirty": dirty},
            "config": self.config.model_dump(mode="json"), "columns": columns, "rows": rows,
            "reference_rows": ref_rows, "floors": floors,
            "definitions": {
                "retrain (reference)": "mean over the references (recipe retrained on the residual graph with "
                                       "train.seed = seed + each reference_seed_offsets entry)",
                "Jaccard/JS": "mean (sd) over the references of the row's anchored measures against each",
                "gap closed": "(request rank pct - original's) / (mean reference's - original's); None when the "
                              f"denominator is below {GAP_EPS:g}",
                "in floor": f"mean Jaccard over the references >= floor mean - {FLOOR_Z:g} * floor sd (pairs of "
                            "references); None with fewer than 2 pairs",
            },
            "mean_over_seeds": self._mean_rows(rows) if len(self.config.seeds) > 1 else None,
            "cells_planned": len(self.plan.cells), "cells_done": len(cells),
            "skipped": self.plan.skipped, "failures": [{k: v for k, v in f.items()} for f in self.failures],
            "cells": [{"path": str(self.cell_path(Cell(c["dataset"], c["backbone"], c["method"],
                                                         self._sc_index(c["scenario"]), c["scenario"], c["seed"]))),
                       "dataset": c["dataset"], "backbone": c["backbone"], "method": c["method"],
                       "registered": c.get("registered", c["method"]), "scenario": c["scenario"], "seed": c["seed"],
                       "timings": c.get("timings"), "request": c.get("request"), "prepared": c.get("prepared"),
                       "provenance": c.get("provenance")} for c in cells],
            "references": [{"dataset": r["dataset"], "backbone": r["backbone"], "scenario": r["scenario"],
                            "seed": r["seed"], "request": r["request"], "trained": r["trained"],
                            "provenance": r.get("provenance")} for r in refs],
            "versions": _versions(), "machine": _machine(self.device),
        }
        write_json(files["json"], summary)
        k = self.config.measures.k
        prov = summary["provenance"]
        intro = (f"{len(cells)}/{len(self.plan.cells)} cells done; generated {summary['created']} by "
                 f"`unlearnrec bench` at commit {prov.get('commit') or 'unknown'}"
                 + (" (uncommitted changes)" if prov.get("dirty") else "") + ". "
                 f"`retrain (reference)` is the mean over the retrain references (seeds other than the original's); "
                 f"per-request seconds and speedup are against their mean training time. Jaccard@{k} and JS are "
                 f"means over the references; `noise floor` is the same measures between pairs of references (what "
                 f"exact unlearning shows); `in floor`: Jaccard@{k} >= floor mean - {FLOOR_Z:g} sd; `gap closed`: "
                 f"the share of the original-to-retrain shift of the request rank percentile.")
        md = [f"# {self.config.name}", "", intro, "",
              self._table(rows, title="## Results (one row per cell)") if rows else "(no finished cell yet)"]
        if summary["mean_over_seeds"]:
            md += ["", format_table(summary["mean_over_seeds"], floatfmt=".4g", title="## Mean over seeds")]
        if ref_rows:
            md += ["", self._table(ref_rows, title="## Retrain references (each against the others)")]
        bands = [{"dataset": f["dataset"], "backbone": f["backbone"], "scenario": f["scenario"], "seed": f["seed"],
                  "reference seeds": ", ".join(map(str, f["reference_seeds"])), "pairs": f["n_pairs"],
                  f"Jaccard@{k} mean": f["jaccard"]["mean"], "sd": f["jaccard"]["sd"], "min": f["jaccard"]["min"],
                  "band low": f["band"]["jaccard_low"], "JS mean": f["js"]["mean"]} for f in floors if f["n_pairs"]]
        if bands:
            md += ["", format_table(bands, floatfmt=".4g", title="## Noise floor (pairs of references)")]
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
    log: Callable[[str], None] | None = None, plan: Plan | None = None, jobs: int = 1,
) -> BenchResult:
    """Validate ``config`` (before any training) and run its grid; see the module docstring.

    Args:
        out, cache_dir, device, progress, plots: override the config's settings.
        log: where progress messages go (default: stderr, above the progress bar).
        plan: an already validated plan of ``config`` (skips re-validation).
        jobs: above 1, the missing full models (originals, references) are trained first, ``jobs`` at a time in
            worker processes (:mod:`unlearnrec.bench.parallel`); the cells then run in this process.
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
    return BenchRunner(plan, out, cache, dev, progress, plots, log, jobs=jobs).run()
