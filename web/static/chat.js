// The agent chat: prompt box, live run stream, tool cards, run history.
import { api, followRun } from "./api.js";
import { h, field, errorBox, busy, showError, pick, money, duration, num, when } from "./dom.js";
import { renderMarkdown } from "./md.js";

const LIVE = new Set(["queued", "pending", "starting", "running"]);
const REPLAY_LIMIT = 20;

/** chatPanel builds the chat for one sandbox. onRunEnd is called after each live run, onPresence with each presence event. */
export function chatPanel(sandboxID, { onRunEnd, onPresence } = {}) {
  const transcript = h("div", { class: "transcript", role: "log", "aria-live": "polite", "aria-label": "Agent transcript" });
  const prompt = h("textarea", { name: "prompt", rows: 3, placeholder: "Ask the agent… (Ctrl+Enter to send)" });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const cancel = h("button", { type: "button", class: "danger", hidden: true }, "Cancel run");
  const status = h("span", { class: "muted small", role: "status" });
  const err = errorBox("prompt");
  // Ask before each tool call (approvals): permission_mode "ask".
  const askBox = h("input", { type: "checkbox", name: "ask" });
  const askLabel = h("label", { class: "small" }, askBox, " Ask before tools run");
  // Deliver (sandboxes with a repository): when the run succeeds its
  // changes are committed to a branch, pushed, and a pull request opened.
  const deliverBranch = h("input", { type: "text", name: "deliver_branch", placeholder: "agent/fix-login", autocomplete: "off", spellcheck: false });
  const deliverPR = h("input", { type: "checkbox", name: "deliver_pr", checked: true });
  const deliver = h("details", { class: "deliver", hidden: true }, h("summary", {}, "Deliver as a branch or pull request"),
    h("div", { class: "row" }, field("Branch to push when the run succeeds", deliverBranch), field("Open a pull request", deliverPR)));
  const form = h("form", { class: "composer", "aria-label": "Prompt" },
    field("Prompt", prompt), deliver, h("div", { class: "row" }, send, cancel, askLabel, status), err);
  const historyList = h("ol", { class: "history small" });
  const historyErr = errorBox("history");
  const el = h("div", { class: "chat-layout" },
    h("section", { "aria-label": "Chat" }, transcript, form),
    h("aside", { class: "panel", "aria-labelledby": "hist-h" }, h("h2", { id: "hist-h", class: "h3" }, "Run history"), historyErr, historyList));

  const views = new Map(); // run id -> RunView
  const streams = new Set();
  let active = null; // {view, stream}

  // unavailable says why no prompt can be sent (the sandbox is not
  // running), or is "".
  let unavailable = "";
  const why = h("p", { class: "muted small", hidden: true });
  form.prepend(why);
  function setActive(a) {
    const ended = !!active && !a;
    active = a;
    const on = !!a;
    send.disabled = on || !!unavailable;
    prompt.disabled = on || !!unavailable;
    askBox.disabled = !!unavailable;
    cancel.hidden = !on;
    cancel.disabled = false;
    // While a run streams the composer is pinned to the bottom of the
    // screen, so Cancel stays in view however far the transcript scrolls.
    form.classList.toggle("running", on);
    // Back to the prompt when a run ends; not when the page opens (the
    // sandbox's heading has focus then).
    if (!on) { status.textContent = ""; if (ended && !unavailable && el.isConnected) prompt.focus(); }
  }
  function setAvailable(reason) {
    unavailable = reason || "";
    why.textContent = unavailable;
    why.hidden = !unavailable;
    setActive(active);
  }
  // retry sends a failed run's prompt again (the Retry button on its view).
  function retry(text) {
    if (active || unavailable) return;
    prompt.value = text;
    form.requestSubmit();
  }

  function follow(view, opts, live) {
    const stream = followRun(opts, {
      onEvent: (type, data, seq) => {
        // Who watches the sandbox: the page's avatars, not the transcript.
        if (type === "presence") { if (onPresence) onPresence(data); return; }
        view.handle(type, data, seq);
      },
      onRunID: (id) => { view.setID(id); views.set(id, view); if (live) refreshHistory(); },
      onState: (s) => {
        // data-connections counts the streams this run view has opened (a
        // reconnect adds one); it is there for people debugging, and tests.
        if (s === "streaming") view.el.dataset.connections = String(Number(view.el.dataset.connections || 0) + 1);
        if (live) status.textContent = s === "reconnecting" ? "Connection lost, reconnecting…" : "Streaming…";
      },
      onError: (e) => {
        if (live && !view.id) {
          // The run never started (e.g. 409: another run is active): give the prompt back.
          view.el.remove();
          if (!prompt.value) prompt.value = view.promptEl.textContent;
          showError(err, e);
          return;
        }
        if (live) showError(err, e); else view.notice("error", e.message);
        view.markEnded();
      },
      onEnd: ({ finished }) => {
        streams.delete(stream);
        if (!finished) view.markEnded();
        if (live && active && active.stream === stream) {
          setActive(null);
          refreshHistory();
          if (onRunEnd) onRunEnd();
        }
      },
    });
    streams.add(stream);
    return stream;
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = prompt.value.trim();
    if (!text) { showError(err, new Error("Write a prompt first.")); prompt.focus(); return; }
    if (active || unavailable) return;
    showError(err, null);
    const view = new RunView(text, null, retry);
    transcript.querySelector(".empty-chat")?.remove();
    transcript.append(view.el);
    const body = askBox.checked ? { prompt: text, permission_mode: "ask" } : { prompt: text };
    if (!deliver.hidden && deliverBranch.value.trim()) body.deliver = { branch: deliverBranch.value.trim(), pull_request: deliverPR.checked };
    const stream = follow(view, { sandboxID, prompt: text, body }, true);
    setActive({ view, stream });
    prompt.value = "";
    status.textContent = "Starting…";
    view.el.scrollIntoView({ block: "end" });
  });
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  cancel.addEventListener("click", async () => {
    const id = active && (active.view.id || active.stream.runID);
    if (!id) return;
    await busy(cancel, err, () => api("POST", `/runs/${encodeURIComponent(id)}/cancel`));
    status.textContent = "Cancelling…";
    cancel.disabled = true;
  });

  async function refreshHistory() {
    let runs;
    try {
      runs = listOf(await api("GET", `/sandbox/${encodeURIComponent(sandboxID)}/runs`));
      showError(historyErr, null);
    } catch (e) {
      showError(historyErr, e);
      return [];
    }
    runs.sort((a, b) => String(a.created_at || a.started_at).localeCompare(String(b.created_at || b.started_at)));
    historyList.replaceChildren(...runs.map((r) => {
      const id = runID(r);
      const go = h("button", { type: "button", class: "link" }, (r.prompt || id).slice(0, 60));
      go.addEventListener("click", () => {
        const v = views.get(id);
        if (v) { v.el.scrollIntoView({ block: "start" }); v.el.focus(); } else loadRun(r, true);
      });
      return h("li", { dataset: { run: id } }, go, " ", h("span", { class: `badge ${r.status}` }, r.status),
        h("div", { class: "muted" }, when(r.created_at || r.started_at), " · ", money(pick(r, "cost_usd", "total_cost_usd")),
          " · ", duration(pick(r, "duration_ms"))),
        // The after-run snapshot failed and is being retried (cleared once one is stored).
        r.snapshot_error ? h("div", { class: "notice snapshot-error", dataset: { snapshotError: id } }, `Snapshot failed: ${r.snapshot_error}`) : null);
    }));
    return runs;
  }

  function loadRun(r, scroll) {
    const id = runID(r);
    const view = new RunView(r.prompt || "", id, retry);
    views.set(id, view);
    // Keep transcript order by creation time.
    transcript.append(view.el);
    const live = LIVE.has(r.status);
    const stream = follow(view, { sandboxID, runID: id }, live);
    if (live && !active) setActive({ view, stream });
    if (scroll) view.el.scrollIntoView({ block: "start" });
  }

  (async () => {
    const runs = await refreshHistory();
    const recent = runs.slice(-REPLAY_LIMIT);
    if (runs.length > recent.length) {
      transcript.append(h("p", { class: "muted small" }, `${runs.length - recent.length} earlier runs are in the history.`));
    }
    for (const r of recent) loadRun(r, false);
    if (!recent.length) transcript.append(h("p", { class: "muted empty-chat" }, "No runs yet. Send a prompt to start the agent."));
  })();

  return {
    el,
    setAvailable,
    setRepos(on) { deliver.hidden = !on; },
    focus() { if (!prompt.disabled) prompt.focus(); },
    cleanup() { for (const s of streams) s.cancel(); streams.clear(); },
  };
}

