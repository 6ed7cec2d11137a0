// Snapshots timeline: create, diff two versions, restore with confirmation.
import { api } from "./api.js";
import { h, field, errorBox, busy, showError, pick, bytes, when, num, confirmDialog } from "./dom.js";

function snapID(s) { return pick(s, "snapshot_id", "id", "version"); }
function snapVersion(s) { return pick(s, "version", "name", "snapshot_id", "id"); }
// A snapshot's name for people: its label, else its version (a UTC time).
function snapLabel(s) { return s.label ? `${s.label} (${snapVersion(s)})` : snapVersion(s); }

/** snapshotsPanel builds the timeline for one sandbox. onRestored runs after a restore. */
export function snapshotsPanel(sandboxID, { onRestored } = {}) {
  const createBtn = h("button", { type: "submit", class: "primary" }, "Create snapshot");
  const labelIn = h("input", { type: "text", name: "label", maxlength: "100", placeholder: "e.g. before the refactor", autocomplete: "off" });
  const createErr = errorBox("snapshot-create");
  const listErr = errorBox("snapshots");
  const status = h("span", { class: "muted small", role: "status" });
  const timeline = h("ol", { class: "timeline", "aria-label": "Snapshots, newest first" });
  const from = h("select", {});
  const to = h("select", {});
  let picked = false;
  for (const sel of [from, to]) sel.addEventListener("change", () => { picked = true; });
  const diffBtn = h("button", { type: "submit" }, "Compare");
  const diffErr = errorBox("diff");
  const diffOut = h("div", { class: "diff" });
  const diffForm = h("form", { class: "panel", "aria-label": "Compare snapshots" },
    h("h2", { class: "h3" }, "Compare two versions"), h("div", { class: "row" }, field("From", from), field("To", to), diffBtn), diffErr, diffOut);
  labelIn.setAttribute("aria-describedby", "snap-create-err");
  createErr.id = "snap-create-err";
  const createForm = h("form", { class: "row snap-create", "aria-label": "Create a snapshot" },
    h("div", { class: "grow" }, field("Label (optional)", labelIn)), createBtn, status);
  const el = h("div", {},
    h("section", { class: "panel", "aria-labelledby": "snaps-h" },
      h("h2", { class: "h3", id: "snaps-h" }, "Snapshots"), createForm, createErr, listErr, timeline),
    diffForm);

  async function refresh() {
    let list;
    try {
      const data = await api("GET", `/sandbox/${encodeURIComponent(sandboxID)}/snapshots`);
      list = Array.isArray(data) ? data : (data && (data.snapshots || data.versions || data.items)) || [];
      showError(listErr, null);
    } catch (err) {
      showError(listErr, err);
      return;
    }
    list.sort((a, b) => String(snapVersion(b)).localeCompare(String(snapVersion(a))));
    timeline.replaceChildren(...list.map(item));
    if (!list.length) timeline.append(h("li", { class: "muted" }, "No snapshots yet."));
    const opts = () => list.map((s) => h("option", { value: snapID(s) }, String(snapLabel(s))));
    const [f, t] = [from.value, to.value];
    from.replaceChildren(...opts());
    to.replaceChildren(...opts());
    // Default to the two newest versions, unless the user chose others.
    if (list.length > 1) {
      from.value = picked && f ? f : snapID(list[1]);
      to.value = picked && t ? t : snapID(list[0]);
    }
    diffBtn.disabled = list.length < 2;
  }

  function item(s) {
    const id = snapID(s);
    const restore = h("button", { type: "button", class: "danger small" }, "Restore");
    const err = errorBox();
    restore.addEventListener("click", async () => {
      const ok = await confirmDialog("Restore snapshot?",
        `Replace the workspace with version ${snapLabel(s)}? Files created since then are deleted.`, "Restore");
      if (!ok) return;
      const done = await busy(restore, err, async () => {
        await api("POST", `/sandbox/${encodeURIComponent(sandboxID)}/restore`, { snapshot_id: id });
        return true;
      });
      if (done) { status.textContent = `Restored ${snapLabel(s)}.`; if (onRestored) onRestored(); }
    });
    const files = pick(s, "file_count", "files", "entries");
    const size = pick(s, "total_bytes", "bytes", "size");
    const reason = pick(s, "trigger", "reason", "kind");
    return h("li", { dataset: { snapshot: id } },
      h("div", { class: "row" }, h("strong", {}, String(s.label || snapVersion(s))), reason ? h("span", { class: "badge" }, reason) : null,
        h("span", { class: "grow" }),
        h("a", { href: `#/sandboxes/from/${encodeURIComponent(id)}`, class: "small" }, "New sandbox from this"), restore),
      h("div", { class: "muted small" }, s.label ? `${snapVersion(s)} · ` : "", when(s.created_at), typeof files === "number" ? ` · ${num(files)} files` : "",
        size !== undefined ? ` · ${bytes(size)}` : "", pick(s, "uploaded_bytes") !== undefined ? ` · ${bytes(s.uploaded_bytes)} uploaded` : ""),
      err);
  }

  createForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    labelIn.removeAttribute("aria-invalid");
    const body = labelIn.value.trim() ? { label: labelIn.value.trim() } : {};
    const s = await busy([createBtn, labelIn], createErr, async () => {
      try {
        return await api("POST", `/sandbox/${encodeURIComponent(sandboxID)}/snapshots`, body);
      } catch (err) {
        if ((err.fields || []).some((f) => f.field === "label")) {
          labelIn.setAttribute("aria-invalid", "true");
          setTimeout(() => labelIn.focus());
        }
        throw err;
      }
    });
    if (s) { status.textContent = `Created ${snapLabel(s) || "snapshot"}.`; labelIn.value = ""; await refresh(); }
  });

  diffForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    diffOut.replaceChildren();
    const d = await busy(diffBtn, diffErr, () => api("GET", `/snapshots/${encodeURIComponent(from.value)}/diff/${encodeURIComponent(to.value)}`));
    if (!d) return;
    const groups = normaliseDiff(d);
    const total = groups.reduce((n, g) => n + g.paths.length, 0);
    diffOut.append(h("p", { class: "muted small" }, total ? `${total} change${total > 1 ? "s" : ""}` : "No differences."));
    // The side-by-side view's code loads with the first comparison.
    const { fileDiff } = await import("./snapdiff.js");
    const [a, b] = [from.value, to.value];
    const names = { [a]: from.selectedOptions[0]?.textContent || a, [b]: to.selectedOptions[0]?.textContent || b };
    for (const g of groups) {
      if (!g.paths.length) continue;
      // Each path opens to its content, side by side (loaded when opened).
      diffOut.append(h("h3", {}, `${g.kind} (${g.paths.length})`),
        h("ul", { class: "snap-diff-list" }, g.paths.map((p) => h("li", { class: g.kind }, fileDiff(p, g.kind, a, b, names)))));
    }
  });

  refresh();
  return { el, refresh };
}

function normaliseDiff(d) {
  const kinds = ["added", "removed", "modified"];
  const alias = { deleted: "removed", changed: "modified" };
  const out = Object.fromEntries(kinds.map((k) => [k, []]));
  const path = (x) => (typeof x === "string" ? x : x.path || JSON.stringify(x));
  if (Array.isArray(d) || Array.isArray(d.changes) || Array.isArray(d.entries)) {
    for (const c of Array.isArray(d) ? d : d.changes || d.entries) {
      const k = alias[c.change || c.kind || c.type || c.op] || c.change || c.kind || c.type || c.op || "modified";
      (out[k] || out.modified).push(path(c));
    }
  } else {
    for (const [k, v] of Object.entries(d)) {
      const kk = alias[k] || k;
      if (out[kk] && Array.isArray(v)) out[kk].push(...v.map(path));
    }
  }
  return kinds.map((k) => ({ kind: k, paths: out[k] }));
}
