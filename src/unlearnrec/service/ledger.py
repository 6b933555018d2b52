"""The deletion ledger: every erasure request, its lifecycle, the model versions and an audit trail.

The durable core of the deletion service (``../shared/docs/deletion-service.md`` §5.2-5.4). One SQLite file in
WAL mode with ``synchronous=FULL`` (a commit is durable once it returns; asserted when the ledger opens), every
write one ``BEGIN IMMEDIATE ... COMMIT``, so that:

* a receipt exists only for a committed request (``submit`` returns after the commit);
* the applier claims requests under a lease that returns them to the queue if it dies;
* a new model version, the switch of the served version and the requests it applies are one transaction;
* raw identifiers are never stored: subjects and edges appear only as keyed HMAC-SHA256 digests (with a key
  id); the request's edges are kept as internal indices until the request is completed, then purged with
  ``secure_delete`` and a WAL checkpoint so that their bytes leave the file;
* the audit log is append-only and hash-chained (each event's hash covers the previous one), so an edit or a
  deletion of an event is detected by :meth:`Ledger.verify_audit`.

Lifecycle of a request: ``hidden`` (received and hidden from serving in the same transaction) -> ``applying``
(claimed) -> ``applied`` (in the live model version) -> ``verified`` (forgetting measured) -> ``completed``
(an exact retrain covers it, raw edges purged); or ``rejected`` with a reason (nothing stored but the audit
record), or ``failed`` after too many attempts (still hidden, left to the next retrain).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unlearnrec.service.crash import crash_point

SCHEMA = """
CREATE TABLE IF NOT EXISTS model_versions (
  id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES model_versions(id), kind TEXT NOT NULL,
  path TEXT NOT NULL, file_sha256 TEXT NOT NULL, residual_sha256 TEXT NOT NULL,
  ledger_high_water INTEGER NOT NULL, algo TEXT NOT NULL, config_sha256 TEXT NOT NULL,
  metrics_json TEXT, status TEXT NOT NULL CHECK (status IN ('candidate', 'live', 'retired', 'purged')),
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
  id INTEGER PRIMARY KEY,
  public_id TEXT NOT NULL UNIQUE,
  idempotency_key TEXT NOT NULL,
  token_id TEXT NOT NULL,
  payload_sha256 TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('user', 'item', 'interactions')),
  subject_digest TEXT NOT NULL,
  key_id TEXT NOT NULL,
  n_edges INTEGER NOT NULL,
  n_heldout INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL CHECK (status IN ('hidden', 'applying', 'applied', 'verified', 'completed', 'rejected',
                                         'failed')),
  received_at TEXT NOT NULL,
  hidden_at TEXT,
  applied_version INTEGER REFERENCES model_versions(id),
  applied_at TEXT,
  verified_at TEXT,
  completed_at TEXT,
  denial_reason TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  lease_owner TEXT,
  lease_expires_at REAL,
  UNIQUE (token_id, idempotency_key)
);
CREATE TABLE IF NOT EXISTS request_edges (
  request_id INTEGER NOT NULL REFERENCES requests(id),
  split TEXT NOT NULL CHECK (split IN ('train', 'valid', 'test')),
  user_idx INTEGER NOT NULL, item_idx INTEGER NOT NULL,
  PRIMARY KEY (request_id, split, user_idx, item_idx)
);
CREATE TABLE IF NOT EXISTS suppression (
  edge_digest TEXT PRIMARY KEY, key_id TEXT NOT NULL, request_id INTEGER NOT NULL REFERENCES requests(id)
);
CREATE TABLE IF NOT EXISTS service_state (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_events (
  seq INTEGER PRIMARY KEY, at TEXT NOT NULL, request_id INTEGER, version_id INTEGER,
  event TEXT NOT NULL, detail_json TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_status ON requests(status);
"""

#: statuses whose edges the served model must not show (read-time filter) until a version covers them
HIDDEN = ("hidden", "applying", "applied", "verified", "failed")
GENESIS = "0" * 64


class LedgerError(RuntimeError):
    """The ledger cannot be used as asked (durability settings, an unknown request, a bad transition)."""


class IdempotencyConflict(LedgerError):
    """An ``Idempotency-Key`` reused by the same credential for another payload."""


@dataclass(frozen=True)
class Receipt:
    """What a submission returns: the public id, the status, and whether it replays an earlier submission."""

    public_id: str
    status: str
    replayed: bool


#: the clock of the ledger's timestamps (a test may replace it to play out a legal deadline)
CLOCK = time.time


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(CLOCK()))


def parse_time(stamp: str) -> float:
    """Seconds since the epoch of a ledger timestamp."""
    import calendar

    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def canonical_sha256(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no spaces): the payload identity of a request."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Ledger:
    """A deletion ledger in the SQLite file ``path`` (created with its schema if absent).

    Args:
        audit_key: the secret of the keyed digests (kept outside the database; destroying it makes the digests
            unlinkable).
        key_id: the key's public name, stored beside each digest so keys can rotate.
    """

    def __init__(self, path: str | Path, audit_key: bytes, key_id: str = "k1", *, busy_timeout_ms: int = 10_000):
        if len(audit_key) < 16:
            raise LedgerError("the audit key must be at least 16 bytes")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key, self.key_id = bytes(audit_key), str(key_id)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=busy_timeout_ms / 1000,
                                  check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "secure_delete=ON",
                       f"busy_timeout={int(busy_timeout_ms)}"):
            self.db.execute(f"PRAGMA {pragma}")
        self.settings = self._check_settings()
        self.db.executescript(SCHEMA)

    def _check_settings(self) -> dict[str, Any]:
        got = {
            "journal_mode": self.db.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": self.db.execute("PRAGMA synchronous").fetchone()[0],
            "foreign_keys": self.db.execute("PRAGMA foreign_keys").fetchone()[0],
            "secure_delete": self.db.execute("PRAGMA secure_delete").fetchone()[0],
        }
        want = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "secure_delete": 1}
        bad = {k: v for k, v in got.items() if v != want[k]}
        if bad:
            raise LedgerError(f"{self.path}: durability settings not in force: {bad} (want {want}); "
                              "WAL needs a local file system")
        return got

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ helpers
    def digest(self, kind: str, value: str) -> str:
        """Keyed HMAC-SHA256 of ``kind:value`` (pseudonymous, not anonymous: the key re-identifies)."""
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def _tx(self):
        return _Transaction(self.db)

    def _audit(self, event: str, detail: dict[str, Any], request_id: int | None = None,
               version_id: int | None = None) -> None:
        """Append one event to the hash chain (inside the caller's transaction)."""
        row = self.db.execute("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        at = _now()
        body = json.dumps(detail, sort_keys=True, separators=(",", ":"))
        h = hashlib.sha256(f"{prev}|{at}|{request_id}|{version_id}|{event}|{body}".encode()).hexdigest()
        self.db.execute("INSERT INTO audit_events (at, request_id, version_id, event, detail_json, prev_hash, hash) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (at, request_id, version_id, event, body, prev, h))

    def _id(self, public_id: str) -> int:
        row = self.db.execute("SELECT id FROM requests WHERE public_id = ?", (public_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no deletion request {public_id!r}")
        return int(row[0])

    # ------------------------------------------------------------------ intake
    def submit(self, token_id: str, idempotency_key: str, kind: str, subject: str, edges: np.ndarray,
               payload: dict[str, Any], public_id: str | None = None,
               heldout: dict[str, np.ndarray] | None = None) -> Receipt:
        """Record a deletion and hide it, in one committed transaction; returns the receipt after the commit.

        ``subject`` is the raw user (item) id or a description of the interactions: only its digest is stored.
        ``edges`` are the internal ``(user, item)`` training indices to forget, ``heldout`` the request's
        interactions in the ``valid`` and ``test`` splits (removed there too; all kept until completion). The
        same credential re-sending the same ``idempotency_key`` gets the first receipt back (``replayed``); with
        another payload it gets :class:`IdempotencyConflict`.
        """
        parts = {"train": edges, **(heldout or {})}
        parts = {k: np.unique(np.asarray(v, dtype=np.int64).reshape(-1, 2), axis=0) for k, v in parts.items()}
        edges = parts["train"]
        n_heldout = sum(len(v) for k, v in parts.items() if k != "train")
        if not len(edges) and not n_heldout:
            raise LedgerError("a deletion must name at least one interaction we hold")
        psha = canonical_sha256(payload)
        with self._tx():
            earlier = self.replay(token_id, idempotency_key, payload)  # inside the lock: no twin can slip in
            if earlier is not None:
                return earlier
            public_id, now = public_id or str(uuid.uuid4()), _now()
            cur = self.db.execute(
                "INSERT INTO requests (public_id, idempotency_key, token_id, payload_sha256, kind, subject_digest, "
                "key_id, n_edges, n_heldout, status, received_at, hidden_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'hidden', ?, ?)",
                (public_id, idempotency_key, token_id, psha, kind, self.digest(kind, subject), self.key_id,
                 int(len(edges)), int(n_heldout), now, now))
            rid = int(cur.lastrowid)
            for split, pairs in parts.items():
                self.db.executemany(
                    "INSERT INTO request_edges (request_id, split, user_idx, item_idx) VALUES (?, ?, ?, ?)",
                    [(rid, split, int(u), int(i)) for u, i in pairs])
            self.db.executemany("INSERT OR IGNORE INTO suppression (edge_digest, key_id, request_id) VALUES (?, ?, ?)",
                                [(self.digest("edge", f"{u}:{i}"), self.key_id, rid)
                                 for pairs in parts.values() for u, i in pairs])
            self._audit("received", {"kind": kind, "n_edges": int(len(edges)), "n_heldout": int(n_heldout),
                                     "key_id": self.key_id}, rid)
            crash_point("intake-before-commit")
        return Receipt(public_id, "hidden", False)

    def replay(self, token_id: str, idempotency_key: str, payload: dict[str, Any]) -> Receipt | None:
        """The receipt of an earlier submission with this key (``None`` if there was none; conflict if its
        payload differs)."""
        row = self.db.execute("SELECT public_id, payload_sha256, status FROM requests WHERE token_id = ? AND "
                              "idempotency_key = ?", (token_id, idempotency_key)).fetchone()
        if row is None:
            return None
        if row[1] != canonical_sha256(payload):
            raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was used for another payload")
        return Receipt(row[0], row[2], True)

    def reject(self, token_id: str, kind: str, subject: str, reason: str) -> str:
        """Record a refused request (nothing stored but the keyed subject digest and the reason)."""
        with self._tx():
            public_id, now = str(uuid.uuid4()), _now()
            cur = self.db.execute(
                "INSERT INTO requests (public_id, idempotency_key, token_id, payload_sha256, kind, subject_digest, "
                "key_id, n_edges, status, received_at, denial_reason) VALUES (?, ?, ?, '', ?, ?, ?, 0, 'rejected', "
                "?, ?)", (public_id, f"rejected:{public_id}", token_id, kind, self.digest(kind, subject),
                          self.key_id, now, reason))
            self._audit("rejected", {"kind": kind, "reason": reason}, int(cur.lastrowid))
        return public_id

    # ------------------------------------------------------------------ reads
    def status(self, public_id: str) -> dict[str, Any]:
        """The public record of one request (no raw identifiers)."""
        cols = ("public_id", "kind", "status", "n_edges", "n_heldout", "received_at", "hidden_at", "applied_version",
                "applied_at", "verified_at", "completed_at", "denial_reason", "attempts")
        row = self.db.execute(f"SELECT {', '.join(cols)} FROM requests WHERE public_id = ?", (public_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no deletion request {public_id!r}")
        return dict(zip(cols, row, strict=True))

    def hidden_edges(self, statuses: tuple[str, ...] = HIDDEN, split: str = "train",
                     max_id: int | None = None) -> np.ndarray:
        """Every ``(user, item)`` index pair of ``split`` in requests in ``statuses`` (default: all not yet
        completed, which the served model must not show), of requests up to ``max_id`` if given."""
        rows = self.db.execute(
            f"SELECT e.user_idx, e.item_idx FROM request_edges e JOIN requests r ON r.id = e.request_id "
            f"WHERE e.split = ? AND r.status IN ({', '.join('?' * len(statuses))}) AND r.id <= ?",
            (split, *statuses, 2**62 if max_id is None else int(max_id))).fetchall()
        return np.asarray(rows, dtype=np.int64).reshape(-1, 2)

    def current_version(self) -> int | None:
        row = self.db.execute("SELECT v FROM service_state WHERE k = 'current_version'").fetchone()
        return None if row is None else int(row[0])

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall())

    def version_path(self, version_id: int) -> str:
        row = self.db.execute("SELECT path FROM model_versions WHERE id = ?", (int(version_id),)).fetchone()
        if row is None:
            raise LedgerError(f"no model version {version_id}")
        return str(row[0])

    def next_version_id(self) -> int:
        """The id the next version will get (names its folder before the row exists)."""
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM model_versions").fetchone()[0])

    def versions(self) -> list[dict[str, Any]]:
        """Every model version: lineage, kind, algorithm, status, file and residual-data hashes, metrics."""
        cols = ("id", "parent_id", "kind", "algo", "status", "path", "file_sha256", "residual_sha256",
                "ledger_high_water", "created_at", "metrics_json")
        rows = self.db.execute(f"SELECT {', '.join(cols)} FROM model_versions ORDER BY id").fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def oldest_open(self) -> str | None:
        """When the oldest request not yet completed was received (``None`` if none is open)."""
        return self.db.execute(f"SELECT MIN(received_at) FROM requests WHERE status IN "
                               f"({', '.join('?' * len(HIDDEN))})", HIDDEN).fetchone()[0]

    def open_received(self) -> list[tuple[str, str]]:
        """``(public_id, received_at)`` of every open request, oldest first (the deadline monitor's input)."""
        return [(str(a), str(b)) for a, b in self.db.execute(
            f"SELECT public_id, received_at FROM requests WHERE status IN ({', '.join('?' * len(HIDDEN))}) "
            f"ORDER BY id", HIDDEN)]

    def pending_edges(self) -> int:
        """Training interactions received but not yet in a model version (the admission limit's measure)."""
        return int(self.db.execute("SELECT COALESCE(SUM(n_edges), 0) FROM requests WHERE status IN "
                                   "('hidden', 'applying')").fetchone()[0])

    def audit_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM audit_events").fetchone()[0])

    def record(self, event: str, detail: dict[str, Any]) -> None:
        """Append a service event (an alert, a settlement start) to the audit chain."""
        with self._tx():
            self._audit(event, detail)

    # ------------------------------------------------------------------ the applier
    def claim(self, owner: str, batch: int = 64, lease_s: float = 60.0) -> list[tuple[int, np.ndarray]]:
        """Claim up to ``batch`` hidden requests (oldest first) under a lease; returns ``(id, edges)`` pairs."""
        with self._tx():
            rows = self.db.execute(
                "UPDATE requests SET status = 'applying', lease_owner = ?, lease_expires_at = ?, "
                "attempts = attempts + 1 WHERE id IN "
                "(SELECT id FROM requests WHERE status = 'hidden' ORDER BY id LIMIT ?) RETURNING id",
                (owner, time.time() + lease_s, int(batch))).fetchall()
        return [(int(rid), self._edges(rid)) for (rid,) in sorted(rows)]

    def _edges(self, request_id: int) -> np.ndarray:
        """The ``(user, item)`` index pairs of one request (until it is completed)."""
        e = self.db.execute("SELECT user_idx, item_idx FROM request_edges WHERE request_id = ? AND split = 'train'",
                            (int(request_id),)).fetchall()
        return np.asarray(e, dtype=np.int64).reshape(-1, 2)

    def requeue_expired(self, max_attempts: int = 5) -> int:
        """Return requests whose lease ran out to the queue (``failed`` past ``max_attempts``); how many."""
        with self._tx():
            now = time.time()
            failed = self.db.execute(
                "UPDATE requests SET status = 'failed', lease_owner = NULL WHERE status = 'applying' AND "
                "lease_expires_at < ? AND attempts >= ? RETURNING id", (now, int(max_attempts))).fetchall()
            back = self.db.execute(
                "UPDATE requests SET status = 'hidden', lease_owner = NULL WHERE status = 'applying' AND "
                "lease_expires_at < ? RETURNING id", (now,)).fetchall()
            for (rid,) in failed:
                self._audit("failed", {"reason": "too many attempts"}, int(rid))
        return len(back) + len(failed)

    def release_all(self, owner: str) -> int:
        """Return every request leased by ``owner`` to the queue (its process died; used at start)."""
        with self._tx():
            rows = self.db.execute("UPDATE requests SET status = 'hidden', lease_owner = NULL WHERE "
                                   "status = 'applying' AND lease_owner = ? RETURNING id", (owner,)).fetchall()
            for (rid,) in rows:
                self._audit("requeued", {"reason": "applier restarted"}, int(rid))
        return len(rows)

    def add_version(self, *, kind: str, path: str, file_sha256: str, residual_sha256: str, algo: str,
                    config_sha256: str, request_ids: list[int] = (), parent_id: int | None = None,
                    metrics: dict[str, Any] | None = None, live: bool = True) -> int:
        """Record a model version and, with ``live``, switch serving to it and mark ``request_ids`` applied:
        one transaction, so the served version and the requests it covers never disagree."""
        with self._tx():
            high = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM requests").fetchone()[0]
            cur = self.db.execute(
                "INSERT INTO model_versions (parent_id, kind, path, file_sha256, residual_sha256, ledger_high_water, "
                "algo, config_sha256, metrics_json, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (parent_id, kind, path, file_sha256, residual_sha256, int(high), algo, config_sha256,
                 json.dumps(metrics or {}, sort_keys=True), "live" if live else "candidate", _now()))
            vid = int(cur.lastrowid)
            if live:
                self.db.execute("UPDATE model_versions SET status = 'retired' WHERE status = 'live' AND id != ?",
                                (vid,))
                self.db.execute("INSERT INTO service_state (k, v) VALUES ('current_version', ?) "
                                "ON CONFLICT(k) DO UPDATE SET v = excluded.v", (str(vid),))
                ids = [int(r) for r in request_ids]
                if ids:
                    marks = ", ".join("?" * len(ids))
                    done = self.db.execute(
                        f"UPDATE requests SET status = 'applied', applied_version = ?, applied_at = ?, "
                        f"lease_owner = NULL WHERE id IN ({marks}) AND status = 'applying' RETURNING id",
                        (vid, _now(), *ids)).fetchall()
                    if len(done) != len(ids):
                        raise LedgerError(f"requests {sorted(set(ids) - {d[0] for d in done})} are not being "
                                          "applied (lease lost?); version not switched")
            self._audit("version", {"kind": kind, "algo": algo, "file_sha256": file_sha256,
                                    "residual_sha256": residual_sha256, "requests": len(request_ids),
                                    "live": bool(live)}, version_id=vid)
        return vid

    def applied_unverified(self) -> list[tuple[int, np.ndarray]]:
        """Requests in the live version whose forgetting was not yet measured (the process died in between)."""
        rows = self.db.execute("SELECT id FROM requests WHERE status = 'applied' ORDER BY id").fetchall()
        return [(int(rid), self._edges(rid)) for (rid,) in rows]

    def mark_verified(self, request_ids: list[int], metrics: dict[str, Any]) -> None:
        """Record the forgetting measured on the requests' version and mark them verified."""
        with self._tx():
            for rid in request_ids:
                self.db.execute("UPDATE requests SET status = 'verified', verified_at = ? WHERE id = ? AND "
                                "status = 'applied'", (_now(), int(rid)))
                self._audit("verified", {k: metrics[k] for k in sorted(metrics)}, int(rid))

    def mark_applied(self, request_ids: list[int], version_id: int) -> None:
        """Claimed requests with no training interaction (only held-out ones) are in ``version_id`` as it is."""
        with self._tx():
            for rid in request_ids:
                self.db.execute("UPDATE requests SET status = 'applied', applied_version = ?, applied_at = ?, "
                                "lease_owner = NULL WHERE id = ? AND status = 'applying'",
                                (int(version_id), _now(), int(rid)))
                self._audit("applied", {"version": int(version_id), "change": "none (held-out interactions only)"},
                            int(rid), int(version_id))

    # ------------------------------------------------------------------ settlement (exact retrain)
    def high_water(self) -> int:
        """The newest request id: a retrain started now covers every open request up to it."""
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM requests").fetchone()[0])

    def open_requests(self, max_id: int | None = None, statuses: tuple[str, ...] = HIDDEN) -> list[int]:
        """Ids of requests not yet completed (nor rejected), up to ``max_id`` if given."""
        rows = self.db.execute(f"SELECT id FROM requests WHERE status IN ({', '.join('?' * len(statuses))}) AND "
                               f"id <= ? ORDER BY id", (*statuses, 2**62 if max_id is None else int(max_id)))
        return [int(r) for (r,) in rows]

    def settle(self, *, path: str, file_sha256: str, residual_sha256: str, config_sha256: str, high_water: int,
               covered: list[int], reapplied: list[int], parent_id: int | None, metrics: dict[str, Any]) -> int:
        """Switch serving to an exact retrain on the data without every request up to ``high_water``, caught up
        on the ``reapplied`` ones that arrived meanwhile, in one transaction: the ``covered`` requests become
        completed and their raw edges are deleted. Then the deleted bytes leave the file (``purge_files``)."""
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO model_versions (parent_id, kind, path, file_sha256, residual_sha256, ledger_high_water, "
                "algo, config_sha256, metrics_json, status, created_at) VALUES (?, 'retrain', ?, ?, ?, ?, "
                "'retrain', ?, ?, 'live', ?)", (parent_id, path, file_sha256, residual_sha256, int(high_water),
                                                config_sha256, json.dumps(metrics, sort_keys=True), _now()))
            vid = int(cur.lastrowid)
            self.db.execute("UPDATE model_versions SET status = 'retired' WHERE status = 'live' AND id != ?", (vid,))
            self.db.execute("INSERT INTO service_state (k, v) VALUES ('current_version', ?) "
                            "ON CONFLICT(k) DO UPDATE SET v = excluded.v", (str(vid),))
            now = _now()
            for rid in covered:
                done = self.db.execute(
                    f"UPDATE requests SET status = 'completed', completed_at = ?, lease_owner = NULL, "
                    f"applied_version = COALESCE(applied_version, ?), applied_at = COALESCE(applied_at, ?) "
                    f"WHERE id = ? AND status IN ({', '.join('?' * len(HIDDEN))}) RETURNING id",
                    (now, vid, now, int(rid), *HIDDEN)).fetchall()
                if not done:
                    raise LedgerError(f"request {rid} is not open; settlement not switched")
                self.db.execute("DELETE FROM request_edges WHERE request_id = ?", (int(rid),))
                self._audit("completed", {"version": vid, "manner": "exact retrain", "raw_edges": "purged"},
                            int(rid), vid)
            for rid in reapplied:
                self.db.execute("UPDATE requests SET applied_version = ? WHERE id = ?", (vid, int(rid)))
            self._audit("version", {"kind": "retrain", "algo": "retrain", "file_sha256": file_sha256,
                                    "residual_sha256": residual_sha256, "high_water": int(high_water),
                                    "completed": len(covered), "reapplied": len(reapplied), "live": True},
                        version_id=vid)
        crash_point("mid-purge")
        self.purge_files()
        return vid

    def purge_files(self) -> None:
        """Move every committed page into the main file and truncate the WAL, so that deleted rows (zeroed by
        ``secure_delete``) leave no copy behind; also run at start, after a crash between commit and purge."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def stale_versions(self) -> list[tuple[int, str]]:
        """Retired versions (``id``, ``path``) whose files still exist in the ledger's eyes: their weights carry
        requests a newer version has forgotten, so they go once the grace period is over."""
        return [(int(v), str(p)) for v, p in self.db.execute(
            "SELECT id, path FROM model_versions WHERE status = 'retired' ORDER BY id")]

    def mark_purged(self, version_ids: list[int]) -> None:
        with self._tx():
            for vid in version_ids:
                self.db.execute("UPDATE model_versions SET status = 'purged' WHERE id = ?", (int(vid),))
                self._audit("version-files-deleted", {"reason": "retention: superseded by a verified version"},
                            version_id=int(vid))

    # ------------------------------------------------------------------ audit
    def audit_events(self) -> list[dict[str, Any]]:
        cols = ("seq", "at", "request_id", "version_id", "event", "detail_json", "prev_hash", "hash")
        return [dict(zip(cols, r, strict=True))
                for r in self.db.execute(f"SELECT {', '.join(cols)} FROM audit_events ORDER BY seq")]

    def verify_audit(self) -> tuple[bool, str]:
        """Recompute the hash chain: ``(True, "")``, or ``(False, where it breaks)``."""
        prev = GENESIS
        for e in self.audit_events():
            h = hashlib.sha256(f"{prev}|{e['at']}|{e['request_id']}|{e['version_id']}|{e['event']}|"
                               f"{e['detail_json']}".encode()).hexdigest()
            if e["prev_hash"] != prev or e["hash"] != h:
                return False, f"audit event {e['seq']} does not chain (edited, inserted or a predecessor removed)"
            prev = e["hash"]
        return True, ""


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error): the writer lock is taken up front, so a
    busy ledger waits (``busy_timeout``) instead of failing half-way."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
