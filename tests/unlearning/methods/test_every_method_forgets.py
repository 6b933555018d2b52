"""Every registered unlearning method forgets (issue 15's last must-show), checked the same way for all of them.

Over the registry (every method that supports the backbone, so a newly registered method is covered without a
line here), on a small synthetic LightGCN and MF trained once per module, for one request (half the edges of a
few users):

* the request's scores move away from the original's (a method that does nothing fails);
* a method that changes parameters (all but EdgeDrop) ranks the request lower than EdgeDrop does by more than a
  tolerance (a method that only drops the edges fails): rank percentiles, not raw scores, so an ensemble and a
  retrained model are compared on the same scale;
* the exact methods (retraining and the partition methods) never use a request edge while unlearning: every
  BPR sampler they build draws positives from request-free edges, and every sub-model they serve was trained
  (now or in ``prepare``) on a request-free shard.

``SETTINGS`` shrinks budgets (epochs, pre-training, shards) to the tiny data (exceptions noted there); a method
not listed runs with its defaults.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tests.conftest import small_synthetic_data
from unlearnrec.config import RunConfig
from unlearnrec.data.interactions import pair_keys
from unlearnrec.evaluation.forgetting import item_ranks, pair_scores, percentile_of_rank
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.sampling import BPRSampler
from unlearnrec.training import Trainer
from unlearnrec.unlearning import methods  # noqa: F401  (registers the built-in methods)
from unlearnrec.unlearning.base import UNLEARNERS, Context, Outcome, build_unlearner
from unlearnrec.unlearning.methods.sisa import ShardedUnlearner
from unlearnrec.unlearning.partition import Ensemble

BACKBONES = ("lightgcn", "mf")
#: Methods that claim no parameter change (they only have to move away from the original).
NO_PARAMETER_CHANGE = {"edgedrop"}
#: Methods that claim exact unlearning: retraining and every partition method.
EXACT = {"retrain"} | {n for n, c in UNLEARNERS.items() if issubclass(c, ShardedUnlearner)}
#: Settings for the tiny data. Budgets only (epochs, shards, pre-training), except where noted.
SETTINGS: dict[str, dict] = {
    "sisa": {"n_shards": 3},
    "receraser": {"n_shards": 3, "agg_epochs": 5, "wmf_iterations": 3},
    "graph-eraser": {"n_shards": 3, "agg_epochs": 50},
    # IAU's step size is to be chosen on validation; the default 1e-3 (one Adam step) moves this table by about
    # 1% and the request by 0.001 in rank percentile (EdgeDrop's 0.1864 vs 0.1874); 0.02 as in test_iau.py
    "iau": {"learning_rate": 0.02},
    # the pre-training of test_unlearn.py's forgetting test (learning rate included), except that MF pre-trains at
    # 0.3 of that rate (learning_rate_scale, chosen on tuning requests; see its docstring in config.py): at 0.01
    # every measured MF epoch fell under the recall floor on the held-out request (0.52-0.56 against 0.59), the
    # untrained encoder was kept and the request ranked exactly as under EdgeDrop (0.1118 and 0.1118)
    "unlearnrec": {
        "pretrain_epochs": 40,
        "batch_size": 256,
        "batches_per_epoch": 5,
        "n_probe": 500,
        "select_every": 5,
        "learning_rate": 0.01,
        "learning_rate_scale": {"mf": 0.3},
        "holdout_ratios": [0.1],
    },
    "unlearnrec-calibrated": {
        "batch_size": 256,
        "finetune_batch_size": 512,
        "n_probe": 200,
        "holdout_ratios": [0.1],
        "calibration_min_recall_ratio": 0.95,
    },
}
#: Known failures, kept strict (an unexpected pass fails too): (method, backbone) -> what was measured.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}
#: Least rise of the request's mean rank percentile (0 = top, 1 = bottom) that counts as forgetting: half a
#: percentile point, about ten rank positions summed over the 28 request pairs (a method that changes nothing
#: moves it by exactly 0; the weakest honest forgetter here, fine-tuning, by 0.0065).
MIN_SHIFT = 0.005


def _cases() -> list:
    out = []
    for name in sorted(UNLEARNERS):
        for backbone in BACKBONES:
            if backbone in UNLEARNERS[name].backbones:
                why = KNOWN_FAILURES.get((name, backbone))
                marks = [pytest.mark.xfail(reason=why, strict=True, raises=AssertionError)] if why else []
                out.append(pytest.param(name, backbone, id=f"{name}-{backbone}", marks=marks))
    return out


def make_context(backbone: str) -> tuple[Context, np.ndarray]:
    """The small synthetic data, a ``backbone`` trained on it, and a request of half the edges of 4 users."""
    data = small_synthetic_data()
    cfg = RunConfig().with_overrides(
        {
            "model.name": backbone,
            "model.embedding_size": 16,
            "model.n_layers": 2,
            "model.reg": 1e-3,
            "train.epochs": 30,
            "train.batch_size": 256,
            "train.learning_rate": 0.02,
            "train.eval_every": 5,
            "train.patience": 3,
            "train.ks": [20],
        }
    )
    model = build_model(data.n_users, data.n_items, cfg.model)
    model.reset_parameters(torch.Generator().manual_seed(0))
    trainer = Trainer(model, data, cfg.train, progress=False)
    trainer.fit()
    trainer.restore_best()
    model.eval()
    return Context(model, trainer.graph, data, cfg, progress=False), _request(trainer.graph)


@pytest.fixture(scope="module")
def contexts():
    """``contexts(backbone)``: :func:`make_context`, trained on first use and kept for the module."""
    made: dict[str, tuple[Context, np.ndarray]] = {}

    def get(backbone: str) -> tuple[Context, np.ndarray]:
        if backbone not in made:
            made[backbone] = make_context(backbone)
        return made[backbone]

    return get


def _request(graph: Graph) -> np.ndarray:
    """Half the edges (seeded) of 4 users with at least 10 edges."""
    rng = np.random.default_rng(5)
    edges = graph.edges
    deg = np.bincount(edges[:, 0], minlength=graph.n_users)
    users = rng.choice(np.flatnonzero(deg >= 10), 4, replace=False)
    picked = []
    for u in users:
        own = edges[edges[:, 0] == u]
        picked.append(own[rng.choice(len(own), len(own) // 2, replace=False)])
    req = np.concatenate(picked)
    return req[np.lexsort((req[:, 1], req[:, 0]))]


def _served(model, graph: Graph, request: np.ndarray, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rank percentiles (among the items the user has no retained edge with) of the request."""
    with torch.no_grad():
        u, i = model.embeddings(graph)
    ranks, n_cand = item_ranks(u, i, request, exclude=exclude)
    return pair_scores(model, graph, request), percentile_of_rank(ranks, n_cand)


