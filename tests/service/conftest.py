"""Fixtures of the service tests: a real PostgreSQL (``tests/service/pg.py``) for the parity tests."""

from __future__ import annotations

import pytest

from tests.service import pg


@pytest.fixture(scope="session")
def pg_server():
    """A running PostgreSQL for the session (``$UNLEARNREC_PG_URL``, else a throwaway cluster); skips, saying
    what is missing, where none can be had."""
    try:
        server = pg.start()
    except pg.Unavailable as exc:
        pytest.skip(f"no PostgreSQL for the parity tests: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    """The URL of a fresh, empty database on :func:`pg_server`, dropped after the test."""
    with pg_server.database() as url:
        yield url
