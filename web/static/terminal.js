// Terminal tab: xterm.js (bundled at build time into /static/vendor/) over
// the sandbox's PTY WebSocket, GET /sandbox/{id}/pty. The server first sends
// {"type":"session","session_id"}, then binary output, and at the end
// {"type":"exit","exit_code"}; keystrokes go up as binary frames, resizes as
// {"type":"resize","cols","rows"}. A dropped connection re-attaches with the
// session_id: the server replays the scrollback, so nothing is lost.
import { api } from "./api.js";
import { h, errorBox, busy, showError, ago } from "./dom.js";
import { installStyleShim } from "./xterm-csp.js";

let xtermModules = null;
/** loadXterm imports xterm.js and its fit addon once (rejects when not built). */
function loadXterm() {
  if (!xtermModules) {
    xtermModules = Promise.all([import("./vendor/xterm.mjs"), import("./vendor/addon-fit.mjs")]).then(([x, f]) => {
      installStyleShim();
      if (!document.querySelector("link[data-xterm-css]")) {
        document.head.append(h("link", { rel: "stylesheet", href: "/static/vendor/xterm.css", dataset: { xtermCss: "" } }));
      }
      return { Terminal: x.Terminal, FitAddon: f.FitAddon };
    });
    xtermModules.catch(() => { xtermModules = null; });
  }
  return xtermModules;
}

// Colours for both schemes; xterm paints its own background.
const THEMES = {
  light: { background: "#ffffff", foreground: "#1b1c1f", cursor: "#1b1c1f", selectionBackground: "#b9ccff" },
  dark: { background: "#0f1013", foreground: "#e6e7ea", cursor: "#e6e7ea", selectionBackground: "#334a7d" },
};
const dark = window.matchMedia("(prefers-color-scheme: dark)");