def _edge_dropped(ens: Ensemble, request: np.ndarray) -> Ensemble:
    """EdgeDrop of a prepared ensemble: its sub-models (and aggregator) as they are, serving on shards without
    the request edges."""
    out = copy.copy(ens)
    req = pair_keys(request, ens.n_items)
    out.graphs = [g.without(g.edges[np.isin(g.keys, req)]) if np.isin(g.keys, req).any() else g for g in ens.graphs]
    out.keys = np.sort(np.concatenate([g.keys for g in out.graphs]))
    out._union = None
    return out


@dataclass
class Run:
    """One method unlearning the request, with what it is compared with."""

    ctx: Context
    request: np.ndarray
    outcome: Outcome
    original: tuple  # (model, graph) served before deletion (a partition method: its ensemble)
    edgedrop: tuple  # the same parameters on the residual graph
    positives: list[np.ndarray]  # every BPR sampler's positives built while unlearning
    prepared: Ensemble | None  # a partition method's ensemble before deletion
    e0_before: torch.Tensor


def unlearn_once(ctx: Context, request: np.ndarray, name: str) -> Run:
    """Prepare ``name`` on ``ctx`` and unlearn ``request``, recording every BPR sampler built meanwhile."""
    residual = ctx.graph.without(request)
    unlearner = build_unlearner(name, SETTINGS.get(name)).prepare(ctx)
    prepared = unlearner.ensemble if isinstance(unlearner, ShardedUnlearner) else None
    if prepared is not None:  # the served system before deletion is the ensemble, not ctx.model
        original, edgedrop = (prepared, ctx.graph), (_edge_dropped(prepared, request), residual)
    else:
        original, edgedrop = (ctx.model, ctx.graph), (ctx.model, residual)
    e0_before = ctx.model.embedding.detach().clone()
    positives: list[np.ndarray] = []
    init = BPRSampler.__init__

    def spy(self, edges, *args, **kwargs):
        positives.append(np.asarray(edges).copy())
        init(self, edges, *args, **kwargs)

    BPRSampler.__init__ = spy
    try:
        outcome = unlearner.unlearn(request)
    finally:
        BPRSampler.__init__ = init
    return Run(ctx, request, outcome, original, edgedrop, positives, prepared, e0_before)


