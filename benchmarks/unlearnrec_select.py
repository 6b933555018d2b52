"""UnlearnRec's fine-tuning selection rules on the same original model and requests as ``baselines.py``.

Re-uses the attacked original that ``baselines.py`` trained (``--ckpt-dir``), pre-trains one encoder, and
unlearns the same two requests (1% random edges, seed 1; the adversarial edges) with each selection rule
(``gap``, ``target``, ``auto``). The retrained references are read from the baselines result file, so the
request edges' scores and rank percentiles can be set beside retraining's without retraining again.

    python benchmarks/unlearnrec_select.py --config benchmarks/configs/ml1m.yaml --ckpt-dir /work/ckpts_capped \
        --unlearnrec-config benchmarks/configs/unlearnrec_ml1m_adv.yaml --threads 1 \
        --reference benchmarks/results/baselines_ml-1m_lightgcn.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, measure, public, record, run_config, trained

from unlearnrec import api
from unlearnrec.report import format_table
from unlearnrec.unlearning.requests import DeletionRequest
from unlearnrec.unlearning.scenarios import adversarial_edges
from unlearnrec.unlearning.unlearnrec import UnlearnRecConfig, pretrain_encoder, unlearn_request

COLUMNS = ("scenario", "method", "recall@20", "ndcg@20", "MI-BF", "MI-NG", "request score", "non-edge score",
           "request rank pct", "seconds", "selected epoch", "rule used")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--ckpt-dir", required=True, type=Path)
    ap.add_argument("--unlearnrec-config", type=Path, default=None)
    ap.add_argument("--rules", default="gap,target,auto")
    ap.add_argument("--reference", type=Path, default=None, help="baselines result JSON with the retrain rows")
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--n-samples", type=int, default=20000)
    ap.add_argument("--name", default="unlearnrec_select_ml-1m_lightgcn")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = run_config(args)
    ucfg = UnlearnRecConfig.load(args.unlearnrec_config) if args.unlearnrec_config else UnlearnRecConfig()
    data = api.load_data(cfg)
    bb = cfg.model.name
    clean, clean_graph, _ = trained(cfg, data, ckpt=args.ckpt_dir / f"{cfg.data.dataset}-{bb}")
    injected = adversarial_edges(clean, clean_graph, data, ratio=1.0, seed=0)
    original, graph, _ = trained(cfg, data, edges=np.concatenate([data.train, injected]),
                                 ckpt=args.ckpt_dir / f"{cfg.data.dataset}-{bb}-attacked")
    requests = {"random1": DeletionRequest.random_edges(graph, 0.01, seed=1).edges, "adversarial": injected}
    t0 = time.perf_counter()
    encoder, _ = pretrain_encoder(original, graph, data, ucfg, progress=False)
    pre_s = time.perf_counter() - t0
    rows: list[dict] = []
    if args.reference and args.reference.is_file():
        ref = json.loads(args.reference.read_text())
        for sc in requests:
            for r in ref["results"].get("rows", []):
                if r.get("method") == "retrain" and str(r.get("scenario", "")).startswith(sc):
                    rows.append(public(r) | {"scenario": sc,
                                "method": "retrain (from the baselines run)"})
    for sc, req in requests.items():
        rows.append(measure("original", original, graph, original, graph, req, data, None, None, args.n_samples)
                    | {"scenario": sc})
        for rule in args.rules.split(","):
            c = ucfg.with_overrides({"finetune_select": rule})
            res = unlearn_request(original, graph, encoder, req, data, c)
            row = measure(f"unlearnrec ({rule})", original, graph, res.model, res.graph, req, data,
                          res.timings["total_seconds"], None, args.n_samples)
            mode = next((r.get("select_mode") for r in res.log if r.get("select_mode")), rule)
            rows.append(row | {"scenario": sc, "selected epoch": res.selected_epoch, "rule used": mode,
                               "_log": res.log})
            print(format_table([public(row)]), flush=True)
    table = format_table([public(r) for r in rows], COLUMNS,
                         title=f"UnlearnRec selection rules, {cfg.data.dataset} {bb} "
                               f"(pre-training {pre_s:.0f} s, one-off)")
    record(args.name, {"pretrain_seconds": pre_s, "unlearnrec_config": ucfg.model_dump(mode="json"), "rows": rows},
           table, args.out)
    print(table)


if __name__ == "__main__":
    main()
