"""Side-by-side training-epoch speed against torch-geometric's LightGCN, and full-ranking evaluation time.

Same data (ML-1M RecEraser split, validation carved), same sampler batches, batch 8192, d = 64, 3 layers,
Adam, one process, epochs interleaved (ours, PyG, ours, PyG, ...) so machine noise hits both alike.
torch-geometric gets the precomputed normalised CSR adjacency (``normalize=False``), its fastest path.

    python benchmarks/speed.py --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import record

from unlearnrec import api
from unlearnrec.config import RunConfig
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.models.base import bpr_loss
from unlearnrec.report import format_table
from unlearnrec.sampling import BPRSampler
from unlearnrec.training import Trainer, epoch_rng, masks_for


def pyg_epoch(pyg_model, adj, sampler, opt, batch_size, rng, reg, n_users) -> float:
    t0 = time.perf_counter()
    for b in sampler.epoch(batch_size, rng):
        emb = pyg_model.get_embedding(adj)
        u, p, n = emb[b.users], emb[n_users + b.pos], emb[n_users + b.neg]
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        e0 = pyg_model.embedding.weight
        loss = loss + reg * 0.5 * (e0[b.users].pow(2).sum() + e0[n_users + b.pos].pow(2).sum()
                                   + e0[n_users + b.neg].pow(2).sum()) / len(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for both (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import torch_geometric
    from torch_geometric.nn.models import LightGCN as PygLightGCN

    cfg = RunConfig().with_overrides({"data.dataset": args.dataset, "model.embedding_size": args.dim,
                                      "train.batch_size": args.batch_size})
    data = api.load_data(cfg)
    graph = Graph(data.train, data.n_users, data.n_items)
    ours = build_model(data.n_users, data.n_items, cfg.model)
    trainer = Trainer(ours, data, cfg.train, graph=graph, progress=False)
    n_nodes = data.n_users + data.n_items
    pyg = PygLightGCN(n_nodes, args.dim, num_layers=3)
    with torch.no_grad():
        pyg.embedding.weight.copy_(ours.embedding)
    pyg_opt = torch.optim.Adam(pyg.parameters(), lr=cfg.train.learning_rate)
    sampler = BPRSampler(data.train, data.n_items)

    ours_t, pyg_t = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        trainer.train_epoch(r + 1)
        ours_t.append(time.perf_counter() - t0)
        pyg_t.append(pyg_epoch(pyg, graph.adj, sampler, pyg_opt, args.batch_size, epoch_rng(0, r + 1),
                               cfg.model.reg, data.n_users))
        print(f"repeat {r}: ours {ours_t[-1]:.2f} s, torch-geometric {pyg_t[-1]:.2f} s", flush=True)

    masks = masks_for(data)
    eval_t = []
    for _ in range(3):
        t0 = time.perf_counter()
        u, i = ours.embeddings(graph)
        res = evaluate_ranking(u, i, masks["test_truth"], masks["test_exclude"], ks=(10, 20, 50))
        eval_t.append(time.perf_counter() - t0)
    o, p = statistics.median(ours_t), statistics.median(pyg_t)
    rows = [
        {"what": "LightGCN training epoch (ours)", "seconds": o},
        {"what": f"LightGCN training epoch (torch-geometric {torch_geometric.__version__})", "seconds": p},
        {"what": "ratio ours / torch-geometric (target <= 0.5)", "seconds": o / p},
        {"what": f"full-ranking eval, {len(res.users)} test users, K=10/20/50 (target < 2 s)",
         "seconds": statistics.median(eval_t)},
    ]
    title = f"{args.dataset}: batch {args.batch_size}, d = {args.dim}, 3 layers, median of {args.repeats}"
    table = format_table(rows, floatfmt=".3f", title=title)
    print(table)
    record(f"speed_{args.dataset}", {"ours_epoch_seconds": ours_t, "pyg_epoch_seconds": pyg_t, "ratio": o / p,
                                     "eval_seconds": eval_t, "n_eval_users": int(len(res.users)),
                                     "batch_size": args.batch_size, "dim": args.dim}, table)


if __name__ == "__main__":
    main()
