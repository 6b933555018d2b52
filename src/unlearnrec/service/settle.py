"""Settlement: the exact retrain that completes deletion requests inside the legal deadline (issue 14, item 5).

The served model forgets approximately (UnlearnRec or EdgeDrop on the live weights). A settlement makes it
exact, following ``../shared/docs/deletion-service.md`` §5.6:

1. **Snapshot** (under the service's version lock): ``H`` = the newest request id; the residual data is the
   settled data minus every interaction of the open requests up to ``H``, in all three splits; erased users'
   raw ids are replaced by keyed tombstones.
2. **Train from scratch** on the residual data in the settler thread, beside serving (the applier keeps applying
   requests that arrive meanwhile to the served model).
3. **Catch up** (under the lock again): the requests above ``H`` already applied to the served model are unlearned
   from the retrained one with the service's method; the result becomes a version.
4. **Switch and complete** in one ledger transaction (:meth:`Ledger.settle`): the requests up to ``H`` are
   completed and their raw edges deleted; then the deleted bytes leave the database file, and the files of
   superseded versions are deleted once the retention grace period has passed.

The deadline monitor (:meth:`Settler.tick`, every ``tick_s``) raises an alert for any open request within
``alert_margin_s`` of the deadline (GDPR Art. 12(3): one month; CCPA: 45 days), records it in the audit chain, and
forces a settlement; a configured cadence (``every_s``) settles on schedule, and a cadence that cannot meet the
deadline is refused at start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from unlearnrec.service import ledger as ledger_mod
from unlearnrec.service.crash import crash_point

DAY = 86_400.0


def _mid_retrain(epoch: int, record: dict, trainer) -> None:
    """The retrain's epoch callback: the ``mid-retrain`` crash point (module level, so a spawned rank can run it)."""
    crash_point("mid-retrain")