function listOf(data) {
  return Array.isArray(data) ? data : (data && (data.runs || data.items)) || [];
}

function runID(r) { return pick(r, "run_id", "id"); }

const utf8 = new TextEncoder();
function utf8Len(s) { return utf8.encode(s).length; }

/** RunView renders one run's events. Each event is applied once, in order. */
class RunView {
  constructor(promptText, id, onRetry) {
    this.onRetry = onRetry;
    this.id = id || null;
    this.textBlock = null;
    this.cards = new Map();
    this.statsEl = h("div", { class: "stats", role: "group", "aria-label": "Run statistics" });
    this.stateEl = h("span", { class: "badge running" }, "running");
    this.body = h("div", { class: "assistant" });
    this.promptEl = h("div", { class: "prompt" }, promptText);
    // "Working… 12s" while the run is live: the agent is thinking or a
    // tool is running even when no text arrives.
    this.workEl = h("span", { class: "working", role: "status", "aria-live": "off" });
    this.el = h("article", { class: "run", tabindex: "-1", dataset: id ? { run: id } : {} },
      this.promptEl, this.body, h("div", { class: "row" }, this.stateEl, this.workEl, this.statsEl));
    this.usage = {};
    this.ended = false;
    this.stream = null; // the text block the model is streaming (text_delta)
    this.since = Date.now();
    this.tick = setInterval(() => this.renderWorking(), 1000);
    this.renderWorking();
  }

