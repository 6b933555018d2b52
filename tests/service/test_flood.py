"""T10: a flood of deletions on loopback against the real uvicorn server, with a small pending bound and a
per-token quota.

Every response is 202, 429 (with Retry-After) or 503 (with Retry-After); the ledger gains exactly one row per
202 and none for a refusal; the pending depth never passes the bound; the quota trips for the token that
bursts and for no other; after the drain every acknowledged deletion is verified. Latencies are for the
benchmark (``benchmarks/service_load.py``), not asserted here.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service extra (fastapi, uvicorn) is not installed")
pytest.importorskip("limits", reason="the service extra (limits) is not installed")

from tests.service.test_server import TOKENS, Server, _wait_status  # noqa: E402
from unlearnrec.service.auth import token_digest  # noqa: E402

QUOTA = 40  # requests a minute per token
STEADY = {f"flood{n}": f"flood-secret-{n}" for n in range(20)}  # 20 tokens x 15 deletions, retried on 503
PER_TOKEN = 15
BURST = ("burst", "burst-secret-token")  # 60 deletions at once, never retried: 20 past the quota
MAX_PENDING = 12
READ = TOKENS["read"][0]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def flood_server(request, tmp_path_factory):
    """The server on either ledger (PostgreSQL parity: the same flood against a real PostgreSQL)."""
    import contextlib

    from unlearnrec import api
    from unlearnrec.config import RunConfig

    root = tmp_path_factory.mktemp("flood")
    ck = root / "model"
    api.train(RunConfig().with_overrides({"train.epochs": 2, "model.embedding_size": 8}), ck, progress=False)
    tokens = {n: {"sha256": token_digest(t), "scopes": s} for n, (t, s) in TOKENS.items()}
    tokens.update({n: {"sha256": token_digest(t), "scopes": ["deleter"]} for n, t in [*STEADY.items(), BURST]})
    (root / "tokens.json").write_text(json.dumps(tokens))
    # the applier gathers for 0.3 s, so a flood fills the 12-interaction bound and meets 503s
    with contextlib.ExitStack() as stack:
        extra = ()
        if request.param == "postgres":
            extra = ("--db", stack.enter_context(request.getfixturevalue("pg_server").database()))
        server = Server(root, ck).start(
            "--quota", f"{QUOTA}/minute", "--max-pending", str(MAX_PENDING), "--batch-wait", "0.3", *extra
        )
        yield server
        server.kill()


def _requests(checkpoint: Path, n: int):
    """``n`` distinct training interactions (raw ids), spread over users."""
    import numpy as np

    from unlearnrec import api

    _, data, graph = api.open_checkpoint(checkpoint)
    rng = np.random.default_rng(0)
    edges = graph.edges[rng.permutation(len(graph.edges))[:n]]
    assert len(edges) == n
    return [{"interactions": [{"user": str(data.user_ids[u]), "item": str(data.item_ids[i])}]} for u, i in edges]


def _pending(server) -> int:
    counts = server.call("GET", "/v1/versions", token=READ)[1]["requests"]
    return counts.get("hidden", 0) + counts.get("applying", 0)


def test_flood_is_bounded_and_loses_nothing(flood_server):
    server = flood_server
    bodies = _requests(server.checkpoint, PER_TOKEN * len(STEADY) + 60)
    jobs = [
        (tok, body, 6) for n, tok in enumerate(STEADY.values()) for body in bodies[PER_TOKEN * n : PER_TOKEN * (n + 1)]
    ]
    jobs += [(BURST[1], body, 1) for body in bodies[PER_TOKEN * len(STEADY) :]]
    random.Random(0).shuffle(jobs)  # interleave the tokens
    before = server.call("GET", "/v1/versions", token=READ)[1]["requests"]
    rss0 = _rss_kib(server.proc.pid)

    depth, done = [], threading.Event()

    def watch():
        while not done.is_set():
            depth.append(_pending(server))
            time.sleep(0.02)

    def post(job):
        """One deletion, re-sent with its key after each 503 (as told by Retry-After), ``tries`` times at most."""
        tok, body, tries = job
        key, answers = uuid.uuid4().hex, []
        for _ in range(tries):
            code, out, hdr = server.call("POST", "/v1/deletions", body, token=tok, headers={"Idempotency-Key": key})
            answers.append((code, out, hdr))
            if code != 503:
                break
            time.sleep(int(hdr["retry-after"]))
        return tok, answers

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.time()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(post, jobs))
    elapsed = time.time() - t0
    done.set()
    watcher.join(timeout=10)

    answers = [(tok, *a) for tok, seq in results for a in seq]
    codes = [code for _, code, _, _ in answers]
    assert set(codes) <= {202, 429, 503}, sorted(set(codes))
    for _, code, out, hdr in answers:
        if code in (429, 503):
            assert int(hdr["retry-after"]) >= 1 and out["error"] == ("rate_limited" if code == 429 else "overloaded")
    for tok in [*STEADY.values(), BURST[1]]:  # the quota is per token: each gets its own 40 a minute
        mine = [code for t, code, _, _ in answers if t == tok]
        if elapsed < 55:  # all inside one quota window
            assert mine.count(429) == max(0, len(mine) - QUOTA), (tok, len(mine), mine.count(429))
    assert [code for t, code, _, _ in answers if t == BURST[1]].count(429) >= 60 - QUOTA
    assert 503 in codes  # the bound was met
    accepted = [out["id"] for _, code, out, _ in answers if code == 202]
    assert len(set(accepted)) == len(accepted) >= PER_TOKEN * len(STEADY) // 2

    after = server.call("GET", "/v1/versions", token=READ)[1]["requests"]
    assert sum(after.values()) - sum(before.values()) == len(accepted)  # one row per 202, none per refusal
    assert after.get("rejected", 0) == before.get("rejected", 0)
    assert max(depth) <= MAX_PENDING, max(depth)  # single-interaction requests: the bound itself
    for pid in accepted:
        _wait_status(server, pid, ("verified",), timeout=120)
    assert _pending(server) == 0
    assert server.call("GET", "/healthz")[1]["applier_errors"] == 0
    grown = _rss_kib(server.proc.pid) - rss0
    assert grown < 300 * 1024, f"RSS grew by {grown} KiB"
