// One sandbox: header with terminate, and tabs for chat, files, snapshots,
// the terminal, processes, ports and one-off commands (exec).
import { api, streamExec, parseJSON, chunkText, sandboxCosts } from "./api.js";
import { h, field, errorBox, busy, showError, pick, ago, money, confirmDialog, poller } from "./dom.js";
import { sandboxImage } from "./sandboxes.js";
import { chatPanel } from "./chat.js";
import { filesPanel } from "./files.js";
import { snapshotsPanel } from "./snapshots.js";
import { terminalPanel } from "./terminal.js";
import { processesPanel } from "./processes.js";
import { portsPanel } from "./ports.js";


const TABS = [["chat", "Agent"], ["files", "Files"], ["changes", "Changes"], ["snapshots", "Snapshots"], ["terminal", "Terminal"],
  ["processes", "Processes"], ["ports", "Ports"], ["exec", "Run command"]];

/** sandboxView renders the sandbox page; returns {select(tab), cleanup()}. */
export function sandboxView({ main }, id, tab) {
  const title = h("h1", {}, id);
  const badge = h("span", { class: "badge" }, "…");
  const meta = h("div", { class: "muted small" });
  const loadErr = errorBox("sandbox");
  const terminate = h("button", { type: "button", class: "danger" }, "Terminate");
  // Share (admins of the sandbox: its owner, a team's owners).
  const share = h("button", { type: "button", hidden: true }, "Share");
  // Loaded when first used, like the Changes tab: most visits need neither.
  share.addEventListener("click", async () => {
    const { openShareDialog } = await import("./share.js");
    openShareDialog(id, title.textContent, share);
  });
  const termErr = errorBox("terminate");
  // Who is watching: polled while the page is shown, and updated at once
  // by the presence events of the run streams the chat follows.
  const watchers = presenceList();
  const presence = poller(() => api("GET", `/sandbox/${encodeURIComponent(id)}/presence`), (d) => watchers.render(d), () => {}, 5000);
  const header = h("section", { class: "panel" },
    h("div", { class: "row" }, h("a", { href: "#/sandboxes" }, "← Sandboxes")),
    h("div", { class: "row" }, title, badge, watchers.el, h("span", { class: "grow" }), share, terminate), meta, termErr, loadErr);

  const chat = chatPanel(id, {
    onRunEnd: () => { refresh(); files.refresh(); snaps.refresh(); if (current === "changes" && changes) changes.refresh(); },
    onPresence: (d) => watchers.render(d),
  });
  const files = filesPanel(id);
  const snaps = snapshotsPanel(id, { onRestored: () => files.refresh() });
  const exec = execPanel(id);
  const terminal = terminalPanel(id);
  const procs = processesPanel(id);
  const ports = portsPanel(id);
  // The Changes tab's code loads when the tab first opens.
  let changes = null;
  const changesHost = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  async function loadChanges() {
    if (!changes) {
      const { changesPanel } = await import("./changes.js");
      if (!changes) {
        changes = changesPanel(id);
        changesHost.replaceChildren(changes.el);
        if (sb) changes.setSandbox(sb);
      }
    }
    return changes;
  }
  let current = "";
  // Panels that connect or poll only while they are shown.
  const live = { terminal, processes: procs, ports };
  const panels = { chat: chat.el, files: files.el, snapshots: snaps.el, terminal: terminal.el, processes: procs.el, ports: ports.el, exec: exec.el, changes: changesHost };
  const tabButtons = {};
  const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": "Sandbox sections" });
  for (const [key, label] of TABS) {
    const b = h("button", { type: "button", role: "tab", id: `tab-${key}`, "aria-controls": `panel-${key}` }, label);
    b.addEventListener("click", () => { location.hash = `#/sandbox/${encodeURIComponent(id)}/${key}`; });
    b.addEventListener("keydown", (e) => {
      const i = TABS.findIndex(([k]) => k === key);
      const next = e.key === "ArrowRight" ? TABS[(i + 1) % TABS.length] : e.key === "ArrowLeft" ? TABS[(i + TABS.length - 1) % TABS.length] : null;
      if (next) { e.preventDefault(); tabButtons[next[0]].focus(); tabButtons[next[0]].click(); }
    });
    tabButtons[key] = b;
    tablist.append(b);
    panels[key] = h("section", { role: "tabpanel", id: `panel-${key}`, "aria-labelledby": `tab-${key}`, hidden: true }, panels[key]);
  }
  main.append(header, tablist, ...Object.values(panels));

  function select(t) {
    if (!panels[t]) t = "chat";
    current = t;
    for (const [key] of TABS) {
      const on = key === t;
      tabButtons[key].setAttribute("aria-selected", String(on));
      tabButtons[key].tabIndex = on ? 0 : -1;
      panels[key].hidden = !on;
    }
    if (t === "files") files.refresh();
    if (t === "snapshots") snaps.refresh();
    if (t === "changes") loadChanges().then((c) => c.refresh());
    for (const [key, p] of Object.entries(live)) {
      if (key === t) p.show();
      else p.hide();
    }
  }

  let sb = null;
  let access = "admin";
  let cost = 0;
  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    try {
      // X-Techboss-Access: what the caller may do here (read, operate,
      // admin); a server without sharing sends none (the owner: admin).
      sb = await api("GET", `/sandbox/${encodeURIComponent(id)}`, undefined, { onResponse: (res) => { access = res.headers.get("X-Techboss-Access") || "admin"; } });
      showError(loadErr, null);
      cost = (await sandboxCosts()).get(id) ?? 0;
    } catch (err) {
      showError(loadErr, err);
      if (err.status === 404) {
        title.textContent = "Sandbox not found";
        for (const b of [terminate, ...Object.values(tabButtons)]) b.disabled = true;
        for (const p of Object.values(panels)) p.hidden = true;
      }
      return;
    }
    const spec = sb.spec || {};
    title.textContent = spec.name || sb.name || id;
    badge.textContent = sb.status;
    badge.className = `badge ${sb.status}`;
    meta.replaceChildren(`${id} · ${sandboxImage(sb)} · created ${ago(sb.created_at)} · last activity ${ago(pick(sb, "last_active_at", "updated_at"))}`,
      ` · ${money(pick(sb, "cost_usd") ?? cost)} so far`,
      sb.reason ? ` · ${sb.reason}` : "");
    // A sandbox that failed or was lost is deleted (off the active list);
    // a live one is terminated; a terminated one has nothing left to do.
    const dead = ["failed", "lost"].includes(sb.status);
    terminate.textContent = dead ? "Delete" : "Terminate";
    terminate.disabled = !dead && !["running", "creating"].includes(sb.status);
    terminate.hidden = access !== "admin";
    share.hidden = access !== "admin" || sb.status === "terminated";
    for (const p of Object.values(live)) p.setRunning(sb.status === "running");
    presence.setRunning(sb.status !== "terminated");
    const repos = (sb.spec && sb.spec.repo) || [];
    chat.setRepos(sb.status === "running" && (Array.isArray(repos) ? repos.length > 0 : !!repos));
    if (changes) {
      const hadRepos = changes.hasRepos;
      changes.setSandbox(sb);
      if (current === "changes" && !hadRepos && changes.hasRepos) changes.refresh();
    }
    chat.setAvailable(sb.status === "running" ? "" : sb.status === "creating" ? "The sandbox is starting…"
      : `The sandbox is ${sb.status}${sb.reason ? ` (${sb.reason})` : ""}: no new runs. Its runs and snapshots stay readable.`);
    if (access === "read" && sb.status === "running") chat.setAvailable("This sandbox is shared with you to view: its owner can let you prompt the agent.");
    if (sb.status === "creating" || sb.status === "terminating") timer = setTimeout(refresh, 1500);
  }

  terminate.addEventListener("click", async () => {
    const dead = sb && ["failed", "lost"].includes(sb.status);
    const ok = dead
      ? await confirmDialog("Delete sandbox?", "It leaves your list of sandboxes (its runs and snapshots stay readable under “Show terminated”).", "Delete")
      : await confirmDialog("Terminate sandbox?",
        "The workspace is snapshotted (if configured) and every process in the sandbox is stopped.", "Terminate");
    if (!ok) return;
    const done = await busy(terminate, termErr, () => api("DELETE", `/sandbox/${encodeURIComponent(id)}`));
    if (done && dead) { location.hash = "#/sandboxes"; return; }
    await refresh();
  });

  select(tab);
  presence.show();
  refresh();
  return {
    select,
    cleanup() {
      clearTimeout(timer);
      presence.hide();
      presence.setRunning(false);
      chat.cleanup();
      exec.cleanup();
      for (const p of Object.values(live)) p.cleanup();
    },
  };
}

