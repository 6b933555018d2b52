"""The deletion ledger on a real SQLite file and on a real PostgreSQL (the parity tests, T16): durability
settings, idempotent intake, leases, one-transaction version switches, a tamper-evident audit chain, and no
raw identifier left after completion; on PostgreSQL also concurrent claimers, concurrent twins and the single
applier across connections."""

from __future__ import annotations

import sqlite3
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from unlearnrec.service.ledger import IdempotencyConflict, Ledger, LedgerError

KEY = b"0123456789abcdef-test-key"
EDGES = np.array([[3, 7], [3, 9], [3, 7]])


@pytest.fixture(params=["sqlite", "postgres"])
def where(request, tmp_path):
    """Where the ledger lives: a SQLite file, or a fresh PostgreSQL database (its URL)."""
    if request.param == "sqlite":
        return tmp_path / "ledger.sqlite"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def ledger(where):
    led = Ledger(where, KEY, "k-test")
    yield led
    led.close()


class _Other:
    """Another connection to the ledger's database (what a second process would see)."""

    def __init__(self, where):
        if isinstance(where, Path):
            self.conn = sqlite3.connect(str(where))
        else:
            import psycopg

            self.conn = psycopg.connect(where, autocommit=True)

    def execute(self, sql: str):
        return self.conn.execute(sql)


@pytest.fixture
def other(where):
    o = _Other(where)
    yield o
    o.conn.close()


def test_durability_settings_are_in_force(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite", KEY, "k-test")
    assert ledger.settings == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "secure_delete": 1}
    assert ledger.acquire_applier_lock()  # the file is the process's
    ledger.close()
    with pytest.raises(LedgerError, match="at least 16 bytes"):
        Ledger(tmp_path / "x.sqlite", b"short")


def test_pg_durability_settings_are_in_force_and_a_lax_server_is_refused(pg_url):
    import psycopg

    ledger = Ledger(pg_url, KEY, "k-test")
    assert ledger.settings == {"synchronous_commit": "on", "fsync": "on", "full_page_writes": "on"}
    ledger.close()
    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    with pytest.raises(LedgerError, match="synchronous_commit = off"):
        Ledger(pg_url, KEY, "k-test")


def test_pg_url_password_is_never_shown(pg_url):
    with_password = pg_url.replace("postgres@", "postgres:hunter2-secret@", 1)
    ledger = Ledger(with_password, KEY, "k-test")  # the throwaway cluster trusts loopback: the password is unused
    assert "hunter2" not in str(ledger.path) and str(ledger.path).startswith("postgresql://postgres@")
    ledger.close()
    refused = "postgresql://postgres:hunter2-secret@127.0.0.1:1/x"  # nothing listens on port 1
    with pytest.raises(LedgerError, match="cannot open") as err:
        Ledger(refused, KEY, "k-test")
    assert "hunter2" not in str(err.value)


def test_a_receipt_means_a_committed_row_and_keys_are_idempotent(ledger, other):
    r = ledger.submit("tok-a", "key-1", "interactions", "user-SECRET-42", EDGES, {"pairs": [[3, 7], [3, 9]]})
    assert (r.status, r.replayed) == ("hidden", False)
    # another connection sees it: it is committed
    assert other.execute("SELECT n_edges, status FROM requests").fetchall() == [(2, "hidden")]
    again = ledger.submit("tok-a", "key-1", "interactions", "user-SECRET-42", EDGES, {"pairs": [[3, 7], [3, 9]]})
    assert again.public_id == r.public_id and again.replayed
    with pytest.raises(IdempotencyConflict, match="key-1"):
        ledger.submit("tok-a", "key-1", "interactions", "user-SECRET-42", EDGES[:1], {"pairs": [[3, 7]]})
    ledger.submit("tok-b", "key-1", "user", "user-SECRET-42", EDGES, {"user": "x"})  # keys are per credential
    assert other.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 2
    assert sorted(map(tuple, ledger.hidden_edges().tolist())) == [(3, 7), (3, 7), (3, 9), (3, 9)]
    with pytest.raises(LedgerError, match="at least one"):
        ledger.submit("tok-a", "key-2", "user", "u", np.zeros((0, 2)), {})
    assert other.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 2  # nothing half-written


