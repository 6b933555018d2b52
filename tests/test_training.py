import numpy as np
import pytest
import torch

from unlearnrec import api
from unlearnrec.config import RunConfig, TrainConfig
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.graph import Graph
from unlearnrec.models import build_model
from unlearnrec.training import Trainer, masks_for


def cfg(**train):
    base = {"data.dataset": "synthetic", "model.embedding_size": 16, "train.batch_size": 1024,
            "train.learning_rate": 0.01, "train.epochs": 6, "train.patience": 50}
    base.update({f"train.{k}": v for k, v in train.items()})
    return RunConfig().with_overrides(base)


@pytest.fixture(scope="module")
def data():
    return make_synthetic()


def test_training_improves_validation_and_beats_popularity(data):
    res = api.train(cfg(epochs=15), data=data, progress=False)
    hist = [r["valid"]["recall@20"] for r in res["history"]]
    assert hist[-1] > hist[0]
    # popularity baseline on the same test split
    pop = np.bincount(data.train[:, 1], minlength=data.n_items).astype(np.float32)
    from unlearnrec.evaluation.ranking import evaluate_ranking

    m = masks_for(data)
    popres = evaluate_ranking(torch.ones(data.n_users, 1), torch.from_numpy(pop)[:, None], m["test_truth"],
                              m["test_exclude"], ks=[20])
    assert res["test"]["recall@20"] > 1.3 * popres.metrics["recall@20"]


def test_reproducible_on_cpu(data):
    a = api.train(cfg(), data=data, progress=False)
    b = api.train(cfg(), data=data, progress=False)
    torch.testing.assert_close(a["model_object"].embedding, b["model_object"].embedding)
    assert {k: v for k, v in a["test"].items() if k != "eval_seconds"} == {
        k: v for k, v in b["test"].items() if k != "eval_seconds"
    }


def test_early_stopping_uses_validation_and_restores_best(data):
    model = build_model(data.n_users, data.n_items, cfg().model)
    seen = []
    tr = Trainer(model, data, TrainConfig(epochs=40, batch_size=1024, learning_rate=0.05, patience=2),
                 callbacks=[lambda e, r, t: seen.append(r)], progress=False)
    # the test split must never be looked at during fit
    tr.test = lambda: (_ for _ in ()).throw(AssertionError("test split used during training"))
    res = tr.fit()
    assert res.stopped_early and res.epochs_run < 40
    best = max(seen, key=lambda r: r["valid"]["recall@20"])
    assert res.best_epoch == best["epoch"]
    tr.restore_best()
    assert tr.validate()["recall@20"] == pytest.approx(best["valid"]["recall@20"])


def test_callback_can_stop(data):
    model = build_model(data.n_users, data.n_items, cfg().model)
    tr = Trainer(model, data, TrainConfig(epochs=10, batch_size=1024), callbacks=[lambda e, r, t: e >= 2],
                 progress=False)
    assert tr.fit().epochs_run == 2


def test_resume_continues_exactly(data, tmp_path):
    full = api.train(cfg(epochs=6), tmp_path / "full", data=data, progress=False)
    api.train(cfg(epochs=3), tmp_path / "part", data=data, progress=False)
    resumed = api.train(cfg(epochs=6), tmp_path / "part", data=data, progress=False, resume=True)
    assert resumed["training"]["epochs_run"] == 6
    torch.testing.assert_close(full["model_object"].embedding, resumed["model_object"].embedding)


def test_training_on_a_residual_graph_masks_its_edges(data):
    removed = data.train[:50]
    g = Graph(data.train, data.n_users, data.n_items).without(removed)
    m = masks_for(data, g.edges)
    assert m["valid_exclude"][removed[:, 0], removed[:, 1]].sum() == 0
    assert m["test_exclude"].nnz == g.n_edges + len(data.valid)


def test_cuda_request_without_gpu_is_a_clear_error(data):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        api.train(cfg(device="cuda"), data=data, progress=False)


def test_rank_shares_cover_every_triple_of_a_batch_once():
    from unlearnrec.training import share

    for n in (0, 1, 2, 7, 8192, 8193):
        for world in (1, 2, 3):
            parts = [np.arange(n)[share(n, r, world)] for r in range(world)]
            np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_trainer_is_data_parallel_only_when_asked(data):
    from unlearnrec.distributed import SINGLE, DistContext
    from unlearnrec.training import data_parallel

    model = build_model(data.n_users, data.n_items, cfg().model)
    assert Trainer(model, data, cfg().train, progress=False).dist is SINGLE  # partition shards on ranks stay single
    group = DistContext(rank=1, world_size=2, backend="gloo", device=torch.device("cpu"))
    with data_parallel(group):
        tr = Trainer(model, data, cfg().train, progress=True)
    assert tr.dist is group and not tr.progress  # only rank 0 shows a bar
    assert Trainer(model, data, cfg().train, progress=False).dist is SINGLE
