"""IFRU where the request is local: per-request seconds of IFRU and GIF on the same requests, in one run (issue 15).

For each dataset the original LightGCN comes from the bench model cache (ML-1M: the recipe of
``configs/unlearnrec_ml1m_lightgcn.yaml``, seed 0; Gowalla: ``configs/gowalla.yaml`` at lr 5e-3, batch 8192 and a
``--gowalla-seconds`` training budget, trained once and cached). GIF is prepared once (fixed negatives, seed 0,
the request-independent gradient and λ_max) and IFRU re-uses that prepared state (the same objective, negatives
and damping), so the one-off cost is shared and only the per-request cost differs. On each request:

* ``users-least_active-n10``: every edge of the 10 least-active users (CURE4Rec's "edge" data);
* ``single-k``: one random training interaction (seeded per request);

both unlearn it, interleaved (GIF then IFRU); each row records the per-request seconds (``Outcome.timings``),
the damping the solve used, and the forgetting of the request against the original: MI-NG and the request's
mean rank percentile (the ``forgetting_report`` of ``unlearnrec.evaluation``), with EdgeDrop (no parameter
change) as the do-nothing row. The noise floor of those measures is GIF's own: GIF with another draw of its
fixed negatives (seed 1, a second prepare) on the same request; IFRU matches GIF "within the noise floor" when
``|IFRU − GIF|`` is at most ``|GIF(seed 1) − GIF(seed 0)|`` for both measures. Retrain references are not
trained here (two ML-1M retrains are ~30 min of the shared CPU each).

    UNLEARNREC_DATA=/work/shared/data python benchmarks/ifru_local.py --threads 1 --datasets ml-1m,gowalla

``--ifru`` runs several IFRU settings on the same prepared state (e.g. ``gradient_hops`` chosen per dataset on
tuning requests, the 11th-20th least-active users, never on the reported ones).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, record

from unlearnrec.bench.config import BenchConfig
from unlearnrec.bench.grid import ModelCache
from unlearnrec.evaluation.forgetting import forgetting_report
from unlearnrec.report import format_table
from unlearnrec.unlearning.base import Context
from unlearnrec.unlearning.methods.influence import GIF, IFRU
from unlearnrec.unlearning.methods.references import EdgeDrop
from unlearnrec.unlearning.scenarios import users_request

HERE = Path(__file__).resolve().parent


def recipe(dataset: str, gowalla_seconds: float):
    if dataset == "ml-1m":
        cfg = BenchConfig.load(HERE / "configs" / "unlearnrec_ml1m_lightgcn.yaml")
        return cfg.run_config("ml-1m", "lightgcn", 0, "cpu")
    bench = BenchConfig.model_validate(
        {
            "datasets": ["gowalla"],
            "recipe": {
                "base": str(HERE / "configs" / "gowalla.yaml"),
                "max_seconds": gowalla_seconds,
                "overrides": {"train.learning_rate": 0.005, "train.batch_size": 8192, "train.ks": [20]},
            },
        }
    )
    return bench.run_config("gowalla", "lightgcn", 0, "cpu")


def share_prepared(src: GIF, dst, ctx: Context):
    """``dst`` (an influence unlearner) with ``src``'s prepared state: same negatives, gradient and λ_max."""
    dst.ctx = ctx
    dst._triples, dst._grad_full, dst._stale = src._triples, src._grad_full, False
    dst._lambda_max, dst._lambda_min = src._lambda_max, src._lambda_min
    dst.prepare_seconds = src.prepare_seconds
    return dst


