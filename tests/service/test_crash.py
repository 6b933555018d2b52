"""Kill -9 at each named crash point of the real server, restart, drain: every acknowledged deletion is applied
exactly once, the served version is the ledger's, and no orphan version folder is left. On the SQLite ledger and
on PostgreSQL (``serve --db postgresql://...``, a fresh database per test: the parity tests, T16).

``UNLEARNREC_PLANT_BUG=ack-before-commit pytest tests/service/test_crash.py`` plants the bug these tests exist
to catch (the receipt sent before the commit); the intake crash test then fails.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

pytest.importorskip("fastapi", reason="the service extra (fastapi, uvicorn) is not installed")

from tests.service.test_server import DEL, READ, TOKENS, Server  # noqa: E402
from unlearnrec.service.auth import token_digest  # noqa: E402
from unlearnrec.service.crash import POINTS  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from unlearnrec import api
    from unlearnrec.config import RunConfig

    root = tmp_path_factory.mktemp("crash-model")
    api.train(RunConfig().with_overrides({"train.epochs": 2, "model.embedding_size": 8}), root / "model",
              progress=False)
    return root / "model"


def _server(tmp_path, model, crash: str | None) -> Server:
    (tmp_path / "tokens.json").write_text(json.dumps({n: {"sha256": token_digest(t), "scopes": s}
                                                      for n, (t, s) in TOKENS.items()}))
    server = Server(tmp_path, model)
    env = {k: v for k, v in os.environ.items() if k != "UNLEARNREC_CRASH_AT"}
    if crash:
        env["UNLEARNREC_CRASH_AT"] = crash
    server.env = env
    return server


def _post(server, user: str, key: str):
    try:
        return server.call("POST", "/v1/deletions", {"user": user}, token=DEL, headers={"Idempotency-Key": key})
    except OSError:  # the server died before answering: no acknowledgement
        return None


def _drain(server, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        counts = server.call("GET", "/v1/versions", token=READ)[1]["requests"]
        if not set(counts) - {"verified", "completed", "rejected"}:
            return counts
        time.sleep(0.2)
    raise AssertionError(f"not drained: {counts}")


#: every crash point on both ledgers (the PostgreSQL half adds about 50 s on a busy 2-core machine)
CASES = [pytest.param(b, p, id=f"{b}-{p}") for b in ("sqlite", "postgres") for p in POINTS]


def _ledger_db(tmp_path, url: str | None):
    """A plain connection to the ledger the server used (``execute(sql)`` -> a cursor on either backend)."""
    if url is None:
        return sqlite3.connect(str(tmp_path / "store" / "ledger.sqlite"))
    import psycopg

    return psycopg.connect(url, autocommit=True)


@pytest.mark.parametrize(("backend", "point"), CASES)
def test_kill_at_each_crash_point_then_restart_and_drain(request, tmp_path, model, backend, point):
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    extra = ("--db", url) if url else ()
    server = _server(tmp_path, model, point)
    request.addfinalizer(server.kill)  # a failing assertion leaves no server behind
    server.start(*extra)
    acked = {}
    for user, key in (("3", "k3"), ("4", "k4")):
        r = _post(server, user, key)
        if r is not None and r[0] == 202:
            acked[key] = r[1]["id"]
        if server.proc.poll() is not None:
            break
    deadline = time.time() + 30  # the applier's crash points fire in the background
    while server.proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert server.proc.poll() is not None, f"the server did not reach crash point {point}"
    server.env.pop("UNLEARNREC_CRASH_AT")
    server.start(*extra)
    for user, key in (("3", "k3"), ("4", "k4")):  # clients retry what they were not told was done
        r = _post(server, user, key)
        assert r is not None and r[0] == 202, r
        assert acked.setdefault(key, r[1]["id"]) == r[1]["id"]  # an acknowledged request kept its receipt
    _drain(server)
    for pid in acked.values():
        st = server.call("GET", f"/v1/deletions/{pid}", token=DEL)[1]
        assert st["status"] == "verified" and st["applied_version"], st
    server.kill()
    db = _ledger_db(tmp_path, url)
    assert url is None or not (tmp_path / "store" / "ledger.sqlite").exists()  # the ledger was PostgreSQL's
    assert db.execute("SELECT COUNT(*) FROM requests WHERE status = 'verified'").fetchone()[0] == 2  # exactly once
    paths = {os.path.basename(p) for (p,) in db.execute("SELECT path FROM model_versions WHERE kind != 'train'")}
    on_disk = {p.name for p in (tmp_path / "store").iterdir() if p.is_dir()}
    assert on_disk == paths  # no orphan version folder, no missing one
    current = int(db.execute("SELECT v FROM service_state WHERE k = 'current_version'").fetchone()[0])
    live = db.execute("SELECT id FROM model_versions WHERE status = 'live'").fetchall()
    assert live == [(current,)]
    # each request is in exactly one version's batch
    from unlearnrec.checkpoint import load_checkpoint

    batches = [load_checkpoint(tmp_path / "store" / p).meta["requests"] for p in sorted(paths)]
    ids = [r for b in batches for r in b]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 2
    db.close()
