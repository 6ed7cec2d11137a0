// A changed path of a snapshot comparison: both versions of the file,
// side by side (loaded by snapshots.js with the first comparison).
import { h, bytes } from "./dom.js";

const MAX_COMPARE = 256 * 1024; // bytes per side shown
const MAX_CELLS = 4e6; // lines × lines the line diff may take

/** fileDiff is one changed path: a <details> that loads both versions when opened. */
export function fileDiff(path, kind, a, b, names) {
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

