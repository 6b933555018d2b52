"""The documented responses of the deletion API (OpenAPI only: the routes build their JSON themselves).

Every status code a route can answer is declared here, with its body and headers, so that a client (and the
schemathesis test, T14) can rely on the schema: an undocumented code or a body off its schema is a bug.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str | None = None


class ErrorBody(BaseModel):
    """A refusal: an error code and what went wrong (a list of field errors for a malformed body)."""

    error: str
    detail: str | list[ErrorItem] | None = None


class Rejected(BaseModel):
    """A request naming nothing we hold: recorded as rejected (its receipt and the reason)."""

    id: str
    status: str = Field(json_schema_extra={"enum": ["rejected"]})
    reason: str


class Receipt(BaseModel):
    """The acknowledgement of a deletion (after the ledger commit); a replayed key returns the first receipt."""

    id: str
    status: str
    replayed: bool | None = None
    n_edges: int | None = None


class RequestStatus(BaseModel):
    """The public record of one request (no raw identifiers)."""

    public_id: str
    kind: str
    status: str
    n_edges: int
    received_at: str
    hidden_at: str | None = None
    applied_version: int | None = None
    applied_at: str | None = None
    verified_at: str | None = None
    completed_at: str | None = None
    denial_reason: str | None = None
    attempts: int


class Recommendations(BaseModel):
    user: str
    model_version: int
    personalised: bool
    items: list[str]
    scores: list[float] | None = None


class Health(BaseModel):
    status: str
    model_version: int
    applier_errors: int


class Audit(BaseModel):
    requests: dict[str, int]
    oldest_open_received_at: str | None = None
    oldest_open_age_s: float | None = None
    audit_chain_ok: bool
    audit_chain_problem: str | None = None
    audit_events: int
    model_version: int
    deadline_s: float | None = None
    oldest_open_deadline_left_s: float | None = None
    alerts: list[str] = []
    settlement: dict[str, Any] | None = None


class Version(BaseModel):
    id: int
    parent_id: int | None = None
    kind: str
    algo: str
    status: str
    file_sha256: str
    residual_sha256: str
    ledger_high_water: int
    created_at: str
    metrics_json: str | None = None


class Versions(BaseModel):
    current: int
    versions: list[Version]
    requests: dict[str, int]


_STR = {"schema": {"type": "string"}}
_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def _err(description: str, headers: dict[str, Any] | None = None, model: Any = ErrorBody) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "description": description}
    if headers:
        out["headers"] = headers
    return out


AUTH = {
    401: _err("No, a malformed or an unknown bearer token (RFC 6750).", {"WWW-Authenticate": _STR}),
    403: _err("The token lacks the route's scope.", {"WWW-Authenticate": _STR}),
}
TOO_LARGE = {413: _err("The request body (or its Content-Length) is over the size limit.")}
INVALID = {422: _err("Malformed parameters.")}


def documented(*groups: dict[int, Any]) -> dict[int | str, Any]:
    """The ``responses=`` of a route: the union of ``groups``."""
    out: dict[int | str, Any] = {}
    for g in groups:
        out.update(g)
    return out


SUBMIT = documented(
    {202: {"model": Receipt, "description": "Recorded (committed) and hidden; a replayed key returns the first "
           "receipt.", "headers": {"Location": _STR}},
     400: _err("No Idempotency-Key header, or one over 200 characters.")},
    AUTH, TOO_LARGE,
    {422: _err("A malformed body, an Idempotency-Key reused for another payload, or a request naming nothing we "
               "hold (then recorded as rejected, with the reason).", model=ErrorBody | Rejected),
     429: _err("Over this token's quota; nothing was recorded.", _RETRY),
     503: _err("Too many interactions are waiting to be unlearned; nothing was recorded.", _RETRY)},
)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` inlined (a self-contained OpenAPI 3.1 schema object)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            ref = x.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in x.items() if k != "$ref"}
                return walk({**defs[ref.rsplit("/", 1)[1]], **rest})
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(schema)


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads its JSON body itself (to bound its size while streaming)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(model)}}}}


HEALTH = documented({200: {"model": Health, "description": "Alive; the served version."}}, TOO_LARGE)
STATUS = documented({200: {"model": RequestStatus, "description": "The request's lifecycle."},
                     404: _err("No request with this id.")}, AUTH, TOO_LARGE, INVALID)
RECOMMENDATIONS = documented(
    {200: {"model": Recommendations, "description": "Top-k raw item ids and the model version that served them."},
     404: _err("Unknown user."), 422: _err("k is not an integer in 1..1000.")}, AUTH, TOO_LARGE)
AUDIT = documented({200: {"model": Audit, "description": "Counts by status, the oldest open request, the audit "
                          "chain's integrity."}}, AUTH, TOO_LARGE, INVALID)
VERSIONS = documented({200: {"model": Versions, "description": "The model versions and request counts."}},
                      AUTH, TOO_LARGE, INVALID)
METRICS = documented({200: {"description": "Prometheus text exposition."}}, TOO_LARGE)


class RetrainStarted(BaseModel):
    status: str
    open_requests: int


RETRAIN = documented({202: {"model": RetrainStarted, "description": "A settlement started."},
                      409: _err("A settlement is already running.")}, AUTH, TOO_LARGE, INVALID)


class AuditExport(BaseModel):
    key_id: str
    audit_chain_ok: bool
    audit_chain_problem: str | None = None
    records: list[dict[str, Any]]
    events: list[dict[str, Any]]
    versions: list[dict[str, Any]]


EXPORT = documented({200: {"model": AuditExport, "description": "Per-request records, the event chain, the model "
                           "lineage."}}, AUTH, TOO_LARGE, INVALID)