def forgetting(orig, graph, outcome, request, data, n_samples) -> dict:
    f = forgetting_report(orig, graph, outcome.model, outcome.graph, request, data, n_samples, seed=0)
    return {
        "MI-NG": float(f["mi_ng"]),
        "MI-NG before": float(f["mi_ng_before"]),
        "rank pct": float(f["rank"]["after"]["mean_percentile"]),
        "rank pct before": float(f["rank"]["before"]["mean_percentile"]),
        "request score": float(f["score"]["request"]["after"]["mean"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="ml-1m,gowalla")
    ap.add_argument("--singles", type=int, default=1, help="single-interaction requests per dataset")
    ap.add_argument("--gowalla-seconds", type=float, default=480.0)
    ap.add_argument("--noise-floor", default="ml-1m,gowalla", help="datasets where GIF(seed 1) is run (comma list)")
    ap.add_argument("--n-samples", type=int, default=10_000)
    ap.add_argument("--cache", type=Path, default=HERE.parent / "runs" / "bench-cache")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="ifru_local")
    ap.add_argument(
        "--ifru",
        default='{"ifru": {}}',
        help="IFRU variants to run, JSON {row name: IFRU settings} (settings chosen on tuning requests, not these)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--tune",
        action="store_true",
        help="only the --ifru variants on the tuning request (users ranked 11-20 least active), against the first",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("UNLEARNREC_DATA", "/work/shared/data")
    if args.tune:
        return tune(args)
    rows, details = [], []
    floors = set(filter(None, args.noise_floor.split(",")))
    for ds, ctx, tr in contexts(args):
        model, graph, data = ctx.model, ctx.graph, ctx.data
        print(f"[{ds}] preparing GIF", file=sys.stderr, flush=True)
        gif = GIF().prepare(ctx)
        variants = {name: share_prepared(gif, IFRU(conf), ctx) for name, conf in json.loads(args.ifru).items()}
        requests = [("users-least_active-n10", users_request(graph, "least_active", n=10).edges)]
        rng = np.random.default_rng([2024, len(ds)])
        for k in range(args.singles):
            e = graph.edges[int(rng.integers(graph.n_edges))]
            requests.append((f"single-{k}", e[None, :]))
        with torch.no_grad():
            orig = model.embeddings(graph)
        gif1 = None
        for label, req in requests:
            per = {}
            for name, unl in (("edgedrop", EdgeDrop().prepare(ctx)), ("gif", gif), *variants.items()):
                print(f"[{ds}] {label}: {name}", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                out = unl.unlearn(req)
                wall = time.perf_counter() - t0
                per[name] = {
                    "seconds": float(out.timings["request_seconds"]),
                    "wall": wall,
                    **forgetting(orig, graph, out, req, data, args.n_samples),
                    "log": {k: v for k, v in out.log.items() if k != "damping_attempts"},
                    "timings": out.timings,
                }
            if ds in floors:
                if gif1 is None:
                    print(f"[{ds}] preparing GIF (negatives seed 1)", file=sys.stderr, flush=True)
                    gif1 = GIF({"negatives_seed": 1}).prepare(ctx)
                out = gif1.unlearn(req)
                per["gif seed 1"] = {
                    "seconds": float(out.timings["request_seconds"]),
                    **forgetting(orig, graph, out, req, data, args.n_samples),
                    "log": {k: v for k, v in out.log.items() if k != "damping_attempts"},
                }
            g = per["gif"]
            floor = per.get("gif seed 1")
            for name, r in per.items():
                damping = r["log"].get("damping")
                rows.append(
                    {
                        "dataset": ds,
                        "request": label,
                        "edges": len(req),
                        "method": name,
                        "per-request s": r["seconds"],
                        "GIF s / s": g["seconds"] / r["seconds"] if r["seconds"] else None,
                        "rank pct": r["rank pct"],
                        "MI-NG": r["MI-NG"],
                        "request score": r["request score"],
                        "damping": None if damping is None else f"{damping:.3g}",
                        "rows kept": r["log"].get("rows_kept"),
                        "local triples": r["log"].get("local_triples"),
                        "grad triples": r["log"].get("gradient_triples"),
                        "CG it": (r["log"].get("solver") or {}).get("iterations"),
                    }
                )
            f_rank = None if floor is None else abs(floor["rank pct"] - g["rank pct"])
            f_mi = None if floor is None else abs(floor["MI-NG"] - g["MI-NG"])
            f_score = None if floor is None else abs(floor["request score"] - g["request score"])
            for name, conf in json.loads(args.ifru).items():
                i = per[name]
                d_rank, d_mi = i["rank pct"] - g["rank pct"], i["MI-NG"] - g["MI-NG"]
                details.append(
                    {
                        "dataset": ds,
                        "request": label,
                        "method": name,
                        "ifru_config": conf,
                        "n_edges": int(len(req)),
                        "methods": per,
                        "speedup": g["seconds"] / i["seconds"],
                        "rank_pct_diff": d_rank,
                        "mi_ng_diff": d_mi,
                        "score_diff": i["request score"] - g["request score"],
                        "floor_rank_pct": f_rank,
                        "floor_mi_ng": f_mi,
                        "floor_score": f_score,
                        "within_floor": None if floor is None else abs(d_rank) <= f_rank and abs(d_mi) <= f_mi,
                        "lambda_min": gif._lambda_min,
                        "lambda_max": gif._lambda_max,
                        "original_train_seconds": tr.seconds,
                        "original_cache": str(tr.path),
                    }
                )
            print(format_table(rows[-len(per) :]), file=sys.stderr, flush=True)
            write(args, rows, details)  # after every request: a partial run keeps what it measured


def tuning_request(graph) -> np.ndarray:
    """Every edge of the users ranked 11th-20th least active: disjoint from the reported 10 least-active users."""
    first, twenty = users_request(graph, "least_active", n=10).edges, users_request(graph, "least_active", n=20).edges
    return twenty[~np.isin(twenty[:, 0], np.unique(first[:, 0]))]


def contexts(args):
    """``(dataset, Context, cache entry)`` of each ``--datasets`` entry's cached original (trained once, then read)."""
    from unlearnrec import api

    cache = ModelCache(args.cache, "cpu", log=lambda m: print(m, file=sys.stderr, flush=True))
    for ds in args.datasets.split(","):
        cfg = recipe(ds, args.gowalla_seconds)
        data = api.load_data(cfg)
        tr = cache.get(cfg, data, what="original")
        yield ds, Context(tr.model, tr.graph, data, cfg, progress=False), tr


def tune(args) -> None:
    """The ``--ifru`` variants on the tuning request, each against the first (the reference setting)."""
    rows = []
    for ds, ctx, _tr in contexts(args):
        model, graph, data = ctx.model, ctx.graph, ctx.data
        base = IFRU().prepare(ctx)
        req = tuning_request(graph)
        with torch.no_grad():
            orig = model.embeddings(graph)
        ref = None
        for name, conf in json.loads(args.ifru).items():
            out = share_prepared(base, IFRU(conf), ctx).unlearn(req)
            f = forgetting(orig, graph, out, req, data, args.n_samples)
            ref = ref or f
            rows.append(
                {
                    "dataset": ds,
                    "request": "users-least_active-11..20",
                    "edges": len(req),
                    "method": name,
                    "settings": json.dumps(conf),
                    "per-request s": float(out.timings["request_seconds"]),
                    "rank pct": f["rank pct"],
                    "MI-NG": f["MI-NG"],
                    "request score": f["request score"],
                    "rank pct − ref": f["rank pct"] - ref["rank pct"],
                    "MI-NG − ref": f["MI-NG"] - ref["MI-NG"],
                    "rows kept": out.log["rows_kept"],
                    "grad triples": out.log.get("gradient_triples"),
                }
            )
            print(format_table(rows[-1:]), file=sys.stderr, flush=True)
        text = (
            "IFRU settings on the tuning request (users ranked 11-20 least active, not reported), each against the "
            "first variant (exact gradient difference)\n\n" + format_table(rows)
        )
        record(args.name, {"rows": rows}, text, args.out)


def write(args, rows: list, details: list) -> None:
    lines = [
        "IFRU vs GIF on local requests (same prepared state; per-request seconds; forgetting vs the original)",
        "",
        format_table(rows),
        "",
        "| dataset | request | IFRU | GIF s / IFRU s | rank pct IFRU − GIF | MI-NG IFRU − GIF | score IFRU − GIF "
        "| floor: rank pct abs GIF(s1) − GIF(s0) | floor: MI-NG | floor: score | within floor | 10x faster |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for d in details:
        f1 = "-" if d["floor_rank_pct"] is None else f"{d['floor_rank_pct']:.4f}"
        f2 = "-" if d["floor_mi_ng"] is None else f"{d['floor_mi_ng']:.4f}"
        f3 = "-" if d.get("floor_score") is None else f"{d['floor_score']:.4f}"
        verdict = "-" if d["within_floor"] is None else ("yes" if d["within_floor"] else "no")
        lines.append(
            f"| {d['dataset']} | {d['request']} | {d['method']} {json.dumps(d['ifru_config'])} | {d['speedup']:.1f} | "
            f"{d['rank_pct_diff']:+.4f} | {d['mi_ng_diff']:+.4f} | {d['score_diff']:+.4f} | {f1} | {f2} | {f3} | "
            f"{verdict} | {'yes' if d['speedup'] >= 10 else 'no'} |"
        )
    spectra = {
        d["dataset"]: f"{d['dataset']}: λ_min {d['lambda_min']:.3g}, λ_max {d['lambda_max']:.3g}" for d in details
    }
    lines += [
        "",
        "Both solve with the prepared damping max(0.01·λ_max, 2·(−λ_min)), the extreme eigenvalues of the full "
        f"Hessian from 20 Lanczos steps ({'; '.join(spectra.values())}); 'within floor': |IFRU − GIF| <= the "
        "floor for both rank pct and MI-NG (score: the request's mean score, shown, not part of the verdict).",
    ]
    record(args.name, {"rows": rows, "details": details}, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
