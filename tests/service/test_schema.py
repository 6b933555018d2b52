"""T14: schemathesis over the service's own ``/openapi.json``, in process (ASGI), with an admin token injected.

Every generated request must get a documented status code, a body and headers that conform to the schema,
and never a 5xx. A second app with a quota and a pending bound of zero checks that the 429 and 503 refusals
conform too, and record nothing.
"""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("fastapi", reason="the service extra (fastapi, uvicorn) is not installed")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (test extra) is not installed")
pytest.importorskip("limits", reason="limits (service extra) is not installed")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from unlearnrec.service.auth import Token, token_digest  # noqa: E402

ADMIN = "schema-admin-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from unlearnrec import api
    from unlearnrec.config import RunConfig

    ck = tmp_path_factory.mktemp("schema") / "model"
    api.train(RunConfig().with_overrides({"train.epochs": 3, "model.embedding_size": 8}), ck, progress=False)
    return ck


def _service(checkpoint, store):
    from unlearnrec.service.core import DeletionService

    return DeletionService(
        checkpoint,
        store,
        audit_key=b"x" * 16,
        batch_wait_s=0.01,
        tokens=[Token("admin", token_digest(ADMIN), frozenset({"deleter", "reader", "admin"}))],
    )


@pytest.fixture(scope="module")
def services():
    started = []
    yield started
    for s in started:  # schemathesis keeps an ASGI lifespan open until exit; the applier threads end here
        s.stop()


class _Live:
    """The ASGI app the schema's cases call: the app of the ``live`` fixture (its model is trained there).

    schemathesis runs an app's lifespan per test item (here: per operation), and a service starts once, so the
    fixture starts and stops the service and the lifespan stops here."""

    app = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.app is not None, "use the live fixture"
        await self.app(scope, receive, send)


def _schema():
    from unlearnrec.service.app import create_app

    # the schema does not depend on the service's state: built here (collection), served by the live app
    loaded = schemathesis.openapi.from_dict(create_app(None).openapi())
    loaded.app = _Live()
    return loaded


schema = _schema()


@pytest.fixture(scope="module")
def live(model, services):
    from unlearnrec.service.app import create_app

    service = _service(model, model.parent / "store")
    services.append(service)
    app = create_app(service, max_body_bytes=1 << 16)
    assert app.openapi() == create_app(None).openapi()
    schema.app.app = app
    service.start()
    return service


@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_response_is_documented_and_conforms(case, live):
    headers = {k.lower(): v for k, v in (case.headers or {}).items()}
    headers["authorization"] = f"Bearer {ADMIN}"
    if case.method == "POST" and not headers.get("idempotency-key"):
        headers["idempotency-key"] = uuid.uuid4().hex  # else most deletions stop at the 400 (test_server has it)
    case.headers = headers
    case.call_and_validate(checks=CHECKS)
    assert not live.errors  # nor did the applier fail on what the requests asked


def test_refusals_conform_and_record_nothing(model, services):
    """A pending bound of 0 refuses every new deletion with 503; past the quota (3 a minute), 429."""
    from unlearnrec.service.app import create_app

    service = _service(model, model.parent / "store-refusals")
    services.append(service)
    refusing = schemathesis.openapi.from_asgi("/openapi.json", create_app(service, quota="3/minute", max_pending=0))
    op = refusing["/v1/deletions"]["POST"]
    user = str(service.data.user_ids[0])
    got = []
    for n in range(5):
        case = op.Case(body={"user": user}, headers={"Authorization": f"Bearer {ADMIN}", "Idempotency-Key": f"k{n}"})
        r = case.call_and_validate(checks=CHECKS[1:])  # a 503 here is the refusal asked for, not a failure
        got.append(r.status_code)
        assert r.status_code in (429, 503) and int(r.headers["retry-after"][0]) >= 1
        assert r.json()["error"] == ("rate_limited" if r.status_code == 429 else "overloaded")
    assert got == [503, 503, 503, 429, 429]
    assert service.ledger.counts() == {}  # nothing written