  renderWorking() {
    // Stop when the run ended, or when its view left the page.
    if (this.ended || (!this.el.isConnected && Date.now() - this.since > 5000)) {
      this.stopWorking();
      return;
    }
    const s = Math.max(0, Math.round((Date.now() - this.since) / 1000));
    this.workEl.replaceChildren(h("span", { class: "spinner", "aria-hidden": "true" }), ` Working… ${s}s`);
  }

  stopWorking() {
    if (this.tick) clearInterval(this.tick);
    this.tick = null;
    this.workEl.replaceChildren();
  }

  /** delta appends a piece of the streaming text block (offsets are UTF-8 bytes). */
  delta(d, seq) {
    const key = `${d.message_id}/${d.index}`;
    if (!this.stream || this.stream.key !== key) {
      this.textBlock = null;
      this.stream = { key, msg: d.message_id, src: "", bytes: d.offset || 0, el: h("div", { class: "text streaming", dataset: { seq: String(seq) } }) };
      this.body.append(this.stream.el);
    }
    const st = this.stream;
    if ((d.offset || 0) < st.bytes) return; // already shown (a replay overlapping the live stream)
    st.src += d.text || "";
    st.bytes = (d.offset || 0) + utf8Len(d.text || "");
    if (!st.frame) {
      // One render per frame however many deltas arrive.
      st.frame = requestAnimationFrame(() => { st.frame = 0; st.el.replaceChildren(renderMarkdown(st.src)); });
    }
  }

  setID(id) { this.id = id; this.el.dataset.run = id; }

  setState(s) {
    this.stateEl.textContent = s;
    this.stateEl.className = `badge ${s}`;
  }

  markEnded() {
    if (!this.ended && this.stateEl.textContent === "running") this.setState("disconnected");
    this.stopWorking();
  }

