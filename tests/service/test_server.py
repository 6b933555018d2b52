"""The deletion service as a real uvicorn server in a subprocess, driven over loopback HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service extra (fastapi, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the service extra (fastapi, uvicorn) is not installed")

from unlearnrec.service.auth import token_digest  # noqa: E402

TOKENS = {"del": ("deleter-secret-token", ["deleter"]), "read": ("reader-secret-token", ["reader"]),
          "admin": ("admin-secret-token", ["deleter", "reader", "admin"])}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, checkpoint: Path):
        self.root, self.checkpoint = root, checkpoint
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.env = dict(os.environ)

    def start(self, *extra: str) -> Server:
        env = {**self.env, "UNLEARNREC_AUDIT_KEY": "test-audit-key-0123456789", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "unlearnrec.cli", "serve", "--checkpoint", str(self.checkpoint),
             "--tokens", str(self.root / "tokens.json"), "--store", str(self.root / "store"),
             "--port", str(self.port), "--max-body-bytes", "4096", *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stdout.read().decode()[-2000:]}")
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server did not come up in 60 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def call(self, method: str, path: str, body=None, token: str | None = None, headers=None, raw: bytes | None = None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null"), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null"), dict(e.headers)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from unlearnrec import api
    from unlearnrec.config import RunConfig

    root = tmp_path_factory.mktemp("svc")
    ck = root / "model"
    api.train(RunConfig().with_overrides({"train.epochs": 3, "model.embedding_size": 8}), ck, progress=False)
    (root / "tokens.json").write_text(json.dumps({n: {"sha256": token_digest(t), "scopes": s}
                                                  for n, (t, s) in TOKENS.items()}))
    server = Server(root, ck).start()
    yield server
    server.kill()


DEL, READ = TOKENS["del"][0], TOKENS["read"][0]


def _wait_status(server, pid, want, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = server.call("GET", f"/v1/deletions/{pid}", token=DEL)[1]
        if st["status"] in want:
            return st
        time.sleep(0.2)
    raise AssertionError(f"request {pid} stuck at {st}")


def test_auth_is_rfc6750_and_changes_nothing(served):
    before = served.call("GET", "/v1/versions", token=READ)[1]
    body = {"user": "3"}
    code, out, hdr = served.call("POST", "/v1/deletions", body, headers={"Idempotency-Key": "a1"})
    assert code == 401 and hdr["www-authenticate"].startswith("Bearer")
    assert served.call("POST", "/v1/deletions", body, token="wrong", headers={"Idempotency-Key": "a1"})[0] == 401
    code, out, hdr = served.call("POST", "/v1/deletions", body, token=READ, headers={"Idempotency-Key": "a1"})
    assert code == 403 and 'error="insufficient_scope"' in hdr["www-authenticate"]
    assert served.call("GET", "/v1/versions", token=READ)[1] == before


def _oversized(server, chunked: bool) -> int:
    """POST a body over the server's 4096-byte limit, with a Content-Length (not sent) or chunked."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/v1/deletions")
    for k, v in (("Authorization", f"Bearer {DEL}"), ("Idempotency-Key", "big"), ("Content-Type", "application/json")):
        conn.putheader(k, v)
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        body = b'{"user": "' + b"9" * 5000 + b'"}'
        conn.send(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    else:
        conn.putheader("Content-Length", str(2 << 20))
        conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_bad_bodies_are_4xx_and_leave_no_request(served):
    before = served.call("GET", "/v1/versions", token=READ)[1]["requests"]
    h = {"Idempotency-Key": "bad"}
    assert served.call("POST", "/v1/deletions", token=DEL, headers=h, raw=b"{not json")[0] == 422
    assert served.call("POST", "/v1/deletions", {"user": 3}, token=DEL, headers=h)[0] == 422  # strict: a string
    assert served.call("POST", "/v1/deletions", {"user": "3", "extra": 1}, token=DEL, headers=h)[0] == 422
    assert served.call("POST", "/v1/deletions", {"user": "3", "item": "4"}, token=DEL, headers=h)[0] == 422
    assert served.call("POST", "/v1/deletions", {"interactions": []}, token=DEL, headers=h)[0] == 422
    assert served.call("POST", "/v1/deletions", {"user": "3"}, token=DEL)[0] == 400  # no Idempotency-Key
    assert _oversized(served, chunked=False) == 413  # refused on its Content-Length, before the body is read
    assert _oversized(served, chunked=True) == 413  # and without one, while streaming
    assert served.call("GET", "/v1/versions", token=READ)[1]["requests"] == before
    # naming nothing we hold is refused with a reason and leaves only an audit record
    code, out, _ = served.call("POST", "/v1/deletions", {"user": "no-such-user"}, token=DEL, headers=h)
    assert code == 422 and out["status"] == "rejected" and "no-such-user" in out["reason"]
    stored = served.call("GET", f"/v1/deletions/{out['id']}", token=DEL)[1]
    assert stored["denial_reason"] == "unknown user id"  # the basis, without the raw id the caller sent
    after = served.call("GET", "/v1/versions", token=READ)[1]["requests"]
    assert after.get("rejected", 0) == before.get("rejected", 0) + 1 and after.get("hidden", 0) == 0


def test_a_deleted_user_is_hidden_at_once_then_unlearned(served):
    code, rec0, _ = served.call("GET", "/v1/recommendations/5?k=5", token=READ)
    assert code == 200 and rec0["personalised"] and len(rec0["items"]) == 5
    code, out, hdr = served.call("POST", "/v1/deletions", {"user": "5"}, token=DEL, headers={"Idempotency-Key": "u5"})
    assert code == 202 and hdr["location"] == f"/v1/deletions/{out['id']}" and out["n_edges"] > 0
    rec = served.call("GET", "/v1/recommendations/5?k=5", token=READ)[1]
    assert not rec["personalised"]  # from the 202 on, before (or whatever) model version serves
    again = served.call("POST", "/v1/deletions", {"user": "5"}, token=DEL, headers={"Idempotency-Key": "u5"})
    assert again[0] == 202 and again[1]["id"] == out["id"] and again[1]["replayed"]
    st = _wait_status(served, out["id"], ("verified",))
    assert st["applied_version"] > rec0["model_version"]
    rec = served.call("GET", "/v1/recommendations/5?k=5", token=READ)[1]
    assert rec["model_version"] == st["applied_version"] and not rec["personalised"]
    versions = served.call("GET", "/v1/versions", token=READ)[1]
    assert versions["current"] == st["applied_version"] and versions["versions"][-1]["algo"] == "edgedrop"


def test_acknowledged_deletions_survive_a_kill_and_are_applied_after_restart(served):
    from unlearnrec import api

    _, data, graph = api.open_checkpoint(served.checkpoint)
    u, i = (int(x) for x in graph.edges[graph.edges[:, 0] == 11][0])
    pair = {"user": data.user_ids[u], "item": data.item_ids[i]}
    code, out, _ = served.call("POST", "/v1/deletions", {"interactions": [pair]}, token=DEL,
                               headers={"Idempotency-Key": "kill-1"})
    assert code == 202
    served.kill()  # SIGKILL right after the acknowledgement: the receipt must survive
    served.start()
    st = _wait_status(served, out["id"], ("verified",))
    assert st["n_edges"] == 1
    rec = served.call("GET", f"/v1/recommendations/{pair['user']}?k=200", token=READ)[1]
    assert rec["personalised"] and rec["model_version"] >= st["applied_version"]


def test_audit_summary_and_metrics(served):
    ADMIN = TOKENS["admin"][0]
    assert served.call("GET", "/v1/audit", token=READ)[0] == 403
    code, audit, _ = served.call("GET", "/v1/audit", token=ADMIN)
    assert code == 200 and audit["audit_chain_ok"] and audit["audit_events"] > 0
    assert audit["requests"].get("verified", 0) >= 1
    req = urllib.request.Request(f"http://127.0.0.1:{served.port}/metrics")
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    assert f"unlearnrec_model_version {audit['model_version']}" in text
    assert 'unlearnrec_requests{status="rejected"} 1' in text


def test_hidden_interactions_stop_shaping_embeddings_before_any_model_change(served, tmp_path):
    """With the applier held back (5 s), a deleted interaction already leaves the served propagation: the
    user's scores change at once under the same model version (EdgeDrop until the unlearned version)."""
    from unlearnrec import api

    (tmp_path / "tokens.json").write_text((served.root / "tokens.json").read_text())
    slow = Server(tmp_path, served.checkpoint).start("--batch-wait", "5")
    try:
        _, data, graph = api.open_checkpoint(served.checkpoint)
        u, i = (int(x) for x in graph.edges[graph.edges[:, 0] == 21][0])
        user = data.user_ids[u]
        before = slow.call("GET", f"/v1/recommendations/{user}?k=1000", token=READ)[1]
        code, out, _ = slow.call("POST", "/v1/deletions", {"interactions": [{"user": user, "item": data.item_ids[i]}]},
                                 token=DEL, headers={"Idempotency-Key": "h1"})
        assert code == 202
        after = slow.call("GET", f"/v1/recommendations/{user}?k=1000", token=READ)[1]
        assert after["model_version"] == before["model_version"]  # no model change yet
        assert slow.call("GET", f"/v1/deletions/{out['id']}", token=DEL)[1]["status"] == "hidden"
        assert data.item_ids[i] in after["items"] and data.item_ids[i] not in before["items"]  # not 'seen' now
        b = dict(zip(before["items"], before["scores"], strict=True))
        changed = [abs(b[it] - sc) for it, sc in zip(after["items"], after["scores"], strict=True) if it in b]
        assert max(changed) > 1e-6  # the user's embedding no longer carries the deleted edge
        st = _wait_status(slow, out["id"], ("verified",))
        assert st["applied_version"] > before["model_version"]
    finally:
        slow.kill()
