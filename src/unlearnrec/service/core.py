"""The deletion service's state: the ledger, the served model version and the applier (issue 14).

Pieces (``../shared/docs/deletion-service.md`` §5): the :class:`~unlearnrec.service.ledger.Ledger` (durable before
any receipt), an in-memory :class:`Handle` per model version (replaced by one reference assignment, so a reader
always sees one whole version), and an applier thread that claims hidden requests in micro-batches, unlearns
their union with the configured method (UnlearnRec with ``--encoder``, else EdgeDrop), writes the version as a
checkpoint (atomic directory rename), switches the served version in the same ledger transaction that marks the
requests applied, and only then swaps the handle in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import queue
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec.service.auth import Token, authorise
from unlearnrec.service.bodies import DeletionBody
from unlearnrec.service.crash import crash_point
from unlearnrec.service.ledger import UNAPPLIED, IdempotencyConflict, Ledger, LedgerError, Overloaded


@dataclass(frozen=True)
class Handle:
    """One model version as served: immutable; replaced as a whole."""

    version: int
    user_emb: torch.Tensor
    item_emb: torch.Tensor
    seen: Any  # scipy CSR of the version's training graph
    popular: np.ndarray  # item indices by training degree (the non-personalised list)
    hidden: Any = None  # scipy CSR of every interaction of an open request (the read-time filter)


def _handle(version: int, model, graph, pending: np.ndarray | None = None, hidden: np.ndarray | None = None
            ) -> Handle:
    """The served state of ``model``: propagated on ``graph`` without the ``pending`` (hidden, not yet
    unlearned) edges, so they stop shaping anyone's embeddings at once (EdgeDrop until the applier's version);
    ``hidden`` (every open request's interactions) is the read-time filter of seen-masks and erased users."""
    if pending is not None and len(pending):
        graph = graph.without(pending, strict=False)
    with torch.no_grad():
        u, i = model.embeddings(graph)
    deg = np.bincount(graph.edges[:, 1], minlength=graph.n_items)
    return Handle(version, u.detach(), i.detach(), graph.user_items(), np.argsort(-deg, kind="stable"),
                  _csr(hidden, graph.n_users, graph.n_items))


def _csr(pairs: np.ndarray | None, n_users: int, n_items: int):
    from unlearnrec.data.interactions import user_item_matrix

    return user_item_matrix(np.zeros((0, 2), dtype=np.int64) if pairs is None else pairs, n_users, n_items)


def _sha256_file(path: Path) -> str:
    from unlearnrec.data.download import file_digests

    return str(file_digests(path)["sha256"])


class NotHeld(LookupError):
    """A request names something we do not hold: the message (with the raw ids, for the caller) and the basis
    of the denial (without them, for the ledger)."""

    def __init__(self, message: str, basis: str):
        super().__init__(message)
        self.basis = basis


class UtilityGuard:
    """Routes a batch to the exact retrain when its approximate unlearning would cost the other users more
    canary utility (validation Recall@20 of fixed users) than benign requests do (a poisoning-style deletion
    concentrated on popular items, ``../shared/docs/deletion-service.md`` §4). Never refuses: the requests stay
    hidden and are completed by the retrain.

    The threshold is calibrated at start (:meth:`calibrate`): ``max(floor, z x the largest canary drop of a few
    random single-interaction requests)``.
    """

    def __init__(self, floor: float = 0.01, z: float = 3.0, n_calibration: int = 4):
        self.floor, self.z, self.n = float(floor), float(z), int(n_calibration)
        self.threshold, self.benign = float(floor), []

    def calibrate(self, service) -> float:
        from unlearnrec.unlearning.requests import DeletionRequest

        g = service.graph
        rng = np.random.default_rng(0)
        drops = []
        base = service.canary(service.handle)
        if base is None:
            return self.threshold
        for e in g.edges[rng.choice(len(g.edges), size=min(self.n, len(g.edges)), replace=False)]:
            outcome = service.unlearner.unlearn(DeletionRequest.from_pairs(g, e[None], kind="calibration"))
            drops.append(base - service.canary(_handle(0, outcome.model, outcome.graph)))
        self.benign = [float(d) for d in drops]
        self.threshold = max(self.floor, self.z * max([0.0, *drops]))
        return self.threshold

    def trips(self, measured: dict[str, Any]) -> str | None:
        """The reason the batch goes to the exact path, or ``None``."""
        before, after = measured.get("canary_recall_before"), measured.get("canary_recall")
        if before is None or after is None or before - after <= self.threshold:
            return None
        return (f"canary Recall@20 would fall {before - after:.4f} (from {before:.4f}), beyond the guard's "
                f"{self.threshold:.4f}")


TOMBSTONE = "erased:"


def tombstone(ledger: Ledger, raw_user: str) -> str:
    """What replaces an erased user's raw id in the data of an exact retrain: a keyed digest, so the id is gone
    but a later request naming it still finds it was erased."""
    return TOMBSTONE + ledger.digest("user", raw_user)[:32]


def residual_sha256(edges, n_items: int | None = None) -> str:
    """sha256 of the interaction set a version was trained or unlearned on (process evidence): the sorted unique
    int64 keys ``user * n_items + item``, little-endian. ``edges`` is a Graph (its keys are that already) or an
    ``(n, 2)`` array with ``n_items``."""
    from unlearnrec.data.interactions import pair_keys
    from unlearnrec.graph import Graph

    keys = edges.keys if isinstance(edges, Graph) else np.unique(pair_keys(np.asarray(edges).reshape(-1, 2), n_items))
    return hashlib.sha256(np.ascontiguousarray(keys, dtype="<i8").tobytes()).hexdigest()


class DeletionService:
    """The ledger, the served version and the applier thread for one checkpoint.

    Args:
        checkpoint: the trained model to serve (version 1 of the store).
        store: folder for the ledger (``ledger.sqlite``) and the model versions (``v{n}/``).
        encoder: an UnlearnRec encoder for the checkpoint (then the method is UnlearnRec zero-shot); without it
            EdgeDrop.
        audit_key: the key of the ledger's digests.
        settle: options of the :class:`~unlearnrec.service.settle.Settler` (deadline, cadence, retention).
        guard: options of the :class:`UtilityGuard` (the canary drop beyond which a batch goes to the exact path).
        db: a ``postgresql://`` URL to keep the ledger in PostgreSQL instead of ``<store>/ledger.sqlite``.
    """

    def __init__(self, checkpoint: str | Path, store: str | Path, *, audit_key: bytes, tokens: list[Token],
                 encoder: str | Path | None = None, method: str | None = None, batch: int = 64,
                 batch_wait_s: float = 0.05, lease_s: float = 300.0, settle: dict[str, Any] | None = None,
                 guard: dict[str, Any] | None = None, db: str | None = None):
        from unlearnrec import api
        from unlearnrec.service.settle import Settler

        self.store = Path(store)
        self.store.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(db or self.store / "ledger.sqlite", audit_key)  # db: a postgresql:// URL
        if not self.ledger.acquire_applier_lock(wait_s=10.0):  # one applier per ledger (see start)
            raise LedgerError(f"{self.ledger.path}: another service process is this ledger's applier")
        self.tokens = tokens
        self.base, self.data, base_graph = api.open_checkpoint(checkpoint)
        self.encoder_dir = encoder
        self.method = method or ("unlearnrec" if encoder is not None else "edgedrop")
        self.configured_method = self.method
        self.batch, self.batch_wait_s, self.lease_s = int(batch), float(batch_wait_s), float(lease_s)
        self.max_pending: int | None = None  # the admission bound (set by the HTTP face); checked in the commit
        self.lock = threading.Lock()  # one writer of versions
        current = self.ledger.current_version()
        if current is None:  # first start: the checkpoint is version 1
            v = self.ledger.add_version(kind="train", path=str(Path(checkpoint).resolve()),
                                        file_sha256=_sha256_file(Path(checkpoint) / "model.safetensors"),
                                        residual_sha256=residual_sha256(base_graph), algo="train",
                                        config_sha256=hashlib.sha256(self.base.config.to_yaml().encode()).hexdigest())
            self.model, self.graph, self.version_meta = self.base.model, base_graph, {"lineage": []}
            current = v
        else:
            from unlearnrec.graph import Graph

            ck = api.load_checkpoint(self.ledger.version_path(current))
            if ck.meta.get("root"):  # after an exact retrain the chain starts at the retrained model (and data)
                self.base, self.data, _ = api.open_checkpoint(ck.meta["root"])
            self.model, self.version_meta = ck.model, ck.meta
            self.graph = Graph(ck.edges if ck.edges is not None else self.data.train, self.data.n_users,
                               self.data.n_items)
        self.root = str(self.version_meta.get("root") or "")
        # the training edges the chain's root was trained on: what a settlement removes requests from
        self.settled_train = self.data.train if self.root else (
            self.base.edges if self.base.edges is not None else self.data.train)
        self.erased = {u for u in self.data.user_ids.tolist() if u.startswith(TOMBSTONE)}
        self._collect_orphans()
        self.ledger.purge_files()  # a crash between a settlement's commit and its purge
        self._swap = threading.Lock()  # guards the served triple below (held briefly)
        self._served = (self.model, self.graph)  # what the handle was propagated from
        self._plain: Handle | None = None  # the served version without any hiding (the guard's reference)
        self.handle = _handle(current, self.model, self.graph, self._pending(), self.ledger.hidden_edges())
        self._refresh = threading.Condition()
        self._asked = self._done = 0
        self.hider = threading.Thread(target=self._hide_loop, name="hider", daemon=True)
        self._measure_q: queue.Queue = queue.Queue()
        self.measurer = threading.Thread(target=self._measure_loop, name="measurer", daemon=True)
        self.unlearner = self._unlearner()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._apply_loop, name="applier", daemon=True)
        self.errors: list[str] = []
        self.settler = Settler(self, **(settle or {}))  # exact retrains and the deadline monitor
        self.guard = UtilityGuard(**(guard or {}))

    # ------------------------------------------------------------------ set-up
    def _unlearner(self):
        from unlearnrec.unlearning.base import Context, build_unlearner

        if self.method in ("unlearnrec", "unlearnrec-calibrated"):
            from unlearnrec.unlearning.methods.unlearnrec_method import UnlearnRec, UnlearnRecCalibrated
            from unlearnrec.unlearning.unlearnrec import load_encoder

            try:
                enc = load_encoder(self.encoder_dir, self.model, self.base.fingerprint,
                                   lineage=self.version_meta.get("lineage"))
            except Exception as exc:  # noqa: BLE001 - e.g. the model was retrained: the encoder no longer fits
                if not self.root:
                    raise
                self.ledger.record("encoder-stale", {"reason": str(exc)[:200], "fallback": "edgedrop"})
                self.method = "edgedrop"
                return self._unlearner()
            cls = UnlearnRecCalibrated if enc.config.variant == "calibrated" else UnlearnRec
            unl = cls(enc.config.with_overrides({"finetune_epochs": 0}), encoder=enc)
        else:
            unl = build_unlearner(self.method)
        unl.prepare(Context(self.model, self.graph, self.data, self.base.config, False))
        if hasattr(unl, "steps"):
            unl.steps = int(getattr(getattr(unl, "encoder", None), "rounds", 0))
        return unl

    def _pending(self) -> np.ndarray:
        """Edges of requests received but not unlearned from the served weights (hidden, being applied, failed,
        or waiting for the exact retrain): the served propagation runs without them."""
        return self.ledger.hidden_edges(UNAPPLIED)

    def _collect_orphans(self) -> None:
        """Version folders with no ledger row (a crash between writing a model and switching to it)."""
        import shutil

        known = {Path(v["path"]).name for v in self.ledger.versions()}
        for d in [*self.store.glob("v*"), *self.store.glob(".retrain-*")]:
            if d.is_dir() and d.name not in known:
                shutil.rmtree(d, ignore_errors=True)

    def start(self) -> None:
        # one applier per ledger: at start, any 'applying' request was held by a process that died
        self.ledger.release_all("applier")
        pending = self.ledger.applied_unverified()  # switched, but the process died before measuring
        if pending:
            ids = [rid for rid, _ in pending]
            self.ledger.mark_verified(ids, self._forgetting(np.concatenate([e for _, e in pending])))
        self.guard.calibrate(self)
        self.ledger.record("guard-calibrated", {"threshold": self.guard.threshold, "benign_drops": self.guard.benign})
        self.thread.start()
        self.hider.start()
        self.measurer.start()
        self.settler.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.thread.join(timeout=30)
        with self._refresh:
            self._refresh.notify_all()
        self.hider.join(timeout=5)
        self._measure_q.put(None)
        self.measurer.join(timeout=30)
        self.settler.stop()

    def authorise(self, header: str | None, scope: str) -> Token:
        return authorise(self.tokens, header, scope)

    # ------------------------------------------------------------------ intake
    def edges_of(self, body: DeletionBody) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The interactions a request names: training edges, and those held in the validation and test splits
        (a deletion is a deletion of the person's data, wherever we hold it). LookupError with the reason when it
        names nothing we hold (or only what is already being deleted)."""
        from unlearnrec.data.interactions import pair_keys

        n_items = self.data.n_items
        held = {"train": self.graph.edges, "valid": self.data.valid, "test": self.data.test}
        if body.kind in ("user", "item"):
            raw, vocab, col = (body.user, self.data.user_ids, 0) if body.kind == "user" else (
                body.item, self.data.item_ids, 1)
            idx = self._index(vocab, [raw], body.kind)[0]
            parts = {k: v[v[:, col] == idx] for k, v in held.items()}
        else:
            users = self._index(self.data.user_ids, [p.user for p in body.interactions], "user")
            items = self._index(self.data.item_ids, [p.item for p in body.interactions], "item")
            pairs = np.unique(np.stack([users, items], 1), axis=0)
            keys, found = pair_keys(pairs, n_items), np.zeros(len(pairs), dtype=bool)
            parts = {}
            for split in held:
                inside = self._held_in(split, keys) & ~found
                parts[split], found = pairs[inside], found | inside
            if not found.all():
                bad = pairs[~found][:5]
                shown = ", ".join(f"({self.data.user_ids[u]}, {self.data.item_ids[i]})" for u, i in bad)
                raise NotHeld(f"{int((~found).sum())} interaction(s) are not held: {shown}",
                              "interactions that are not held")
        for split in parts:  # what an open request already deletes is not deleted twice
            pending = self.ledger.hidden_edges(split=split)
            if len(pending) and len(parts[split]):
                parts[split] = parts[split][~np.isin(pair_keys(parts[split], n_items), pair_keys(pending, n_items))]
        if not sum(len(v) for v in parts.values()):
            msg = f"the {body.kind} has no interaction we hold (or all are already being deleted)"
            raise NotHeld(msg, msg)
        return parts.pop("train"), parts

    def _held_in(self, split: str, keys: np.ndarray) -> np.ndarray:
        """Which pair keys ``split`` holds: a binary search in its sorted keys (cached per graph and data), so an
        intake costs ``O(k log n)``, not a pass over every interaction."""
        from unlearnrec.data.interactions import pair_keys

        source = self.graph if split == "train" else self.data
        cached = getattr(self, "_keys_cache", {}).get(split)
        if cached is None or cached[0] is not source:
            edges = self.graph.edges if split == "train" else getattr(self.data, split)
            self._keys_cache = {**getattr(self, "_keys_cache", {}),
                                split: (source, np.sort(pair_keys(edges, self.data.n_items)))}
            cached = self._keys_cache[split]
        sorted_keys = cached[1]
        if not len(sorted_keys):
            return np.zeros(len(keys), dtype=bool)
        pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        return sorted_keys[pos] == keys

    @staticmethod
    def _index(vocab: np.ndarray, raw: list[str], kind: str) -> np.ndarray:
        from unlearnrec.data.interactions import _lookup

        try:
            return _lookup(vocab, raw, kind)
        except KeyError as exc:
            raise NotHeld(str(exc).strip("'\""), f"unknown {kind} id") from None

    def submit(self, token: Token, key: str, body: DeletionBody, public_id: str | None = None
               ) -> tuple[int, dict[str, Any]]:
        subject = body.user or body.item or f"{len(body.interactions)} interaction(s)"
        payload = body.model_dump(mode="json")
        try:
            earlier = self.ledger.replay(token.token_id, key, payload)
        except IdempotencyConflict as exc:
            return 422, {"error": "idempotency_conflict", "detail": str(exc)}
        if earlier is not None:
            return 202, {"id": earlier.public_id, "status": earlier.status, "replayed": True}
        try:
            edges, heldout = self.edges_of(body)
        except NotHeld as exc:  # the ledger keeps the basis of the denial, never the raw ids in the message
            pid = self.ledger.reject(token.token_id, body.kind, subject, exc.basis)
            return 422, {"id": pid, "status": "rejected", "reason": str(exc)}
        try:
            r = self.ledger.submit(token.token_id, key, body.kind, subject, edges, payload, public_id=public_id,
                                   heldout=heldout, max_pending=self.max_pending)
        except IdempotencyConflict as exc:
            return 422, {"error": "idempotency_conflict", "detail": str(exc)}
        except Overloaded as exc:
            return 503, {"error": "overloaded", "detail": str(exc)}
        self.refresh()  # before the 202: the hidden edges no longer shape the served embeddings
        self._wake.set()
        return 202, {"id": r.public_id, "status": r.status, "replayed": r.replayed, "n_edges": int(len(edges)),
                     "n_heldout": {k: int(len(v)) for k, v in heldout.items()}}

    # ------------------------------------------------------------------ hiding at once
    def refresh(self) -> None:
        """Return once the served handle reflects every request committed before the call. Concurrent callers
        share one rebuild (the hider thread takes every request asked so far), so a burst of deletions costs a
        few propagations, not one each, and never waits for the applier's batch."""
        if not self.hider.is_alive():  # not started (in-process use): rebuild here
            self._rebuild()
            return
        with self._refresh:
            self._asked += 1
            ticket = self._asked
            self._refresh.notify_all()
            while self._done < ticket and self.hider.is_alive():
                self._refresh.wait(timeout=1.0)

    def _hide_loop(self) -> None:
        while not self._stop.is_set():
            with self._refresh:
                while self._done >= self._asked and not self._stop.is_set():
                    self._refresh.wait(timeout=1.0)
                target = self._asked
            try:
                self._rebuild()
            except Exception as exc:  # noqa: BLE001 - reported; the waiting submits are released
                self.errors.append(f"hider: {type(exc).__name__}: {exc}")
            with self._refresh:
                self._done = max(self._done, target)
                self._refresh.notify_all()

    def _rebuild(self) -> None:
        """A new handle of the served version without every open request's edges (recomputed if a swap came in
        between: the swap itself read the ledger later, so either result covers the caller's commit)."""
        while True:
            with self._swap:
                version, (model, graph) = self.handle.version, self._served
                pending, hidden = self._pending(), self.ledger.hidden_edges()
            h = _handle(version, model, graph, pending, hidden)
            with self._swap:
                if self.handle.version == version and self._served[0] is model:
                    self.handle = h
                    return

    def _swap_in(self, version: int, model, graph, candidate: Handle | None = None,
                 candidate_pending: np.ndarray | None = None) -> None:
        """Serve a committed version (the in-memory swap after the ledger switch), hiding every open request."""
        with self._swap:
            pending, hidden = self._pending(), self.ledger.hidden_edges()
            if candidate is not None and candidate_pending is not None and np.array_equal(pending, candidate_pending):
                h = dataclasses.replace(candidate, version=version, hidden=_csr(hidden, graph.n_users, graph.n_items))
            else:
                h = _handle(version, model, graph, pending, hidden)
            self._served, self._plain, self.handle = (model, graph), None, h

    def _reference(self, others: np.ndarray) -> Handle:
        """The served version as it was before a batch arrived (hiding only ``others``): the guard's baseline."""
        if len(others):
            return _handle(self.handle.version, *self._served, others)
        if self._plain is None or self._plain.version != self.handle.version:
            self._plain = _handle(self.handle.version, *self._served)
        return self._plain

    # ------------------------------------------------------------------ reads
    def recommend(self, raw_user: str, k: int) -> dict[str, Any]:
        h = self.handle  # one whole version for this request
        if self.erased and tombstone(self.ledger, raw_user) in self.erased:  # settled: the id is gone from the data
            return {"user": raw_user, "model_version": h.version, "personalised": False,
                    "items": self.data.item_ids[h.popular[:k]].tolist(), "scores": None}
        idx = int(self._index(self.data.user_ids, [raw_user], "user")[0])
        mine = h.hidden[idx].indices
        remaining = h.seen[idx].indices[~np.isin(h.seen[idx].indices, mine)]
        if len(mine) and not len(remaining):  # an erased user gets no personalised list
            items = h.popular[:k]
            return {"user": raw_user, "model_version": h.version, "personalised": False,
                    "items": self.data.item_ids[items].tolist(), "scores": None}
        with torch.no_grad():
            scores = (h.user_emb[idx] @ h.item_emb.T).clone()
            scores[torch.as_tensor(remaining, dtype=torch.long)] = float("-inf")  # hidden ones are not 'seen'

            top = torch.topk(scores, min(k, len(scores)))
        keep = torch.isfinite(top.values)
        return {"user": raw_user, "model_version": h.version, "personalised": True,
                "items": self.data.item_ids[top.indices[keep].numpy()].tolist(),
                "scores": top.values[keep].tolist()}

    # ------------------------------------------------------------------ the applier
    def apply_pending(self) -> int:
        """Claim one micro-batch, unlearn it, persist and switch; the number of requests applied."""
        from unlearnrec.checkpoint import save_checkpoint
        from unlearnrec.unlearning.requests import DeletionRequest
        from unlearnrec.unlearning.unlearnrec.io import model_fingerprint

        with self.lock:
            claimed = self.ledger.claim("applier", batch=self.batch, lease_s=self.lease_s)
            if not claimed:
                return 0
            crash_point("after-claim")
            ids = [rid for rid, _ in claimed]
            edges = np.unique(np.concatenate([e for _, e in claimed]), axis=0)
            if not len(edges):  # only held-out interactions: the served weights never trained on them
                self.ledger.mark_applied(ids, self.handle.version)
                return len(ids)
            request = DeletionRequest.from_pairs(self.graph, edges, kind="service")
            outcome = self.unlearner.unlearn(request)
            crash_point("mid-compute")
            n = self.ledger.next_version_id()
            path = self.store / f"v{n}"
            lineage = [*self.version_meta.get("lineage", []), model_fingerprint(self.model)]
            save_checkpoint(path, outcome.model, self.base.config, self.base.fingerprint, self.data.stats(),
                            train_edges=outcome.graph.edges,
                            extra_meta={"lineage": lineage, "method": self.method, "requests": ids, "root": self.root})
            crash_point("after-model-write")
            pending = self._pending()
            candidate = _handle(0, outcome.model, outcome.graph, pending)  # measured before it is served
            # against the version as it was before this batch arrived (the served handle already hides it)
            from unlearnrec.data.interactions import pair_keys

            others = pending[~np.isin(pair_keys(pending, self.data.n_items), pair_keys(edges, self.data.n_items))]
            reference = self._reference(others)
            measured = {"canary_recall_before": self.canary(reference), "canary_recall": self.canary(candidate)}
            trip = self.guard.trips(measured)
            if trip:  # approximate unlearning would hurt others: the exact retrain takes the batch instead
                shutil.rmtree(path, ignore_errors=True)
                self.ledger.route_exact(ids, trip)
                self.settler.trigger()
                return len(ids)
            version = self.ledger.add_version(
                kind="unlearn", path=str(path), file_sha256=_sha256_file(path / "model.safetensors"),
                residual_sha256=residual_sha256(outcome.graph), algo=self.method,
                config_sha256=hashlib.sha256(self.unlearner.config.to_yaml().encode()).hexdigest(),
                request_ids=ids, parent_id=self.handle.version,
                metrics={"request_seconds": outcome.timings.get("request_seconds"), **measured})
            crash_point("after-switch-before-swap")
            # durable first, then served: the swap comes after the commit
            self.unlearner.apply(outcome)
            graph_before = self.graph
            self.model, self.graph = outcome.model, outcome.graph
            self.version_meta = {"lineage": lineage, "root": self.root}
            self._swap_in(version, self.model, self.graph, candidate, pending)
        # served; the full forgetting measures of the version come after, in the measurer thread, so the applier
        # is free for the next batch at once
        job = (ids, request.edges, reference, graph_before, candidate, outcome.graph, version, measured)
        if self.measurer.is_alive():
            self._measure_q.put(job)
        else:
            self._measure(*job)
        return len(ids)

    def _measure(self, ids, edges, reference, graph_before, candidate, graph_after, version, measured) -> None:
        measured = {**measured, **self._forgetting(edges, reference, graph_before, candidate, graph_after)}
        self.ledger.mark_verified(ids, measured, version_id=version)

    def _measure_loop(self) -> None:
        while True:
            job = self._measure_q.get()
            if job is None:
                return
            try:
                self._measure(*job)
            except Exception as exc:  # noqa: BLE001 - reported; the requests stay applied (re-measured at start)
                self.errors.append(f"measurer: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ settlement hooks (see settle.py)
    def state(self) -> tuple:
        return (self.base, self.data, self.settled_train, self.model, self.graph, self.version_meta, self.root,
                self.method, self.unlearner)

    def restore(self, state: tuple) -> None:
        (self.base, self.data, self.settled_train, self.model, self.graph, self.version_meta, self.root,
         self.method, self.unlearner) = state

    def adopt_base(self, retrained, residual) -> None:
        """Continue from an exact retrain (not yet served): the applier's model, graph and data become its own."""
        from unlearnrec.graph import Graph

        self.base, self.data, self.settled_train = retrained, residual, residual.train
        self.model = retrained.model
        self.graph = Graph(residual.train, residual.n_users, residual.n_items)
        self.version_meta, self.root = {"lineage": []}, "settling"
        self.method = self.configured_method
        self.unlearner = self._unlearner()

    def unlearn_ids(self, request_ids: list[int]):
        """Unlearn these requests' training edges from the current (not yet served) model; ``None`` if none."""
        from unlearnrec.unlearning.requests import DeletionRequest

        edges = self.ledger.request_edges(request_ids)
        if not len(edges):
            return None
        return self.unlearner.unlearn(DeletionRequest.from_pairs(self.graph, edges, kind="service"))

    def adopt_version(self, version: int, path: Path, model, graph, outcome) -> None:
        """Serve a committed settlement version (after the ledger switched to it)."""
        from unlearnrec.checkpoint import load_checkpoint

        if outcome is not None:
            self.unlearner.apply(outcome)
        self.model, self.graph, self.root = model, graph, str(path)
        self.version_meta = {"lineage": [], "root": self.root}
        self.base = load_checkpoint(path)
        self.erased = {u for u in self.data.user_ids.tolist() if u.startswith(TOMBSTONE)}
        self._swap_in(version, model, graph)

    def _forgetting(self, edges: np.ndarray, before: Handle | None = None, graph_before=None,
                    after: Handle | None = None, graph_after=None) -> dict[str, Any]:
        """The forgetting of one version, recorded with it: the request's mean rank percentile among each user's
        candidates (1 = bottom), MI-NG and MI-BF (:func:`~unlearnrec.evaluation.forgetting.forgetting_report`),
        and the canary utility (validation Recall@20 of a fixed user sample) before and after."""
        from unlearnrec.evaluation.forgetting import forgetting_report

        h = after or self.handle
        graph_after = graph_after if graph_after is not None else self.graph
        before, graph_before = before or h, graph_before if graph_before is not None else graph_after
        if not len(edges):
            return {"request_rank_pct": None, "n_edges": 0}
        if graph_before is graph_after:  # measured after a restart: the model before is gone
            graph_before = graph_after.with_edges(np.array(edges, dtype=np.int64))
        rep = forgetting_report((before.user_emb, before.item_emb), graph_before, (h.user_emb, h.item_emb),
                                graph_after, np.array(edges, dtype=np.int64), data=self.data, n_samples=2000)
        return {"request_rank_pct": rep["rank"]["after"]["mean_percentile"], "mi_ng": rep["mi_ng"],
                "mi_bf": rep["mi_bf"], "n_edges": int(len(edges)),
                "canary_recall_before": self.canary(before), "canary_recall": self.canary(h)}

    def canary(self, h: Handle) -> float | None:
        """Validation Recall@20 of up to 500 fixed users (the canary utility the guard watches)."""
        from unlearnrec.data.interactions import user_item_matrix
        from unlearnrec.evaluation.ranking import evaluate_ranking

        if not len(self.data.valid):
            return None
        if getattr(self, "_canary_users", None) is None:
            users = np.unique(self.data.valid[:, 0])
            self._canary_users = np.sort(np.random.default_rng(0).choice(users, min(500, len(users)), replace=False))
        truth = user_item_matrix(self.data.valid, self.data.n_users, self.data.n_items)
        res = evaluate_ranking(h.user_emb, h.item_emb, truth, h.seen, ks=(20,), users=self._canary_users)
        return float(res.metrics["recall@20"])

    def _apply_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._stop.wait(self.batch_wait_s):  # let a micro-batch gather
                break
            try:
                while self.apply_pending():
                    pass
                self.ledger.requeue_expired()
            except Exception as exc:  # noqa: BLE001 - keep serving; the lease returns the batch to the queue
                self.errors.append(f"{type(exc).__name__}: {exc}")