@pytest.fixture(scope="module")
def runs(contexts):
    """``runs(name, backbone)``: :func:`unlearn_once` on the backbone's context, done once per module."""
    done: dict[tuple[str, str], Run] = {}

    def get(name: str, backbone: str) -> Run:
        if (name, backbone) not in done:
            done[name, backbone] = unlearn_once(*contexts(backbone), name)
        return done[name, backbone]

    return get


@pytest.mark.parametrize("name,backbone", _cases())
def test_method_forgets_more_than_doing_nothing(runs, name: str, backbone: str) -> None:
    """The request moves away from the original's scores and down its rank; a method that changes parameters
    ranks it lower than EdgeDrop does (fails for a no-op, and for EdgeDrop where more is claimed)."""
    run = runs(name, backbone)
    ctx, request, outcome = run.ctx, run.request, run.outcome
    residual = ctx.graph.without(request)
    exclude = sp.csr_matrix(
        (np.ones(residual.n_edges), (residual.edges[:, 0], residual.edges[:, 1])),
        shape=(ctx.data.n_users, ctx.data.n_items),
    )
    s_orig, p_orig = _served(*run.original, request, exclude)
    s_ed, p_ed = _served(*run.edgedrop, request, exclude)
    s_new, p_new = _served(outcome.model, outcome.graph, request, exclude)
    summary = (
        f"{name}/{backbone}: request mean rank percentile original {p_orig.mean():.4f}, "
        f"EdgeDrop {p_ed.mean():.4f}, {name} {p_new.mean():.4f}"
    )

    assert torch.equal(ctx.model.embedding, run.e0_before), f"{name} modified the original model"
    if name in NO_PARAMETER_CHANGE and not ctx.model.uses_graph:
        # EdgeDrop on MF is the original by definition: nothing to forget with, nothing to check beyond that
        assert np.array_equal(s_new, s_orig), summary
        return
    assert np.abs(s_new - s_orig).mean() > 1e-3 * np.abs(s_orig).mean(), f"request scores unchanged; {summary}"
    assert p_new.mean() > p_orig.mean() + MIN_SHIFT, f"not ranked lower than by the original; {summary}"
    if name not in NO_PARAMETER_CHANGE:
        assert np.abs(s_new - s_ed).mean() > 1e-3 * np.abs(s_ed).mean(), f"request scores = EdgeDrop's; {summary}"
        assert p_new.mean() > p_ed.mean() + MIN_SHIFT, f"not ranked lower than by EdgeDrop; {summary}"
    assert not np.isin(outcome.graph.keys, pair_keys(request, ctx.data.n_items)).any(), (
        f"{name} serves on a graph with request edges"
    )


def test_the_exact_methods_are_known() -> None:
    assert {"retrain", "sisa", "receraser", "graph-eraser"} <= EXACT


@pytest.mark.parametrize("name,backbone", [c for c in _cases() if c.values[0] in EXACT])
def test_exact_methods_never_use_a_request_edge(runs, name: str, backbone: str) -> None:
    """While unlearning, every sampler draws its positives from request-free edges; every served sub-model was
    trained on a request-free shard (retrained now, or kept from ``prepare`` because its shard held none)."""
    run = runs(name, backbone)
    req = pair_keys(run.request, run.ctx.data.n_items)
    assert run.positives, f"{name} trained nothing while unlearning"
    for edges in run.positives:
        n = int(np.isin(pair_keys(edges, run.ctx.data.n_items), req).sum())
        assert n == 0, f"{name} sampled {n} request edge(s) as positives while unlearning"
    if run.prepared is not None:
        ens = run.outcome.model
        for k, (m, g) in enumerate(zip(ens.models, ens.graphs, strict=True)):
            assert not np.isin(g.keys, req).any(), f"{name}: shard {k} still holds request edges"
            if any(m is pm for pm in run.prepared.models):
                assert not np.isin(run.prepared.graphs[k].keys, req).any(), (
                    f"{name}: shard {k}'s sub-model was trained on request edges and kept"
                )