/** terminalPanel renders the Terminal tab; returns {el, show(), hide(), setRunning(bool), cleanup()}. */
export function terminalPanel(id) {
  const status = h("span", { class: "muted small term-status", role: "status", "aria-live": "polite" });
  const newSession = h("button", { type: "button" }, "New session");
  const err = errorBox("terminal");
  const screen = h("div", { class: "term", role: "group", "aria-label": "Terminal" });
  const note = h("p", { class: "muted", hidden: true });
  const sessionsBody = h("tbody");
  const sessionsErr = errorBox("pty-sessions");
  const sessions = h("section", { class: "panel", "aria-labelledby": "pty-sessions-title" },
    h("div", { class: "row" }, h("h2", { id: "pty-sessions-title", class: "grow" }, "Sessions"),
      h("button", { type: "button", onclick: () => refreshSessions() }, "Refresh")),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Session"), h("th", {}, "Command"), h("th", {}, "Started"),
      h("th", { class: "num" }, "Viewers"), h("th", {}, h("span", { class: "sr-only" }, "Actions")))), sessionsBody),
    h("p", { class: "muted small empty-sessions", hidden: true }, "No sessions."),
    sessionsErr);
  const hint = h("p", { class: "muted small", id: "term-hint" },
    "Every key goes to the shell, Tab included. Ctrl+Shift+E moves the focus out of the terminal.");
  const el = h("div", {},
    h("div", { class: "panel term-panel" },
      h("div", { class: "row" }, newSession, h("span", { class: "grow" }), status), err, note, screen, hint),
    sessions);

  let term = null;
  let fit = null;
  let ws = null;
  let sessionID = null;
  let visible = false;
  let running = false;
  let disposed = false;
  let retries = 0;
  let retryTimer = null;
  let resizeObs = null;
  const enc = new TextEncoder();

  function setStatus(text) { status.textContent = text; }

  async function ensureTerminal() {
    if (term) return true;
    let mods;
    try {
      mods = await loadXterm();
    } catch {
      note.textContent = "Terminal assets not built — run make.";
      note.hidden = false;
      screen.hidden = true;
      newSession.disabled = true;
      return false;
    }
    if (term || disposed) return !!term;
    term = new mods.Terminal({
      convertEol: false, cursorBlink: true, scrollback: 5000, fontSize: 14,
      // Programs pick colours for some background; keep their text readable on ours.
      minimumContrastRatio: 4.5,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace',
      theme: dark.matches ? THEMES.dark : THEMES.light,
    });
    fit = new mods.FitAddon();
    term.loadAddon(fit);
    term.open(screen);
    dark.addEventListener("change", onScheme);
    // The one key the terminal does not take: a way out for keyboard users.
    term.attachCustomKeyEventHandler((e) => {
      if (e.type === "keydown" && e.ctrlKey && e.shiftKey && !e.altKey && e.code === "KeyE") {
        e.preventDefault();
        (newSession.disabled ? document.getElementById("tab-terminal") : newSession).focus();
        return false;
      }
      return true;
    });
    const input = screen.querySelector("textarea");
    if (input) input.setAttribute("aria-describedby", "term-hint");
    term.onData((d) => send(enc.encode(d)));
    term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
    term.onResize(({ cols, rows }) => {
      screen.dataset.size = `${rows} ${cols}`;
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
    });
    resizeObs = new ResizeObserver(() => { if (visible) fitNow(); });
    resizeObs.observe(screen);
    fitNow();
    screen.dataset.size = `${term.rows} ${term.cols}`;
    return true;
  }

  function onScheme() { if (term) term.options.theme = dark.matches ? THEMES.dark : THEMES.light; }

  function fitNow() {
    if (!fit || screen.hidden || !screen.clientWidth) return;
    try { fit.fit(); } catch { /* not laid out yet */ }
  }

  function send(bytes) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (disposed || !running || !term) return;
    const q = new URLSearchParams({ cols: String(term.cols), rows: String(term.rows) });
    const reattach = !!sessionID;
    if (reattach) q.set("session_id", sessionID);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(`${proto}//${location.host}/sandbox/${encodeURIComponent(id)}/pty?${q}`);
    sock.binaryType = "arraybuffer";
    ws = sock;
    let ended = false;
    let attached = false;
    sock.addEventListener("message", (e) => {
      if (ws !== sock) return;
      if (typeof e.data !== "string") { term.write(new Uint8Array(e.data)); return; }
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (m.type === "session") {
        attached = true;
        retries = 0;
        // The scrollback follows: start from a clean screen so it is not doubled.
        if (reattach) term.reset();
        sessionID = m.session_id;
        screen.dataset.session = sessionID;
        setStatus("Connected");
        showError(err, null);
        refreshSessions();
      } else if (m.type === "exit") {
        ended = true;
        sessionID = null;
        delete screen.dataset.session;
        setStatus(`Session ended (exit code ${m.exit_code ?? "?"}). Start a new one with New session.`);
        refreshSessions();
      }
    });
    sock.addEventListener("close", (e) => {
      if (ws !== sock) return;
      ws = null;
      if (disposed || ended) return;
      if (!attached && !reattach) {
        setStatus("");
        showError(err, new Error(`Could not open a terminal${e.reason ? `: ${e.reason}` : ""}.`));
        return;
      }
      // Dropped: re-attach with the session id after a short, growing pause.
      retries++;
      if (retries > 30) {
        setStatus("Disconnected. Start a new session with New session.");
        return;
      }
      setStatus("Reconnecting…");
      const wait = Math.min(250 * 2 ** Math.min(retries, 5), 5000);
      if (attached) { retryTimer = setTimeout(connect, wait); return; }
      // Re-attaching failed: if the server no longer has the session (its
      // grace period ran out, it was ended), say so instead of retrying.
      retryTimer = setTimeout(async () => {
        const sid = sessionID;
        if (await sessionGone(sid)) {
          if (sessionID !== sid) return;
          sessionID = null;
          delete screen.dataset.session;
          setStatus("The session has ended. Start a new one with New session.");
          refreshSessions();
          return;
        }
        if (!disposed && sessionID === sid && !ws) connect();
      }, wait);
    });
  }

  // sessionGone is true when the sandbox's session list answers without sid.
  async function sessionGone(sid) {
    try {
      const data = await api("GET", `/sandbox/${encodeURIComponent(id)}/pty/sessions`);
      return !((data && data.sessions) || []).some((s) => s.session_id === sid);
    } catch {
      return false; // unreachable: keep trying
    }
  }

  function disconnect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    const s = ws;
    ws = null;
    if (s) s.close(1000, "closed by the page");
  }

  function startNew() {
    disconnect();
    sessionID = null;
    if (term) term.reset();
    setStatus("Connecting…");
    connect();
    if (term) term.focus();
  }

  function attachTo(sid) {
    disconnect();
    sessionID = sid;
    setStatus("Connecting…");
    connect();
    if (term) term.focus();
  }

  let sessionsKey = "";
  async function refreshSessions() {
    if (!running) return;
    let data;
    try {
      data = await api("GET", `/sandbox/${encodeURIComponent(id)}/pty/sessions`);
      showError(sessionsErr, null);
    } catch (e) {
      showError(sessionsErr, e);
      return;
    }
    const list = (data && data.sessions) || [];
    const key = JSON.stringify([list, sessionID]);
    if (key === sessionsKey) return;
    sessionsKey = key;
    sessions.querySelector(".empty-sessions").hidden = list.length > 0;
    sessionsBody.replaceChildren(...list.map((s) => {
      const mine = s.session_id === sessionID;
      const attach = h("button", { type: "button", disabled: mine, "aria-label": `${mine ? "Attached" : "Attach"} to ${s.session_id}` }, mine ? "Attached" : "Attach");
      attach.addEventListener("click", () => attachTo(s.session_id));
      const end = h("button", { type: "button", class: "danger", "aria-label": `End ${s.session_id}` }, "End");
      end.addEventListener("click", () => busy(end, sessionsErr, async () => {
        await api("DELETE", `/sandbox/${encodeURIComponent(id)}/pty/sessions/${encodeURIComponent(s.session_id)}`);
        await refreshSessions();
        // The row is gone: back to the terminal, or to New session if that was this one.
        if (s.session_id === sessionID || !term) newSession.focus();
        else term.focus();
      }));
      return h("tr", { dataset: { session: s.session_id } },
        h("td", {}, h("code", {}, s.session_id)),
        h("td", {}, h("code", {}, (s.command || []).join(" "))),
        h("td", {}, ago(s.started_at)),
        h("td", { class: "num" }, String(s.attached ?? 0)),
        h("td", {}, h("div", { class: "row" }, attach, end)));
    }));
  }

  newSession.addEventListener("click", async () => {
    if (await ensureTerminal()) startNew();
  });

  async function show() {
    visible = true;
    if (!running) return;
    if (!(await ensureTerminal()) || !visible) return;
    fitNow();
    if (!ws && !retryTimer) { setStatus("Connecting…"); connect(); }
    refreshSessions();
    term.focus();
  }

  return {
    el,
    show,
    hide() { visible = false; },
    setRunning(on) {
      if (on === running) return;
      running = on;
      newSession.disabled = !on;
      if (!on) {
        disconnect();
        note.textContent = "The terminal is available while the sandbox is running.";
        note.hidden = false;
      } else {
        note.hidden = true;
        if (visible) show();
      }
    },
    cleanup() {
      disposed = true;
      disconnect();
      dark.removeEventListener("change", onScheme);
      if (resizeObs) resizeObs.disconnect();
      if (term) term.dispose();
    },
  };
}
