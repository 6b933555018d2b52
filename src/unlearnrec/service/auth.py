"""Bearer tokens with scopes (``deleter``, ``reader``, ``admin``): stored as sha256 digests, compared in constant
time, refused with 401/403 and a ``WWW-Authenticate`` challenge as RFC 6750 §3 says."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("deleter", "reader", "admin")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    token_id: str
    sha256: str
    scopes: frozenset[str]


def load_tokens(path: str | Path) -> list[Token]:
    """``{token_id: {"sha256": hex, "scopes": [...]}}`` from a JSON file (digests only, never the tokens)."""
    raw = json.loads(Path(path).read_text())
    out = []
    for tid, spec in raw.items():
        scopes = frozenset(spec.get("scopes", []))
        if not scopes <= set(SCOPES) or len(spec.get("sha256", "")) != 64:
            raise ValueError(f"{path}: token {tid!r} needs a 64-hex sha256 and scopes among {SCOPES}")
        out.append(Token(tid, spec["sha256"], scopes))
    return out


class Refusal(Exception):
    """An HTTP refusal: status, RFC 6750 error code, description and the scope that was missing."""

    def __init__(self, status: int, error: str, description: str, scope: str | None = None):
        super().__init__(description)
        self.status, self.error, self.description, self.scope = status, error, description, scope


def authorise(tokens: list[Token], header: str | None, scope: str) -> Token:
    """The token of an ``Authorization: Bearer`` header with ``scope``; raises (status, error) otherwise."""
    if not header or not header.startswith("Bearer ") or not header[7:].strip():
        raise Refusal(401, "invalid_request", "a bearer token is required")
    digest = token_digest(header[7:].strip())
    match = None
    for t in tokens:  # compare every one, in constant time
        if hmac.compare_digest(t.sha256, digest):
            match = t
    if match is None:
        raise Refusal(401, "invalid_token", "unknown token")
    if scope not in match.scopes:
        raise Refusal(403, "insufficient_scope", f"this token lacks the {scope!r} scope", scope)
    return match
