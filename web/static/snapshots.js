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

const MAX_COMPARE = 256 * 1024; // bytes per side shown
const MAX_CELLS = 4e6; // lines × lines the line diff may take

/** fileDiff is one changed path: a <details> that loads both versions when opened. */
function fileDiff(path, kind, a, b, names) {
  const body = h("div", { class: "muted small" }, "Loading…");
  const d = h("details", { class: "snap-file", dataset: { path } }, h("summary", {}, path), body);
  let loaded = false;
  d.addEventListener("toggle", async () => {
    if (!d.open || loaded) return;
    loaded = true;
    try {
      const [left, right] = await Promise.all([
        kind === "added" ? null : fileText(a, path),
        kind === "removed" ? null : fileText(b, path)]);
      body.replaceChildren(compareView(path, left, right, names[a], names[b]));
      body.className = "";
    } catch (err) {
      loaded = false;
      body.textContent = err.message || String(err);
      body.className = "error";
    }
  });
  return d;
}

/** fileText reads a file of a snapshot: {text} or {binary, size} or {tooLarge, size}. */
async function fileText(snap, path) {
  const res = await fetch(`/snapshots/${encodeURIComponent(snap)}/file?path=${encodeURIComponent(path)}`, { credentials: "same-origin" });
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try { msg = (await res.json()).error.message || msg; } catch { /* not JSON */ }
    throw new Error(`Could not read ${path}: ${msg}`);
  }
  const size = Number(res.headers.get("Content-Length") || 0);
  if (size > MAX_COMPARE) { res.body?.cancel(); return { tooLarge: true, size }; }
  const buf = new Uint8Array(await res.arrayBuffer());
  if (buf.subarray(0, 8192).includes(0)) return { binary: true, size: buf.length };
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(buf) };
  } catch {
    return { binary: true, size: buf.length };
  }
}

/** compareView shows two versions of a text file side by side. */
function compareView(path, left, right, leftName, rightName) {
  const notText = (x) => x && (x.binary || x.tooLarge);
  if (notText(left) || notText(right)) {
    const say = (x) => (!x ? "absent" : x.binary ? `binary, ${bytes(x.size)}` : x.tooLarge ? `${bytes(x.size)}, too large to compare here` : `${bytes(new TextEncoder().encode(x.text).length)} of text`);
    return h("p", { class: "muted small" }, `${leftName}: ${say(left)} → ${rightName}: ${say(right)}`);
  }
  const la = left ? splitLines(left.text) : [];
  const lb = right ? splitLines(right.text) : [];
  const rows = lineDiff(la, lb);
  const cell = (n, text, cls) => [h("td", { class: `ln ${cls}` }, n ? String(n) : ""), h("td", { class: `code ${cls}` }, text ?? "")];
  const trs = [];
  // Long unchanged stretches are folded, three lines of context kept.
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (r.op === "same") {
      let j = i;
      while (j < rows.length && rows[j].op === "same") j++;
      const run = j - i;
      const keepHead = i === 0 ? 0 : 3;
      const keepTail = j === rows.length ? 0 : 3;
      if (run > keepHead + keepTail + 2) {
        for (let k = i; k < i + keepHead; k++) trs.push(sameRow(rows[k]));
        trs.push(h("tr", { class: "fold" }, h("td", { colspan: "4", class: "muted small" }, `${run - keepHead - keepTail} unchanged lines`)));
        for (let k = j - keepTail; k < j; k++) trs.push(sameRow(rows[k]));
        i = j - 1;
        continue;
      }
      trs.push(sameRow(r));
    } else {
      trs.push(h("tr", { class: r.op }, ...cell(r.a, r.left, r.left === undefined ? "none" : r.op === "change" || r.op === "del" ? "del" : ""),
        ...cell(r.b, r.right, r.right === undefined ? "none" : r.op === "change" || r.op === "add" ? "add" : "")));
    }
  }
  function sameRow(r) { return h("tr", {}, ...cell(r.a, r.left, ""), ...cell(r.b, r.right, "")); }
  return h("div", { class: "sbs-wrap", tabindex: "0", role: "region", "aria-label": `${path}: ${leftName} and ${rightName} side by side` },
    h("table", { class: "sbs" },
      h("caption", { class: "sr-only" }, `${path}, ${leftName} on the left, ${rightName} on the right`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Line")), h("th", { scope: "col" }, leftName),
        h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Line")), h("th", { scope: "col" }, rightName))),
      h("tbody", {}, trs)));
}

function splitLines(t) {
  if (t === "") return [];
  const ls = t.split("\n");
  if (ls[ls.length - 1] === "") ls.pop();
  return ls;
}

/**
 * lineDiff aligns two line lists (longest common subsequence): rows of
 * {op: same|del|add|change, a, b (line numbers), left, right}. A deleted
 * line next to an added one is shown as one changed row.
 */
function lineDiff(la, lb) {
  const n = la.length, m = lb.length;
  let ops = [];
  if (n * m > MAX_CELLS) {
    // Too big to align: every line of each side, unaligned.
    ops = [...la.map((_, i) => ["del", i, -1]), ...lb.map((_, j) => ["add", -1, j])];
  } else {
    const w = m + 1;
    const L = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        L[i * w + j] = la[i] === lb[j] ? L[(i + 1) * w + j + 1] + 1 : Math.max(L[(i + 1) * w + j], L[i * w + j + 1]);
      }
    }
    let i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && la[i] === lb[j]) { ops.push(["same", i++, j++]); }
      else if (j < m && (i === n || L[i * w + j + 1] >= L[(i + 1) * w + j])) { ops.push(["add", -1, j++]); }
      else { ops.push(["del", i++, -1]); }
    }
  }
  // Pair each run of deletions with the additions right after it.
  const rows = [];
  for (let k = 0; k < ops.length;) {
    if (ops[k][0] === "same") { const [, i, j] = ops[k++]; rows.push({ op: "same", a: i + 1, b: j + 1, left: la[i], right: lb[j] }); continue; }
    const dels = [], adds = [];
    while (k < ops.length && ops[k][0] !== "same") { (ops[k][0] === "del" ? dels : adds).push(ops[k]); k++; }
    for (let x = 0; x < Math.max(dels.length, adds.length); x++) {
      const d = dels[x], a = adds[x];
      rows.push({ op: d && a ? "change" : d ? "del" : "add", a: d ? d[1] + 1 : 0, b: a ? a[2] + 1 : 0, left: d ? la[d[1]] : undefined, right: a ? lb[a[2]] : undefined });
    }
  }
  return rows;
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
