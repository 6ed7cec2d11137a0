// API client: the JSON envelope, errors, and a Server-Sent Events reader over
// fetch streams (so POST bodies and Last-Event-ID work the same way everywhere).

/** APIError carries the server's error body: code, message, request_id, fields. */
export class APIError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `request failed (HTTP ${status})`);
    this.status = status;
    this.code = e.code || "http_" + status;
    this.requestID = e.request_id || "";
    this.fields = Array.isArray(e.fields) ? e.fields : [];
  }
}

/**
 * connection is whether the server answers. A 503 `unavailable` with
 * Retry-After (its database is down), a network error or a dropped event
 * stream put it in "reconnecting"; the next successful response clears it.
 * The page shows one calm line for it (app.js) instead of an error in every
 * panel: errors it explains are marked `quiet`.
 */
export const connection = {
  reconnecting: false,
  retryAt: 0, // when the server asked to be tried again (ms since the epoch); 0: unknown
  down(retryAfterS) {
    const at = retryAfterS > 0 ? Date.now() + retryAfterS * 1000 : 0;
    if (this.reconnecting && at <= this.retryAt) return;
    this.reconnecting = true;
    this.retryAt = at;
    window.dispatchEvent(new CustomEvent("techboss:connection"));
  },
  up() {
    if (!this.reconnecting) return;
    this.reconnecting = false;
    this.retryAt = 0;
    window.dispatchEvent(new CustomEvent("techboss:connection"));
  },
};

/** api sends a JSON request and returns the envelope's data. */
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: "application/json", ...(opts.headers || {}) };
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    headers["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload, credentials: "same-origin", signal: opts.signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    connection.down(2);
    throw Object.assign(new APIError(0, { error: { code: "network", message: "network error: " + err.message } }), { quiet: true });
  }
  if (opts.onResponse) opts.onResponse(res);
  return readResponse(res);
}

/** readResponse turns a fetch Response into data or an APIError. */
export async function readResponse(res) {
  const text = await res.text();
  let parsed = null;
  if (text) {
    try { parsed = JSON.parse(text); } catch { parsed = null; }
  }
  if (!res.ok) {
    if (res.status === 401) window.dispatchEvent(new CustomEvent("techboss:unauthenticated"));
    const err = new APIError(res.status, parsed || { error: { message: text.slice(0, 300) || res.statusText } });
    // Retry-After tells a database outage from a feature not configured here.
    const retry = Number(res.headers.get("Retry-After"));
    if (res.status === 503 && err.code === "unavailable" && retry > 0) {
      connection.down(retry);
      err.quiet = true;
    }
    throw err;
  }
  connection.up();
  if (parsed && typeof parsed === "object" && "data" in parsed) return parsed.data;
  return parsed ?? text;
}

/**
 * readSSE reads a text/event-stream body and calls onEvent({event, data, id})
 * for each complete event. It resolves when the body ends.
 */
export async function readSSE(res, onEvent, signal) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let ev = { event: "", data: [], id: null };
  const onAbort = () => reader.cancel().catch(() => {});
  if (signal) signal.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          if (ev.data.length || ev.event) onEvent({ event: ev.event || "message", data: ev.data.join("\n"), id: ev.id });
          ev = { event: "", data: [], id: null };
          continue;
        }
        if (line[0] === ":") continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value[0] === " ") value = value.slice(1);
        if (field === "event") ev.event = value;
        else if (field === "data") ev.data.push(value);
        else if (field === "id") ev.id = value;
      }
    }
  } finally {
    if (signal) signal.removeEventListener("abort", onAbort);
  }
}

/** parseJSON parses an event's data, or returns {text: data} when it is not JSON. */
export function parseJSON(data) {
  try {
    const v = JSON.parse(data);
    return v && typeof v === "object" ? v : { value: v };
  } catch {
    return { text: data };
  }
}

/**
 * followRun streams one agent run's typed events. It starts either by POSTing
 * a prompt (start) or by following an existing run (runID). When the stream
 * drops before `done` it reconnects to GET /runs/{id}/events with
 * Last-Event-ID, and it drops any event whose sequence it has already seen, so
 * the caller sees each event exactly once.
 *
 * handlers: onEvent(type, data, seq), onRunID(id), onError(err), onState(text), onEnd()
 * Returns {cancel(), done: Promise}.
 */