class Settler:
    """The settlement worker and deadline monitor of one :class:`~unlearnrec.service.core.DeletionService`.

    Args:
        deadline_s: the legal deadline from receipt to completion (default 30 days).
        alert_margin_s: alert (and settle) when an open request is this close to its deadline (default 7 days).
        every_s: settle on this cadence when requests are open (``None``: only on alerts and admin demand).
        retention_s: keep superseded version files this long after a settlement (the operator's undo window).
        epochs: training epochs of the retrain (default: the served model's training recipe).
        nproc: data-parallel ranks of the retrain on this machine (:func:`~unlearnrec.training.run_data_parallel`:
            gloo on CPU, NCCL with one GPU per rank; rank 0 writes the checkpoint). 1: in the settler thread.
    """

    def __init__(self, service, *, deadline_s: float = 30 * DAY, alert_margin_s: float = 7 * DAY,
                 every_s: float | None = None, retention_s: float = 7 * DAY, epochs: int | None = None,
                 tick_s: float = 60.0, nproc: int = 1):
        if int(nproc) < 1:
            raise ValueError(f"settlement nproc must be at least 1, got {nproc}")
        if every_s is not None and every_s >= deadline_s - alert_margin_s:
            raise ValueError(f"a settlement every {every_s:.0f} s cannot complete requests before the deadline "
                             f"({deadline_s:.0f} s, alert margin {alert_margin_s:.0f} s)")
        if alert_margin_s >= deadline_s:
            raise ValueError("the alert margin must be shorter than the deadline")
        self.service = service
        self.deadline_s, self.alert_margin_s, self.every_s = float(deadline_s), float(alert_margin_s), every_s
        self.retention_s, self.epochs, self.tick_s = float(retention_s), epochs, float(tick_s)
        self.nproc = int(nproc)
        self.alerts: dict[str, str] = {}  # public id -> alert text (open requests near their deadline)
        self.running = threading.Lock()
        self.last: dict[str, Any] = {}
        self.last_at = ledger_mod.CLOCK()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="settler", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.sweep()  # retention left unfinished by a crash after a settlement's commit
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the monitor keeps running; the error is reported
                self.service.errors.append(f"settler: {type(exc).__name__}: {exc}")

    def trigger(self) -> bool:
        """Start a settlement in the background now (``False`` if one is running)."""
        if self.running.locked():
            return False
        threading.Thread(target=self._settle_quietly, name="settlement", daemon=True).start()
        return True

    def _settle_quietly(self) -> None:
        try:
            self.settle()
        except Exception as exc:  # noqa: BLE001
            self.service.errors.append(f"settlement: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ the deadline monitor
    def tick(self, now: float | None = None) -> list[str]:
        """Check every open request against the deadline; alert, and settle, when one is close. Returns the
        new alerts."""
        now = ledger_mod.CLOCK() if now is None else now
        led = self.service.ledger
        fresh = []
        open_ = dict(led.open_received())
        self.alerts = {k: v for k, v in self.alerts.items() if k in open_}
        for pid, received in open_.items():
            left = ledger_mod.parse_time(received) + self.deadline_s - now
            if left <= self.alert_margin_s and pid not in self.alerts:
                text = (f"request {pid} has {max(left, 0) / DAY:.2f} day(s) left of its "
                        f"{self.deadline_s / DAY:.0f}-day deadline and is not completed")
                self.alerts[pid] = text
                fresh.append(text)
                led.record("deadline-alert", {"request": pid, "seconds_left": round(left)})
        due = self.every_s is not None and open_ and now - self.last_at >= self.every_s
        if fresh or due:
            self.trigger()
        return fresh

    # ------------------------------------------------------------------ the exact retrain
    def settle(self) -> dict[str, Any]:
        """One settlement (blocking; one at a time): retrain from scratch on the residual data, catch up, switch,
        complete and purge. Returns a summary."""
        if not self.running.acquire(blocking=False):
            raise RuntimeError("a settlement is already running")
        try:
            return self._settle()
        finally:
            self.running.release()

    def _settle(self) -> dict[str, Any]:
        from unlearnrec.checkpoint import load_checkpoint, save_checkpoint
        from unlearnrec.service.core import _sha256_file, residual_sha256
        from unlearnrec.training import run_data_parallel

        svc, led = self.service, self.service.ledger
        t0 = time.perf_counter()
        with svc.lock:  # 1. snapshot
            high = led.high_water()
            covered = led.open_requests(max_id=high)
            if not covered:
                return {"settled": 0}
            residual = self._residual(high)
            parent = svc.handle.version
        led.record("settlement-started", {"high_water": high, "requests": len(covered)})
        work = svc.store / f".retrain-{high}"
        shutil.rmtree(work, ignore_errors=True)
        cfg = svc.base.config
        if self.epochs is not None:
            cfg = cfg.with_overrides({"train.epochs": int(self.epochs)})
        # 2. from scratch, beside serving (rank 0 of a data-parallel retrain writes `work` and reaches the crash point)
        run_data_parallel(cfg, work, self.nproc, data=residual, progress=False, callbacks=[_mid_retrain])
        train_s = time.perf_counter() - t0
        retrained = load_checkpoint(work)
        with svc.lock:  # 3. catch up on what arrived meanwhile, then 4. switch, complete, purge
            reapplied = [r for r in led.open_requests(statuses=("applied", "verified")) if r > high]
            before = svc.state()
            try:
                svc.adopt_base(retrained, residual)
                outcome = svc.unlearn_ids(reapplied)
                path = svc.store / f"v{led.next_version_id()}"
                model, graph = (outcome.model, outcome.graph) if outcome is not None else (svc.model, svc.graph)
                save_checkpoint(path, model, cfg, retrained.fingerprint, residual.stats(), train_edges=graph.edges,
                                data=residual, extra_meta={"lineage": [], "method": "retrain", "requests": [],
                                                           "settles": covered, "reapplied": reapplied,
                                                           "root": str(path)})
                metrics = {"train_seconds": round(train_s, 3), "completed": len(covered),
                           "trained_residual_sha256": residual_sha256(residual.train, residual.n_items),
                           "reapplied": len(reapplied)}
                vid = led.settle(path=str(path), file_sha256=_sha256_file(path / "model.safetensors"),
                                 residual_sha256=residual_sha256(graph),
                                 config_sha256=hashlib.sha256(cfg.to_yaml().encode()).hexdigest(),
                                 high_water=high, covered=covered, reapplied=reapplied, parent_id=parent,
                                 metrics=metrics)
            except BaseException:
                svc.restore(before)  # nothing was switched: the applier goes on with the served chain
                raise
            svc.adopt_version(vid, path, model, graph, outcome)
        shutil.rmtree(work, ignore_errors=True)
        self.sweep()
        self.last_at = ledger_mod.CLOCK()
        self.last = {"version": vid, "high_water": high, "completed": len(covered), "reapplied": len(reapplied),
                     "seconds": round(time.perf_counter() - t0, 3)}
        return self.last

    def _residual(self, high: int):
        """The service's data without every open request up to ``high`` (all splits), erased users tombstoned."""
        from unlearnrec.data.interactions import pair_keys
        from unlearnrec.service.core import tombstone

        svc, led = self.service, self.service.ledger
        data, n_items = svc.data, svc.data.n_items
        train = svc.settled_train  # what the chain's root was trained on (the served graph lacks only applied)
        out = {}
        for split, edges in (("train", train), ("valid", data.valid), ("test", data.test)):
            gone = led.hidden_edges(split=split, max_id=high)
            out[split] = edges[~np.isin(pair_keys(edges, n_items), pair_keys(gone, n_items))] if len(gone) else edges
        user_ids = data.user_ids.astype(object)  # a tombstone may be longer than the fixed-width ids
        for u in led.erased_user_indices(max_id=high):
            user_ids[u] = tombstone(led, str(data.user_ids[u]))
        return dataclasses.replace(data, train=out["train"], valid=out["valid"], test=out["test"],
                                   user_ids=user_ids)

    # ------------------------------------------------------------------ retention
    def sweep(self, now: float | None = None) -> list[int]:
        """Delete the files of superseded versions once ``retention_s`` has passed since a newer version took
        over (never the operator's own checkpoint outside the store). Returns the purged version ids."""
        now = ledger_mod.CLOCK() if now is None else now
        svc, led = self.service, self.service.ledger
        versions = led.versions()
        created = {v["id"]: ledger_mod.parse_time(v["created_at"]) for v in versions}
        store = svc.store.resolve()
        gone = []
        for vid, path in led.stale_versions():
            successor = min((v for v in created if v > vid), default=None)
            if successor is None or now - created[successor] < self.retention_s:
                continue
            p = Path(path).resolve()
            if store in p.parents:
                shutil.rmtree(p, ignore_errors=True)
                gone.append(vid)
        if gone:
            led.mark_purged(gone)
        return gone

    def summary(self) -> dict[str, Any]:
        return {"deadline_s": self.deadline_s, "alert_margin_s": self.alert_margin_s, "every_s": self.every_s,
                "alerts": sorted(self.alerts.values()), "settling": self.running.locked(), "last": self.last}
