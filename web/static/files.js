// File browser: lazy tree, text viewer, upload, download, delete.
import { api, readResponse } from "./api.js";
import { h, field, errorBox, busy, showError, bytes, confirmDialog, when } from "./dom.js";
import { highlight } from "./highlight.js";

const MAX_VIEW = 1 << 20;

/** fileURL returns the API URL of a workspace path. */
export function fileURL(sandboxID, path) {
  const clean = String(path).split("/").filter((s) => s && s !== ".").map(encodeURIComponent).join("/");
  return `/sandbox/${encodeURIComponent(sandboxID)}/files/${clean}`;
}

function entriesOf(data) {
  const list = Array.isArray(data) ? data : (data && (data.entries || data.files || data.items)) || [];
  return list.map((e) => ({
    name: e.name || String(e.path || "").split("/").pop(),
    path: e.path,
    size: e.size,
    dir: !!(e.is_dir || e.dir || e.type === "dir" || e.type === "directory" || (typeof e.mode === "string" && e.mode[0] === "d")),
    mtime: e.mod_time || e.modified_at || e.mtime,
  })).sort((a, b) => (a.dir === b.dir ? a.name.localeCompare(b.name) : a.dir ? -1 : 1));
}

function join(dir, name) { return (dir ? dir.replace(/\/+$/, "") + "/" : "") + name; }

/** filesPanel builds the file browser for a sandbox. */
export function filesPanel(sandboxID) {
  const treeErr = errorBox("tree");
  const root = h("ul", { class: "tree root", role: "tree", "aria-label": "Workspace files" });
  const refreshBtn = h("button", { type: "button" }, "Refresh");
  const viewer = h("div", { class: "viewer" }, h("p", { class: "muted" }, "Select a file to view it."));
  const upInput = h("input", { type: "file", multiple: true });
  const upDir = h("input", { type: "text", value: "", placeholder: "(workspace root)" });
  const upBtn = h("button", { type: "submit" }, "Upload");
  const upErr = errorBox("upload");
  const upStatus = h("span", { class: "muted small", role: "status" });
  const upForm = h("form", { class: "panel", "aria-label": "Upload files" },
    h("h2", { class: "h3" }, "Upload"), h("div", { class: "grid" }, field("Files", upInput), field("Into folder", upDir)),
    h("div", { class: "row" }, upBtn, upStatus), upErr);
  const el = h("div", {},
    h("div", { class: "files-layout" },
      h("section", { class: "panel", "aria-label": "File tree" },
        h("div", { class: "row" }, h("h2", { class: "h3 grow" }, "/workspace"), refreshBtn), treeErr, root),
      h("section", { class: "panel", "aria-label": "File viewer" }, viewer)),
    upForm);

  const open = new Set([""]);

  async function loadDir(dir, ul, errBox) {
    const data = await api("GET", `/sandbox/${encodeURIComponent(sandboxID)}/files?dir=${encodeURIComponent(dir || ".")}`);
    const entries = entriesOf(data);
    showError(errBox, null);
    ul.replaceChildren(...entries.map((e) => node(dir, e)));
    if (!entries.length) ul.append(h("li", { class: "muted small" }, "(empty)"));
  }

  function node(dir, e) {
    const path = e.path ? String(e.path).replace(/^\/?workspace\/?/, "") : join(dir, e.name);
    const li = h("li", { role: "treeitem", dataset: { path } });
    const rowErr = errorBox();
    const del = h("button", { type: "button", class: "link small", "aria-label": `Delete ${path}` }, "delete");
    del.addEventListener("click", async () => {
      if (!(await confirmDialog("Delete file?", `Delete ${path} from the workspace? This cannot be undone.`, "Delete"))) return;
      const ok = await busy(del, rowErr, async () => {
        await api("DELETE", fileURL(sandboxID, path));
        return true;
      });
      if (ok) li.remove();
    });
    if (e.dir) {
      const child = h("ul", { class: "tree", role: "group", hidden: true });
      const toggle = h("button", { type: "button", class: "link", "aria-expanded": "false" }, `📁 ${e.name}/`);
      toggle.addEventListener("click", async () => {
        const expand = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", String(expand));
        child.hidden = !expand;
        if (expand) { open.add(path); upDir.value = path; await busy(toggle, rowErr, () => loadDir(path, child, rowErr)); }
        else open.delete(path);
      });
      li.append(h("div", { class: "file-row" }, toggle, del), rowErr, child);
      if (open.has(path)) { toggle.setAttribute("aria-expanded", "true"); child.hidden = false; loadDir(path, child, rowErr).catch((x) => showError(rowErr, x)); }
    } else {
      const view = h("button", { type: "button", class: "link" }, e.name);
      view.addEventListener("click", () => showFile(path, e, view));
      const dl = h("a", { href: fileURL(sandboxID, path), download: e.name, class: "small", "aria-label": `Download ${path}` }, "download");
      li.append(h("div", { class: "file-row" }, view, h("span", { class: "muted small size" }, bytes(e.size)), dl, del), rowErr);
    }
    return li;
  }

  async function showFile(path, e, btn) {
    const err = errorBox("viewer");
    viewer.replaceChildren(h("h2", { class: "h3" }, path), err);
    await busy(btn, err, async () => {
      if (e.size > MAX_VIEW) {
        viewer.append(h("p", { class: "muted" }, `Too large to view here (${bytes(e.size)}). `,
          h("a", { href: fileURL(sandboxID, path), download: e.name }, "Download")));
        return;
      }
      const res = await fetch(fileURL(sandboxID, path), { credentials: "same-origin" });
      if (!res.ok) await readResponse(res);
      const buf = new Uint8Array(await res.arrayBuffer());
      if (buf.subarray(0, 8000).includes(0)) {
        viewer.append(h("p", { class: "muted" }, `Binary file (${bytes(buf.length)}). `,
          h("a", { href: fileURL(sandboxID, path), download: e.name }, "Download")));
        return;
      }
      const text = new TextDecoder().decode(buf);
      const lines = text.split("\n");
      viewer.append(h("div", { class: "muted small" }, `${bytes(buf.length)} · ${lines.length} lines`, e.mtime ? [" · ", when(e.mtime)] : null),
        h("pre", { class: "file-content", tabindex: "0", role: "region", "aria-label": `Contents of ${path}` }, h("code", {}, highlight(text, path))));
    });
  }

  async function refresh() {
    await busy(refreshBtn, treeErr, () => loadDir("", root, treeErr));
  }
  refreshBtn.addEventListener("click", refresh);

  upForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const files = [...upInput.files];
    if (!files.length) { showError(upErr, new Error("Choose at least one file.")); return; }
    const dir = upDir.value.trim().replace(/^\/?workspace\/?/, "").replace(/^\/+|\/+$/g, "");
    const ok = await busy([upBtn, upInput, upDir], upErr, async () => {
      for (const [i, f] of files.entries()) {
        upStatus.textContent = `Uploading ${f.name} (${i + 1}/${files.length})…`;
        await api("PUT", fileURL(sandboxID, join(dir, f.name)), f);
      }
      return true;
    });
    upStatus.textContent = ok ? `Uploaded ${files.length} file${files.length > 1 ? "s" : ""}.` : "";
    if (ok) { upInput.value = ""; if (dir) open.add(dir); refresh(); }
  });

  return { el, refresh };
}
