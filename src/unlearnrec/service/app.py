"""``unlearnrec serve``: the HTTP face of the deletion service (FastAPI on uvicorn).

API (``/v1``, bearer tokens with scopes ``deleter``, ``reader``, ``admin``, see :mod:`unlearnrec.service.auth`):

* ``POST /v1/deletions`` (``Idempotency-Key`` header; body ``{"user": ID}``, ``{"item": ID}`` or
  ``{"interactions": [{"user": ID, "item": ID}, ...]}`` with raw ids) -> 202 and a receipt after the commit;
  a request naming nothing we hold -> 422 with the reason, recorded as rejected;
* ``GET /v1/deletions/{id}`` -> its lifecycle (hidden -> applied -> verified -> completed);
* ``GET /v1/recommendations/{user}?k=20`` -> top-k raw item ids with the model version that served them;
* ``GET /v1/versions``, ``GET /v1/audit`` (admin), ``GET /metrics``, ``GET /healthz``;
* ``GET /v1/audit/export`` (admin): per-request records, the event chain, the lineage;
* ``POST /v1/admin/retrain`` (admin) -> 202: a settlement (exact retrain, completion, purge) starts.
* ``GET /status`` -> the status and audit page for a privacy officer (HTML, no data; token asked in the page).
"""

from __future__ import annotations

import calendar
import time

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from unlearnrec.service import responses as doc
from unlearnrec.service.admission import Quota
from unlearnrec.service.auth import Refusal, load_tokens, token_digest
from unlearnrec.service.bodies import DeletionBody
from unlearnrec.service.core import DeletionService
from unlearnrec.service.crash import crash_point, planted
from unlearnrec.service.ledger import LedgerError

__all__ = ["DeletionService", "create_app", "load_tokens", "token_digest"]