def test_claims_hold_a_lease_and_come_back_when_it_runs_out(ledger):
    ids = [ledger.submit("t", f"k{j}", "user", f"u{j}", [[j, 1]], {"j": j}).public_id for j in range(3)]
    first = ledger.claim("applier-1", batch=2, lease_s=60)
    assert [len(e) for _, e in first] == [1, 1] and ledger.claim("applier-2", batch=5, lease_s=0.0)
    assert ledger.claim("applier-3") == []  # everything is leased
    assert ledger.requeue_expired() == 1  # applier-2's zero lease ran out
    assert ledger.status(ids[2])["status"] == "hidden" and ledger.status(ids[2])["attempts"] == 1
    assert ledger.status(ids[0])["status"] == "applying"


def test_a_version_switch_and_the_requests_it_applies_are_one_transaction(ledger):
    pid = ledger.submit("t", "k", "user", "u1", [[1, 2]], {}).public_id
    (rid, _), = ledger.claim("a")
    with pytest.raises(LedgerError, match="not being applied"):  # a request it never claimed: nothing switches
        ledger.add_version(kind="unlearn", path="v1", file_sha256="f", residual_sha256="r", algo="unlearnrec",
                           config_sha256="c", request_ids=[rid, rid + 99])
    assert ledger.current_version() is None and ledger.status(pid)["status"] == "applying"
    v = ledger.add_version(kind="unlearn", path="v1", file_sha256="f", residual_sha256="r", algo="unlearnrec",
                           config_sha256="c", request_ids=[rid])
    assert ledger.current_version() == v and ledger.status(pid)["applied_version"] == v
    ledger.mark_verified([rid], {"rank_pct": 0.5})
    assert ledger.status(pid)["status"] == "verified"
    late = ledger.submit("t", "k2", "user", "u2", [[4, 5]], {"u": 2}).public_id  # arrives during the retrain
    high = ledger.high_water() - 1
    with pytest.raises(LedgerError, match="not open"):  # settling a request twice switches nothing
        ledger.settle(path="v2", file_sha256="g", residual_sha256="r2", config_sha256="c", high_water=high,
                      covered=[rid, 12345], reapplied=[], parent_id=v, metrics={})
    assert ledger.current_version() == v and ledger.hidden_edges().shape == (2, 2)
    assert ledger.open_requests(max_id=high) == [rid]
    v2 = ledger.settle(path="v2", file_sha256="g", residual_sha256="r2", config_sha256="c", high_water=high,
                       covered=ledger.open_requests(max_id=high), reapplied=[], parent_id=v, metrics={})
    assert ledger.status(pid)["status"] == "completed" and ledger.hidden_edges().tolist() == [[4, 5]]
    assert ledger.status(late)["status"] == "hidden" and ledger.current_version() == v2
    states = dict(ledger.db.execute("SELECT id, status FROM model_versions").fetchall())
    assert states == {v: "retired", v2: "live"} and ledger.stale_versions() == [(v, "v1")]


def test_held_out_interactions_are_recorded_apart_and_a_request_of_only_those_is_accepted(ledger):
    pid = ledger.submit("t", "k", "interactions", "2 pairs", np.zeros((0, 2)), {"p": 1},
                        heldout={"valid": [[1, 2]], "test": [[1, 3]]}).public_id
    assert ledger.status(pid)["n_edges"] == 0 and ledger.status(pid)["n_heldout"] == 2
    assert ledger.hidden_edges().shape == (0, 2) and ledger.hidden_edges(split="test").tolist() == [[1, 3]]
    v = ledger.add_version(kind="train", path="v1", file_sha256="f", residual_sha256="r", algo="train",
                           config_sha256="c")
    (rid, edges), = ledger.claim("a")
    assert edges.shape == (0, 2)
    ledger.mark_applied([rid], v)
    assert ledger.status(pid)["status"] == "applied"


