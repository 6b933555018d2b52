"""The status and audit page (``GET /status``): static over plain HTTP, and driven in a real headless Chromium
(Playwright with the system ``/usr/bin/chromium``) against the real server subprocess (T15)."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.service.test_server import TOKENS, Server, token_digest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("UNLEARNREC_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ADMIN, READ = TOKENS["admin"][0], TOKENS["read"][0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from unlearnrec import api
    from unlearnrec.config import RunConfig

    root = tmp_path_factory.mktemp("page")
    ck = root / "model"
    api.train(RunConfig().with_overrides({"train.epochs": 3, "model.embedding_size": 8}), ck, progress=False)
    (root / "tokens.json").write_text(
        json.dumps({n: {"sha256": token_digest(t), "scopes": s} for n, (t, s) in TOKENS.items()})
    )
    srv = Server(root, ck).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright==1.65.2; never `playwright install`)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set UNLEARNREC_CHROMIUM)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1280, "height": 900}
        )
        try:
            yield ctx
        finally:
            ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


def _open(browser, server):
    """A fresh tab on the page, collecting script errors and console errors (a CSP refusal is one)."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.goto(f"http://127.0.0.1:{server.port}/status")
    return page, errors


def _unexpected(errors: list[str], *refused: int) -> list[str]:
    """The errors left after the browser's own log lines for fetches answered with one of ``refused``."""
    return [e for e in errors if not any(f"status of {c} " in e for c in refused)]


def _load(page, token: str) -> None:
    page.fill("#token", token)
    page.click("#load")


def test_status_is_the_static_page_without_a_token(server):
    from unlearnrec.service.page import status_html

    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/status", timeout=30) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
        csp = r.headers["Content-Security-Policy"]
        body = r.read().decode()
    assert body == status_html()  # the same bytes for everyone: the page holds no data
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "<script src" not in body and '<link rel="stylesheet"' not in body and "https://" not in body
    for secret in (ADMIN, READ, "admin-secret", "deleter-secret"):
        assert secret not in body
    assert 'id="token"' in body and "/v1/audit" in body and "/v1/versions" in body
    # and it is not in the API schema
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/openapi.json", timeout=30) as r:
        assert "/status" not in json.loads(r.read())["paths"]


def test_page_shows_status_and_follows_a_deletion_in_chromium(server, browser):
    from playwright.sync_api import expect

    page, errors = _open(browser, server)
    expect(page).to_have_title("unlearnrec: deletion status and audit")
    expect(page.locator("#conn")).to_have_text("not loaded")
    expect(page.locator("#model-version")).not_to_have_text("1")  # nothing before a token is loaded

    before = server.call("GET", "/v1/audit", token=ADMIN)[1]
    _load(page, ADMIN)
    expect(page.locator("#conn")).to_have_text("loaded", timeout=20_000)
    expect(page.locator("#model-version")).to_have_text(str(before["model_version"]))
    expect(page.locator("#chain")).to_have_text("intact")
    expect(page.locator("#chain-detail")).to_contain_text(" events, HMAC chain verified")
    verified0 = before["requests"].get("verified", 0)
    expect(page.locator("#count-verified")).to_have_text(str(verified0))
    expect(page.locator("#count-hidden")).to_have_text(str(before["requests"].get("hidden", 0)))
    expect(page.locator("#unlearned")).to_have_text(str(verified0))
    expect(page.locator("#completed")).to_have_text(str(before["requests"].get("completed", 0)))
    v1 = page.locator('#versions tbody tr[data-version="1"]')
    expect(v1.locator("td").nth(2)).to_have_text("train")
    expect(v1.locator("td").nth(4)).to_have_text("live")
    expect(v1.locator("td").first).to_contain_text("serving")
    # the token is in this tab's sessionStorage, nowhere persistent
    assert page.evaluate("sessionStorage.getItem('unlearnrec.status.token')") == ADMIN
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""

    # a deletion through the page, followed to verified
    page.fill("#delete-user", "7")
    page.click("#submit")
    expect(page.locator("#submit-msg")).to_contain_text("accepted", timeout=20_000)
    row = page.locator("#my-requests tbody tr").first
    expect(row.locator("td").first).to_have_text("user 7")
    expect(row.locator(".req-status")).to_have_text("verified", timeout=90_000)
    pid = row.get_attribute("data-request")
    st = server.call("GET", f"/v1/deletions/{pid}", token=ADMIN)[1]
    assert st["status"] == "verified" and st["n_edges"] > 0
    expect(row.locator("td").nth(3)).to_have_text(str(st["n_edges"]))
    expect(row.locator("td").nth(4)).to_have_text(str(st["applied_version"]))
    # the summary follows on the next refresh: counts, served version, the new version with its measures
    expect(page.locator("#count-verified")).to_have_text(str(verified0 + 1), timeout=20_000)
    expect(page.locator("#unlearned")).to_have_text(str(verified0 + 1))
    expect(page.locator("#pending")).to_have_text("0")
    expect(page.locator("#model-version")).to_have_text(str(st["applied_version"]))
    vn = page.locator(f'#versions tbody tr[data-version="{st["applied_version"]}"]')
    expect(vn.locator("td").nth(2)).to_have_text("unlearn")
    expect(vn.locator("td").nth(1)).to_have_text(str(before["model_version"]))
    expect(vn.locator("td").nth(7)).to_contain_text("request_seconds = ")
    expect(vn.locator("td").first).to_contain_text("serving")
    expect(v1.locator("td").nth(4)).to_have_text("retired")

    # a hostile id is refused by the server and shown as text, never as markup
    evil = '<img src=x id="pwned">'
    page.fill("#delete-user", evil)
    page.click("#submit")
    expect(page.locator("#submit-msg")).to_contain_text("rejected", timeout=20_000)
    bad = page.locator("#my-requests tbody tr").first
    expect(bad.locator("td").first).to_have_text(f"user {evil}")
    expect(bad.locator(".req-status")).to_have_text("rejected")
    expect(bad.locator("td").nth(5)).to_have_text(re.compile(r"^\d{4}-\d\d-\d\dT"))  # its record, fetched once
    assert page.locator("#pwned").count() == 0 and page.locator("#my-requests img").count() == 0
    expect(page.locator("#count-rejected")).to_have_text(str(before["requests"].get("rejected", 0) + 1), timeout=20_000)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    # a reload keeps the token and the request ids of this tab, not the typed ids
    page.reload()
    expect(page.locator("#conn")).to_have_text("loaded", timeout=20_000)
    expect(page.locator(f'#my-requests tbody tr[data-request="{pid}"] .req-status')).to_have_text("verified")
    expect(page.locator("#my-requests tbody tr td:first-child")).to_have_text(["(before reload)"] * 2)
    assert not _unexpected(errors, 422), errors  # the rejection's 422 is logged by the browser
    page.close()


