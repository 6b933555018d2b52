"""``unlearnrec demo``: the whole story on the built-in synthetic data, no files needed.

Train a LightGCN, pre-train the UnlearnRec Influence Encoder (one-off), receive a deletion request (the
paper's adversarial edges: each user's least-likely item and each item's least-likely user, injected
before training), unlearn it (zero-shot and with fine-tuning), retrain from scratch for reference, and
print utility, forgetting and time side by side.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from unlearnrec import api
from unlearnrec.config import RunConfig
from unlearnrec.evaluation.forgetting import forgetting_report, report_jsonable
from unlearnrec.report import format_table, write_json
from unlearnrec.unlearning.scenarios import adversarial_edges
from unlearnrec.unlearning.unlearnrec import UnlearnRecConfig, pretrain_encoder, unlearn_request


def _row(name, original, graph, model, serving, request, data, seconds, retrain_s):
    util = api.evaluate_model(model, serving, data, ks=(20,))
    f = forgetting_report(original, graph, model, serving, request, data, n_samples=5000)
    same = model is original
    when = "before" if same else "after"
    return {
        "model": name,
        "recall@20": util["recall@20"],
        "ndcg@20": util["ndcg@20"],
        "request score": f["score"]["request"][when]["mean"],
        "non-edge score": f["score"]["non_edges"][when]["mean"],
        "MI-NG": f["mi_ng_before"] if same else f["mi_ng"],
        "seconds": seconds,
        "speedup": retrain_s / seconds if seconds else None,
        "_forgetting": report_jsonable(f),
    }


def run_demo(out: str | Path, device: str = "cpu", progress: bool | None = None) -> dict:
    out = Path(out)
    # The synthetic graph is tiny: one thread is faster than several (no OpenMP start-up or spinning,
    # which on a shared 2-core machine made a 5 s demo take minutes).
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    cfg = RunConfig().with_overrides(
        {"data.dataset": "synthetic", "model.name": "lightgcn", "train.batch_size": 2048,
         "train.learning_rate": 0.01, "train.epochs": 100, "train.patience": 3, "train.eval_every": 2,
         "train.device": device}
    )
    data = api.load_data(cfg)
    clean = api.train(cfg, out / "clean", data=data, progress=progress)
    injected = adversarial_edges(clean["model_object"], clean["graph_object"], data)
    attacked = np.concatenate([data.train, injected])
    orig = api.train(cfg, out / "original", data=data, graph_edges=attacked, progress=progress)
    model, graph = orig["model_object"], orig["graph_object"]

    ucfg = UnlearnRecConfig(pretrain_epochs=10, device=device)
    t0 = time.perf_counter()
    encoder, pre = pretrain_encoder(model, graph, data, ucfg, progress=progress)
    pre_s = time.perf_counter() - t0

    # Retraining on the residual graph = training on the clean data with the same recipe and seed.
    retrain_s = clean["times"]["total_seconds"]
    zs = unlearn_request(model, graph, encoder, injected, data, ucfg, finetune_epochs=0)
    ft = unlearn_request(model, graph, encoder, injected, data, ucfg)
    rows = [
        _row("original (attacked)", model, graph, model, graph, injected, data, None, retrain_s),
        _row("retrain from scratch", model, graph, clean["model_object"], clean["graph_object"], injected, data,
             retrain_s, retrain_s),
        _row("UnlearnRec zero-shot", model, graph, zs.model, zs.graph, injected, data, zs.timings["total_seconds"],
             retrain_s),
        _row(f"UnlearnRec + {ft.finetune_epochs} ft epoch(s)", model, graph, ft.model, ft.graph, injected, data,
             ft.timings["total_seconds"], retrain_s),
    ]
    table = format_table(
        [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        title=f"Unlearning {len(injected)} adversarial edges on synthetic data "
        f"({data.n_users} users x {data.n_items} items); encoder pre-training {pre_s:.1f} s (one-off)",
    )
    result = {"command": "demo", "n_request": int(len(injected)), "pretrain_seconds": pre_s, "rows": rows,
              "unlearnrec_config": ucfg.model_dump(mode="json"), "seconds": time.perf_counter() - t_start}
    write_json(out / "demo.json", result)
    result["table"] = table
    return result
