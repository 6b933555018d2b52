"""Shared helpers for benchmark scripts: machine description and recording results with their command.

The git state recorded with a result is the one the script *started* with (:data:`START`, taken when this module
is imported, i.e. when the script starts), not the one when the result is written: a long run whose checkout is
edited or committed meanwhile still names the code that computed it.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch

from unlearnrec.checkpoint import versions
from unlearnrec.config import RunConfig
from unlearnrec.provenance import git_state
from unlearnrec.report import write_json

RESULTS = Path(__file__).resolve().parent / "results"
START = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": git_state(Path(__file__).parent)}
"""When the script started, and the git state of this checkout then."""


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "load_average_1_5_15": list(os.getloadavg()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> str | None:
    """The commit the script started at (``None`` outside a git checkout)."""
    return START["git"]["commit"]


def record(name: str, results: dict, markdown: str, out_dir: Path | None = None) -> Path:
    """Write ``<name>.json`` (command, machine, versions, results) and ``<name>.md`` under ``out_dir``."""
    out_dir = Path(out_dir or RESULTS)
    payload = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "started": START["date"],
        "git_commit": START["git"]["commit"],
        "git_dirty": START["git"]["dirty"],
        "provenance": START["git"],
        "machine": machine(),
        "versions": versions(),
        "results": results,
    }
    write_json(out_dir / f"{name}.json", payload)
    header = (
        f"# {name}\n\ncommand: `{payload['command']}`  \ndate: {payload['date']} (started {payload['started']})  \n"
        f"commit: {payload['git_commit'] or 'unknown'}{' (uncommitted changes)' if payload['git_dirty'] else ''}  \n"
        f"machine: {payload['machine']['cpu']} ({payload['machine']['cpu_count']} cores"
        f"{', GPU ' + payload['machine']['gpu'] if 'gpu' in payload['machine'] else ''})  \n"
        f"torch {payload['versions']['torch']}, unlearnrec {payload['versions']['unlearnrec']}\n\n"
    )
    (out_dir / f"{name}.md").write_text(header + markdown + "\n")
    return out_dir / f"{name}.json"


def run_config(args) -> RunConfig:
    """Apply the shared benchmark options: ``--threads``, ``--config`` + overrides, ``--max-seconds``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig.load(args.config).with_overrides(args.overrides)
    if getattr(args, "max_seconds", None):
        cfg = cfg.with_overrides({"train.max_seconds": args.max_seconds})
    return cfg


# ----------------------------------------------------------------------------- shared by the unlearning benchmarks
def public(row: dict) -> dict:
    """A table row without its ``_``-prefixed detail fields (kept in the JSON only)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def trained(cfg: RunConfig, data, edges=None, ckpt: Path | None = None) -> tuple:
    """``(model, graph, seconds)``: reuse the checkpoint in ``ckpt`` when it matches (recipe, data, training
    edges), else train with ``cfg`` (and keep the checkpoint there). ``edges``: train on these instead of
    ``data.train`` (an attacked or residual graph)."""
    import json

    import numpy as np

    from unlearnrec import api
    from unlearnrec.checkpoint import load_checkpoint
    from unlearnrec.data.interactions import pair_keys
    from unlearnrec.graph import Graph

    if ckpt is not None and (ckpt / "result.json").is_file():
        ck = load_checkpoint(ckpt)
        same_recipe = ck.config.model == cfg.model and ck.config.data == cfg.data and (
            ck.config.train.model_dump(exclude={"max_seconds"}) == cfg.train.model_dump(exclude={"max_seconds"}))
        if edges is None:
            same_edges = ck.edges is None
        else:
            same_edges = ck.edges is not None and np.array_equal(
                np.unique(pair_keys(ck.edges, data.n_items)), np.unique(pair_keys(edges, data.n_items)))
        if same_recipe and ck.fingerprint == data.fingerprint() and same_edges:
            res = json.loads((ck.path / "result.json").read_text())
            secs = res["times"]["total_seconds"]
            budget = res["config"]["train"].get("max_seconds")
            print(f"reusing {ckpt} (trained in {secs:.1f} s, budget {budget})", flush=True)
            return ck.model, Graph(data.train if edges is None else edges, data.n_users, data.n_items), secs
    res = api.train(cfg, ckpt, data=data, graph_edges=edges, progress=False)
    return res["model_object"], res["graph_object"], res["times"]["total_seconds"]


def measure(name, original, graph, model, serving, request, data, seconds, retrain_s, n_samples, e0=None) -> dict:
    """One table row: utility of ``model`` on its serving graph and the forgetting measures of ``request``."""
    from unlearnrec import api
    from unlearnrec.evaluation.forgetting import forgetting_report, report_jsonable

    util = api.evaluate_model(model, serving, data, ks=(20,))
    f = forgetting_report(original, graph, model, serving, request, data, n_samples=n_samples, e0_after=e0)
    same = model is original and serving is graph
    return {
        "method": name,
        "recall@20": util["recall@20"],
        "ndcg@20": util["ndcg@20"],
        "MI-BF": 1.0 if same else f["mi_bf"],
        "MI-NG": f["mi_ng_before"] if same else f["mi_ng"],
        "request score": f["score"]["request"]["before" if same else "after"]["mean"],
        "non-edge score": f["score"]["non_edges"]["before" if same else "after"]["mean"],
        "request rank pct": f["rank"]["before" if same else "after"]["mean_percentile"],
        "seconds": seconds,
        "speedup": (retrain_s / seconds) if seconds and retrain_s else None,
        "_forgetting": report_jsonable(f),
    }
