"""The utility guard (T13): a batch concentrated on popular items, whose approximate unlearning would cost the
other users canary utility, goes to the exact retrain instead of being applied; benign batches pass."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extra (fastapi, uvicorn) is not installed")

from tests.service.test_settle import ADMIN_T, KEY  # noqa: E402
from unlearnrec.service.bodies import DeletionBody, Pair  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from unlearnrec import api
    from unlearnrec.config import RunConfig

    root = tmp_path_factory.mktemp("guard-model")
    api.train(RunConfig().with_overrides({"train.epochs": 10, "model.embedding_size": 16}), root / "model",
              progress=False)
    return root / "model"


def test_a_popular_item_flood_goes_exact_and_a_benign_request_passes(tmp_path, model):
    from unlearnrec.service.core import DeletionService

    svc = DeletionService(model, tmp_path / "store", audit_key=KEY, tokens=[ADMIN_T], settle={"epochs": 1})
    threshold = svc.guard.calibrate(svc)
    assert threshold >= svc.guard.floor and len(svc.guard.benign) == svc.guard.n
    svc.settler.trigger = lambda: True  # the settlement itself is tested elsewhere
    g, d = svc.graph, svc.data
    u, i = g.edges[0]
    code, benign = svc.submit(ADMIN_T, "b", DeletionBody(interactions=[Pair(user=d.user_ids[u], item=d.item_ids[i])]))
    assert code == 202 and svc.apply_pending() == 1
    st = svc.ledger.status(benign["id"])
    assert st["status"] == "verified"
    v = svc.handle.version
    metrics = svc.ledger.versions()[-1]["metrics_json"]
    assert '"canary_recall"' in metrics and '"mi_ng"' in metrics  # forgetting measured per version
    popular = np.argsort(-np.bincount(g.edges[:, 1], minlength=g.n_items))[:8]
    ids = []
    for j, item in enumerate(popular):
        code, out = svc.submit(ADMIN_T, f"p{j}", DeletionBody(item=d.item_ids[item]))
        assert code == 202
        ids.append(out["id"])
    assert svc.apply_pending() == len(ids)
    assert {svc.ledger.status(p)["status"] for p in ids} == {"exact"}  # routed to the exact path, not refused
    assert svc.handle.version == v  # the served version did not change
    assert any(e["event"] == "routed-exact" for e in svc.ledger.audit_events())
    assert not list((tmp_path / "store").glob(f"v{v + 1}"))  # the candidate's files are gone
    rec = svc.recommend(d.user_ids[g.edges[g.edges[:, 1] == popular[0]][0, 0]], 50)
    assert d.item_ids[popular[0]] not in rec["items"] or rec["personalised"]  # still served, still hidden
    svc.settler.settle()
    assert {svc.ledger.status(p)["status"] for p in ids} == {"completed"}
    svc.ledger.close()
