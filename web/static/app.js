// TechBoss AI web UI: a hash router over a few views. No build step.
import { api, connection } from "./api.js";
import { h, field, errorBox, busy } from "./dom.js";
import { sandboxesView } from "./sandboxes.js";
import { sandboxView } from "./sandbox.js";
import { tokensView } from "./tokens.js";
import { usageView } from "./usage.js";

const main = document.getElementById("main");
const state = { me: null, view: null, cleanup: null };

async function loadMe() {
  try {
    state.me = await api("GET", "/auth/me");
  } catch (err) {
    // Reconnecting: who we are is unknown, not "logged out".
    state.me = err.quiet ? undefined : null;
  }
  renderChrome();
}

function renderChrome() {
  const logged = !!state.me;
  document.getElementById("nav").hidden = !logged;
  document.getElementById("who").hidden = !logged;
  const u = state.me && (state.me.user || state.me);
  document.getElementById("who-email").textContent = u ? u.email || u.name || "" : "";
  // The audit log is the admins'.
  document.querySelector('#nav a[data-nav="audit"]').hidden = !(u && u.role === "admin");
}

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "sandboxes", args: parts.slice(1) };
}

// route renders the view of the hash. With focus (a navigation or a
// login), focus moves to the new view's heading, so keyboard and screen
// reader users start at the top of what they opened, not at the body.
async function route({ focus = false } = {}) {
  const { name, args } = parseHash();
  if (state.me === undefined) return; // reconnecting: routed once the server answers
  if (!state.me) { showLogin(); return; }
  if (name === "login") { location.hash = "#/sandboxes"; return; }
  // Within one sandbox, switching tabs keeps the page (and its live stream).
  if (state.view && state.view.name === "sandbox" && name === "sandbox" && state.view.id === args[0]) {
    state.view.api.select(args[1] || "chat");
    return;
  }
  teardown();
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.nav === (name === "sandbox" ? "sandboxes" : name)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  const ctx = { me: state.me, main };
  let v;
  switch (name) {
    case "sandbox":
      v = sandboxView(ctx, args[0], args[1] || "chat");
      state.view = { name, id: args[0], api: v };
      break;
    case "tokens": v = tokensView(ctx); state.view = { name, api: v }; break;
    case "usage": v = usageView(ctx); state.view = { name, api: v }; break;
    case "audit": {
      // Loaded when opened: only admins use it.
      const { auditView } = await import("./audit.js");
      if (parseHash().name !== "audit" || main.childElementCount) return; // navigated away meanwhile
      v = auditView(ctx); state.view = { name, api: v }; break;
    }
    default: v = sandboxesView(ctx, args); state.view = { name: "sandboxes", api: v };
  }
  state.cleanup = v && v.cleanup;
  const heading = focus && main.querySelector("h1");
  if (heading) { heading.tabIndex = -1; heading.focus(); }
}

function teardown() {
  if (state.cleanup) { try { state.cleanup(); } catch (e) { console.warn(e); } }
  state.cleanup = null;
  state.view = null;
}

function showLogin() {
  teardown();
  renderChrome();
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Log in");
  const err = errorBox("login");
  err.id = "login-err";
  password.setAttribute("aria-describedby", "login-err");
  const form = h("form", { "aria-label": "Log in", novalidate: true },
    field("Email", email), field("Password", password), submit, err);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const ok = await busy([submit, email, password], err, async () => {
      await api("POST", "/auth/login", { email: email.value.trim(), password: password.value });
      return true;
    });
    if (!ok) {
      // Wrong password (or another refusal): the alert under the form says
      // why; the password field, which describes itself by it, takes focus.
      password.setAttribute("aria-invalid", "true");
      password.focus();
      password.select();
      return;
    }
    password.removeAttribute("aria-invalid");
    password.value = "";
    await loadMe();
    if (!state.me) { err.textContent = "Logged in, but the session was not accepted (cookies blocked?)."; return; }
    if (!location.hash || location.hash === "#/login") location.hash = "#/sandboxes";
    else route({ focus: true });
  });
  main.replaceChildren(h("section", { class: "panel login" }, h("h1", {}, "Log in"), form));
  email.focus();
}

document.getElementById("logout").addEventListener("click", async (e) => {
  const btn = e.currentTarget;
  await busy(btn, null, () => api("POST", "/auth/logout"));
  state.me = null;
  renderChrome();
  location.hash = "#/login";
  showLogin();
});

window.addEventListener("techboss:unauthenticated", () => {
  if (!state.me) return;
  state.me = null;
  showLogin();
});
window.addEventListener("hashchange", () => route({ focus: true }));

// The connection line: one calm "Reconnecting…" with the server's
// Retry-After counted down, then one probe; it clears on the first
// successful response, and the page reloads what failed meanwhile.
const conn = document.getElementById("conn");
let connTimer = null;
let probing = false;
let hadFailures = false;
function renderConn() {
  if (!connection.reconnecting) {
    conn.hidden = true;
    conn.textContent = "";
    clearInterval(connTimer);
    connTimer = null;
    return;
  }
  hadFailures = true;
  const left = Math.ceil((connection.retryAt - Date.now()) / 1000);
  conn.textContent = left > 0 ? `Reconnecting… retrying in ${left} s` : "Reconnecting…";
  conn.hidden = false;
  if (!connTimer) connTimer = setInterval(renderConn, 1000);
  if (connection.retryAt && left <= 0 && !probing) probe();
}
async function probe() {
  probing = true;
  try { await api("GET", "/auth/me"); } catch { /* still down: a new Retry-After restarts the count */ }
  probing = false;
}
window.addEventListener("techboss:connection", async () => {
  renderConn();
  if (connection.reconnecting || !hadFailures) return;
  hadFailures = false;
  if (state.me === undefined) { await loadMe(); route(); return; }
  // A live sandbox page reconnects its own streams; other views reload.
  if (state.view && state.view.name !== "sandbox") { state.view = null; route(); }
});

await loadMe();
route();
