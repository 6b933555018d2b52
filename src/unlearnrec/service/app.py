"""``unlearnrec serve``: the HTTP face of the deletion service (FastAPI on uvicorn).

API (``/v1``, bearer tokens with scopes ``deleter``, ``reader``, ``admin``, see :mod:`unlearnrec.service.auth`):

* ``POST /v1/deletions`` (``Idempotency-Key`` header; body ``{"user": ID}``, ``{"item": ID}`` or
  ``{"interactions": [{"user": ID, "item": ID}, ...]}`` with raw ids) -> 202 and a receipt after the commit;
  a request naming nothing we hold -> 422 with the reason, recorded as rejected;
* ``GET /v1/deletions/{id}`` -> its lifecycle (hidden -> applied -> verified -> completed);
* ``GET /v1/recommendations/{user}?k=20`` -> top-k raw item ids with the model version that served them;
* ``GET /v1/versions``, ``GET /v1/audit`` (admin), ``GET /metrics``, ``GET /healthz``.
"""

from __future__ import annotations

import calendar
import time

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from unlearnrec.service.auth import Refusal, load_tokens, token_digest
from unlearnrec.service.bodies import DeletionBody
from unlearnrec.service.core import DeletionService
from unlearnrec.service.crash import crash_point, planted
from unlearnrec.service.ledger import HIDDEN, LedgerError

__all__ = ["DeletionService", "create_app", "load_tokens", "token_digest"]


def create_app(service: DeletionService, max_body_bytes: int = 1 << 20):
    """The FastAPI application over ``service`` (started and stopped with the app)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        yield
        service.stop()

    app = FastAPI(title="unlearnrec deletion service", version="1", lifespan=lifespan)

    def refuse(r: Refusal) -> JSONResponse:
        params = f'error="{r.error}", error_description="{r.description}"' + (
            f', scope="{r.scope}"' if r.scope else "")
        return JSONResponse({"error": r.error, "detail": r.description}, status_code=r.status,
                            headers={"WWW-Authenticate": f"Bearer {params}"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": "invalid_request", "detail": [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]}, status_code=422)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > max_body_bytes):
            return JSONResponse({"error": "payload_too_large", "detail": f"at most {max_body_bytes} bytes"},
                                status_code=413)
        return await call_next(request)

    @app.get("/healthz")
    def health():
        return {"status": "ok", "model_version": service.handle.version, "applier_errors": len(service.errors)}

    @app.post("/v1/deletions", status_code=202)
    async def submit(request: Request, authorization: str | None = Header(None),
                     idempotency_key: str | None = Header(None)):
        try:
            token = service.authorise(authorization, "deleter")
        except Refusal as r:
            return refuse(r)
        if not idempotency_key or len(idempotency_key) > 200:
            return JSONResponse({"error": "invalid_request", "detail": "an Idempotency-Key header (at most 200 "
                                 "characters) is required"}, status_code=400)
        chunks, size = [], 0
        async for chunk in request.stream():  # bounded also without a Content-Length (chunked bodies)
            size += len(chunk)
            if size > max_body_bytes:
                return JSONResponse({"error": "payload_too_large", "detail": f"at most {max_body_bytes} bytes"},
                                    status_code=413)
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = DeletionBody.model_validate_json(raw)
        except ValidationError as exc:
            return JSONResponse({"error": "invalid_request", "detail": [
                {"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]}, status_code=422)
        if planted("ack-before-commit"):  # the bug the crash tests must catch: acknowledge, then commit
            import uuid

            from starlette.background import BackgroundTask

            pid = str(uuid.uuid4())
            return JSONResponse({"id": pid, "status": "hidden"}, status_code=202,
                                headers={"Location": f"/v1/deletions/{pid}"},
                                background=BackgroundTask(service.submit, token, idempotency_key, body, pid))
        status, out = service.submit(token, idempotency_key, body)
        if status == 202:
            crash_point("after-commit-before-response")
        headers = {"Location": f"/v1/deletions/{out['id']}"} if status == 202 else {}
        return JSONResponse(out, status_code=status, headers=headers)

    @app.get("/v1/deletions/{public_id}")
    def status(public_id: str, authorization: str | None = Header(None)):
        try:
            service.authorise(authorization, "deleter")
            return service.ledger.status(public_id)
        except Refusal as r:
            return refuse(r)
        except LedgerError as exc:
            return JSONResponse({"error": "not_found", "detail": str(exc)}, status_code=404)

    @app.get("/v1/recommendations/{user}")
    def recommendations(user: str, k: int = 20, authorization: str | None = Header(None)):
        try:
            service.authorise(authorization, "reader")
        except Refusal as r:
            return refuse(r)
        if not 1 <= k <= 1000:
            return JSONResponse({"error": "invalid_request", "detail": "k must be 1..1000"}, status_code=422)
        try:
            return service.recommend(user, k)
        except LookupError as exc:
            return JSONResponse({"error": "not_found", "detail": str(exc)}, status_code=404)

    @app.get("/v1/audit")
    def audit(authorization: str | None = Header(None)):
        """What a privacy officer asks first: counts by status, the oldest open request's age, the audit
        chain's integrity (no raw identifiers: digests and counts only)."""
        try:
            service.authorise(authorization, "admin")
        except Refusal as r:
            return refuse(r)
        led = service.ledger
        oldest = led.db.execute(f"SELECT MIN(received_at) FROM requests WHERE status IN "
                                f"({', '.join('?' * len(HIDDEN))})", HIDDEN).fetchone()[0]
        age = None if oldest is None else time.time() - calendar.timegm(time.strptime(oldest, "%Y-%m-%dT%H:%M:%SZ"))
        ok, why = led.verify_audit()
        return {"requests": led.counts(), "oldest_open_received_at": oldest, "oldest_open_age_s": age,
                "audit_chain_ok": ok, "audit_chain_problem": why or None,
                "audit_events": led.db.execute("SELECT COUNT(*) FROM audit_events").fetchone()[0],
                "model_version": service.handle.version}

    @app.get("/metrics")
    def metrics():
        """Prometheus text exposition: requests by status, the served version, applier errors."""
        from fastapi.responses import PlainTextResponse

        lines = ["# HELP unlearnrec_requests Deletion requests by status.", "# TYPE unlearnrec_requests gauge"]
        counts = service.ledger.counts()
        for st in ("hidden", "applying", "applied", "verified", "completed", "rejected", "failed"):
            lines.append(f'unlearnrec_requests{{status="{st}"}} {counts.get(st, 0)}')
        lines += ["# HELP unlearnrec_model_version The served model version.", "# TYPE unlearnrec_model_version gauge",
                  f"unlearnrec_model_version {service.handle.version}",
                  "# HELP unlearnrec_applier_errors Applier errors since start.",
                  "# TYPE unlearnrec_applier_errors counter", f"unlearnrec_applier_errors_total {len(service.errors)}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    @app.get("/v1/versions")
    def versions(authorization: str | None = Header(None)):
        try:
            service.authorise(authorization, "reader")
        except Refusal as r:
            return refuse(r)
        cols = ("id", "parent_id", "kind", "algo", "status", "file_sha256", "residual_sha256", "ledger_high_water",
                "created_at", "metrics_json")
        rows = service.ledger.db.execute(f"SELECT {', '.join(cols)} FROM model_versions ORDER BY id").fetchall()
        return {"current": service.handle.version, "versions": [dict(zip(cols, r, strict=True)) for r in rows],
                "requests": service.ledger.counts()}

    return app
