// DOM helpers. Text is always set through Text nodes or textContent.

/** h builds an element: h("button", {class: "x", onclick: f}, "text", child...). */
export function h(tag, attrs, ...children) {
  const ns = tag.startsWith("svg:") ? "http://www.w3.org/2000/svg" : null;
  const el = ns ? document.createElementNS(ns, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (!ns && (k === "value" || k === "checked")) el[k] = v;
    else if (!ns && k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.append(c);
    else el.append(document.createTextNode(String(c)));
  }
}

let uid = 0;
/** id returns a unique element id with the given prefix. */
export function nextID(prefix) { return `${prefix}-${++uid}`; }

/** field builds a labelled input; returns {wrap, input}. */
export function field(label, input, hint) {
  const id = input.id || nextID("f");
  input.id = id;
  const wrap = input.type === "checkbox"
    ? h("label", { class: "check", for: id }, input, label)
    : h("label", { for: id }, label, input, hint ? h("span", { class: "muted small" }, hint) : null);
  return wrap;
}

/** errorBox returns an element for an error shown next to a control. */
export function errorBox(forID) {
  return h("div", { class: "error", role: "alert", "aria-live": "assertive", dataset: forID ? { for: forID } : undefined });
}

/** showError writes an APIError (with field problems and request id) into box. */
export function showError(box, err) {
  // A quiet error (the server is reconnecting) is said once, by the page's
  // connection line, not in every panel.
  if (!err || err.quiet) { box.textContent = ""; return; }
  // Already said next to the fields it names (err.shown): not repeated here.
  if (err.shown) { box.textContent = ""; return; }
  let msg = err.message || String(err);
  if (err.fields && err.fields.length) msg += "\n" + err.fields.map((f) => `• ${f.field}: ${f.reason}`).join("\n");
  if (err.requestID) msg += `  (request ${err.requestID})`;
  box.textContent = msg;
}

/**
 * busy disables the given controls while fn runs, shows its error in box,
 * and returns fn's result (or undefined on error).
 */
export async function busy(controls, box, fn) {
  const list = (Array.isArray(controls) ? controls : [controls]).filter(Boolean);
  list.forEach((c) => { c.disabled = true; c.setAttribute("aria-busy", "true"); });
  if (box) showError(box, null);
  try {
    return await fn();
  } catch (err) {
    if (box) showError(box, err);
    else console.warn(err);
    return undefined;
  } finally {
    list.forEach((c) => { c.disabled = false; c.removeAttribute("aria-busy"); });
  }
}

/** confirmDialog asks with the page's <dialog>; resolves true on confirm. */
export function confirmDialog(title, body, okLabel = "Confirm") {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").textContent = body;
  document.getElementById("confirm-ok").textContent = okLabel;
  dlg.returnValue = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

/** pick returns the first defined property among names. */
export function pick(obj, ...names) {
  if (!obj) return undefined;
  for (const n of names) if (obj[n] !== undefined && obj[n] !== null) return obj[n];
  return undefined;
}

/** toDate accepts RFC 3339 strings or unix milliseconds/seconds. */
export function toDate(v) {
  if (v === undefined || v === null || v === "") return null;
  if (typeof v === "number") return new Date(v < 1e12 ? v * 1000 : v);
  const d = new Date(v);
  return Number.isNaN(d.getTime()) || d.getFullYear() < 1971 ? null : d;
}

/** ago formats a past time as "5m ago". */
export function ago(v) {
  const d = toDate(v);
  if (!d) return "—";
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** when formats a time for display, with the full ISO time as a title. */
export function when(v) {
  const d = toDate(v);
  if (!d) return h("span", {}, "—");
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

/** money formats US dollars. */
export function money(v) {
  const n = Number(v);
  if (!Number.isFinite(n)) return "—";
  return n === 0 ? "$0" : n < 0.01 ? `$${n.toFixed(4)}` : `$${n.toFixed(2)}`;
}

/** bytes formats a byte count. */
export function bytes(v) {
  const n = Number(v);
  if (!Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

/** duration formats milliseconds. */
export function duration(ms) {
  const n = Number(ms);
  if (!Number.isFinite(n)) return "—";
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(1)} s`;
  return `${Math.floor(n / 60000)}m ${Math.round((n % 60000) / 1000)}s`;
}

/** num formats an integer with separators. */
export function num(v) {
  const n = Number(v);
  return Number.isFinite(n) ? n.toLocaleString("en-US") : "—";
}

// poller loads a view's data every ms while the view is shown and its
// sandbox runs, and calls render only when the answer changed, so focus
// and selection in what it rendered survive the polling. onError gets
// each failure, and null after a success.
export function poller(load, render, onError, ms = 3000) {
  let visible = false;
  let running = false;
  let timer = null;
  let lastKey = "";
  async function refresh() {
    clearTimeout(timer);
    timer = null;
    if (!running) return;
    try {
      const data = await load();
      onError(null);
      const key = JSON.stringify(data);
      if (key !== lastKey) {
        lastKey = key;
        render(data);
      }
    } catch (e) {
      onError(e);
    }
    if (visible && running) timer = setTimeout(refresh, ms);
  }
  return {
    refresh,
    show() { visible = true; refresh(); },
    hide() { visible = false; clearTimeout(timer); timer = null; },
    setRunning(on) {
      running = on;
      if (on && visible && !timer) refresh();
    },
  };
}