def test_a_reader_token_sees_versions_but_not_the_audit(server, browser):
    from playwright.sync_api import expect

    page, errors = _open(browser, server)  # sessionStorage is per tab: this one starts without a token
    expect(page.locator("#conn")).to_have_text("not loaded")
    _load(page, READ)
    expect(page.locator("#audit-note")).to_contain_text("needs the admin scope", timeout=20_000)
    expect(page.locator('#versions tbody tr[data-version="1"] td').nth(2)).to_have_text("train")
    expect(page.locator("#chain")).not_to_have_text("intact")
    _load(page, "wrong-token")
    expect(page.locator("#conn")).to_have_text("not authorised", timeout=20_000)
    expect(page.locator("#banner")).to_contain_text("401")
    assert not _unexpected(errors, 401, 403), errors  # the refused fetches are logged by the browser
    page.close()


def test_deadline_alerts_and_new_audit_fields_are_shown_as_text(server, browser):
    """Fields the audit summary is growing (``deadline_s``, ``alerts``, others) and a broken chain, served by a
    stub of ``/v1/audit`` in the browser."""
    from playwright.sync_api import expect

    audit = {
        "requests": {"hidden": 2, "verified": 5, "completed": 1, "rejected": 1},
        "oldest_open_received_at": "2026-01-01T00:00:00Z",
        "oldest_open_age_s": 180.0,
        "audit_chain_ok": False,
        "audit_chain_problem": "event 4: <b>hmac</b> mismatch",
        "audit_events": 9,
        "model_version": 3,
        "deadline_s": 30 * 86400,
        "alerts": ["<script>x</script> applier stalled"],
        "queue_edges": 17,
        "settlement": {"alert_margin_s": 7 * 86400, "last": {"v": 2}},
    }
    page, errors = _open(browser, server)
    page.route(
        "**/v1/audit", lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(audit))
    )
    _load(page, ADMIN)
    expect(page.locator("#deadline")).to_have_text("oldest pending: 3 min of 30 days allowed", timeout=20_000)
    expect(page.locator("#oldest")).to_have_text("3 min")
    expect(page.locator("#pending")).to_have_text("2")
    expect(page.locator("#unlearned")).to_have_text("5")
    expect(page.locator("#completed")).to_have_text("1")
    expect(page.locator("#chain")).to_have_text("BROKEN")
    expect(page.locator("#chain-detail")).to_have_text("event 4: <b>hmac</b> mismatch")
    expect(page.locator("#alerts li")).to_have_text(["<script>x</script> applier stalled"])
    expect(page.locator("#audit-extra")).to_contain_text("queue edges")
    expect(page.locator("#audit-extra")).to_contain_text("17")
    expect(page.locator("#audit-extra")).to_contain_text("settlement")
    expect(page.locator("#audit-extra")).to_contain_text("alert margin s: 7.0 days")
    expect(page.locator("#audit-extra")).to_contain_text('last: {"v":2}')
    assert page.locator("#chain-detail b").count() == 0 and page.locator("#alerts script").count() == 0
    audit.update(oldest_open_age_s=31 * 86400.0, alerts=[])
    expect(page.locator("#deadline")).to_have_text(
        "oldest pending: 31 days of 30 days allowed: DEADLINE MISSED", timeout=20_000
    )
    expect(page.locator("#alerts li")).to_have_text(["none"])
    assert not _unexpected(errors), errors
    page.close()
