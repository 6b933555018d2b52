"""The grid's full models trained in worker processes before the cells run (``unlearnrec bench --jobs N``).

A grid needs, per (dataset, backbone, seed), the original and, per scenario, its retrain references: each a full
training (an SGL model on ML-1M takes ~12 min on one core here), independent of the others except that the
adversarial scenario's attacked original and references need the clean original (its injected edges are the
original's least likely ones). :func:`train_models` trains those missing from the model cache in two waves (the
clean originals and the other scenarios' references; then the adversarial scenario's models), ``jobs`` at a
time, each in its own process (``spawn``) with ``threads`` torch threads. The grid then loads every one from the
cache: the same trainings with the same seeds and cache keys as a sequential run, so the same models. Their
recorded training seconds (the ``speedup`` denominators) are measured under that load, as any two jobs sharing a
machine would be.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from unlearnrec.bench.grid import BenchRunner

__all__ = ["ModelTask", "plan_models", "train_models"]


@dataclass(frozen=True)
class ModelTask:
    """One full training of a grid: ``role`` ``original`` (clean), ``attacked`` (the adversarial scenario's
    original) or ``reference`` (reference ``k`` of the group's scenario); ``key``: its model-cache key."""

    group: tuple[str, str, int, int]  # (dataset, backbone, seed, scenario index)
    role: str
    k: int
    key: str
    what: str


def _model_of(env, role: str, k: int):
    """``(recipe, training edges or None, build)`` of one role of ``env``."""
    if role == "original":
        return env.cfg, None, lambda: env.clean
    if role == "attacked":
        return env.cfg, np.concatenate([env.data.train, env.injected]), lambda: env.original
    return env.reference_config(k), env.residual.edges, lambda: env.reference_model(k)


def plan_models(runner: BenchRunner, groups: list[tuple], adversarial: bool) -> list[ModelTask]:
    """The models of ``groups`` missing from the cache, once each: with ``adversarial=False`` the clean
    originals and the non-adversarial scenarios' references; with ``True`` the adversarial scenarios' attacked
    originals and references (their request needs the clean original, so plan them after it is trained)."""
    from unlearnrec.bench.grid import _Env

    tasks: list[ModelTask] = []
    seen: set[str] = set()
    for g in groups:
        env = _Env(runner, *g)
        is_adv = env.spec.kind == "adversarial"
        if adversarial and not is_adv:
            continue
        roles = [("attacked", 0)] if adversarial else [("original", 0)]
        if is_adv == adversarial:
            roles += [("reference", k) for k in range(len(env.reference_seeds))]
        for role, k in roles:
            cfg, edges, _ = _model_of(env, role, k)
            key = runner.cache.key_of(cfg, env.data, edges)
            if key in seen or runner.cache.has(cfg, key):
                continue
            seen.add(key)
            what = {"original": "original", "attacked": "attacked original"}.get(
                role, f"retrain reference ({env.spec.label}, seed {env.reference_seeds[k]})")
            tasks.append(ModelTask(tuple(g), role, k, key, f"{g[1]} on {g[0]}, seed {g[2]}: {what}"))
    return tasks


def _payload(runner: BenchRunner, task: ModelTask, threads: int) -> dict[str, Any]:
    """What a worker needs to rebuild the runner's view of ``task`` (plain JSON types: nothing is unpickled but
    our own dicts and strings)."""
    return {"config": runner.config.model_dump(mode="json"),
            "run_configs": [[*k, v.model_dump(mode="json")] for k, v in runner.plan.run_configs.items()],
            "cache_dir": str(runner.cache.root), "out": str(runner.out), "device": runner.device,
            "group": list(task.group), "role": task.role, "k": task.k, "key": task.key, "threads": threads}


def _train_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker process: train (or find cached) one model into the shared cache; errors come back as text."""
    import torch

    from unlearnrec.bench.config import BenchConfig
    from unlearnrec.bench.grid import BenchRunner, Plan, _Env
    from unlearnrec.config import RunConfig

    t0 = time.perf_counter()
    try:
        torch.set_num_threads(int(payload["threads"]))
        config = BenchConfig.model_validate(payload["config"])
        run_configs = {(d, b, int(s)): RunConfig.model_validate(v) for d, b, s, v in payload["run_configs"]}
        runner = BenchRunner(Plan(config, [], [], run_configs), Path(payload["out"]), Path(payload["cache_dir"]),
                             payload["device"], progress=False, plots=False)
        env = _Env(runner, *payload["group"])
        cfg, edges, build = _model_of(env, payload["role"], int(payload["k"]))
        key = runner.cache.key_of(cfg, env.data, edges)
        if key != payload["key"]:
            return {"error": f"cache key {key[:16]} is not the planned {payload['key'][:16]}"}
        trained = build()
        return {"seconds": float(trained.seconds), "cached": bool(trained.cached),
                "wall": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - reported by the parent; the grid trains it itself then
        return {"error": f"{type(exc).__name__}: {exc}"}


def train_models(runner: BenchRunner, groups: list[tuple], jobs: int, threads: int | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, int]:
    """Train the models ``groups`` need (see the module docstring) ``jobs`` at a time into ``runner``'s cache.

    ``threads``: torch threads per worker (default: the config's ``threads``, else the cores shared out).
    Returns ``{"trained": n, "failed": n}``; a failed training is logged and left to the grid, which trains
    it again in its own process (and records a failure there if it fails again).
    """
    log = log or runner.log
    if runner.cache.root is None:
        log("--jobs needs a model cache (cache_dir): training in the grid's own process")
        return {"trained": 0, "failed": 0}
    threads = threads or runner.config.threads or max(1, (os.cpu_count() or 1) // jobs)
    counts = {"trained": 0, "failed": 0}
    ctx = multiprocessing.get_context("spawn")
    for wave, adversarial in enumerate((False, True), start=1):
        tasks = plan_models(runner, groups, adversarial)
        if not tasks:
            continue
        log(f"training {len(tasks)} model(s) in {min(jobs, len(tasks))} process(es), {threads} thread(s) each "
            f"(wave {wave} of 2)")
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx) as pool:
            futures = {pool.submit(_train_task, _payload(runner, t, threads)): t for t in tasks}
            for i, fut in enumerate(as_completed(futures), start=1):
                t = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (memory): the grid retries it
                    res = {"error": f"worker died ({type(exc).__name__}: {exc})"}
                if "error" in res:
                    counts["failed"] += 1
                    log(f"  [{i}/{len(tasks)}] {t.what}: FAILED ({res['error']}); the grid will train it itself")
                else:
                    counts["trained"] += 0 if res["cached"] else 1
                    log(f"  [{i}/{len(tasks)}] {t.what}: "
                        + ("already cached" if res["cached"] else f"trained in {res['seconds']:.1f} s"))
    return counts
