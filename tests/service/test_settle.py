"""Settlement: the exact retrain completes requests (all three splits), catches up on the ones that arrived
meanwhile, purges raw edges and tombstones erased users; the deadline monitor alerts and forces it (fake clock);
a kill mid-retrain or mid-purge loses nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extra (fastapi, uvicorn) is not installed")

from unlearnrec.service import ledger as ledger_mod  # noqa: E402
from unlearnrec.service.auth import Token, token_digest  # noqa: E402
from unlearnrec.service.bodies import DeletionBody, Pair  # noqa: E402
from unlearnrec.service.crash import SETTLE_POINTS  # noqa: E402

KEY = b"settle-test-key-0123456789"
ADMIN_T = Token("admin", token_digest("a"), frozenset({"deleter", "reader", "admin"}))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny model whose raw user ids are distinctive strings (so a byte scan for them means something)."""
    from unlearnrec import api
    from unlearnrec.config import RunConfig

    cfg = RunConfig().with_overrides({"train.epochs": 2, "model.embedding_size": 8})
    data = api.load_data(cfg)
    data = dataclasses.replace(data, user_ids=np.array([f"person-{u:04d}-zq" for u in range(data.n_users)]))
    root = tmp_path_factory.mktemp("settle-model")
    api.train(cfg, root / "model", data=data, progress=False)
    return root / "model"


def _service(tmp_path, model, **settle):
    from unlearnrec.service.core import DeletionService

    return DeletionService(model, tmp_path / "store", audit_key=KEY, tokens=[ADMIN_T],
                           settle={"epochs": 1, "retention_s": 0.0, **settle})


def _user_with_heldout(svc) -> int:
    """A user with training, validation and test interactions."""
    d = svc.data
    both = set(d.valid[:, 0].tolist()) & set(d.test[:, 0].tolist())
    return int(min(both))


def test_settlement_completes_purges_tombstones_and_catches_up(tmp_path, model, monkeypatch):
    from unlearnrec import api

    svc = _service(tmp_path, model)
    u = _user_with_heldout(svc)
    raw = str(svc.data.user_ids[u])
    n_valid, n_test = int((svc.data.valid[:, 0] == u).sum()), int((svc.data.test[:, 0] == u).sum())
    code, out = svc.submit(ADMIN_T, "k-user", DeletionBody(user=raw))
    assert code == 202 and out["n_heldout"] == {"valid": n_valid, "test": n_test}  # removed there too, reported
    assert svc.apply_pending() == 1
    # an interaction held only in the test split is a deletion, not a refusal
    v, t = svc.data.test[svc.data.test[:, 0] != u][0]
    code, only_test = svc.submit(ADMIN_T, "k-test", DeletionBody(interactions=[
        Pair(user=str(svc.data.user_ids[v]), item=str(svc.data.item_ids[t]))]))
    assert code == 202 and only_test["n_edges"] == 0 and only_test["n_heldout"]["test"] == 1
    while svc.apply_pending():
        pass
    assert svc.ledger.status(only_test["id"])["status"] == "applied"  # nothing to unlearn from the weights
    w = int(svc.graph.edges[svc.graph.edges[:, 0] != u][0, 0])
    late_pair = svc.graph.edges[svc.graph.edges[:, 0] == w][0]
    real_train = api.train

    def train_then_a_request_arrives(*a, **k):  # T11: a request comes in and is applied while the retrain runs
        out = real_train(*a, **k)
        code, late = svc.submit(ADMIN_T, "k-late", DeletionBody(interactions=[Pair(
            user=str(svc.data.user_ids[late_pair[0]]), item=str(svc.data.item_ids[late_pair[1]]))]))
        assert code == 202 and svc.apply_pending() == 1
        train_then_a_request_arrives.late = late["id"]
        return out

    monkeypatch.setattr(api, "train", train_then_a_request_arrives)
    summary = svc.settler.settle()
    late = train_then_a_request_arrives.late
    assert summary["completed"] == 2 and summary["reapplied"] == 1
    assert svc.ledger.status(out["id"])["status"] == "completed"
    assert svc.ledger.status(late)["status"] == "verified"  # above the high-water mark: applied on top
    assert svc.ledger.status(late)["applied_version"] == summary["version"]
    # the served version: trained without the user (all splits), the late edge unlearned on top
    assert not (svc.graph.edges[:, 0] == u).any() and not svc.graph.contains(late_pair[None])[0]
    assert not (svc.data.valid[:, 0] == u).any() and not (svc.data.test[:, 0] == u).any()
    assert raw not in svc.data.user_ids.tolist()  # the raw id left the data: a keyed tombstone stands there
    rec = svc.recommend(raw, 5)
    assert rec["model_version"] == summary["version"] and not rec["personalised"]
    versions = svc.ledger.versions()
    assert versions[-1]["kind"] == "retrain" and versions[-1]["status"] == "live"
    assert all(v["status"] == "purged" for v in versions if v["kind"] == "unlearn")  # retention 0: files gone
    assert not [p for p in (tmp_path / "store").iterdir() if p.is_dir() and p.name != f"v{summary['version']}"]
    assert svc.ledger.request_edges([svc.ledger._id(out["id"])]).shape == (0, 2)  # raw edges purged
    assert svc.ledger.verify_audit() == (True, "")
    record = next(r for r in svc.ledger.records() if r["public_id"] == out["id"])
    assert record["response"] == "erased" and "exact retrain" in record["manner"] and record["response_at"]
    assert record["nature"].startswith("erasure of a whole user") and len(record["subject_digest"]) == 64
    svc.ledger.close()
    blob = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert raw.encode() not in blob  # T12: not in the ledger file's bytes, nor in any model version's files

    # a restart serves the settled version with its residual data
    again = _service(tmp_path, model)
    assert again.handle.version == summary["version"] and raw not in again.data.user_ids.tolist()
    assert not again.recommend(raw, 5)["personalised"]
    again.ledger.close()


