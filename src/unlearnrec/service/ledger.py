"""The deletion ledger: every erasure request, its lifecycle, the model versions and an audit trail.

The durable core of the deletion service (``../shared/docs/deletion-service.md`` §5.2-5.4). One SQLite file in
WAL mode with ``synchronous=FULL`` (a commit is durable once it returns; asserted when the ledger opens), every
write one ``BEGIN IMMEDIATE ... COMMIT``; or, given a ``postgresql://`` URL, one PostgreSQL database with the same
schema and statements (§2.2; see :class:`_PgDb` for what differs), so that:

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
record), or ``failed`` after too many attempts, or ``exact`` when its approximate unlearning tripped the utility
guard (both still hidden, out of the served propagation, left to the exact retrain).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
                                         'failed', 'exact')),
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

#: bumped whenever SCHEMA changes (checked at open)
SCHEMA_VERSION = 2
#: statuses whose edges the served model must not show (read-time filter) until a version covers them
HIDDEN = ("hidden", "applying", "applied", "verified", "failed", "exact")
#: statuses whose edges are not in the served weights yet (out of the served propagation until applied)
UNAPPLIED = ("hidden", "applying", "failed", "exact")
GENESIS = "0" * 64


class LedgerError(RuntimeError):
    """The ledger cannot be used as asked (durability settings, an unknown request, a bad transition)."""


class Overloaded(LedgerError):
    """The pending depth is at its bound: nothing was recorded (the caller answers 503)."""


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


def is_url(where: str | Path) -> bool:
    """Whether ``where`` names a PostgreSQL database (``postgresql://`` or ``postgres://``) rather than a file."""
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


class Ledger:
    """A deletion ledger in the SQLite file ``path`` (created with its schema if absent), or in the PostgreSQL
    database of a ``postgresql://`` (``postgres://``) URL (its tables created if absent).

    Args:
        audit_key: the secret of the keyed digests (kept outside the database; destroying it makes the digests
            unlinkable).
        key_id: the key's public name, stored beside each digest so keys can rotate.
        busy_timeout_ms: how long a write waits for another writer (SQLite ``busy_timeout``, PostgreSQL
            ``lock_timeout``) before it fails.

    Attributes:
        path: the file, or the URL without its password (safe to log).
        settings: the durability settings read back after opening (SQLite pragmas; PostgreSQL
            ``synchronous_commit``, ``fsync`` and ``full_page_writes``); the ledger refuses to open without them.
        db: the connection, as a :class:`_Db` (``execute(sql, params)`` with ``?`` placeholders on either
            backend; every call is serialised, so threads sharing one ledger never interleave in a transaction).
    """

    def __init__(self, path: str | Path, audit_key: bytes, key_id: str = "k1", *, busy_timeout_ms: int = 10_000):
        if len(audit_key) < 16:
            raise LedgerError("the audit key must be at least 16 bytes")
        self._key, self.key_id = bytes(audit_key), str(key_id)
        if is_url(path):
            self.path = redact_url(str(path))
            self.db: _Db = _PgDb(str(path), self.path, busy_timeout_ms)
        else:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = _SqliteDb(self.path, busy_timeout_ms)
        try:
            self.settings = self.db.check_settings()
            self.db.create_schema(SCHEMA)
            self._check_schema_version()
        except BaseException:
            self.db.close()
            raise

    def _check_schema_version(self) -> None:
        """``CREATE TABLE IF NOT EXISTS`` never alters a table, so a ledger written by another schema is refused
        (one line naming both versions) instead of failing later on a constraint."""
        with self._tx():
            row = self.db.execute("SELECT v FROM service_state WHERE k = 'schema_version'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO service_state (k, v) VALUES ('schema_version', ?)",
                                (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise LedgerError(f"{self.path}: ledger schema {row[0]}, this unlearnrec needs {SCHEMA_VERSION}; "
                                  "settle and archive it, then start on a new store")

    def close(self) -> None:
        self.db.close()

    def acquire_applier_lock(self, wait_s: float = 0.0) -> bool:
        """Become the one applier of this ledger: ``True`` if no other process holds the role (kept until
        :meth:`close` or the process ends), ``False`` if one does (retried for ``wait_s`` seconds, e.g. while a
        killed predecessor's session is being cleaned up). Call it before :meth:`release_all`, which returns
        every lease to the queue and is only safe with a single applier.

        PostgreSQL: a session-level ``pg_try_advisory_lock`` (several processes may share one database).
        SQLite: always ``True``; the file belongs to one process (a second service on the same file is not
        supported, and nothing here prevents it).
        """
        deadline = time.monotonic() + float(wait_s)
        while True:
            if self.db.try_applier_lock():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    # ------------------------------------------------------------------ helpers
    def digest(self, kind: str, value: str) -> str:
        """Keyed HMAC-SHA256 of ``kind:value`` (pseudonymous, not anonymous: the key re-identifies)."""
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def _tx(self):
        return self.db.begin()

    def _audit(self, event: str, detail: dict[str, Any], request_id: int | None = None,
               version_id: int | None = None) -> None:
        """Append one event to the hash chain (inside the caller's transaction)."""
        row = self.db.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (int(row[0]) + 1, row[1]) if row else (1, GENESIS)
        at = _now()
        body = json.dumps(detail, sort_keys=True, separators=(",", ":"))
        h = hashlib.sha256(f"{prev}|{at}|{request_id}|{version_id}|{event}|{body}".encode()).hexdigest()
        # seq given, not generated: no gap after a rolled-back transaction on PostgreSQL either (an auditor
        # reading a gap would suspect a removed event)
        self.db.execute("INSERT INTO audit_events (seq, at, request_id, version_id, event, detail_json, prev_hash, "
                        "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (seq, at, request_id, version_id, event, body,
                                                                  prev, h))

    def _id(self, public_id: str) -> int:
        row = self.db.execute("SELECT id FROM requests WHERE public_id = ?", (public_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no deletion request {public_id!r}")
        return int(row[0])

    # ------------------------------------------------------------------ intake
    def submit(self, token_id: str, idempotency_key: str, kind: str, subject: str, edges: np.ndarray,
               payload: dict[str, Any], public_id: str | None = None,
               heldout: dict[str, np.ndarray] | None = None, max_pending: int | None = None) -> Receipt:
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
            if max_pending is not None and self.pending_edges() >= max_pending:  # checked and admitted atomically
                raise Overloaded(f"{max_pending} or more interactions are waiting to be unlearned; retry later")
            public_id, now = public_id or str(uuid.uuid4()), _now()
            rid = int(self.db.execute(
                "INSERT INTO requests (public_id, idempotency_key, token_id, payload_sha256, kind, subject_digest, "
                "key_id, n_edges, n_heldout, status, received_at, hidden_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'hidden', ?, ?) RETURNING id",
                (public_id, idempotency_key, token_id, psha, kind, self.digest(kind, subject), self.key_id,
                 int(len(edges)), int(n_heldout), now, now)).fetchone()[0])
            for split, pairs in parts.items():
                self.db.executemany(
                    "INSERT INTO request_edges (request_id, split, user_idx, item_idx) VALUES (?, ?, ?, ?)",
                    [(rid, split, int(u), int(i)) for u, i in pairs])
            self.db.executemany("INSERT INTO suppression (edge_digest, key_id, request_id) VALUES (?, ?, ?) "
                                "ON CONFLICT DO NOTHING", [(self.digest("edge", f"{u}:{i}"), self.key_id, rid)
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
            rid = self.db.execute(
                "INSERT INTO requests (public_id, idempotency_key, token_id, payload_sha256, kind, subject_digest, "
                "key_id, n_edges, status, received_at, denial_reason) VALUES (?, ?, ?, '', ?, ?, ?, 0, 'rejected', "
                "?, ?) RETURNING id", (public_id, f"rejected:{public_id}", token_id, kind,
                                       self.digest(kind, subject), self.key_id, now, reason)).fetchone()[0]
            self._audit("rejected", {"kind": kind, "reason": reason}, int(rid))
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
        """The id the next version will get (names its folder before the row exists; versions are numbered
        densely on either backend, so a rolled-back switch leaves no gap)."""
        return int(self.db.execute(f"SELECT {_NEXT_VERSION}").fetchone()[0])

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
        """Claim up to ``batch`` hidden requests (oldest first) under a lease; returns ``(id, edges)`` pairs.
        (On PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED``: two claimers never take the same one.)"""
        with self._tx():
            rows = self.db.execute(
                "UPDATE requests SET status = 'applying', lease_owner = ?, lease_expires_at = ?, "
                "attempts = attempts + 1 WHERE id IN "
                f"(SELECT id FROM requests WHERE status = 'hidden' ORDER BY id LIMIT ?{self.db.skip_locked}) "
                "RETURNING id", (owner, time.time() + lease_s, int(batch))).fetchall()
        return [(int(rid), self._edges(rid)) for (rid,) in sorted(rows)]

    def _edges(self, request_id: int) -> np.ndarray:
        """The ``(user, item)`` index pairs of one request (until it is completed)."""
        e = self.db.execute("SELECT user_idx, item_idx FROM request_edges WHERE request_id = ? AND split = 'train'",
                            (int(request_id),)).fetchall()
        return np.asarray(e, dtype=np.int64).reshape(-1, 2)

    def route_exact(self, request_ids: list[int], reason: str) -> None:
        """Claimed requests whose approximate unlearning tripped the utility guard: they stay hidden (served
        without their edges) and wait for the exact retrain instead (status ``exact``)."""
        with self._tx():
            for rid in request_ids:
                self.db.execute("UPDATE requests SET status = 'exact', lease_owner = NULL WHERE id = ? AND "
                                "status = 'applying'", (int(rid),))
                self._audit("routed-exact", {"reason": reason}, int(rid))

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
            vid = int(self.db.execute(
                f"INSERT INTO model_versions (id, parent_id, kind, path, file_sha256, residual_sha256, "
                f"ledger_high_water, algo, config_sha256, metrics_json, status, created_at) VALUES ({_NEXT_VERSION}, "
                f"?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (parent_id, kind, path, file_sha256, residual_sha256, int(high), algo, config_sha256,
                 json.dumps(metrics or {}, sort_keys=True), "live" if live else "candidate", _now())).fetchone()[0])
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

    def mark_verified(self, request_ids: list[int], metrics: dict[str, Any], version_id: int | None = None) -> None:
        """Record the forgetting measured on the requests' version (also in the version's metrics, with
        ``version_id``) and mark them verified."""
        with self._tx():
            if version_id is not None:
                row = self.db.execute("SELECT metrics_json FROM model_versions WHERE id = ?",
                                      (int(version_id),)).fetchone()
                merged = {**json.loads(row[0] or "{}"), **metrics} if row else metrics
                self.db.execute("UPDATE model_versions SET metrics_json = ? WHERE id = ?",
                                (json.dumps(merged, sort_keys=True, default=str), int(version_id)))
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

    def erased_user_indices(self, max_id: int | None = None) -> list[int]:
        """User indices of the open whole-user erasures up to ``max_id`` (their raw ids leave the settled data)."""
        rows = self.db.execute(
            f"SELECT DISTINCT e.user_idx FROM request_edges e JOIN requests r ON r.id = e.request_id WHERE "
            f"r.kind = 'user' AND r.status IN ({', '.join('?' * len(HIDDEN))}) AND r.id <= ? ORDER BY e.user_idx",
            (*HIDDEN, 2**62 if max_id is None else int(max_id)))
        return [int(u) for (u,) in rows]

    def request_edges(self, request_ids: list[int]) -> np.ndarray:
        """The training ``(user, item)`` pairs of these requests (until they are completed)."""
        parts = [self._edges(rid) for rid in request_ids]
        return np.unique(np.concatenate(parts), axis=0) if parts else np.zeros((0, 2), dtype=np.int64)

    def settle(self, *, path: str, file_sha256: str, residual_sha256: str, config_sha256: str, high_water: int,
               covered: list[int], reapplied: list[int], parent_id: int | None, metrics: dict[str, Any]) -> int:
        """Switch serving to an exact retrain on the data without every request up to ``high_water``, caught up
        on the ``reapplied`` ones that arrived meanwhile, in one transaction: the ``covered`` requests become
        completed and their raw edges are deleted. Then the deleted bytes leave the file (``purge_files``)."""
        with self._tx():
            vid = int(self.db.execute(
                f"INSERT INTO model_versions (id, parent_id, kind, path, file_sha256, residual_sha256, "
                f"ledger_high_water, algo, config_sha256, metrics_json, status, created_at) VALUES ({_NEXT_VERSION}, "
                f"?, 'retrain', ?, ?, ?, ?, 'retrain', ?, ?, 'live', ?) RETURNING id",
                (parent_id, path, file_sha256, residual_sha256, int(high_water), config_sha256,
                 json.dumps(metrics, sort_keys=True), _now())).fetchone()[0])
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

    def purge_files(self) -> bool:
        """Make the bytes of deleted rows leave the database's files; also run at start, after a crash between
        commit and purge. ``True`` if it went through, ``False`` if a concurrent reader or writer kept it from
        finishing (run it again later).

        SQLite: move every committed page into the main file and truncate the WAL, so that deleted rows (zeroed
        by ``secure_delete``) leave no copy behind.

        PostgreSQL: ``VACUUM FULL request_edges`` (outside any transaction) rewrites the table and its index
        into new files and drops the old ones, so the deleted edges leave the table's files (a plain ``VACUUM``
        only marks their space free: the bytes stay in the heap and index pages until overwritten). It does
        *not* reach the write-ahead log: the WAL segments under ``pg_wal`` (and any WAL archive, base backup
        or replica) still hold the inserted tuples until those segments are recycled and overwritten, which
        PostgreSQL does on its own schedule (``max_wal_size``, checkpoints); nor the file system's free blocks.
        """
        return self.db.purge()

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
    def records(self) -> list[dict[str, Any]]:
        """One record per request for an auditor (GDPR Art. 5(2) accountability; the fields ICO guidance lists
        for erasure logs): when it came and what it asked (nature), how it was handled (manner), when and how
        it was answered, and the basis of a denial; the subject only as a keyed digest with its key id."""
        cols = ("public_id", "kind", "subject_digest", "key_id", "status", "n_edges", "n_heldout", "received_at",
                "hidden_at", "applied_at", "verified_at", "completed_at", "denial_reason", "applied_version")
        rows = self.db.execute(
            f"SELECT {', '.join('r.' + c for c in cols)}, v.algo, v.kind FROM requests r "
            f"LEFT JOIN model_versions v ON v.id = r.applied_version ORDER BY r.id").fetchall()
        out = []
        for row in rows:
            rec = dict(zip(cols, row[:len(cols)], strict=True))
            algo, vkind = row[len(cols):]
            if rec["status"] == "rejected":
                manner, response = "refused", f"denied: {rec['denial_reason']}"
            else:
                steps = ["hidden from serving at receipt"]
                if rec["applied_version"] is not None and vkind != "retrain":
                    steps.append(f"unlearned by {algo} in model version {rec['applied_version']}")
                if rec["completed_at"]:
                    steps.append(f"settled by an exact retrain (version {rec['applied_version']}), raw edges purged")
                manner, response = "; ".join(steps), {"completed": "erased", "rejected": "denied"}.get(
                    rec["status"], f"in progress ({rec['status']})")
            out.append({**rec, "nature": f"erasure of {'a whole ' if rec['kind'] != 'interactions' else ''}"
                        f"{rec['kind']} ({rec['n_edges']} training, {rec['n_heldout']} held-out interactions)",
                        "manner": manner, "response": response,
                        "response_at": rec["completed_at"] or (rec["received_at"] if rec["status"] == "rejected"
                                                               else None)})
        return out

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


# ---------------------------------------------------------------------- the two backends
#: the id of the next model version (given explicitly, so versions are numbered densely on both backends)
_NEXT_VERSION = "(SELECT COALESCE(MAX(id), 0) + 1 FROM model_versions)"
#: PostgreSQL advisory lock keys (per database): the one writer at a time, and the one applier
_PG_WRITER_LOCK = 0x756E6C7201
_PG_APPLIER_LOCK = 0x756E6C7202
#: synchronous_commit values under which a commit returns only after its WAL is flushed on this server
_PG_DURABLE_COMMIT = ("on", "local", "remote_write", "remote_apply")


def redact_url(url: str) -> str:
    """``url`` without its password (in the authority or as a ``password=`` query parameter): safe to log."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class _Rows:
    """A statement's result, read in full while the connection was held: ``fetchone``, ``fetchall``, iteration."""

    def __init__(self, rows: list[tuple]):
        self._rows, self._at = rows, 0

    def fetchone(self) -> tuple | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[tuple]:
        rest, self._at = self._rows[self._at:], len(self._rows)
        return rest

    def __iter__(self):
        while (row := self.fetchone()) is not None:
            yield row


class _Db:
    """One connection and what differs between the backends; the ledger's SQL is written once, in SQLite's
    dialect with ``?`` placeholders, which is also valid PostgreSQL once the placeholders are translated.

    Every statement and every transaction holds ``lock`` (re-entrant), so threads sharing the ledger take turns:
    a read never runs inside another thread's open transaction and sees only committed rows."""

    #: appended to the claim's subquery (row locks for concurrent claimers, where the backend has them)
    skip_locked = ""

    def __init__(self):
        self.lock = threading.RLock()

    def execute(self, sql: str, params: tuple | list = ()) -> _Rows:
        with self.lock:
            return _Rows(self._execute(sql, tuple(params)))

    def executemany(self, sql: str, seq: list) -> None:
        if seq:
            with self.lock:
                self._executemany(sql, seq)

    @contextmanager
    def begin(self):
        """One transaction with the ledger's write lock taken up front (``ROLLBACK`` on any error)."""
        with self.lock:
            self._begin()
            try:
                yield self
            except BaseException:
                try:
                    self._execute("ROLLBACK", ())
                except Exception:  # noqa: BLE001 - a broken connection has no transaction left; keep the cause
                    pass
                raise
            self._execute("COMMIT", ())

    def create_schema(self, schema: str) -> None:
        with self.begin():
            for stmt in filter(None, (s.strip() for s in self.schema(schema).split(";"))):
                self._execute(stmt, ())

    # backend parts
    def _execute(self, sql: str, params: tuple) -> list[tuple]:
        raise NotImplementedError

    def _executemany(self, sql: str, seq: list) -> None:
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def schema(self, schema: str) -> str:
        return schema

    def check_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def purge(self) -> bool:
        raise NotImplementedError

    def try_applier_lock(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SqliteDb(_Db):
    """SQLite: WAL, ``synchronous=FULL``, ``secure_delete``; a transaction is ``BEGIN IMMEDIATE`` (the file's
    writer lock up front, waiting up to ``busy_timeout``)."""

    def __init__(self, path: Path, busy_timeout_ms: int):
        super().__init__()
        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise LedgerError(f"SQLite {sqlite3.sqlite_version} is too old for the ledger (RETURNING needs 3.35)")
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=busy_timeout_ms / 1000,
                                    check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "secure_delete=ON",
                       f"busy_timeout={int(busy_timeout_ms)}"):
            self.conn.execute(f"PRAGMA {pragma}")

    def _execute(self, sql, params):
        return self.conn.execute(sql, params).fetchall()

    def _executemany(self, sql, seq):
        self.conn.executemany(sql, seq)

    def _begin(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def check_settings(self):
        got = {k: self.execute(f"PRAGMA {k}").fetchone()[0]
               for k in ("journal_mode", "synchronous", "foreign_keys", "secure_delete")}
        want = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "secure_delete": 1}
        bad = {k: v for k, v in got.items() if v != want[k]}
        if bad:
            raise LedgerError(f"{self.path}: durability settings not in force: {bad} (want {want}); "
                              "WAL needs a local file system")
        return got

    def purge(self):
        busy, _, _ = self.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    def try_applier_lock(self):
        return True

    def close(self):
        with self.lock:
            self.conn.close()


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """``?`` placeholders (outside string literals) to psycopg's ``%s``; a literal ``%`` doubled."""
    out, quoted = [], False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        out.append("%%" if ch == "%" else "%s" if ch == "?" and not quoted else ch)
    return "".join(out)


class _PgDb(_Db):
    """PostgreSQL 15 through psycopg 3, on one autocommit connection. What differs from SQLite:

    * placeholders ``?`` become ``%s``; ``INTEGER PRIMARY KEY`` becomes ``BIGINT GENERATED BY DEFAULT AS
      IDENTITY PRIMARY KEY``, other ``INTEGER`` ``BIGINT`` (SQLite's integers are 64-bit), ``REAL`` ``DOUBLE
      PRECISION``. (Request ids come from the identity, so a rolled-back submission leaves a gap in them;
      model versions and audit events are numbered by the ledger and stay dense.)
    * a transaction is ``BEGIN ISOLATION LEVEL READ COMMITTED`` then ``pg_advisory_xact_lock``: one writer at a
      time over every connection to the database, as ``BEGIN IMMEDIATE`` gives on a file, and since each
      statement after the lock sees everything committed before it, a submission's idempotency check and its
      insert cannot race a twin. (READ COMMITTED is asked for explicitly: a server default of REPEATABLE READ
      would take the snapshot before the lock wait.) Waits are bounded by ``lock_timeout``.
    * claims lock their rows ``FOR UPDATE SKIP LOCKED``;
    * the single applier is a session-level ``pg_try_advisory_lock``;
    * durability is the server's: ``fsync`` and ``full_page_writes`` must be on and ``synchronous_commit``
      must wait for the local WAL flush (refused otherwise);
    * the purge is ``VACUUM FULL request_edges`` (see :meth:`Ledger.purge_files` for what it cannot reach).
    """

    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, shown: str, busy_timeout_ms: int):
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise LedgerError(f"a PostgreSQL ledger needs psycopg: pip install 'unlearnrec[postgres]' ({exc})"
                              ) from None
        self.shown = shown
        self._errors = psycopg.Error
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=30,
                                        application_name="unlearnrec-ledger")
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LedgerError(f"cannot open the PostgreSQL ledger {shown}: {first}") from None
        self.conn.execute(f"SET lock_timeout = {int(busy_timeout_ms)}")

    def _execute(self, sql, params):
        cur = self.conn.execute(_pg_sql(sql), params)
        return cur.fetchall() if cur.description is not None else []

    def _executemany(self, sql, seq):
        with self.conn.cursor() as cur:
            cur.executemany(_pg_sql(sql), seq)

    def _begin(self):
        self._execute("BEGIN ISOLATION LEVEL READ COMMITTED", ())
        try:
            self._execute("SELECT pg_advisory_xact_lock(?)", (_PG_WRITER_LOCK,))
        except BaseException:
            self._execute("ROLLBACK", ())
            raise

    def schema(self, schema):
        schema = schema.replace("INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        return re.sub(r"\bREAL\b", "DOUBLE PRECISION", re.sub(r"\bINTEGER\b", "BIGINT", schema))

    def check_settings(self):
        got = {k: str(self.execute(f"SHOW {k}").fetchone()[0])
               for k in ("synchronous_commit", "fsync", "full_page_writes")}
        for k, v in got.items():
            ok = v in _PG_DURABLE_COMMIT if k == "synchronous_commit" else v == "on"
            if not ok:
                want = " or ".join(_PG_DURABLE_COMMIT) if k == "synchronous_commit" else "on"
                raise LedgerError(f"{self.shown}: PostgreSQL setting {k} = {v}, the ledger needs {want} "
                                  "(a commit must be durable once it returns)")
        return got

    def purge(self):
        import psycopg.errors

        with self.lock:
            try:
                self._execute("VACUUM FULL request_edges", ())
            except psycopg.errors.LockNotAvailable:  # a long reader; the next purge (or the next start) retries
                return False
        return True

    def try_applier_lock(self):
        return bool(self.execute("SELECT pg_try_advisory_lock(?)", (_PG_APPLIER_LOCK,)).fetchone()[0])

    def close(self):
        with self.lock:
            self.conn.close()
