"""Every unlearning method on the same requests, in one run (issue 4's benchmark).

The original model is trained on the attacked graph (the clean training split plus the paper's adversarial
edges: each user's least-likely item and each item's least-likely user, picked by a clean model), exactly as
in the UnlearnRec bench configs. Each method is prepared once on it (one-off seconds: shard training, Fisher or
negatives, encoder pre-training) and then unlearns each request (per-request seconds):

* ``random1``: 1% of the original's training edges, seeded;
* ``adversarial``: the injected edges (the retrained model is the clean model: same recipe on exactly the
  residual edges).

Every model is measured on its own serving graph (forgotten items are not masked): test Recall@20 and
NDCG@20, MI-BF, MI-NG, the request edges' mean score and rank percentile. For SISA and RecEraser the
utility before any deletion is recorded against the unpartitioned model, with the shards each request
retrained.

    python benchmarks/baselines.py --config benchmarks/configs/ml1m.yaml --threads 1 \
        --ckpt-dir /work/ckpts --max-seconds 600 --method-config benchmarks/configs/baselines_ml1m.yaml
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml
from _common import RESULTS, measure, public, record, run_config, trained

from unlearnrec import api
from unlearnrec.report import format_table
from unlearnrec.unlearning.base import Context, build_unlearner
from unlearnrec.unlearning.requests import DeletionRequest
from unlearnrec.unlearning.scenarios import adversarial_edges

DEFAULT_METHODS = ("retrain,retrain-warm,edgedrop,finetune,neggrad+,ssd,gif,ifru,sisa,receraser,unlearnrec")


COLUMNS = ("method", "scenario", "recall@20", "ndcg@20", "MI-BF", "MI-NG", "request score", "non-edge score",
           "request rank pct", "one-off s", "seconds", "speedup", "shards retrained")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--scenarios", default="random1,adversarial")
    ap.add_argument("--method-config", type=Path, default=None, help="YAML: method name -> its config overrides")
    ap.add_argument("--ckpt-dir", type=Path, default=None, help="reuse/keep the clean and attacked checkpoints here")
    ap.add_argument("--max-seconds", type=float, default=None, help="training budget of every full model")
    ap.add_argument("--n-samples", type=int, default=20000)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = run_config(args)
    method_cfg = yaml.safe_load(args.method_config.read_text()) if args.method_config else {}
    data = api.load_data(cfg)
    bb = cfg.model.name
    name = args.name or f"baselines_{cfg.data.dataset}_{bb}"
    ck = (lambda tag: args.ckpt_dir / f"{cfg.data.dataset}-{bb}{tag}") if args.ckpt_dir else (lambda tag: None)

    clean, clean_graph, clean_s = trained(cfg, data, ckpt=ck(""))
    injected = adversarial_edges(clean, clean_graph, data, ratio=1.0, seed=0)
    original, graph, orig_s = trained(cfg, data, edges=np.concatenate([data.train, injected]), ckpt=ck("-attacked"))
    requests = {
        "random1": DeletionRequest.random_edges(graph, 0.01, seed=1).edges,
        "adversarial": injected,
    }
    scenarios = args.scenarios.split(",")
    ctx = Context(original, graph, data, cfg, progress=False)
    full: dict = {"backbone": bb, "clean_train_seconds": clean_s, "original_train_seconds": orig_s,
                  "n_adversarial": int(len(injected)), "method_config": method_cfg, "methods": {}, "scenarios": {}}
    rows: list[dict] = []

    def flush() -> str:
        order = {"none": -1, **{sc: i for i, sc in enumerate(scenarios)}}
        ranked = sorted(rows, key=lambda r: order.get(r["scenario"].split()[0], 99))  # stable: method order kept
        table = format_table([public(r) for r in ranked], COLUMNS,
                             title=f"{cfg.data.dataset} {bb}: every method, same requests")
        full["rows"] = rows
        record(name, full, table, args.out)
        return table

    # references first: the original and retraining, per scenario
    retrain_s: dict[str, float] = {}
    for sc in scenarios:
        req = requests[sc]
        base = {"scenario": f"{sc} ({len(req)} edges)"}
        rows.append({**measure("original", original, graph, original, graph, req, data, None, None, args.n_samples),
                     **base, "one-off s": None})
        full["scenarios"][sc] = {"n_edges": int(len(req))}

    for method in args.methods.split(","):
        t0 = time.perf_counter()
        unl = build_unlearner(method, method_cfg.get(method))
        try:
            unl.prepare(ctx)
        except ValueError as exc:  # a method that does not apply to this backbone says so
            print(f"[{method}] skipped: {exc}", flush=True)
            full["methods"][method] = {"skipped": str(exc)}
            continue
        info: dict = {"config": unl.config.model_dump(mode="json"), "prepare_seconds": unl.prepare_seconds,
                      "paper": unl.paper, "requests": {}}
        full["methods"][method] = info
        print(f"[{method}] prepared in {unl.prepare_seconds:.1f} s", flush=True)
        if hasattr(unl, "ensemble"):  # partition methods: the price of partitioning before any deletion
            before = api.evaluate_model(unl.ensemble, graph, data, ks=(20,))
            info["utility_before_deletion"] = before
            rows.append({"method": f"{method} before deletion", "recall@20": before["recall@20"],
                         "ndcg@20": before["ndcg@20"], "scenario": "none (vs original)",
                         "one-off s": unl.prepare_seconds})
        for sc in scenarios:
            req = requests[sc]
            if method == "retrain" and sc == "adversarial":
                # the clean model is the retrained model (same recipe and seed on exactly the residual edges)
                retrain_s[sc] = clean_s
                row = measure("retrain", original, graph, clean, clean_graph, req, data, clean_s, clean_s,
                              args.n_samples)
                row.update({"scenario": f"{sc} ({len(req)} edges)", "one-off s": 0.0})
                rows.append(row)
                info["requests"][sc] = {"note": "the clean model: same recipe on exactly the residual edges"}
                continue
            out = unl.unlearn(req)
            secs = out.timings["request_seconds"]
            if method == "retrain":
                retrain_s[sc] = secs
            ref = retrain_s.get(sc)
            row = measure(method, original, graph, out.model, out.graph, req, data, secs, ref, args.n_samples)
            row.update({"scenario": f"{sc} ({len(req)} edges)", "one-off s": unl.prepare_seconds})
            if "shards_touched" in out.log:
                row["shards retrained"] = f"{out.log['shards_touched']['count']}/{unl.config.n_shards}"
            rows.append(row)
            info["requests"][sc] = out.to_dict()
            print(format_table([public(row)]), flush=True)
            flush()
            if method == "unlearnrec":  # the zero-shot encoder output as its own row
                zs = out.state.zero_shot_model
                zrow = measure("unlearnrec zero-shot", original, graph, zs, out.graph, req, data,
                               out.timings["encoder_seconds"] + out.state.timings["graph_seconds"], ref, args.n_samples)
                zrow.update({"scenario": f"{sc} ({len(req)} edges)", "one-off s": unl.prepare_seconds})
                rows.append(zrow)
        full["methods"][method]["wall_seconds"] = time.perf_counter() - t0
    print(flush())


if __name__ == "__main__":
    main()
