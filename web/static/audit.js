// The audit log (admins): who did what, newest first, with filters,
// "Load more" by cursor, and an export of what the filters match.
import { api } from "./api.js";
import { h, field, errorBox, busy, when } from "./dom.js";

const PAGE = 50;

/** auditView renders the audit page. */
export function auditView({ main }) {
  const action = h("input", { type: "text", name: "action", placeholder: "sandbox.create", autocomplete: "off", spellcheck: false });
  const actor = h("input", { type: "text", name: "user", placeholder: "email or user ID", autocomplete: "off", spellcheck: false });
  const apply = h("button", { type: "submit", class: "primary" }, "Filter");
  const err = errorBox("audit");
  const status = h("p", { class: "muted small", role: "status" });
  const exportLink = h("a", { href: "/audit/export", download: "audit.ndjson" }, "Export (JSON lines)");
  const rows = h("tbody", {});
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const form = h("form", { class: "row", "aria-label": "Filter the audit log" }, field("Action", action), field("Actor", actor), apply);
  main.append(h("h1", {}, "Audit log"),
    h("section", { class: "panel" }, form, err, h("div", { class: "row" }, status, h("span", { class: "grow" }), exportLink)),
    h("section", { class: "panel", "aria-labelledby": "audit-h" }, h("h2", { id: "audit-h" }, "Entries"),
      h("table", { tabindex: "0", "aria-labelledby": "audit-h" },
        h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Actor"), h("th", {}, "Action"), h("th", {}, "Resource"),
          h("th", { class: "num" }, "Result"), h("th", {}, "IP"))), rows),
      h("div", { class: "row" }, more)));

  let cursor = "";
  let shown = 0;
  function query(withCursor) {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (action.value.trim()) q.set("action", action.value.trim());
    if (actor.value.trim()) q.set("user", actor.value.trim());
    if (withCursor && cursor) q.set("cursor", cursor);
    return q.toString();
  }
  async function load(append) {
    const q = query(append);
    const page = await busy([apply, more], err, () => api("GET", `/audit?${q}`));
    if (!page) return;
    const entries = page.entries || [];
    if (!append) { rows.replaceChildren(); shown = 0; }
    rows.append(...entries.map((e) => h("tr", { dataset: { audit: e.id } },
      h("td", {}, when(e.at)), h("td", {}, e.email || e.user_id || "—", e.auth === "token" ? h("span", { class: "muted small" }, " (token)") : null),
      h("td", {}, h("code", {}, e.action)), h("td", { class: "resource" }, e.resource || "—"),
      h("td", { class: `num ${e.status >= 400 ? "bad" : ""}` }, String(e.status)), h("td", {}, e.ip || "—"))));
    shown += entries.length;
    if (!shown) rows.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No entries match.")));
    cursor = page.next_cursor || "";
    more.hidden = !cursor;
    status.textContent = `${shown} ${shown === 1 ? "entry" : "entries"} shown${cursor ? ", more to load" : ""}.`;
    const eq = new URLSearchParams(query(false));
    eq.delete("limit");
    exportLink.href = `/audit/export${eq.size ? `?${eq}` : ""}`;
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(false); });
  more.addEventListener("click", async () => { await load(true); more.focus(); if (more.hidden) apply.focus(); });
  load(false);
  return {};
}
