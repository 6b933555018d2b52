"""Named crash points of the deletion service, for the kill tests (a failpoint is a no-op unless asked for).

``UNLEARNREC_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches point ``name`` (the way a power
cut or an OOM kill would stop it: no cleanup, no flush). ``UNLEARNREC_PLANT_BUG=ack-before-commit`` plants the
bug the crash tests must catch: the receipt is sent before the request is committed.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "intake-before-commit",  # the request's rows are written, the transaction not committed
    "after-commit-before-response",  # committed, the 202 not sent
    "after-claim",  # the applier holds a lease
    "mid-compute",  # the unlearned model exists only in memory
    "after-model-write",  # the version's files are on disk, the ledger does not know them
    "after-switch-before-swap",  # the ledger serves the new version, memory still the old one
)
#: crash points of a settlement (an exact retrain), exercised by tests/service/test_settle.py
SETTLE_POINTS = (
    "mid-retrain",  # the retrain's first epoch is done, nothing switched
    "mid-purge",  # the settlement is committed (requests completed), the purge of their bytes not yet run
)


def crash_point(name: str) -> None:
    """SIGKILL this process if ``$UNLEARNREC_CRASH_AT`` names ``name``."""
    if os.environ.get("UNLEARNREC_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def planted(bug: str) -> bool:
    return os.environ.get("UNLEARNREC_PLANT_BUG") == bug
