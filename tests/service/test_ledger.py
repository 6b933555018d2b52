"""The deletion ledger on a real SQLite file: durability settings, idempotent intake, leases, one-transaction
version switches, a tamper-evident audit chain, and no raw identifier left after completion."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from unlearnrec.service.ledger import IdempotencyConflict, Ledger, LedgerError

KEY = b"0123456789abcdef-test-key"
EDGES = np.array([[3, 7], [3, 9], [3, 7]])


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite", KEY, "k-test")
    yield led
    led.close()


def test_durability_settings_are_in_force(ledger, tmp_path):
    assert ledger.settings == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "secure_delete": 1}
    with pytest.raises(LedgerError, match="at least 16 bytes"):
        Ledger(tmp_path / "x.sqlite", b"short")


def test_a_receipt_means_a_committed_row_and_keys_are_idempotent(ledger, tmp_path):
    r = ledger.submit("tok-a", "key-1", "interactions", "user-SECRET-42", EDGES, {"pairs": [[3, 7], [3, 9]]})
    assert (r.status, r.replayed) == ("hidden", False)
    other = sqlite3.connect(str(tmp_path / "ledger.sqlite"))  # another connection sees it: it is committed
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


def test_no_raw_identifier_survives_completion(ledger, tmp_path):
    """The raw subject is never stored; the request's edges leave the file's bytes once completed."""
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
