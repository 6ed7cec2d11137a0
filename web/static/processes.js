// Processes tab: every process of the sandbox (the ones started through the
// API marked "managed"), a form to start one in the background, Stop
// (SIGTERM), and a log view following GET .../processes/{pid}/logs?follow=true.
import { api, readSSE, readResponse, parseJSON, chunkText } from "./api.js";
import { h, field, errorBox, busy, showError, ago, pick, poller } from "./dom.js";

const POLL_MS = 3000;

/** processesPanel renders the Processes tab; returns {el, show(), hide(), setRunning(bool), cleanup()}. */
export function processesPanel(id) {
  const base = `/sandbox/${encodeURIComponent(id)}/processes`;
  const name = h("input", { type: "text", name: "name", placeholder: "web", autocomplete: "off", spellcheck: false });
  const cmd = h("input", { type: "text", name: "command", placeholder: "python3 -m http.server 8000", autocomplete: "off", spellcheck: false });
  const start = h("button", { type: "submit", class: "primary" }, "Start");
  const startErr = errorBox("process-start");
  const form = h("form", { class: "panel", "aria-labelledby": "proc-start-title" },
    h("h2", { id: "proc-start-title" }, "Start a background process"),
    h("div", { class: "row" }, field("Process name", name),
      h("div", { class: "grow" }, field("Process command (run with sh -c in /workspace)", cmd)), start),
    startErr);

  const listErr = errorBox("processes");
  const body = h("tbody");
  const empty = h("p", { class: "muted small", hidden: true }, "No processes.");
  const refreshBtn = h("button", { type: "button" }, "Refresh");
  const list = h("section", { class: "panel", "aria-labelledby": "proc-list-title" },
    h("div", { class: "row" }, h("h2", { id: "proc-list-title", class: "grow" }, "Processes"), refreshBtn),
    h("table", { class: "procs" }, h("thead", {}, h("tr", {},
      h("th", { class: "num" }, "PID"), h("th", {}, "Name"), h("th", {}, "Command"), h("th", {}, "State"),
      h("th", {}, "Started"), h("th", {}, h("span", { class: "sr-only" }, "Actions")))), body),
    empty, listErr);

  const logsTitle = h("h2", { id: "proc-logs-title", class: "grow", tabindex: "-1" }, "Logs");
  const logsStatus = h("span", { class: "muted small", role: "status" });
  const logsOut = h("pre", { class: "out proc-logs", "aria-labelledby": "proc-logs-title", tabindex: "0" });
  const stdin = h("input", { type: "text", name: "stdin", autocomplete: "off", spellcheck: false });
  const sendBtn = h("button", { type: "submit" }, "Send");
  const logsErr = errorBox("process-logs");
  const closeLogs = h("button", { type: "button" }, "Close logs");
  const stdinForm = h("form", { class: "row", "aria-label": "Send to the process's standard input" },
    h("div", { class: "grow" }, field("Standard input (a line)", stdin)), sendBtn);
  const logs = h("section", { class: "panel", "aria-labelledby": "proc-logs-title", hidden: true },
    h("div", { class: "row" }, logsTitle, closeLogs), logsStatus, logsOut, stdinForm, logsErr);

  const el = h("div", {}, form, list, logs);

  let logsCtrl = null;
  let logsPID = null;
  const poll = poller(async () => {
    const data = await api("GET", base);
    return (data && data.processes) || [];
  }, render, (e) => showError(listErr, e), POLL_MS);
  const refresh = poll.refresh;

  function render(procs) {
    empty.hidden = procs.length > 0;
    procs.sort((a, b) => Number(b.managed) - Number(a.managed) || a.pid - b.pid);
    body.replaceChildren(...procs.map((p) => {
      const label = p.name || (p.command || [])[0] || String(p.pid);
      const exited = p.state === "exited";
      const state = exited ? `exited (${pick(p, "exit_code") ?? "?"})` : p.state || "running";
      const logsBtn = h("button", { type: "button", "aria-label": `Logs of ${label}` }, "Logs");
      logsBtn.addEventListener("click", () => openLogs(p.pid, label));
      const stop = h("button", { type: "button", class: "danger", "aria-label": `Stop ${label}` }, "Stop");
      stop.addEventListener("click", () => busy(stop, listErr, async () => {
        await api("POST", `${base}/${p.pid}/signal`, { signal: "SIGTERM" });
        await refresh();
      }));
      return h("tr", { dataset: { pid: String(p.pid), managed: p.managed ? "true" : "false" } },
        h("td", { class: "num" }, String(p.pid)),
        h("td", {}, p.name || "", p.managed ? h("span", { class: "badge managed", title: "Started through the API" }, "managed") : null),
        h("td", {}, h("code", { class: "cmdline" }, (p.command || []).join(" "))),
        h("td", {}, h("span", { class: `badge ${exited ? (p.exit_code === 0 ? "completed" : "failed") : "running"}` }, state)),
        h("td", {}, ago(p.started_at)),
        h("td", {}, h("div", { class: "row" }, p.managed ? logsBtn : null, exited ? null : stop)));
    }));
  }

  async function openLogs(pid, label) {
    if (logsCtrl) logsCtrl.abort();
    const ctrl = new AbortController();
    logsCtrl = ctrl;
    logsPID = pid;
    logs.hidden = false;
    logsTitle.textContent = `Logs of ${label} (${pid})`;
    logsOut.replaceChildren();
    logsStatus.textContent = "Following…";
    showError(logsErr, null);
    logsTitle.focus();
    try {
      const res = await fetch(`${base}/${pid}/logs?follow=true`, {
        credentials: "same-origin", signal: ctrl.signal, headers: { Accept: "text/event-stream" },
      });
      if (!res.ok) await readResponse(res);
      await readSSE(res, (ev) => {
        if (ev.event === "stdout" || ev.event === "stderr") {
          const stick = logsOut.scrollTop + logsOut.clientHeight >= logsOut.scrollHeight - 4;
          logsOut.append(h("span", { class: ev.event }, chunkText(ev.data)));
          if (stick) logsOut.scrollTop = logsOut.scrollHeight;
        } else if (ev.event === "exit") {
          const x = parseJSON(ev.data);
          logsStatus.textContent = `Exited with code ${pick(x, "exit_code") ?? "?"}.`;
        } else if (ev.event === "error") {
          showError(logsErr, new Error(parseJSON(ev.data).message || ev.data));
        }
      }, ctrl.signal);
      if (logsCtrl === ctrl && logsStatus.textContent === "Following…") logsStatus.textContent = "The log stream ended.";
    } catch (e) {
      if (e.name === "AbortError") return;
      if (logsCtrl === ctrl) { logsStatus.textContent = ""; showError(logsErr, e); }
    }
  }

  closeLogs.addEventListener("click", () => {
    if (logsCtrl) logsCtrl.abort();
    logsCtrl = null;
    logsPID = null;
    logs.hidden = true;
    refreshBtn.focus();
  });

  stdinForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (logsPID == null) return;
    const line = stdin.value + "\n";
    const ok = await busy([sendBtn, stdin], logsErr, async () => {
      await api("POST", `${base}/${logsPID}/stdin`, new Blob([line]));
      return true;
    });
    if (ok) stdin.value = "";
    stdin.focus();
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const line = cmd.value.trim();
    if (!line) { showError(startErr, new Error("Type a command first.")); cmd.focus(); return; }
    const p = await busy([start, name, cmd], startErr, () => api("POST", base, {
      name: name.value.trim() || undefined, command: ["sh", "-c", line], workdir: "/workspace",
    }));
    if (!p) return;
    name.value = "";
    cmd.value = "";
    await refresh();
    if (p.pid) openLogs(p.pid, p.name || line);
  });
  refreshBtn.addEventListener("click", () => refresh());

  return {
    el,
    show: poll.show,
    hide: poll.hide,
    setRunning(on) {
      poll.setRunning(on);
      for (const c of [start, name, cmd]) c.disabled = !on;
    },
    cleanup() { poll.hide(); if (logsCtrl) logsCtrl.abort(); },
  };
}