def test_the_audit_chain_detects_edits_and_removals(ledger):
    ledger.submit("t", "k", "user", "u1", [[1, 2]], {})
    ledger.reject("t", "user", "nobody", "names nothing we hold")
    assert ledger.verify_audit() == (True, "")
    ledger.db.execute("UPDATE audit_events SET detail_json = '{}' WHERE seq = 1")
    ok, why = ledger.verify_audit()
    assert not ok and "event 1" in why
    ledger.db.execute("DELETE FROM audit_events WHERE seq = 1")
    assert not ledger.verify_audit()[0]


def test_no_raw_identifier_survives_completion(tmp_path):
    """The raw subject is never stored; the request's edges leave the file's bytes once completed."""
    ledger = Ledger(tmp_path / "ledger.sqlite", KEY, "k-test")
    secret = "user-SECRET-4242"
    ledger.submit("t", "k", "user", secret, [[77777, 88888]], {"user": "digest-only"})
    (rid, _), = ledger.claim("a")
    v = ledger.add_version(kind="unlearn", path="v1", file_sha256="f", residual_sha256="r", algo="x",
                           config_sha256="c", request_ids=[rid])
    ledger.settle(path="v2", file_sha256="g", residual_sha256="r2", config_sha256="c", high_water=rid,
                  covered=[rid], reapplied=[], parent_id=v, metrics={})
    ledger.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.sqlite*"))
    assert secret.encode() not in blob
    db = sqlite3.connect(str(tmp_path / "ledger.sqlite"))
    assert db.execute("SELECT COUNT(*) FROM request_edges").fetchone()[0] == 0
    assert db.execute("SELECT subject_digest FROM requests").fetchone()[0] != secret


def test_pg_no_raw_identifier_survives_completion_in_the_table_files(pg_server, pg_url):
    """PostgreSQL's counterpart: the subject is never stored, and after the purge (``VACUUM FULL``) the
    request's edges are gone from the database's files; the WAL still holds them (documented, and shown)."""
    import psycopg

    if pg_server.datadir is None:
        pytest.skip("the PostgreSQL of $UNLEARNREC_PG_URL: its files are not ours to read")
    secret = "user-SECRET-4242"
    edge_bytes = struct.pack("<qq", 77777, 88888)  # user_idx, item_idx: adjacent BIGINTs in heap and index tuples
    with psycopg.connect(pg_url, autocommit=True) as conn:
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]

        def files(sub: str) -> bytes:
            conn.execute("CHECKPOINT")  # dirty pages to the files
            return b"".join(f.read_bytes() for f in (pg_server.datadir / sub).rglob("*") if f.is_file())

        ledger = Ledger(pg_url, KEY, "k-test")
        ledger.submit("t", "k", "user", secret, [[77777, 88888]], {"user": "digest-only"})
        assert edge_bytes in files(f"base/{oid}")  # not vacuous: an open request's edges are found in the files
        (rid, _), = ledger.claim("a")
        v = ledger.add_version(kind="unlearn", path="v1", file_sha256="f", residual_sha256="r", algo="x",
                               config_sha256="c", request_ids=[rid])
        ledger.settle(path="v2", file_sha256="g", residual_sha256="r2", config_sha256="c", high_water=rid,
                      covered=[rid], reapplied=[], parent_id=v, metrics={})
        assert ledger.purge_files()  # settle ran it; again is harmless
        assert ledger.db.execute("SELECT COUNT(*) FROM request_edges").fetchone()[0] == 0
        ledger.close()
        table = files(f"base/{oid}")
        assert secret.encode() not in table and edge_bytes not in table
        assert secret.encode() not in files("pg_wal")  # never written at all
        assert edge_bytes in files("pg_wal")  # what VACUUM cannot reach: the WAL, until its segments recycle


