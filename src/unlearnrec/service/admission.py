"""Abuse controls of ``POST /v1/deletions`` (``../shared/docs/deletion-service.md`` §3.3, §4.3 item 3).

* a per-token quota (a moving window from the ``limits`` library, in memory: one process), checked right after
  authentication, before the body is read: over it, 429 with ``Retry-After`` and nothing recorded;
* a bound on the pending depth (interactions in requests received but not yet in a served model version,
  statuses ``hidden`` and ``applying``): at or past it, 503 with ``Retry-After`` and nothing recorded, so a
  flood cannot grow the queue without bound (:meth:`~unlearnrec.service.ledger.Ledger.pending_edges`). A request
  is admitted while the depth is under the bound, so the depth stays below ``max_pending`` plus the size of one
  request.
"""

from __future__ import annotations

import math
import time


class Quota:
    """``spec`` (e.g. ``"60/minute"``, the ``limits`` notation) per key, in a moving window."""

    def __init__(self, spec: str):
        from limits import parse
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self.spec = spec
        self.item = parse(spec)  # ValueError on a malformed spec
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def admit(self, key: str) -> int | None:
        """Count one request of ``key``: ``None`` if within the quota, else the seconds until a slot frees."""
        if self.limiter.hit(self.item, key):
            return None
        reset = self.limiter.get_window_stats(self.item, key).reset_time
        return max(1, math.ceil(reset - time.time()))