export function followRun({ sandboxID, prompt, runID, body }, handlers) {
  const ctrl = new AbortController();
  let lastSeq = 0;
  let finished = false;
  let id = runID || null;
  const setID = (v) => {
    if (v && !id) { id = v; handlers.onRunID && handlers.onRunID(v); }
  };

  const dispatch = (ev) => {
    const seq = ev.id != null && ev.id !== "" ? Number(ev.id) : NaN;
    if (!Number.isNaN(seq)) {
      if (seq <= lastSeq) return; // already seen: a replay after reconnect
      lastSeq = seq;
    }
    const data = parseJSON(ev.data);
    if (ev.event === "run.started") setID(data.run_id || data.id || (data.run && data.run.run_id));
    if (!id && data.run_id) setID(data.run_id);
    handlers.onEvent(ev.event, data, seq);
    if (ev.event === "done") finished = true;
  };

  const connect = async (first) => {
    let res;
    const headers = { Accept: "text/event-stream" };
    if (first && !id) {
      headers["Content-Type"] = "application/json";
      res = await fetch(`/sandbox/${encodeURIComponent(sandboxID)}/claude?format=events`, {
        method: "POST", headers, credentials: "same-origin", signal: ctrl.signal,
        body: JSON.stringify(body || { prompt }),
      });
    } else {
      if (lastSeq > 0) headers["Last-Event-ID"] = String(lastSeq);
      res = await fetch(`/runs/${encodeURIComponent(id)}/events`, {
        headers, credentials: "same-origin", signal: ctrl.signal,
      });
    }
    if (!res.ok) {
      const err = await readResponse(res).then(() => null, (e) => e);
      throw Object.assign(err || new APIError(res.status, null), { fatal: res.status < 500 });
    }
    setID(res.headers.get("X-Run-ID") || res.headers.get("X-Run-Id"));
    connection.up();
    handlers.onState && handlers.onState("streaming");
    await readSSE(res, dispatch, ctrl.signal);
  };

  const done = (async () => {
    let attempt = 0;
    let first = true;
    while (!finished && !ctrl.signal.aborted) {
      try {
        await connect(first);
        attempt = 0;
      } catch (err) {
        if (ctrl.signal.aborted) break;
        if (err.fatal || !id) {
          handlers.onError && handlers.onError(err);
          break;
        }
      }
      first = false;
      if (finished || ctrl.signal.aborted) break;
      if (!id) break;
      // The stream ended before `done`. A run that is over (interrupted, lost)
      // may never send one: ask, and stop following it if so.
      try {
        const run = await api("GET", `/runs/${encodeURIComponent(id)}`, undefined, { signal: ctrl.signal });
        const st = run && (run.status || run.state);
        if (st && !["queued", "pending", "starting", "running"].includes(st)) {
          handlers.onEvent("done", { status: st, synthetic: true }, NaN);
          finished = true;
          break;
        }
      } catch (err) {
        if (ctrl.signal.aborted) break;
        if (err.status && err.status < 500) { handlers.onError && handlers.onError(err); break; }
      }
      // Still running: reconnect after a short, growing pause.
      attempt++;
      connection.down(0);
      handlers.onState && handlers.onState("reconnecting");
      await pause(Math.min(200 * 2 ** attempt, 5000), ctrl.signal);
    }
    handlers.onEnd && handlers.onEnd({ finished, aborted: ctrl.signal.aborted });
  })();

  return { cancel: () => ctrl.abort(), done, get runID() { return id; } };
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/** streamExec runs a command and streams stdout/stderr/exit events. */
export async function streamExec(sandboxID, body, onEvent, signal) {
  const res = await fetch(`/sandbox/${encodeURIComponent(sandboxID)}/exec`, {
    method: "POST", credentials: "same-origin", signal,
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!res.ok) await readResponse(res);
  await readSSE(res, (ev) => onEvent(ev.event, ev.data, ev.id), signal);
}

/** chunkText decodes an output chunk event ({data} or {data_b64}). */
export function chunkText(raw) {
  const d = parseJSON(raw);
  if (typeof d.data === "string") return d.data;
  if (typeof d.data_b64 === "string") {
    const bin = atob(d.data_b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return new TextDecoder().decode(bytes);
  }
  return d.text !== undefined ? String(d.text) : raw;
}

/** followLogs streams a sandbox's build log (SSE `log` and `status` events). */
export async function followLogs(sandboxID, onText, onStatus, signal) {
  const res = await fetch(`/sandbox/${encodeURIComponent(sandboxID)}/logs?follow=true`, {
    credentials: "same-origin", signal, headers: { Accept: "text/event-stream" },
  });
  if (!res.ok) { await readResponse(res); return; }
  await readSSE(res, (ev) => {
    if (ev.event === "log") onText(chunkText(ev.data));
    else if (ev.event === "status") onStatus(parseJSON(ev.data));
  }, signal);
}

/** sandboxCosts returns a Map of sandbox id -> LLM cost so far (USD), or an empty Map when usage is unavailable. */
export async function sandboxCosts() {
  try {
    const data = await api("GET", "/usage?group_by=sandbox&from=2000-01-01");
    return new Map((data.groups || []).map((g) => [g.key, Number(g.cost_usd || 0)]));
  } catch {
    return new Map();
  }
}