def test_threads_sharing_one_ledger_take_turns(ledger):
    """The service's HTTP threads and its applier share one ledger: transactions never interleave."""
    errors: list[BaseException] = []

    def submit(t: int):
        try:
            for j in range(15):
                ledger.submit(f"t{t}", f"k{j}", "user", f"u{t}-{j}", [[t, j]], {"j": j})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    claimed: list[int] = []

    def claim():
        try:
            for _ in range(30):
                claimed.extend(rid for rid, _ in ledger.claim("a", batch=3))
                ledger.requeue_expired()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(3)] + [threading.Thread(target=claim)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    assert sum(ledger.counts().values()) == 45 and len(claimed) == len(set(claimed))
    assert ledger.verify_audit() == (True, "") and ledger.audit_count() == 45


def test_pg_two_ledgers_claiming_at_once_never_take_the_same_request(pg_url):
    ledgers = [Ledger(pg_url, KEY, "k-test") for _ in range(2)]
    for j in range(60):
        ledgers[0].submit("t", f"k{j}", "user", f"u{j}", [[j, 1]], {"j": j})
    got: dict[int, list[int]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def run(n: int):
        start.wait()
        while batch := ledgers[n].claim(f"applier-{n}", batch=4):
            got[n].extend(rid for rid, _ in batch)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not set(got[0]) & set(got[1]) and len(got[0]) + len(got[1]) == 60
    owners = dict(ledgers[0].db.execute("SELECT lease_owner, COUNT(*) FROM requests GROUP BY lease_owner").fetchall())
    assert owners == {k: v for k, v in {"applier-0": len(got[0]), "applier-1": len(got[1])}.items() if v}
    for led in ledgers:
        led.close()


def test_pg_a_claim_skips_rows_another_session_has_locked(pg_url):
    import psycopg

    ledger = Ledger(pg_url, KEY, "k-test")
    for j in range(3):
        ledger.submit("t", f"k{j}", "user", f"u{j}", [[j, 1]], {"j": j})
    with psycopg.connect(pg_url) as holder:  # a transaction holding request 1's row lock
        holder.execute("SELECT id FROM requests WHERE id = 1 FOR UPDATE")
        assert [rid for rid, _ in ledger.claim("a", batch=10)] == [2, 3]  # at once, without request 1
        holder.rollback()
    assert [rid for rid, _ in ledger.claim("a", batch=10)] == [1]
    ledger.close()


def test_pg_twenty_concurrent_submissions_with_one_key_make_one_row(pg_url):
    ledgers = [Ledger(pg_url, KEY, "k-test") for _ in range(20)]
    start = threading.Barrier(20)
    receipts, errors = [], []

    def run(n: int):
        start.wait()
        try:
            receipts.append(ledgers[n].submit("tok", "same-key", "user", "u1", [[1, 2]], {"user": "u1"}))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    assert len({r.public_id for r in receipts}) == 1 and sorted(r.replayed for r in receipts) == [False] + [True] * 19
    assert ledgers[0].db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 1
    assert ledgers[0].db.execute("SELECT COUNT(*) FROM request_edges").fetchone()[0] == 1
    assert ledgers[0].audit_count() == 1 and ledgers[0].verify_audit() == (True, "")
    for led in ledgers:
        led.close()


def test_pg_only_one_ledger_holds_the_applier_lock(pg_url):
    first, second = Ledger(pg_url, KEY, "k-test"), Ledger(pg_url, KEY, "k-test")
    assert first.acquire_applier_lock() and not second.acquire_applier_lock()
    assert first.acquire_applier_lock()  # the holder may ask again
    first.close()  # the process ends: its session's lock goes with it
    assert second.acquire_applier_lock(wait_s=10)
    second.close()


def test_a_ledger_of_another_schema_is_refused_in_one_line(tmp_path):
    led = Ledger(tmp_path / "old.sqlite", KEY)
    led.db.execute("UPDATE service_state SET v = '1' WHERE k = 'schema_version'")
    led.close()
    with pytest.raises(LedgerError, match="ledger schema 1, this unlearnrec needs"):
        Ledger(tmp_path / "old.sqlite", KEY)
