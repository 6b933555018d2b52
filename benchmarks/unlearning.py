"""UnlearnRec against retraining, in one process on the same data (issue 3's benchmark).

For each backbone: the clean model (trained on the dataset's training split) picks the adversarial edges
(paper §7: each user's least-likely item and each item's least-likely user); the *original* model is trained
on the attacked graph; the Influence Encoder is pre-trained on it (one-off cost, reported apart). Then, per
scenario, the request is unlearned by

* **retrain**: the same recipe from scratch on the residual graph, early stopping on validation. For the
  adversarial request the residual graph *is* the clean training split, so the clean model (same recipe,
  same seed, same edges: the identical computation) is the retrained model and its training time the cost;
* **UnlearnRec zero-shot** (encoder pass only) and **UnlearnRec + k fine-tuning epochs**;

and every model is measured on its own serving graph (forgotten items are not masked): test Recall@20 and
NDCG@20, MI-BF and MI-NG (spec §7), mean score and rank percentile of the request edges, seconds and the
speedup over retraining. Random requests: 1% and 5% of the original's training edges (the 1% request is the
first of five disjoint 1% chunks whose union is the 5% request, so the sequential run of the five chunks
has retrained references after round 1 and round 5) and all edges of 10 random users.

    python benchmarks/unlearning.py --config benchmarks/configs/ml1m.yaml --backbones lightgcn \
        --scenarios adversarial,random1,random5,users10,sequential --clean-ckpt-dir /work/ckpts
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, measure, public, record, run_config, trained

from unlearnrec import api
from unlearnrec.report import format_table
from unlearnrec.unlearning.requests import DeletionRequest
from unlearnrec.unlearning.scenarios import adversarial_edges
from unlearnrec.unlearning.unlearnrec import UnlearnRecConfig, pretrain_encoder, unlearn_request, unlearn_sequence


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--backbones", default="lightgcn")
    ap.add_argument("--scenarios", default="adversarial,random1,random5,users10,sequential")
    ap.add_argument("--unlearnrec-config", type=Path, default=None)
    ap.add_argument("--finetune-epochs", type=int, default=None)
    ap.add_argument("--adversarial-ratio", type=float, default=1.0)
    ap.add_argument("--clean-ckpt-dir", type=Path, default=None, help="reuse/keep clean checkpoints here")
    ap.add_argument("--retrain-ckpt-dir", type=Path, default=None,
                    help="reuse/keep the retrained models here (one per backbone and scenario)")
    ap.add_argument("--max-seconds", type=float, default=None, help="training budget per model")
    ap.add_argument("--n-samples", type=int, default=20000)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    base = run_config(args)
    ucfg = UnlearnRecConfig.load(args.unlearnrec_config) if args.unlearnrec_config else UnlearnRecConfig()
    k = ucfg.finetune_epochs if args.finetune_epochs is None else args.finetune_epochs
    data = api.load_data(base)
    name = args.name or f"unlearning_{base.data.dataset}_{args.backbones.replace(',', '-')}"
    all_rows, full = [], {"unlearnrec_config": ucfg.model_dump(mode="json"), "backbones": {}}
    scenarios = args.scenarios.split(",")

    def flush():
        table_rows = [public(r) for r in all_rows]
        table = format_table(table_rows, title=f"{base.data.dataset}: unlearning vs retraining")
        record(name, full, table, args.out)
        return table

    for bb in args.backbones.split(","):
        cfg = base.with_overrides({"model.name": bb})
        ck = args.clean_ckpt_dir / f"{base.data.dataset}-{bb}" if args.clean_ckpt_dir else None
        clean, clean_graph, clean_s = trained(cfg, data, ckpt=ck)
        t0 = time.perf_counter()
        injected = adversarial_edges(clean, clean_graph, data, ratio=args.adversarial_ratio, seed=0)
        attacked_edges = np.concatenate([data.train, injected])
        print(f"[{bb}] {len(injected)} adversarial edges picked in {time.perf_counter() - t0:.1f} s", flush=True)
        ok = args.clean_ckpt_dir / f"{base.data.dataset}-{bb}-attacked" if args.clean_ckpt_dir else None
        original, graph, orig_s = trained(cfg, data, edges=attacked_edges, ckpt=ok)
        t0 = time.perf_counter()
        encoder, pre = pretrain_encoder(original, graph, data, ucfg, progress=False)
        pre_s = time.perf_counter() - t0
        info = {"clean_train_seconds": clean_s, "original_train_seconds": orig_s, "pretrain_seconds": pre_s,
                "n_adversarial": int(len(injected)), "pretrain_report": pre, "scenarios": {}}
        full["backbones"][bb] = info
        print(f"[{bb}] original trained in {orig_s:.1f} s; encoder pre-trained in {pre_s:.1f} s", flush=True)

        chunks = np.array_split(DeletionRequest.random_edges(graph, 0.05, seed=1).edges, 5)
        requests = {
            "adversarial": injected,
            "random1": chunks[0],
            "random5": np.concatenate(chunks),
            "users10": DeletionRequest.random_users(graph, 10, seed=2).edges,
        }
        retrained: dict[str, tuple] = {}
        for sc in scenarios:
            if sc == "sequential":
                continue
            req = requests[sc]
            residual = graph.without(req)
            if sc == "adversarial":
                re_model, re_graph, re_s = clean, clean_graph, clean_s
            else:
                rk = args.retrain_ckpt_dir / f"{base.data.dataset}-{bb}-{sc}" if args.retrain_ckpt_dir else None
                re_model, re_graph, re_s = trained(cfg, data, edges=residual.edges, ckpt=rk)
            retrained[sc] = (re_model, re_graph, re_s)
            rows = [measure("original", original, graph, original, graph, req, data, None, re_s, args.n_samples),
                    measure("retrain", original, graph, re_model, re_graph, req, data, re_s, re_s, args.n_samples)]
            zs = unlearn_request(original, graph, encoder, req, data, ucfg, finetune_epochs=0)
            rows.append(measure("UnlearnRec zero-shot", original, graph, zs.model, zs.graph, req, data,
                                zs.timings["total_seconds"], re_s, args.n_samples))
            ft = unlearn_request(original, graph, encoder, req, data, ucfg, finetune_epochs=k)
            rows.append(measure(f"UnlearnRec +{k} ft", original, graph, ft.model, ft.graph, req, data,
                                ft.timings["total_seconds"], re_s, args.n_samples))
            for r in rows:
                r.update({"backbone": bb, "scenario": f"{sc} ({len(req)} edges)"})
            info["scenarios"][sc] = {"n_edges": int(len(req)), "rows": rows, "finetune": ft.to_dict(),
                                     "zero_shot": zs.to_dict()}
            all_rows.extend(rows)
            print(format_table([public(r) for r in rows]), flush=True)
            flush()

        if "sequential" in scenarios:
            seq = unlearn_sequence(original, graph, encoder, chunks, data, ucfg, finetune_epochs=k)
            done = np.zeros((0, 2), np.int64)
            seq_rows = []
            for i, res in enumerate(seq, 1):
                done = np.concatenate([done, chunks[i - 1]])
                row = measure(f"sequential round {i}", original, graph, res.model, res.graph, done, data,
                              res.timings["total_seconds"], None, args.n_samples)
                ref = retrained.get("random1" if i == 1 else "random5" if i == 5 else "")
                if ref:
                    rr = measure(f"retrain (after round {i})", original, graph, ref[0], ref[1], done, data, ref[2],
                                 ref[2], args.n_samples)
                    seq_rows.append({**rr, "backbone": bb, "scenario": "sequential 5 x 1%"})
                seq_rows.insert(len(seq_rows) - (1 if ref else 0),
                                {**row, "backbone": bb, "scenario": "sequential 5 x 1%"})
            info["scenarios"]["sequential"] = {"rows": seq_rows, "mode": ucfg.sequential_mode}
            all_rows.extend(seq_rows)
            print(format_table([public(r) for r in seq_rows]), flush=True)
            flush()
    print(flush())


if __name__ == "__main__":
    main()