  notice(kind, text, raw = text) {
    // One failure arrives as an error line, again in the CLI's result and
    // again in the run's final status: show it once.
    if (kind === "error" && raw === this.lastError) return;
    if (kind === "error") this.lastError = raw;
    this.textBlock = null;
    this.body.append(h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : undefined }, text));
  }

  handle(type, d, seq) {
    switch (type) {
      case "run.started": {
        const p = pick(d, "prompt");
        if (p && !this.promptEl.textContent) this.promptEl.textContent = p;
        break;
      }
      case "text_delta":
        this.retryEl = null;
        this.delta(d, seq);
        break;
      case "text": {
        const text = pick(d, "text", "delta", "value") ?? "";
        if (this.stream && d.message_id && this.stream.msg === d.message_id) {
          // The block the deltas built, now whole: render it once more, final.
          const st = this.stream;
          if (st.frame) cancelAnimationFrame(st.frame);
          st.el.classList.remove("streaming");
          st.el.replaceChildren(renderMarkdown(text));
          this.stream = null;
          this.textBlock = null;
          break;
        }
        const append = d.delta === true || d.partial === true || typeof d.delta === "string";
        if (append && this.textBlock) {
          this.textBlock.src += text;
        } else {
          this.textBlock = { src: text, el: h("div", { class: "text", dataset: { seq: String(seq) } }) };
          this.body.append(this.textBlock.el);
        }
        this.textBlock.el.replaceChildren(renderMarkdown(this.textBlock.src));
        break;
      }
      case "tool_use": {
        this.textBlock = null;
        this.retryEl = null;
        const id = pick(d, "id", "tool_use_id") || `t${seq}`;
        const name = pick(d, "name", "tool") || "tool";
        const input = pick(d, "input") ?? {};
        const summaryText = typeof input === "object" && input.command ? `${name}: ${input.command}`
          : `${name}${input.file_path ? ": " + input.file_path : input.pattern ? ": " + input.pattern : ""}`;
        const result = h("div", { class: "result" }, h("span", { class: "muted small" }, "running…"));
        const card = h("details", { class: "tool", dataset: { tool: name, toolUse: id } },
          h("summary", {}, summaryText),
          h("div", {}, h("div", { class: "muted small" }, "Input"),
            h("pre", { class: "tool-input" }, typeof input === "string" ? input : JSON.stringify(input, null, 2)),
            h("div", { class: "muted small" }, "Result"), result));
        this.cards.set(id, { card, result });
        this.body.append(card);
        break;
      }
      case "tool_result": {
        this.textBlock = null;
        const id = pick(d, "tool_use_id", "id");
        const content = resultText(pick(d, "content", "output", "text"));
        let c = this.cards.get(id);
        if (!c) {
          // A result without its call (e.g. the call was before a reconnect window): show it alone.
          const result = h("div", { class: "result" });
          const card = h("details", { class: "tool", dataset: { toolUse: id || "" } }, h("summary", {}, "tool result"), h("div", {}, result));
          this.body.append(card);
          c = { card, result };
        }
        c.result.replaceChildren(h("pre", { class: "tool-output" }, content));
        if (d.is_error) c.card.classList.add("is-error");
        break;
      }
      case "retry": {
        const attempt = pick(d, "attempt");
        const max = pick(d, "max_retries", "max_attempts");
        const why = pick(d, "error", "message", "reason") || "";
        const wait = pick(d, "retry_delay_ms", "delay_ms");
        const line = `Retrying${attempt ? ` (attempt ${attempt}${max ? ` of ${max}` : ""})` : ""}${wait ? ` in ${duration(wait)}` : ""}${why ? `: ${typeof why === "string" ? why : JSON.stringify(why)}` : ""}`;
        // One line per failing call, updated by each retry of it.
        if (this.retryEl && this.retryEl.isConnected) {
          this.retryEl.textContent = line;
        } else {
          this.notice("retry", line);
          this.retryEl = this.body.lastElementChild;
        }
        break;
      }
      case "usage": {
        // Gateway events are per API call (summed); the CLI's are run totals.
        const u = d.usage || {};
        if (d.source === "cli") {
          this.cli = { usage: u, cost: d.cost_usd };
        } else {
          this.gw = this.gw || { usage: {}, cost: 0 };
          for (const [k, v] of Object.entries(u)) if (typeof v === "number") this.gw.usage[k] = (this.gw.usage[k] || 0) + v;
          if (typeof d.cost_usd === "number") this.gw.cost += d.cost_usd;
        }
        const best = this.gw || this.cli;
        this.usage = { ...best.usage };
        this.renderStats({ cost_usd: best.cost });
        break;
      }
      case "error":
        this.notice("error", `Error: ${pick(d, "message", "error", "text") || JSON.stringify(d)}`, pick(d, "message", "error", "text"));
        break;
      case "result":
        this.textBlock = null;
        if (d.usage) this.usage = { ...d.usage };
        this.renderStats(d);
        if (d.is_error && d.result) this.notice("error", `Error: ${d.result}`, d.result);
        if (d.is_error) this.setState("error");
        break;
      case "permission_request":
        this.permissionRequest(d);
        break;
      case "permission_decision":
        this.permissionDecision(d);
        break;
      case "snapshot_error":
        // The workspace snapshot after the run failed; the server retries it.
        this.notice("snapshot-error", `Snapshot failed: ${d.error || "unknown error"}${d.retrying ? " (retrying in the background)" : ""}`, d.error);
        break;
      case "delivery":
        this.delivery(d);
        break;
      case "restarting":
        this.notice("retry", "The server is restarting; reconnecting…");
        break;
      case "done":
        this.ended = true;
        this.stopWorking();
        if (d.status === "failed" && this.onRetry && !this.retryBtn) {
          // One click sends the same prompt again.
          this.retryBtn = h("button", { type: "button", class: "retry" }, "Retry");
          this.retryBtn.addEventListener("click", () => this.onRetry(this.promptEl.textContent));
          this.el.querySelector(".row").append(this.retryBtn);
        }
        if (d.error && !d.synthetic && d.error !== d.status) this.notice("error", `Run ${d.status || "ended"}: ${d.error}`, d.error);
        this.setState(pick(d, "status", "state") || (this.stateEl.textContent === "error" ? "error" : "completed"));
        break;
      default:
        break;
    }
  }

  /** delivery shows what the deliver option did: the branch, the commit and the pull request's link. */
  delivery(d) {
    this.textBlock = null;
    const parts = [];
    if (d.nothing_changed) parts.push(`Nothing changed: no commit on ${d.branch}.`);
    else if (d.commit) parts.push(`Pushed ${String(d.commit).slice(0, 10)} to ${d.branch}.`);
    if (d.pull_request_url) {
      parts.push(" ", h("a", { href: d.pull_request_url, target: "_blank", rel: "noopener noreferrer", class: "pr-link" }, "Open the pull request"));
    }
    if (parts.length) this.body.append(h("div", { class: "notice delivery", dataset: { delivery: d.branch || "" } }, ...parts));
    if (d.error) this.notice("error", `Delivery to ${d.branch || "a branch"} failed: ${d.error}`, d.error);
  }

  /** permissionRequest shows a tool call waiting for an answer: what it does, Allow / Deny / Edit. */
  permissionRequest(d) {
    this.textBlock = null;
    this.approvals = this.approvals || new Map();
    if (this.approvals.has(d.request_id)) return;
    const status = h("span", { class: "muted small", role: "status" }, `waiting for an answer (${d.on_timeout || "deny"} at ${new Date(d.expires_at).toLocaleTimeString()})`);
    const err = errorBox(`perm-${d.request_id}`);
    const msg = h("input", { type: "text", placeholder: "Reason (sent to the agent on Deny)", "aria-label": "Reason" });
    const edit = h("textarea", { rows: 6, hidden: true, "aria-label": "Edited tool input (JSON)" }, JSON.stringify(d.input ?? {}, null, 2));
    const remember = h("input", { type: "checkbox" });
    const answer = async (behavior) => {
      const body = { behavior };
      if (behavior === "deny" && msg.value.trim()) body.message = msg.value.trim();
      if (behavior === "allow" && !edit.hidden) {
        try { body.updated_input = JSON.parse(edit.value); } catch (e) { showError(err, new Error(`The edited input is not JSON: ${e.message}`)); return; }
      }
      if (remember.checked) body.remember = "run";
      await busy(allow, err, () => api("POST", `/runs/${encodeURIComponent(this.id)}/permissions/${encodeURIComponent(d.request_id)}`, body));
    };
    const allow = h("button", { type: "button", class: "primary", title: "Allow (a)", onclick: () => answer("allow") }, "Allow");
    const deny = h("button", { type: "button", class: "danger", title: "Deny (d)", onclick: () => answer("deny") }, "Deny");
    const editBtn = h("button", { type: "button", title: "Edit the input (e)", onclick: () => { edit.hidden = !edit.hidden; if (!edit.hidden) edit.focus(); } }, "Edit");
    const buttons = h("div", { class: "row" }, allow, deny, editBtn, h("label", { class: "small" }, remember, ` Always for ${d.tool_name} in this run`));
    const card = h("section", { class: "approval", tabindex: "0", "aria-label": `Approve ${d.tool_name}`, dataset: { request: d.request_id } },
      h("h2", { class: "h3" }, `${d.tool_name} wants to run`),
      h("pre", { class: "approval-summary" }, d.summary || JSON.stringify(d.input, null, 2)),
      edit, msg, buttons, status, err);
    // Keyboard: a allow, d deny, e edit (when the card has focus, not a field).
    card.addEventListener("keydown", (e) => {
      if (e.target !== card || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "a") { e.preventDefault(); answer("allow"); }
      if (e.key === "d") { e.preventDefault(); answer("deny"); }
      if (e.key === "e") { e.preventDefault(); editBtn.click(); }
    });
    this.approvals.set(d.request_id, { card, buttons, status, msg, edit });
    this.body.append(card);
    if (document.activeElement === document.body || !document.activeElement) card.focus();
  }

  /** permissionDecision marks a request decided (whoever answered first), or records a policy decision. */
  permissionDecision(d) {
    const a = d.request_id && this.approvals && this.approvals.get(d.request_id);
    const who = d.source === "user" ? `by ${d.decided_by || "a user"}` : d.source === "timeout" ? "on timeout" : `by ${d.source}`;
    const text = `${d.behavior === "allow" ? "Allowed" : "Denied"} ${who}${d.message ? `: ${d.message}` : ""}`;
    if (a) {
      a.buttons.remove(); a.msg.remove(); a.edit.hidden = true;
      a.status.textContent = text;
      a.card.classList.add(d.behavior === "allow" ? "allowed" : "denied");
      return;
    }
    if (d.source === "policy" || d.source === "remembered") {
      this.body.append(h("div", { class: `notice ${d.behavior === "allow" ? "info" : "error"} small` }, `${d.tool_name}: ${text}`));
    }
  }

  renderStats(update) {
    this.stats = { ...(this.stats || {}), ...Object.fromEntries(Object.entries(update).filter(([, v]) => v !== undefined && v !== null)) };
    const r = this.stats;
    const u = this.usage;
    const input = pick(r, "input_tokens") ?? pick(u, "input_tokens");
    const output = pick(r, "output_tokens") ?? pick(u, "output_tokens");
    const cacheR = pick(r, "cache_read_input_tokens") ?? pick(u, "cache_read_input_tokens");
    const cost = pick(r, "cost_usd", "total_cost_usd");
    const dur = pick(r, "duration_ms");
    const turns = pick(r, "num_turns", "turns");
    const parts = [];
    if (input !== undefined) parts.push(h("span", { dataset: { stat: "input" } }, `in ${num(input)} tok`));
    if (output !== undefined) parts.push(h("span", { dataset: { stat: "output" } }, `out ${num(output)} tok`));
    if (cacheR) parts.push(h("span", {}, `cache ${num(cacheR)} tok`));
    if (cost !== undefined) parts.push(h("span", { dataset: { stat: "cost" } }, money(cost)));
    if (dur !== undefined) parts.push(h("span", { dataset: { stat: "duration" } }, duration(dur)));
    if (turns !== undefined) parts.push(h("span", {}, `${turns} turn${turns === 1 ? "" : "s"}`));
    if (parts.length) this.statsEl.replaceChildren(...parts);
  }
}

function resultText(c) {
  if (c === undefined || c === null) return "";
  if (typeof c === "string") return c;
  if (Array.isArray(c)) return c.map((b) => (b && typeof b === "object" ? b.text ?? JSON.stringify(b) : String(b))).join("\n");
  return JSON.stringify(c, null, 2);
}
