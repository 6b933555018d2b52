"""Hot swap under read load (T8): readers hammer recommendations while batches apply; no 5xx, versions never go
back for a reader, and a whole-user erasure is not personalised in any list served after its 202."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extra (fastapi, uvicorn) is not installed")

from tests.service.test_crash import _drain  # noqa: E402
from tests.service.test_server import DEL, READ, TOKENS, Server  # noqa: E402
from unlearnrec.service.auth import token_digest  # noqa: E402


def test_readers_see_whole_versions_in_order_while_batches_apply(tmp_path):
    from unlearnrec import api
    from unlearnrec.config import RunConfig

    api.train(RunConfig().with_overrides({"train.epochs": 2, "model.embedding_size": 8}), tmp_path / "model",
              progress=False)
    (tmp_path / "tokens.json").write_text(json.dumps({n: {"sha256": token_digest(t), "scopes": s}
                                                      for n, (t, s) in TOKENS.items()}))
    server = Server(tmp_path, tmp_path / "model").start("--batch-wait", "0")
    _, data, graph = api.open_checkpoint(tmp_path / "model")
    rng = np.random.default_rng(0)
    erased = [str(data.user_ids[u]) for u in (1, 2, 3)]
    readers_users = [str(data.user_ids[u]) for u in rng.choice(np.arange(10, data.n_users), 40, replace=False)]
    acked: dict[str, float] = {}  # erased user -> when its 202 arrived
    problems: list[str] = []
    stop = threading.Event()

    def reader(users: list[str]) -> None:
        last = 0
        while not stop.is_set():
            for user in [*users, *erased]:
                t_sent = time.monotonic()
                code, body, _ = server.call("GET", f"/v1/recommendations/{user}?k=10", token=READ)
                if code >= 500:
                    problems.append(f"{code} for {user}")
                    continue
                if body["model_version"] < last:
                    problems.append(f"version went back {last} -> {body['model_version']}")
                last = body["model_version"]
                if user in acked and t_sent > acked[user] and body["personalised"]:
                    problems.append(f"erased user {user} got a personalised list after its 202")

    threads = [threading.Thread(target=reader, args=(readers_users[j::4],)) for j in range(4)]
    for t in threads:
        t.start()
    try:
        edges = graph.edges[rng.choice(len(graph.edges), 50, replace=False)]
        edges = edges[~np.isin(edges[:, 0], [1, 2, 3])]
        for j, (u, i) in enumerate(edges):  # one batch each (no batch wait): many hot swaps
            pair = {"user": str(data.user_ids[u]), "item": str(data.item_ids[i])}
            code, _, _ = server.call("POST", "/v1/deletions", {"interactions": [pair]}, token=DEL,
                                     headers={"Idempotency-Key": f"e{j}"})
            assert code in (202, 422)  # 422: an edge of an earlier sample (a user's all edges taken)
            if j % 15 == 0 and erased:
                user = erased[j // 15] if j // 15 < len(erased) else None
                if user is not None:
                    code, _, _ = server.call("POST", "/v1/deletions", {"user": user}, token=DEL,
                                             headers={"Idempotency-Key": f"u{user}"})
                    assert code == 202
                    acked[user] = time.monotonic()
        _drain(server, timeout=120)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        versions = server.call("GET", "/v1/versions", token=READ)[1]
        server.kill()
    assert not problems, problems[:5]
    assert len(acked) == 3 and len(versions["versions"]) > 10  # many swaps happened under the readers
