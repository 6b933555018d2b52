"""Load on the deletion service over loopback: reads under deletions, a burst, request-to-served-unlearned.

Starts ``unlearnrec serve`` as a subprocess on a checkpoint (default: a small model trained on the built-in
data) and, over HTTP on 127.0.0.1:

1. ``--readers`` threads ask ``GET /v1/recommendations/{user}`` for random users for ``--seconds`` while
2. ``--submitters`` threads send single-interaction deletions one after another (each acknowledged, 202);
3. ``--latency-n`` whole-user deletions one at a time: the time from the POST to the moment
   ``GET /v1/deletions/{id}`` says applied (or later) *and* ``GET /v1/recommendations`` is served by a model
   version at least the applied one (request-to-served-unlearned);
4. last (so that its queue delays nothing else), a burst of ``--burst`` single-interaction deletions sent at
   once: all must be acknowledged (202), the ledger must gain exactly one row each and, after the drain, every
   one must be verified (none lost). A client waits ``--timeout`` seconds for its answer.

Writes ``results/service_load_<name>.{json,md}``: acknowledgement throughput, p50/p99 of the recommendation,
acknowledgement and request-to-served-unlearned latencies, with the command, commit, machine (load average
before and after) and versions.

    UNLEARNREC_DATA=../shared/data python benchmarks/service_load.py \\
        --checkpoint runs/bench-cache/ml-1m-lightgcn-s0-cd8f4112e12866df --name ml-1m_lightgcn_edgedrop
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import record

from unlearnrec.report import format_table
from unlearnrec.service.auth import token_digest

TOKENS = {"bench-del": ("bench-deleter-token", ["deleter"]), "bench-read": ("bench-reader-token", ["reader"])}
DEL, READ = TOKENS["bench-del"][0], TOKENS["bench-read"][0]
DONE = ("applied", "verified", "completed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port: int, timeout: float):
        self.base, self.timeout = f"http://127.0.0.1:{port}", timeout

    def call(
        self, method: str, path: str, body=None, token: str | None = None, headers=None, timeout: float | None = None
    ):
        req = urllib.request.Request(
            self.base + path, method=method, data=None if body is None else json.dumps(body).encode()
        )
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
        except TimeoutError:  # the client gave up waiting (the server may still act on the request)
            return 0, {}

    def delete(self, body) -> tuple[int, dict, float]:
        t = time.perf_counter()
        code, out = self.call("POST", "/v1/deletions", body, token=DEL, headers={"Idempotency-Key": uuid.uuid4().hex})
        return code, out, time.perf_counter() - t

    def status(self, pid: str) -> dict:
        return self.call("GET", f"/v1/deletions/{pid}", token=DEL)[1]


def _pct(xs, q):
    return None if not len(xs) else float(np.percentile(np.asarray(xs) * 1000.0, q))


def _summary(what: str, xs, n_ok=None, n=None, seconds=None) -> dict:
    return {
        "what": what,
        "n": len(xs) if n is None else n,
        "ok": n_ok,
        "p50_ms": _pct(xs, 50),
        "p99_ms": _pct(xs, 99),
        "max_ms": _pct(xs, 100),
        "per_s": None if not seconds else (n_ok if n_ok is not None else len(xs)) / seconds,
    }


def _wait_all(client: Client, ids: list[str], timeout: float) -> tuple[float, list[str]]:
    """Seconds until every request in ``ids`` is verified (or later); the ids still open at the timeout."""
    t0, open_ = time.perf_counter(), list(ids)
    while open_ and time.perf_counter() - t0 < timeout:
        open_ = [pid for pid in open_ if client.status(pid)["status"] not in ("verified", "completed")]
        if open_:
            time.sleep(0.2)
    return time.perf_counter() - t0, open_


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--checkpoint", type=Path, help="checkpoint to serve (default: train a small one on the built-in data)"
    )
    ap.add_argument(
        "--encoder",
        type=Path,
        help="UnlearnRec encoder of the checkpoint (the applier's method is "
        "then UnlearnRec zero-shot; without it EdgeDrop)",
    )
    ap.add_argument("--name", default="builtin", help="results/service_load_<name>.{json,md}")
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--submitters", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of phase 1+2")
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--latency-n", type=int, default=30)
    ap.add_argument("--batch-wait", type=float, default=0.05, help="the server's --batch-wait")
    ap.add_argument("--server-threads", type=int, default=1, help="OMP_NUM_THREADS of the server (torch threads)")
    ap.add_argument("--drain-timeout", type=float, default=1800.0)
    ap.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds a client waits for an answer (then counted as timed out)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the server's store (ledger, versions, log)")
    args = ap.parse_args()
    load_before = list(os.getloadavg())

    from unlearnrec import api
    from unlearnrec.config import RunConfig

    root = Path(tempfile.mkdtemp(prefix="service_load-", dir=os.environ.get("TMPDIR")))
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = root / "model"
        api.train(
            RunConfig().with_overrides({"train.epochs": 20, "model.embedding_size": 32}), checkpoint, progress=False
        )
    _, data, graph = api.open_checkpoint(checkpoint)
    (root / "tokens.json").write_text(
        json.dumps({n: {"sha256": token_digest(t), "scopes": s} for n, (t, s) in TOKENS.items()})
    )
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "unlearnrec.cli",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--store",
        str(root / "store"),
        "--tokens",
        str(root / "tokens.json"),
        "--port",
        str(port),
        "--quota",
        "1000000/minute",
        "--batch-wait",
        str(args.batch_wait),
    ]
    if args.encoder is not None:
        cmd += ["--encoder", str(args.encoder)]
    env = {
        **os.environ,
        "UNLEARNREC_AUDIT_KEY": "service-load-benchmark-key",
        "OMP_NUM_THREADS": str(args.server_threads),
    }
    log = open(root / "server.log", "w")  # noqa: SIM115 - open for the server's lifetime
    t_start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = Client(port, args.timeout)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {(root / 'server.log').read_text()[-3000:]}")
            try:
                health = client.call("GET", "/healthz", timeout=5)[1]
                break
            except OSError:
                time.sleep(0.5)
            if time.perf_counter() - t_start > 1800:
                raise SystemExit("server did not come up in 30 min")
        startup_s = time.perf_counter() - t_start
        method = client.call("GET", "/v1/versions", token=READ)[1]
        print(f"server up in {startup_s:.1f} s (version {health['model_version']})", flush=True)

        rng = np.random.default_rng(args.seed)
        users = rng.permutation(graph.n_users)
        latency_users = users[: args.latency_n]  # whole-user deletions (phase 4); their edges are not used before
        rest = graph.edges[~np.isin(graph.edges[:, 0], latency_users)]
        rest = rest[rng.permutation(len(rest))]
        pool_edges = iter(rest.tolist())
        lock = threading.Lock()

        def next_body():
            with lock:
                u, i = next(pool_edges)
            return {"interactions": [{"user": str(data.user_ids[u]), "item": str(data.item_ids[i])}]}

        reader_users = [str(x) for x in data.user_ids[users[args.latency_n :]]]

        # ---- 1 + 2: readers under a stream of deletions
        stop = threading.Event()
        reads: list[tuple[int, float]] = []
        acks: list[tuple[int, float, str | None]] = []

        def reader(seed):
            r = random.Random(seed)
            while not stop.is_set():
                t = time.perf_counter()
                code, _ = client.call("GET", f"/v1/recommendations/{r.choice(reader_users)}?k=20", token=READ)
                reads.append((code, time.perf_counter() - t))

        def submitter():
            while not stop.is_set():
                code, out, dt = client.delete(next_body())
                acks.append((code, dt, out.get("id") if code == 202 else None))

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(args.readers)]
        threads += [threading.Thread(target=submitter) for _ in range(args.submitters)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        mixed_s = time.perf_counter() - t0
        stream_ids = [pid for code, _, pid in acks if code == 202]
        stream_drain_s, stream_open = _wait_all(client, stream_ids, args.drain_timeout)
        print(
            f"phase 1+2: {len(reads)} reads, {len(stream_ids)} deletions acknowledged; drained in "
            f"{stream_drain_s:.1f} s",
            flush=True,
        )

        # ---- 3: request-to-served-unlearned, one user at a time
        served, ack4 = [], []
        for u in latency_users:
            raw = str(data.user_ids[u])
            t = time.perf_counter()
            code, out, dt = client.delete({"user": raw})
            ack4.append(dt)
            if code != 202:
                served.append(None)
                continue
            while True:
                st = client.status(out["id"])
                if st["status"] in DONE and st.get("applied_version") is not None:
                    rec = client.call("GET", f"/v1/recommendations/{raw}?k=20", token=READ)[1]
                    if rec["model_version"] >= st["applied_version"]:
                        served.append(time.perf_counter() - t)
                        break
                if time.perf_counter() - t > args.drain_timeout:
                    served.append(None)
                    break
                time.sleep(0.01)
        print(f"phase 3: request-to-served-unlearned p50 {_pct([s for s in served if s], 50):.0f} ms", flush=True)

        # ---- 4: a burst of concurrent deletions
        bodies = [next_body() for _ in range(args.burst)]
        rows_before = client.call("GET", "/v1/versions", token=READ)[1]["requests"]
        gate = threading.Barrier(args.burst)

        def burst_one(body):
            gate.wait()
            return time.perf_counter(), *client.delete(body)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.burst) as ex:
            burst = list(ex.map(burst_one, bodies))
        burst_s = max(t + dt for t, _, _, dt in burst) - min(t for t, _, _, _ in burst)
        burst_codes = [code for _, code, _, _ in burst]
        burst_ids = [out["id"] for _, code, out, _ in burst if code == 202]
        burst_drain_s, burst_open = _wait_all(client, burst_ids, args.drain_timeout)
        print(
            f"phase 4: {burst_codes.count(202)}/{args.burst} acknowledged in {burst_s:.2f} s; drained in "
            f"{burst_drain_s:.1f} s, {len(burst_open)} not verified",
            flush=True,
        )

        versions = client.call("GET", "/v1/versions", token=READ)[1]
        burst_rows = sum(versions["requests"].values()) - sum(rows_before.values())
        health = client.call("GET", "/healthz")[1]
        rss = _rss_mib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if not args.keep:
            shutil.rmtree(root / "store", ignore_errors=True)
    load_after = list(os.getloadavg())

    ok_reads = [dt for code, dt in reads if code == 200]
    rows = [
        _summary("recommendations under deletions (GET)", ok_reads, n_ok=len(ok_reads), n=len(reads), seconds=mixed_s),
        _summary(
            "acknowledgement, steady stream (POST -> 202)",
            [dt for code, dt, _ in acks if code == 202],
            n_ok=len(stream_ids),
            n=len(acks),
            seconds=mixed_s,
        ),
        _summary(
            f"acknowledgement, burst of {args.burst} (POST -> 202)",
            [dt for _, code, _, dt in burst if code == 202],
            n_ok=burst_codes.count(202),
            n=args.burst,
            seconds=burst_s,
        ),
        _summary("acknowledgement, one user's deletion (POST -> 202)", ack4, n_ok=len(ack4)),
        _summary(
            "request-to-served-unlearned, one user",
            [s for s in served if s is not None],
            n_ok=sum(s is not None for s in served),
            n=len(served),
        ),
    ]
    kinds = {}
    for v in versions["versions"]:
        kinds[v["algo"]] = kinds.get(v["algo"], 0) + 1
    results = {
        "checkpoint": str(checkpoint),
        "encoder": None if args.encoder is None else str(args.encoder),
        "method": method["versions"][-1]["algo"] if method["versions"][-1]["algo"] != "train" else None,
        "applier_methods": kinds,
        "server_command": cmd[1:],
        "server_threads": args.server_threads,
        "n_users": int(graph.n_users),
        "n_items": int(graph.n_items),
        "n_train_edges": int(len(graph.edges)),
        "startup_s": startup_s,
        "readers": args.readers,
        "submitters": args.submitters,
        "mixed_seconds": mixed_s,
        "rows": rows,
        "reads_by_status": {str(c): sum(1 for code, _ in reads if code == c) for c in sorted({c for c, _ in reads})},
        "stream": {"acknowledged": len(stream_ids), "drain_s": stream_drain_s, "not_verified": len(stream_open)},
        "burst": {
            "n": args.burst,
            "codes": {str(c): burst_codes.count(c) for c in sorted(set(burst_codes))},
            "acknowledged": len(burst_ids),
            "ack_seconds": burst_s,
            "ack_per_s": len(burst_ids) / burst_s,
            "drain_s": burst_drain_s,
            "not_verified": len(burst_open),
            "ledger_rows_added": burst_rows,
            "all_acknowledged": len(burst_ids) == args.burst,
            "none_lost": not burst_open and burst_rows == args.burst,
        },
        "served_unlearned_s": served,
        "model_versions": len(versions["versions"]),
        "requests_by_status": versions["requests"],
        "applier_errors": health["applier_errors"],
        "server_rss_mib": rss,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "targets": {
            "served_unlearned_p50_le_1s": (_pct([s for s in served if s], 50) or 1e9) <= 1000.0,
            "burst_all_acknowledged_none_lost": len(burst_ids) == args.burst
            and not burst_open
            and burst_rows == args.burst,
        },
    }
    results["method"] = results["method"] or ("unlearnrec" if args.encoder else "edgedrop")
    md = format_table(
        rows,
        columns=["what", "n", "ok", "p50_ms", "p99_ms", "max_ms", "per_s"],
        floatfmt=".1f",
        title=f"service load: {checkpoint.name}, applier method {results['method']}",
    )
    md += (
        f"\n\nburst: {results['burst']['codes']} of {args.burst}, acknowledged in {burst_s:.2f} s "
        f"({len(burst_ids) / burst_s:.1f}/s; 0 = the client gave up after {args.timeout:.0f} s), ledger rows added "
        f"{burst_rows}, all acknowledged ones verified after {burst_drain_s:.1f} s: "
        f"{'yes' if not burst_open else f'no ({len(burst_open)} open)'}  \n"
        f"steady stream: {len(stream_ids)} acknowledged, verified after {stream_drain_s:.1f} s  \n"
        f"model versions written: {len(versions['versions'])} ({kinds}); applier errors: "
        f"{health['applier_errors']}; server RSS {rss:.0f} MiB; start-up {startup_s:.1f} s  \n"
        f"targets: one user's deletion served unlearned <= 1 s at p50: "
        f"{'met' if results['targets']['served_unlearned_p50_le_1s'] else 'NOT met'}; 200 concurrent "
        f"acknowledged, none lost: {'met' if results['targets']['burst_all_acknowledged_none_lost'] else 'NOT met'}"
        f"  \nload average (1/5/15 min) before {load_before}, after {load_after}; server torch threads "
        f"{args.server_threads}; {args.readers} readers, {args.submitters} submitters for {mixed_s:.1f} s"
    )
    path = record(f"service_load_{args.name}", results, md)
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
