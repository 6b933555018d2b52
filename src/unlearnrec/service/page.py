"""``GET /status``: the status and audit page of the deletion service, for a privacy officer.

The page is static and self-contained (inline CSS and JS, no external asset, no CDN) and holds no data: it
asks for a bearer token, keeps it in ``sessionStorage`` only, and then reads ``/v1/audit`` (admin scope) and
``/v1/versions`` (reader scope) every two seconds. It shows pending against completed requests, the oldest open
request's age against the deadline (when the server reports ``deadline_s``), the audit chain's integrity,
alerts, and the model versions with their forgetting measures. A small form submits the deletion of a user
(or an item) with a fresh ``Idempotency-Key`` and polls each submitted request (deleter scope) until it is
verified, completed or rejected. Everything the server returns enters the DOM as text (``textContent``),
never as markup.

The response carries a Content-Security-Policy that allows exactly the inline script and style of the page
(by their SHA-256) and connections to the same origin only.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

__all__ = ["status_html", "status_headers", "status_response"]

_CSS = """
:root { --ok: #146c2e; --bad: #b3261e; --warn: #8a5a00; --muted: #5f6368; --line: #d0d4da; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d1f23; background: var(--bg); }
header { background: #1f3a5f; color: #fff; padding: 14px 24px; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header p { margin: 2px 0 0; font-size: 13px; opacity: .85; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 24px 32px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px;
          margin: 0 0 16px; }
h2 { font-size: 16px; margin: 0 0 10px; }
.row { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
.counts3 { display: grid; grid-template-columns: repeat(3, 1fr); gap: 10px; margin: 0 0 8px; }
.counts3 .muted { font-size: 12px; line-height: 1.3; }
.ts { white-space: nowrap; }
#audit-extra { margin-top: 8px; }
#audit-extra th { width: 40%; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 16px; margin: 0 0 16px; }
.grid section { margin: 0; }
input, select, button { font: inherit; padding: 6px 10px; border: 1px solid #9aa0a6; border-radius: 6px; }
input[type=password], input[type=text] { min-width: 260px; }
button { background: #1f3a5f; color: #fff; border-color: #1f3a5f; cursor: pointer; }
button.secondary { background: #fff; color: #1f3a5f; }
button:disabled { opacity: .5; cursor: default; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 13px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.big { font-size: 28px; font-weight: 600; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); font-size: 13px; }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.warn { color: var(--warn); font-weight: 600; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; word-break: break-all; }
.bar { height: 10px; background: #e3e6ea; border-radius: 5px; overflow: hidden; margin: 6px 0 2px; }
.bar > div { height: 100%; width: 0; background: var(--ok); }
.bar.late > div { background: var(--bad); }
.bar.near > div { background: var(--warn); }
ul { margin: 4px 0 0; padding-left: 20px; }
.pill { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
        background: #e3e6ea; }
.pill.live, .pill.verified, .pill.completed { background: #d7f0dd; color: var(--ok); }
.pill.rejected, .pill.failed, .pill.error { background: #fadcd9; color: var(--bad); }
.pill.hidden, .pill.applying, .pill.applied, .pill.sending { background: #fdf0cf; color: var(--warn); }
.metric { display: inline-block; margin: 0 10px 0 0; white-space: nowrap; }
#banner { display: none; margin: 0 0 16px; padding: 10px 14px; border-radius: 8px; background: #fadcd9;
          color: var(--bad); font-weight: 600; }
#banner.show { display: block; }
"""

_HTML_BODY = """
<header>
  <h1>Deletion service: status and audit</h1>
  <p>Right-to-erasure requests, the served model versions and their forgetting measures.
     Nothing is shown until you load a token.</p>
</header>
<main>
  <section>
    <h2>Access</h2>
    <form id="token-form" class="row" autocomplete="off">
      <label for="token">Bearer token</label>
      <input id="token" type="password" placeholder="paste your API token" spellcheck="false">
      <button id="load" type="submit">Load</button>
      <button id="forget" type="button" class="secondary">Forget token</button>
      <span id="conn" class="muted">not loaded</span>
    </form>
    <p class="muted">The token stays in this tab only (sessionStorage) and is sent as an
       <span class="mono">Authorization: Bearer</span> header to this server alone.
       <span id="updated"></span></p>
  </section>
  <div id="banner" role="alert"></div>
  <div class="grid">
    <section>
      <h2>Requests</h2>
      <div class="counts3">
        <div><div id="pending" class="big">&#8211;</div><div class="muted">pending<br>(not yet unlearned)</div></div>
        <div><div id="unlearned" class="big">&#8211;</div>
          <div class="muted">unlearned, verified<br>(awaiting retrain)</div></div>
        <div><div id="completed" class="big">&#8211;</div><div class="muted">completed<br>(raw edges purged)</div>
        </div>
      </div>
      <table id="counts"><thead><tr><th>status</th><th class="num">requests</th></tr></thead><tbody></tbody></table>
      <p id="audit-note" class="muted"></p>
    </section>
    <section>
      <h2>Oldest open request</h2>
      <div class="muted">open = not yet completed by an exact retrain</div>
      <div id="oldest" class="big">&#8211;</div>
      <div id="deadline-bar" class="bar"><div></div></div>
      <div id="deadline" class="muted"></div>
      <div id="oldest-received" class="muted"></div>
    </section>
    <section>
      <h2>Audit chain</h2>
      <div id="chain" class="big">&#8211;</div>
      <div id="chain-detail" class="muted"></div>
      <div class="muted">served model version: <span id="model-version">&#8211;</span></div>
      <h2>Alerts</h2>
      <ul id="alerts"></ul>
      <table id="audit-extra"><tbody></tbody></table>
    </section>
  </div>
  <section>
    <h2>Model versions</h2>
    <table id="versions">
      <thead><tr><th class="num">version</th><th class="num">parent</th><th>kind</th><th>algorithm</th>
        <th>status</th><th>created (UTC)</th><th class="num">ledger high-water</th><th>forgetting measures</th>
        <th>model file sha256</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="versions-note" class="muted"></p>
  </section>
  <section>
    <h2>Submit a deletion</h2>
    <form id="delete-form" class="row" autocomplete="off">
      <select id="delete-kind" aria-label="what to delete">
        <option value="user">user</option><option value="item">item</option>
      </select>
      <input id="delete-user" type="text" placeholder="raw id, e.g. as in the data set" spellcheck="false">
      <button id="submit" type="submit">Delete all their interactions</button>
      <span id="submit-msg" class="muted"></span>
    </form>
    <p class="muted">Each submission carries a fresh Idempotency-Key (a retry after a network error
       reuses it). The id you type is kept in this page's memory only, never stored.</p>
    <table id="my-requests">
      <thead><tr><th>subject</th><th>request id</th><th>status</th><th class="num">edges</th>
        <th class="num">applied in version</th><th>received (UTC)</th><th>detail</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</main>
"""

_JS = r"""
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "unlearnrec.status.token";
  const REQS_KEY = "unlearnrec.status.requests";
  const FINAL = new Set(["verified", "completed", "rejected"]);
  const ORDER = ["hidden", "applying", "applied", "verified", "completed", "rejected", "failed", "exact"];
  const PENDING = ["hidden", "applying", "applied", "failed", "exact"];
  const KNOWN_AUDIT = new Set(["requests", "oldest_open_received_at", "oldest_open_age_s", "audit_chain_ok",
    "audit_chain_problem", "audit_events", "model_version", "deadline_s", "alerts"]);
  const MEASURES = {request_rank_pct: "rank pct of forgotten items (1 = bottom)",
    request_seconds: "unlearning seconds", n_edges: "edges"};
  let token = null, timer = null, busy = false, lastAttempt = null;
  const mine = [];  // {id, subject, status, rec, final}

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function setText(id, text, cls) {
    const e = $(id);
    e.textContent = text === null || text === undefined ? "" : String(text);
    if (cls !== undefined) e.className = cls;
  }
  function dash(v) { return v === null || v === undefined ? "\u2013" : v; }
  function pill(status) {
    const s = String(status);
    return el("span", s, "pill " + s.replace(/[^a-z_-]/gi, ""));
  }
  function human(seconds) {
    const s = Number(seconds);
    if (!isFinite(s)) return "?";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(s < 36000 ? 1 : 0) + " h";
    return (s / 86400).toFixed(s < 864000 ? 1 : 0) + " days";
  }
  function num(v) {
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3);
  }
  function shown(key, v) {  // a value of an audit field: durations (``*_s``) in words, objects as JSON
    if (typeof v === "number" && /_s$/.test(key)) return (v < 0 ? "-" : "") + human(Math.abs(v));
    if (v === null || v === undefined) return "\u2013";
    return typeof v === "object" ? JSON.stringify(v) : num(v);
  }
  function banner(text) {
    const b = $("banner");
    b.textContent = text || "";
    b.className = text ? "show" : "";
  }
  function newKey() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  async function api(method, path, body, headers) {
    const h = Object.assign({"Authorization": "Bearer " + token, "Accept": "application/json"}, headers || {});
    const init = {method: method, headers: h, cache: "no-store", credentials: "omit", redirect: "error"};
    if (body !== undefined) { h["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const r = await fetch(path, init);
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    return {status: r.status, data: data};
  }
  function refusal(r, what) {
    const d = r.data && (r.data.detail || r.data.error);
    if (r.status === 401) return what + ": the token was not accepted (401)";
    if (r.status === 403) return what + ": this token lacks the needed scope (403)";
    return what + ": HTTP " + r.status + (d ? " (" + (typeof d === "string" ? d : JSON.stringify(d)) + ")" : "");
  }

  // ------------------------------------------------------------------ audit
  function renderCounts(counts) {
    const body = $("counts").tBodies[0];
    clear(body);
    const names = ORDER.concat(Object.keys(counts).filter((k) => ORDER.indexOf(k) < 0).sort());
    for (const name of names) {
      const tr = el("tr");
      const a = el("td"); a.appendChild(pill(name)); tr.appendChild(a);
      const n = el("td", counts[name] || 0, "num");
      n.id = "count-" + name.replace(/[^a-z_-]/gi, "");
      tr.appendChild(n);
      body.appendChild(tr);
    }
    const sum = (xs) => xs.reduce((t, k) => t + (Number(counts[k]) || 0), 0);
    setText("pending", sum(PENDING));
    setText("unlearned", sum(["verified"]));
    setText("completed", sum(["completed"]));
  }
  function renderAudit(a) {
    renderCounts(a.requests || {});
    const age = a.oldest_open_age_s, deadline = a.deadline_s;
    const bar = $("deadline-bar"), fill = bar.firstElementChild;
    if (age === null || age === undefined) {
      setText("oldest", "none open", "big ok");
      setText("oldest-received", "every request is completed or rejected");
      fill.style.width = "0";
      bar.className = "bar";
    } else {
      setText("oldest", human(age), "big");
      setText("oldest-received", "received " + (a.oldest_open_received_at || "?") + " (UTC)");
    }
    if (typeof deadline === "number" && deadline > 0) {
      const frac = (age || 0) / deadline;
      setText("deadline", "oldest pending: " + (age === null || age === undefined ? "none" : human(age)) +
        " of " + human(deadline) + " allowed" + (frac > 1 ? ": DEADLINE MISSED" : ""),
        frac > 1 ? "bad" : frac > 0.8 ? "warn" : "muted");
      fill.style.width = Math.min(100, Math.max(0, frac * 100)).toFixed(1) + "%";
      bar.className = "bar" + (frac > 1 ? " late" : frac > 0.8 ? " near" : "");
      bar.style.display = "";
    } else {
      setText("deadline", "no deadline reported by the server", "muted");
      bar.style.display = "none";
    }
    if (a.audit_chain_ok) {
      setText("chain", "intact", "big ok");
      setText("chain-detail", (a.audit_events === undefined ? "?" : a.audit_events) +
        " events, HMAC chain verified end to end");
    } else {
      setText("chain", "BROKEN", "big bad");
      setText("chain-detail", a.audit_chain_problem || "the chain did not verify", "bad");
    }
    setText("model-version", a.model_version);
    const ul = $("alerts");
    clear(ul);
    if (Array.isArray(a.alerts)) {
      if (!a.alerts.length) ul.appendChild(el("li", "none", "ok"));
      for (const s of a.alerts) ul.appendChild(el("li", typeof s === "string" ? s : JSON.stringify(s), "bad"));
    } else {
      ul.appendChild(el("li", "not reported by this server", "muted"));
    }
    const extra = $("audit-extra").tBodies[0];
    clear(extra);
    for (const k of Object.keys(a).sort()) {
      if (KNOWN_AUDIT.has(k)) continue;
      const v = a[k], tr = el("tr"), td = el("td");
      tr.appendChild(el("th", k.replace(/_/g, " ")));
      if (v !== null && typeof v === "object" && !Array.isArray(v)) {
        const keys = Object.keys(v).sort();
        if (!keys.length) td.appendChild(el("span", "none", "muted"));
        for (const j of keys) td.appendChild(el("div", j.replace(/_/g, " ") + ": " + shown(j, v[j])));
      } else {
        td.textContent = shown(k, v);
      }
      tr.appendChild(td);
      extra.appendChild(tr);
    }
  }

  // ------------------------------------------------------------------ versions
  function measures(raw) {
    const span = el("span");
    if (raw === null || raw === undefined || raw === "") { span.appendChild(el("span", "none", "muted")); return span; }
    let m;
    try { m = typeof raw === "string" ? JSON.parse(raw) : raw; } catch (e) { m = raw; }
    if (m === null || typeof m !== "object") { span.appendChild(el("span", String(m), "mono")); return span; }
    const keys = Object.keys(m).sort();
    if (!keys.length) span.appendChild(el("span", "none", "muted"));
    for (const k of keys) {
      const v = m[k];
      const s = el("span", k + " = " + (v !== null && typeof v === "object" ? JSON.stringify(v) : num(v)), "metric");
      if (MEASURES[k]) s.title = MEASURES[k];
      span.appendChild(s);
    }
    return span;
  }
  function renderVersions(v) {
    const body = $("versions").tBodies[0];
    clear(body);
    const rows = Array.isArray(v.versions) ? v.versions.slice().reverse() : [];
    for (const r of rows) {
      const tr = el("tr");
      tr.dataset.version = String(r.id);
      const id = el("td", r.id, "num");
      if (r.id === v.current) {
        id.appendChild(document.createTextNode(" "));
        id.appendChild(el("span", "serving", "pill live"));
      }
      tr.appendChild(id);
      tr.appendChild(el("td", dash(r.parent_id), "num"));
      tr.appendChild(el("td", r.kind));
      tr.appendChild(el("td", r.algo));
      const st = el("td"); st.appendChild(pill(r.status)); tr.appendChild(st);
      tr.appendChild(el("td", r.created_at, "ts"));
      tr.appendChild(el("td", dash(r.ledger_high_water), "num"));
      const m = el("td"); m.appendChild(measures(r.metrics_json)); tr.appendChild(m);
      const sha = el("td", r.file_sha256 ? String(r.file_sha256).slice(0, 12) + "\u2026" : "\u2013", "mono ts");
      if (r.file_sha256) sha.title = String(r.file_sha256);
      tr.appendChild(sha);
      body.appendChild(tr);
    }
    setText("versions-note", rows.length + " version(s); serving version " + v.current +
      (v.requests ? "; " + Object.keys(v.requests).length + " request status(es) in the ledger" : ""));
    return v.requests;
  }

  // ------------------------------------------------------------------ my requests
  function saveMine() {
    sessionStorage.setItem(REQS_KEY, JSON.stringify(mine.map((r) => ({id: r.id, status: r.status}))));
  }
  function renderMine() {
    const body = $("my-requests").tBodies[0];
    clear(body);
    for (const r of mine) {
      const tr = el("tr");
      tr.dataset.request = r.id;
      const before = r.subject === null;
      tr.appendChild(el("td", before ? "(before reload)" : r.subject, before ? "muted" : "mono"));
      tr.appendChild(el("td", r.id, "mono"));
      const st = el("td"), p = pill(r.status);
      p.classList.add("req-status");
      st.appendChild(p);
      tr.appendChild(st);
      const rec = r.rec || {};
      tr.appendChild(el("td", dash(rec.n_edges), "num"));
      tr.appendChild(el("td", dash(rec.applied_version), "num"));
      tr.appendChild(el("td", rec.received_at || "\u2013", "ts"));
      tr.appendChild(el("td", rec.denial_reason || r.detail || ""));
      body.appendChild(tr);
    }
  }
  async function pollMine() {
    let changed = false;
    for (const r of mine) {
      if (r.final || !r.id) continue;
      const res = await api("GET", "/v1/deletions/" + encodeURIComponent(r.id));
      if (res.status === 200 && res.data) {
        r.rec = res.data; r.status = res.data.status; r.detail = ""; r.final = FINAL.has(r.status);
      } else {
        r.detail = refusal(res, "status");
      }
      changed = true;
    }
    if (changed) { saveMine(); renderMine(); }
  }
  async function submitDeletion(ev) {
    ev.preventDefault();
    if (!token) { setText("submit-msg", "load a token first", "bad"); return; }
    const kind = $("delete-kind").value === "item" ? "item" : "user";
    const subject = $("delete-user").value.trim();
    if (!subject) { setText("submit-msg", "enter an id", "bad"); return; }
    const same = lastAttempt && lastAttempt.kind === kind && lastAttempt.subject === subject;
    const key = same ? lastAttempt.key : newKey();
    lastAttempt = {kind: kind, subject: subject, key: key};
    $("submit").disabled = true;
    setText("submit-msg", "sending\u2026", "muted");
    try {
      const res = await api("POST", "/v1/deletions", kind === "item" ? {item: subject} : {user: subject},
                            {"Idempotency-Key": key});
      lastAttempt = res.status >= 500 ? lastAttempt : null;  // keep the key for a retry after a server error
      const d = res.data || {};
      if ((res.status === 202 || res.status === 422) && d.id) {
        let r = mine.find((x) => x.id === d.id);
        if (!r) {
          r = {id: d.id, subject: kind + " " + subject, status: d.status, rec: {}, final: false};
          mine.unshift(r);
        }
        r.status = d.status; r.final = false;  // the next poll fetches the full record, then stops
        if (d.n_edges !== undefined) r.rec.n_edges = d.n_edges;
        r.detail = d.reason || (d.replayed ? "replay of an earlier submission" : "");
        setText("submit-msg", res.status === 202 ? "accepted: hidden from recommendations now, unlearning follows"
          : "rejected: " + (d.reason || "see detail"), res.status === 202 ? "ok" : "bad");
        if (res.status === 202) $("delete-user").value = "";
        saveMine(); renderMine();
      } else {
        setText("submit-msg", refusal(res, "submit"), "bad");
      }
    } catch (e) {
      setText("submit-msg", "network error (submit again to retry with the same key): " + e, "bad");
    } finally {
      $("submit").disabled = false;
    }
  }

  // ------------------------------------------------------------------ refresh loop
  async function refresh() {
    if (!token || busy) return;
    busy = true;
    const problems = [];
    try {
      const [a, v] = await Promise.all([api("GET", "/v1/audit"), api("GET", "/v1/versions")]);
      if (a.status === 200 && a.data) { renderAudit(a.data); setText("audit-note", ""); }
      else {
        const why = refusal(a, "audit summary") + (a.status === 403 ? "; it needs the admin scope" : "");
        setText("audit-note", why, "bad");
        if (v.status === 200 && v.data && v.data.requests) renderCounts(v.data.requests);
        if (a.status !== 403) problems.push(refusal(a, "audit summary"));
      }
      if (v.status === 200 && v.data) renderVersions(v.data);
      else { setText("versions-note", refusal(v, "versions"), "bad"); problems.push(refusal(v, "versions")); }
      await pollMine();
      const ok = a.status === 200 || v.status === 200;
      setText("conn", ok ? "loaded" : "not authorised", ok ? "ok" : "bad");
      setText("updated", "Updated " + new Date().toLocaleTimeString() + ", refreshing every 2 s.");
      banner(problems.join("; "));
    } catch (e) {
      setText("conn", "server unreachable", "bad");
      banner("cannot reach the service: " + e);
    } finally {
      busy = false;
    }
  }
  function start() {
    if (timer) clearInterval(timer);
    timer = setInterval(refresh, 2000);
    refresh();
  }
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) { setText("conn", "enter a token", "bad"); return; }
    token = t;
    sessionStorage.setItem(TOKEN_KEY, t);
    setText("conn", "loading\u2026", "muted");
    start();
  });
  $("forget").addEventListener("click", () => {
    token = null;
    if (timer) clearInterval(timer);
    timer = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    setText("conn", "token forgotten", "muted");
  });
  $("delete-form").addEventListener("submit", submitDeletion);
  try {
    const saved = JSON.parse(sessionStorage.getItem(REQS_KEY) || "[]");
    for (const r of saved) {
      if (r && typeof r.id === "string") mine.push({id: r.id, subject: null, status: String(r.status), rec: {}});
    }
  } catch (e) { /* ignore a damaged entry */ }
  renderMine();
  const t = sessionStorage.getItem(TOKEN_KEY);
  if (t) { token = t; $("token").value = t; start(); }
})();
"""


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@lru_cache(maxsize=1)
def status_html() -> str:
    """The whole page: one static document, no data, no external resource."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<link rel="icon" href="data:,">\n'
        "<title>unlearnrec: deletion status and audit</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>{_HTML_BODY}<script>{_JS}</script>\n</body>\n</html>\n"
    )


@lru_cache(maxsize=1)
def status_headers() -> dict[str, str]:
    """A strict policy: the page's own inline script and style (by hash), same-origin fetches, no framing."""
    csp = (
        f"default-src 'none'; script-src {_sha256_source(_JS)}; style-src {_sha256_source(_CSS)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


def status_response():
    """The page as a FastAPI/Starlette ``HTMLResponse`` with its security headers."""
    from fastapi.responses import HTMLResponse

    return HTMLResponse(status_html(), headers=status_headers())
