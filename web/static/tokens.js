// API tokens: list, create (shown once), revoke.
import { api } from "./api.js";
import { h, field, errorBox, busy, showError, pick, when, confirmDialog } from "./dom.js";

/** tokensView renders the API tokens page. */
export function tokensView({ main }) {
  const name = h("input", { type: "text", required: true, placeholder: "e.g. laptop CLI" });
  const create = h("button", { type: "submit", class: "primary" }, "Create token");
  const createErr = errorBox("token-create");
  const shown = h("div", {});
  const form = h("form", { class: "panel", "aria-labelledby": "tok-new-h" },
    h("h2", { id: "tok-new-h" }, "New token"),
    h("div", { class: "row" }, field("Name", name), create), createErr, shown);
  const listErr = errorBox("tokens");
  const tbody = h("tbody", {});
  main.append(h("h1", {}, "API tokens"),
    h("p", { class: "muted" }, "Use a token as Authorization: Bearer <token> with the API or the techboss CLI."),
    form,
    h("section", { class: "panel", "aria-labelledby": "tok-list-h" }, h("h2", { id: "tok-list-h" }, "Your tokens"), listErr,
      h("table", { "aria-label": "API tokens" }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "ID"), h("th", {}, "Created"),
        h("th", {}, "Last used"), h("th", {}, "Status"), h("th", {}, h("span", { class: "sr-only" }, "Actions")))), tbody)));

  async function refresh() {
    try {
      const data = await api("GET", "/auth/tokens");
      const list = Array.isArray(data) ? data : (data && (data.tokens || data.items)) || [];
      showError(listErr, null);
      tbody.replaceChildren(...list.map(row));
      if (!list.length) tbody.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No tokens.")));
    } catch (err) { showError(listErr, err); }
  }

  function row(t) {
    const id = pick(t, "token_id", "id");
    const revoke = h("button", { type: "button", class: "danger small" }, "Revoke");
    const err = errorBox();
    const revoked = pick(t, "revoked_at");
    revoke.disabled = !!revoked;
    revoke.addEventListener("click", async () => {
      if (!(await confirmDialog("Revoke token?", `Revoke “${t.name || id}”? Programs using it stop working.`, "Revoke"))) return;
      const ok = await busy(revoke, err, async () => { await api("DELETE", `/auth/tokens/${encodeURIComponent(id)}`); return true; });
      if (ok) refresh();
    });
    return h("tr", { dataset: { token: id } }, h("td", {}, t.name || "—"),
      h("td", {}, h("code", {}, pick(t, "prefix", "token_prefix", "hint") ? `${pick(t, "prefix", "token_prefix", "hint")}…` : id)),
      h("td", {}, when(t.created_at)), h("td", {}, when(t.last_used_at)),
      h("td", {}, revoked ? h("span", { class: "badge failed" }, "revoked") : t.expires_at ? ["expires ", when(t.expires_at)] : h("span", { class: "badge running" }, "active")), h("td", {}, revoke, err));
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    shown.replaceChildren();
    const body = { name: name.value.trim() };
    const t = await busy([create, name], createErr, () => api("POST", "/auth/tokens", body));
    if (!t) return;
    const secret = pick(t, "token", "secret", "value");
    const out = h("input", { type: "text", class: "token-once", readOnly: true, value: secret, "aria-label": "New token" });
    const copy = h("button", { type: "button" }, "Copy");
    copy.addEventListener("click", async () => {
      out.select();
      try { await navigator.clipboard.writeText(secret); copy.textContent = "Copied"; } catch { copy.textContent = "Press Ctrl+C"; }
    });
    shown.append(h("div", { class: "panel", role: "status" },
      h("p", {}, h("strong", {}, "Copy this token now. "), "It is shown only once."), h("div", { class: "row" }, out, copy)));
    name.value = "";
    out.focus(); out.select();
    refresh();
  });

  refresh();
  return {};
}
