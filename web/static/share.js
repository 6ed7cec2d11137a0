// The Share dialog of a sandbox: who else may see or use it.
import { api } from "./api.js";
import { h, field, errorBox, busy, showError } from "./dom.js";

/** openShareDialog shows the sandbox's shares and a form to add one; focus returns to opener. */
export function openShareDialog(sandboxID, name, opener) {
  const base = `/sandbox/${encodeURIComponent(sandboxID)}/shares`;
  const list = h("ul", { class: "shares" });
  const listErr = errorBox("shares");
  const email = h("input", { type: "email", name: "user", autocomplete: "off", required: true });
  const role = h("select", { name: "role" },
    h("option", { value: "viewer" }, "Can view"),
    h("option", { value: "operator" }, "Can use (prompt, terminal, files)"));
  const err = errorBox("share");
  err.id = "share-err";
  email.setAttribute("aria-describedby", err.id);
  const status = h("p", { class: "small", role: "status" });
  const submit = h("button", { type: "submit", class: "primary" }, "Add person");
  const form = h("form", { class: "share-form", "aria-label": "Share with a person", novalidate: true },
    h("div", { class: "grid" }, field("Email", email), field("Access", role)), h("div", { class: "row" }, submit, status), err);
  const close = h("button", { type: "button" }, "Close");
  const dlg = h("dialog", { class: "share-dialog", "aria-labelledby": "share-title" },
    h("h2", { id: "share-title" }, `Share ${name}`),
    h("p", { class: "muted small" }, "People you share with see this sandbox under “Shared with me”. Only you can terminate it or share it further."),
    h("h3", {}, "Shared with"), listErr, list, form, h("div", { class: "row end" }, close));

  async function load() {
    try {
      const d = await api("GET", base);
      const shares = (d && d.shares) || [];
      showError(listErr, null);
      list.replaceChildren(...shares.map((s) => {
        const who = s.email || s.team_id || s.user_id;
        const rm = h("button", { type: "button", class: "danger small", "aria-label": `Stop sharing with ${who}` }, "Remove");
        rm.addEventListener("click", async () => {
          const ok = await busy(rm, listErr, async () => { await api("DELETE", `${base}/${encodeURIComponent(s.id)}`); return true; });
          if (ok) { status.textContent = `Stopped sharing with ${who}.`; await load(); email.focus(); }
        });
        return h("li", { dataset: { share: s.id } }, h("span", { class: "grow" }, who, " · ", s.role === "operator" ? "can use" : "can view"), rm);
      }));
      if (!shares.length) list.append(h("li", { class: "muted" }, "Nobody yet."));
    } catch (e) {
      showError(listErr, e);
    }
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    email.removeAttribute("aria-invalid");
    status.textContent = "";
    const who = email.value.trim();
    if (!who) { email.setAttribute("aria-invalid", "true"); showError(err, new Error("Type the person's email first.")); email.focus(); return; }
    const s = await busy([submit, email, role], err, async () => {
      try {
        return await api("POST", base, { user: who, role: role.value });
      } catch (x) {
        if ((x.fields || []).some((f) => f.field === "user")) { email.setAttribute("aria-invalid", "true"); setTimeout(() => email.focus()); }
        throw x;
      }
    });
    if (!s) return;
    email.value = "";
    status.textContent = `Shared with ${who}.`;
    await load();
    email.focus();
  });
  close.addEventListener("click", () => dlg.close());
  dlg.addEventListener("close", () => { dlg.remove(); if (opener && opener.isConnected) opener.focus(); });
  document.body.append(dlg);
  dlg.showModal();
  email.focus();
  load();
  return dlg;
}