def test_the_deadline_monitor_alerts_and_forces_a_settlement(tmp_path, model, monkeypatch):
    """T17 with a fake clock: a 100 s deadline with a 20 s alert margin."""
    clock = [1_000_000.0]
    monkeypatch.setattr(ledger_mod, "CLOCK", lambda: clock[0])
    with pytest.raises(ValueError, match="cannot complete requests before the deadline"):
        _service(tmp_path / "bad", model, deadline_s=100.0, alert_margin_s=20.0, every_s=90.0)
    svc = _service(tmp_path, model, deadline_s=100.0, alert_margin_s=20.0)
    started = []
    monkeypatch.setattr(svc.settler, "trigger", lambda: started.append(clock[0]) or True)
    code, out = svc.submit(ADMIN_T, "k", DeletionBody(user=str(svc.data.user_ids[3])))
    assert code == 202
    clock[0] += 50
    assert svc.settler.tick() == [] and not started  # 50 s left: no alert
    clock[0] += 31
    alerts = svc.settler.tick()
    assert len(alerts) == 1 and out["id"] in alerts[0] and started == [clock[0]]  # alert and a forced settlement
    assert any(e["event"] == "deadline-alert" for e in svc.ledger.audit_events())
    assert svc.settler.tick() == []  # one alert per request
    svc.settler.settle()
    assert svc.ledger.status(out["id"])["status"] == "completed"
    svc.settler.tick()
    assert svc.settler.alerts == {}  # completed: the alert clears
    svc.ledger.close()


# ----------------------------------------------------------------------------- kill tests with the real server
@pytest.mark.parametrize(("backend", "point"), [pytest.param(b, p, id=f"{b}-{p}") for b in ("sqlite", "postgres")
                                               for p in SETTLE_POINTS])
def test_kill_during_a_settlement_then_restart(request, tmp_path, model, backend, point):
    from tests.service.test_crash import _drain, _ledger_db
    from tests.service.test_server import DEL, TOKENS, Server

    admin = TOKENS["admin"][0]
    (tmp_path / "tokens.json").write_text(json.dumps({n: {"sha256": token_digest(t), "scopes": s}
                                                      for n, (t, s) in TOKENS.items()}))
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    extra = ("--settle-epochs", "1", "--retention-days", "0", *(("--db", url) if url else ()))
    server = Server(tmp_path, model)
    request.addfinalizer(server.kill)
    server.env = {**{k: v for k, v in os.environ.items() if k != "UNLEARNREC_CRASH_AT"},
                  "UNLEARNREC_CRASH_AT": point}
    server.start(*extra)
    raw = "person-0003-zq"
    code, out, _ = server.call("POST", "/v1/deletions", {"user": raw}, token=DEL, headers={"Idempotency-Key": "s1"})
    assert code == 202
    _drain(server)
    assert server.call("POST", "/v1/admin/retrain", token=DEL)[0] == 403
    assert server.call("POST", "/v1/admin/retrain", token=admin)[0] == 202
    deadline = time.time() + 60
    while server.proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert server.proc.poll() is not None, f"the server did not reach {point}"
    server.env.pop("UNLEARNREC_CRASH_AT")
    server.start(*extra)
    st = server.call("GET", f"/v1/deletions/{out['id']}", token=DEL)[1]
    if point == "mid-retrain":  # nothing switched: still applied approximately, the partial retrain collected
        assert st["status"] == "verified"
        assert not list((tmp_path / "store").glob(".retrain-*"))
        assert server.call("POST", "/v1/admin/retrain", token=admin)[0] == 202
        deadline = time.time() + 60
        while st["status"] != "completed" and time.time() < deadline:
            time.sleep(0.3)
            st = server.call("GET", f"/v1/deletions/{out['id']}", token=DEL)[1]
    assert st["status"] == "completed", st  # exactly once: one completed request, its raw edges purged
    audit = server.call("GET", "/v1/audit", token=admin)[1]
    assert audit["audit_chain_ok"] and audit["requests"] == {"completed": 1}
    code, export, _ = server.call("GET", "/v1/audit/export", token=admin)
    assert code == 200 and export["audit_chain_ok"] and export["records"][0]["response"] == "erased"
    assert raw not in json.dumps(export)  # T12: the audit export names no raw identifier
    server.kill()
    db = _ledger_db(tmp_path, url)
    assert db.execute("SELECT COUNT(*) FROM request_edges").fetchone()[0] == 0
    if url is None:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    live = db.execute("SELECT kind FROM model_versions WHERE status = 'live'").fetchall()
    assert live == [("retrain",)]
    db.close()
    out_log = server.proc.stdout.read() if server.proc.stdout else b""
    blob = b"".join(p.read_bytes() for p in (tmp_path / "store").glob("ledger.sqlite*")) + out_log
    assert raw.encode() not in blob  # not in the ledger's bytes nor the server's log