/** initials of an email: "alice.smith@x" -> "AS", "bob@x" -> "BO". */
export function initials(email) {
  const local = String(email || "?").split("@")[0];
  const parts = local.split(/[._+-]+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[1][0] : local.slice(0, 2);
  return (s || "?").toUpperCase();
}

// presenceList renders who watches the sandbox as small avatars (their
// initials; the full email is each one's accessible name and tooltip).
function presenceList() {
  const el = h("ul", { class: "presence", "aria-label": "Watching now", hidden: true });
  let lastKey = "";
  return {
    el,
    render(d) {
      const viewers = (d && d.viewers) || [];
      const key = JSON.stringify(viewers.map((v) => [v.user_id, v.email]));
      if (key === lastKey) return;
      lastKey = key;
      el.hidden = !viewers.length;
      el.replaceChildren(...viewers.map((v) => {
        const who = v.email || v.user_id;
        return h("li", { class: "avatar", title: who, dataset: { user: v.user_id } },
          h("span", { "aria-hidden": "true" }, initials(who)), h("span", { class: "sr-only" }, who));
      }));
    },
  };
}

function execPanel(id) {
  const cmd = h("input", { type: "text", name: "command", placeholder: "ls -la", autocomplete: "off", spellcheck: false });
  const run = h("button", { type: "submit", class: "primary" }, "Run");
  const stop = h("button", { type: "button", hidden: true }, "Stop");
  const err = errorBox("exec");
  const status = h("span", { class: "muted small", role: "status" });
  const out = h("pre", { class: "out", role: "log", "aria-label": "Command output", "aria-live": "polite", tabindex: "0" });
  const form = h("form", { class: "panel", "aria-label": "Run a command" },
    h("div", { class: "row" }, h("div", { class: "grow" }, field("Command (run with sh -c in /workspace)", cmd)), run, stop),
    err, status, out);
  let ctrl = null;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const line = cmd.value.trim();
    if (!line) { showError(err, new Error("Type a command first.")); return; }
    out.replaceChildren();
    status.textContent = "Running…";
    ctrl = new AbortController();
    stop.hidden = false;
    let exit = null;
    await busy([run, cmd], err, () => streamExec(id, { command: ["sh", "-c", line] }, (type, data) => {
      if (type === "stdout" || type === "stderr") {
        out.append(h("span", { class: type }, chunkText(data)));
      } else if (type === "exit") {
        exit = parseJSON(data);
      } else if (type === "error") {
        showError(err, new Error(parseJSON(data).message || data));
      }
    }, ctrl.signal).catch((x) => { if (x.name !== "AbortError") throw x; }));
    stop.hidden = true;
    ctrl = null;
    if (exit) {
      const code = pick(exit, "exit_code", "code", "status");
      status.textContent = `Exited with code ${code ?? "?"}${exit.signal ? ` (signal ${exit.signal})` : ""}.`;
    } else status.textContent = "";
    cmd.focus();
  });
  stop.addEventListener("click", () => { if (ctrl) ctrl.abort(); status.textContent = "Stopped watching (the command may still run)."; });
  return { el: form, cleanup() { if (ctrl) ctrl.abort(); } };
}