def create_app(service: DeletionService, max_body_bytes: int = 1 << 20, quota: str = "600/minute",
               max_pending: int = 1_000_000):
    """The FastAPI application over ``service`` (started and stopped with the app).

    ``quota`` bounds each token's deletion requests (``limits`` notation, 429 beyond); ``max_pending`` the
    interactions waiting to be unlearned (503 at or past it); neither refusal records anything."""
    per_token = Quota(quota)
    if service is not None:
        service.max_pending = int(max_pending)  # the authoritative check is inside the intake transaction
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

    def _replay(token, key: str, body: DeletionBody) -> bool:
        """Whether ``key`` was used before by ``token`` (a replay, or a conflicting reuse the service answers)."""
        try:
            return service.ledger.replay(token.token_id, key, body.model_dump(mode="json")) is not None
        except LedgerError:
            return True

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

    @app.get("/healthz", responses=doc.HEALTH)
    def health():
        return {"status": "ok", "model_version": service.handle.version, "applier_errors": len(service.errors)}

    @app.get("/status", include_in_schema=False)  # an HTMLResponse (page.status_response)
    def status_page():
        """The status and audit page: static HTML holding no data (it reads the API with the token it asks for)."""
        from unlearnrec.service.page import status_response

        return status_response()

    @app.post("/v1/deletions", status_code=202, responses=doc.SUBMIT, openapi_extra=doc.request_body(DeletionBody))
    async def submit(request: Request, authorization: str | None = Header(None),
                     idempotency_key: str | None = Header(None)):
        try:
            token = service.authorise(authorization, "deleter")
        except Refusal as r:
            return refuse(r)
        wait = per_token.admit(token.token_id)  # before the body is read or the ledger touched
        if wait is not None:
            return JSONResponse({"error": "rate_limited", "detail": f"over this token's quota ({quota}); retry "
                                 f"in {wait} s"}, status_code=429, headers={"Retry-After": str(wait)})
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
        # bounded queue: no await from this check to the commit below, so concurrent submissions cannot overshoot;
        # a replayed key still gets its receipt
        if service.ledger.pending_edges() >= max_pending and not _replay(token, idempotency_key, body):
            return JSONResponse({"error": "overloaded", "detail": f"{max_pending} or more interactions are waiting "
                                 "to be unlearned; retry later"}, status_code=503, headers={"Retry-After": "1"})
        if planted("ack-before-commit"):  # the bug the crash tests must catch: acknowledge, then commit
            import uuid

            from starlette.background import BackgroundTask

            pid = str(uuid.uuid4())
            return JSONResponse({"id": pid, "status": "hidden"}, status_code=202,
                                headers={"Location": f"/v1/deletions/{pid}"},
                                background=BackgroundTask(service.submit, token, idempotency_key, body, pid))
        from starlette.concurrency import run_in_threadpool

        # off the event loop: the commit and the wait for hiding must not stall other requests
        status, out = await run_in_threadpool(service.submit, token, idempotency_key, body)
        if status == 202:
            crash_point("after-commit-before-response")
        headers = {"Location": f"/v1/deletions/{out['id']}"} if status == 202 else (
            {"Retry-After": "1"} if status == 503 else {})
        return JSONResponse(out, status_code=status, headers=headers)

    @app.get("/v1/deletions/{public_id}", responses=doc.STATUS)
    def status(public_id: str, authorization: str | None = Header(None)):
        try:
            service.authorise(authorization, "deleter")
            return service.ledger.status(public_id)
        except Refusal as r:
            return refuse(r)
        except LedgerError as exc:
            return JSONResponse({"error": "not_found", "detail": str(exc)}, status_code=404)

    @app.get("/v1/recommendations/{user}", responses=doc.RECOMMENDATIONS)
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

    @app.get("/v1/audit", responses=doc.AUDIT)
    def audit(authorization: str | None = Header(None)):
        """What a privacy officer asks first: counts by status, the oldest open request's age, the audit
        chain's integrity (no raw identifiers: digests and counts only)."""
        try:
            service.authorise(authorization, "admin")
        except Refusal as r:
            return refuse(r)
        led = service.ledger
        oldest = led.oldest_open()
        age = None if oldest is None else time.time() - calendar.timegm(time.strptime(oldest, "%Y-%m-%dT%H:%M:%SZ"))
        ok, why = led.verify_audit()
        settler = service.settler
        return {"requests": led.counts(), "oldest_open_received_at": oldest, "oldest_open_age_s": age,
                "audit_chain_ok": ok, "audit_chain_problem": why or None,
                "audit_events": led.audit_count(),
                "model_version": service.handle.version, "deadline_s": settler.deadline_s,
                "oldest_open_deadline_left_s": None if age is None else settler.deadline_s - age,
                "alerts": sorted(settler.alerts.values()), "settlement": settler.summary()}

    @app.get("/v1/audit/export", responses=doc.EXPORT)
    def audit_export(authorization: str | None = Header(None)):
        """Everything an auditor receives: per-request records, the hash-chained event log and the model lineage
        with the residual-data hash of each version (keyed digests and counts, never raw identifiers)."""
        try:
            service.authorise(authorization, "admin")
        except Refusal as r:
            return refuse(r)
        led = service.ledger
        ok, why = led.verify_audit()
        return {"key_id": led.key_id, "audit_chain_ok": ok, "audit_chain_problem": why or None,
                "records": led.records(), "events": led.audit_events(),
                "versions": [{k: v for k, v in r.items() if k != "path"} for r in led.versions()]}

    @app.post("/v1/admin/retrain", status_code=202, responses=doc.RETRAIN)
    def retrain(authorization: str | None = Header(None)):
        """Start a settlement now: an exact retrain on the residual data that completes every open request
        received so far (409 while one runs)."""
        try:
            service.authorise(authorization, "admin")
        except Refusal as r:
            return refuse(r)
        if not service.settler.trigger():
            return JSONResponse({"error": "conflict", "detail": "a settlement is already running"}, status_code=409)
        return JSONResponse({"status": "started", "open_requests": len(service.ledger.open_requests())},
                            status_code=202)

    @app.get("/metrics", response_class=PlainTextResponse, responses=doc.METRICS)
    def metrics():
        """Prometheus text exposition: requests by status, the served version, applier errors."""
        lines = ["# HELP unlearnrec_requests Deletion requests by status.", "# TYPE unlearnrec_requests gauge"]
        counts = service.ledger.counts()
        for st in ("hidden", "applying", "applied", "verified", "completed", "rejected", "failed", "exact"):
            lines.append(f'unlearnrec_requests{{status="{st}"}} {counts.get(st, 0)}')
        for name, kind, help_, value in (
            ("unlearnrec_model_version", "gauge", "The served model version.", service.handle.version),
            ("unlearnrec_applier_errors_total", "counter", "Applier errors since start.", len(service.errors)),
            ("unlearnrec_deadline_alerts", "gauge", "Open requests near their legal deadline.",
             len(service.settler.alerts)),
        ):
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    @app.get("/v1/versions", responses=doc.VERSIONS)
    def versions(authorization: str | None = Header(None)):
        try:
            service.authorise(authorization, "reader")
        except Refusal as r:
            return refuse(r)
        rows = [{k: v for k, v in r.items() if k != "path"} for r in service.ledger.versions()]
        return {"current": service.handle.version, "versions": rows, "requests": service.ledger.counts()}

    return app
