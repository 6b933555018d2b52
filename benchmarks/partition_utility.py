"""Partition methods before any deletion: the utility price of partitioning (issue 15).

The unpartitioned model is a trained checkpoint (``--checkpoint``; its recipe is the recipe every sub-model is
trained with). SISA and RecEraser are prepared on its training graph and their served ensembles are measured
with the project's evaluator: test Recall@20 / NDCG@20, full ranking, training and validation items masked.
Every model selection (sub-models' early stopping, WMF sweep, aggregator epoch) is on the validation split.

Extra RecEraser rows re-use the same sub-models (no retraining), to show where its utility comes from:

* ``score average``: SISA's averaging of the scores of the sub-models that hold the user, no aggregator;
* ``served aggregator``: the attention aggregator over the sub-models' final embeddings (``aggregate: served``);

and the main row is the authors' recipe (``aggregate: layer0``: layer-0 tables aggregated, then propagated
over the whole graph, as in the public LightGCN code).

``--cache DIR`` keeps each prepared ensemble (an ensemble checkpoint with its prepare log) and re-uses it when
the method's config and the recipe are the same, so a re-run measures without retraining the sub-models.

    OMP_NUM_THREADS=1 UNLEARNREC_DATA=/work/shared/data python benchmarks/partition_utility.py --threads 1 \\
        --checkpoint runs/bench-cache/ml-1m-lightgcn-s0-cd8f4112e12866df \\
        --method-config benchmarks/configs/partition_ml1m.yaml --name partition_ml1m_lightgcn
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from _common import RESULTS, record

from unlearnrec import api
from unlearnrec.checkpoint import load_checkpoint, save_ensemble
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.report import format_table
from unlearnrec.training import masks_for
from unlearnrec.unlearning.base import Context, build_unlearner
from unlearnrec.unlearning.methods.receraser import train_aggregator
from unlearnrec.unlearning.partition import AttentionAggregator, Ensemble

COLUMNS = ("model", "partition", "test recall@20", "test ndcg@20", "vs unpartitioned", "valid recall@20",
           "seconds", "shard epochs (min/med/max)", "shard stops")


def valid_recall(model, graph: Graph, data) -> float:
    masks = masks_for(data, graph.edges)
    u, i = model.embeddings(graph)
    return float(evaluate_ranking(u, i, masks["valid_truth"], masks["valid_exclude"], ks=(20,)).metrics["recall@20"])


def shard_summary(records: list[dict]) -> dict:
    epochs = np.array([r["epochs_run"] for r in records])
    stops: dict[str, int] = {}
    for r in records:
        stops[str(r.get("stop_reason"))] = stops.get(str(r.get("stop_reason")), 0) + 1
    return {"shard epochs (min/med/max)": f"{epochs.min()}/{int(np.median(epochs))}/{epochs.max()}",
            "shard stops": ", ".join(f"{k} {v}" for k, v in sorted(stops.items()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, type=Path, help="the unpartitioned model (its recipe is reused)")
    ap.add_argument("--methods", default="sisa,receraser")
    ap.add_argument("--method-config", type=Path, default=None, help="YAML: method name -> its config")
    ap.add_argument("--no-variants", action="store_true", help="skip the extra RecEraser rows")
    ap.add_argument("--name", default="partition_utility")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", type=Path, default=None, help="keep / re-use the prepared ensembles here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    method_cfg = yaml.safe_load(args.method_config.read_text()) if args.method_config else {}
    ck = load_checkpoint(args.checkpoint)
    cfg = ck.config
    data = api.load_data(cfg)
    if ck.fingerprint != data.fingerprint():
        raise SystemExit(f"{args.checkpoint} was trained on other data than {cfg.data.dataset}")
    graph = Graph(data.train if ck.edges is None else ck.edges, data.n_users, data.n_items)
    model = ck.model.eval()
    ctx = Context(model, graph, data, cfg, progress=False)
    full = api.evaluate_model(model, graph, data, ks=(20,))
    bench = ck.meta.get("bench", {})
    out: dict = {"checkpoint": str(args.checkpoint), "recipe": cfg.model_dump(mode="json"),
                 "method_config": method_cfg, "unpartitioned": {"test": full, "training": bench.get("training"),
                                                                "train_seconds": bench.get("train_seconds")},
                 "methods": {}}
    rows = [{"model": "unpartitioned (checkpoint)", "partition": "-", "test recall@20": full["recall@20"],
             "test ndcg@20": full["ndcg@20"], "vs unpartitioned": 1.0,
             "valid recall@20": valid_recall(model, graph, data), "seconds": bench.get("train_seconds"),
             "shard epochs (min/med/max)": str((bench.get("training") or {}).get("epochs_run", ""))}]

    def flush() -> str:
        table = format_table(rows, COLUMNS, title=f"{cfg.data.dataset} {cfg.model.name}: before any deletion")
        out["rows"] = rows
        record(args.name, out, table + "\n" + notes(), args.out)
        return table

    def notes() -> str:
        by = {r["model"]: r["test recall@20"] for r in rows}
        rec, sisa = by.get("receraser"), by.get("sisa")
        if rec is None:
            return ""
        lines = [f"\nRecEraser / unpartitioned: {rec / full['recall@20']:.3f} (target >= 0.85)"]
        if sisa is not None:
            lines.append(f"RecEraser - SISA: {rec - sisa:+.4f} (target >= 0)")
        return "\n".join(lines) + "\n"

    def add(name: str, ens, log: dict, seconds: float, extra: dict | None = None) -> dict:
        res = api.evaluate_model(ens, graph, data, ks=(20,))
        row = {"model": name, "partition": log["partition"]["strategy"], "test recall@20": res["recall@20"],
               "test ndcg@20": res["ndcg@20"], "vs unpartitioned": res["recall@20"] / full["recall@20"],
               "valid recall@20": valid_recall(ens, graph, data), "seconds": seconds,
               **shard_summary(log["shards"]), **(extra or {})}
        rows.append(row)
        print(format_table([row], COLUMNS), flush=True)
        flush()
        return res

    flush()
    for method in args.methods.split(","):
        unl = build_unlearner(method, method_cfg.get(method))
        mcfg = unl.config.model_dump(mode="json")
        cached = args.cache / method if args.cache else None
        meta = json.loads((cached / "meta.json").read_text()) if cached and (cached / "meta.json").is_file() else {}
        reused = meta.get("partition_utility", {}).get("config") == mcfg and \
            meta["partition_utility"]["recipe"] == out["recipe"]
        if reused:
            ens, log = load_checkpoint(cached).model, meta["partition_utility"]["prepare_log"]
            secs = meta["partition_utility"]["prepare_seconds"]
            print(f"[{method}] re-using {cached} (prepared in {secs:.0f} s)", flush=True)
        else:
            t0 = time.perf_counter()
            unl.prepare(ctx)
            secs = time.perf_counter() - t0
            ens, log = unl.ensemble, unl.prepare_log
            if cached:
                save_ensemble(cached, ens, cfg, data.fingerprint(), data.stats(), extra_meta={"partition_utility": {
                    "config": mcfg, "recipe": out["recipe"], "prepare_seconds": secs, "prepare_log": log}})
        out["methods"][method] = {"config": mcfg, "paper": unl.paper, "prepare_seconds": secs, "prepare_log": log,
                                  "reused": reused}
        res = add(method, ens, log, secs)
        out["methods"][method]["test"] = res
        print(f"[{method}] prepared in {secs:.0f} s", flush=True)
        if method != "receraser" or args.no_variants:
            continue
        t1 = time.perf_counter()
        avg = Ensemble(ens.models, ens.graphs)
        add("receraser shards, score average", avg, log, time.perf_counter() - t1)
        c = unl.config.model_copy(update={"aggregate": "served"})
        agg = AttentionAggregator(ens.n_shards, cfg.model.embedding_size, c.attention_size, c.activation, seed=c.seed,
                                  inputs="served")
        served = Ensemble(ens.models, ens.graphs, aggregator=agg, mask_absent=c.mask_absent)
        t1 = time.perf_counter()
        agg_log = train_aggregator(agg, served, ctx, graph, c)
        out["methods"][method]["served_aggregator"] = agg_log
        add("receraser shards, served aggregator", served, log, time.perf_counter() - t1)
    print(flush())


if __name__ == "__main__":
    main()
