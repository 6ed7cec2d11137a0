// The Changes tab: a repository's git status with per-file diffs, and
// Commit, Push and Open pull request (the git API; git runs inside the
// sandbox, pushes go through the server's credential broker).
import { api } from "./api.js";
import { h, field, errorBox, busy, showError } from "./dom.js";

/** changesPanel builds the Changes tab of one sandbox. */
export function changesPanel(sandboxID) {
  const base = `/sandbox/${encodeURIComponent(sandboxID)}/git`;
  const none = h("p", { class: "muted", hidden: true },
    "This sandbox has no repository. Create one with a repository (New sandbox → Advanced → Repository) to commit, push and open pull requests here.");
  const repoSel = h("select", { name: "repo" });
  const repoField = field("Repository", repoSel);
  repoField.hidden = true;
  const refreshBtn = h("button", { type: "button" }, "Refresh");
  const summary = h("p", { class: "small", role: "status" });
  const statusErr = errorBox("git-status");
  const files = h("div", { class: "changed-files" });

  // One small form per action; each shows its own error and result.
  const action = (name, label, fields, onSubmit) => {
    const btn = h("button", { type: "submit" }, label);
    const err = errorBox(`git-${name}`);
    err.id = `git-err-${name}`;
    const result = h("p", { class: "small", role: "status" });
    const form = h("form", { class: `git-${name}`, "aria-label": label, novalidate: true },
      h("div", { class: "grid" }, ...fields.map(([l, input, hint]) => field(l, input, hint))),
      h("div", { class: "row" }, btn, result), err);
    for (const [, input] of fields) input.setAttribute("aria-describedby", err.id);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      result.replaceChildren();
      for (const [, input] of fields) input.removeAttribute("aria-invalid");
      await busy([btn, ...fields.map((f) => f[1])], err, async () => {
        try {
          await onSubmit(result);
        } catch (x) {
          // The field the server names is marked and focused.
          const byName = Object.fromEntries(fields.map(([, input]) => [input.name, input]));
          const at = (x.fields || []).map((f) => byName[f.field]).find(Boolean);
          if (at) {
            at.setAttribute("aria-invalid", "true");
            setTimeout(() => at.focus());
          }
          throw x;
        }
      });
    });
    return form;
  };
  const repoArg = () => (repos.length > 1 && repoSel.value ? { repo: repoSel.value } : {});

  const message = h("input", { type: "text", name: "message", autocomplete: "off" });
  const commitBranch = h("input", { type: "text", name: "branch", placeholder: "agent/my-change", autocomplete: "off", spellcheck: false });
  const commitForm = action("commit", "Commit", [["Commit message", message], ["On branch (optional)", commitBranch, "created if it does not exist"]], async (result) => {
    if (!message.value.trim()) {
      message.setAttribute("aria-invalid", "true");
      throw new Error("Write a commit message first.");
    }
    const body = { message: message.value.trim(), ...repoArg() };
    if (commitBranch.value.trim()) body.branch = commitBranch.value.trim();
    const c = await api("POST", `${base}/commit`, body);
    result.textContent = `Committed ${String(c.sha).slice(0, 10)} on ${c.branch}.`;
    message.value = "";
    await load();
  });

  const pushBranch = h("input", { type: "text", name: "branch", placeholder: "the current branch", autocomplete: "off", spellcheck: false });
  const pushForm = action("push", "Push", [["Remote branch (optional)", pushBranch]], async (result) => {
    const body = { ...repoArg() };
    if (pushBranch.value.trim()) body.branch = pushBranch.value.trim();
    const p = await api("POST", `${base}/push`, body);
    result.textContent = `Pushed ${String(p.sha).slice(0, 10)} to ${p.branch}.`;
    await load();
  });

  const title = h("input", { type: "text", name: "title", autocomplete: "off" });
  const prBody = h("textarea", { name: "body", rows: 3 });
  const prBase = h("input", { type: "text", name: "base", placeholder: "the default branch", autocomplete: "off", spellcheck: false });
  const prForm = action("pull-request", "Open pull request", [["Title", title], ["Description", prBody], ["Base branch (optional)", prBase]], async (result) => {
    if (!title.value.trim()) {
      title.setAttribute("aria-invalid", "true");
      throw new Error("Write a title first.");
    }
    const body = { title: title.value.trim(), ...repoArg() };
    if (prBody.value.trim()) body.body = prBody.value.trim();
    if (prBase.value.trim()) body.base = prBase.value.trim();
    const pr = await api("POST", `${base}/pull-request`, body);
    result.replaceChildren("Opened ", h("a", { href: pr.url, target: "_blank", rel: "noopener noreferrer", class: "pr-link" },
      pr.number ? `pull request #${pr.number}` : "the pull request"), ".");
  });

  const actions = h("div", { class: "git-actions" },
    h("section", { "aria-labelledby": "git-commit-h" }, h("h3", { id: "git-commit-h" }, "Commit"), commitForm),
    h("section", { "aria-labelledby": "git-push-h" }, h("h3", { id: "git-push-h" }, "Push"), pushForm),
    h("section", { "aria-labelledby": "git-pr-h" }, h("h3", { id: "git-pr-h" }, "Pull request"), prForm));
  const body = h("div", {}, h("div", { class: "row" }, repoField, h("span", { class: "grow" }), refreshBtn),
    summary, statusErr, files, actions);
  const el = h("section", { class: "panel", "aria-labelledby": "changes-h" },
    h("h2", { id: "changes-h" }, "Changes"), none, body);

  let repos = [];
  let running = false;
  let loading = null;
  function setSandbox(sb) {
    const list = (sb && sb.spec && sb.spec.repo) || [];
    const next = Array.isArray(list) ? list : [list];
    running = sb && sb.status === "running";
    const key = JSON.stringify(next.map(dirOf));
    if (key !== JSON.stringify(repos.map(dirOf))) {
      repos = next;
      repoSel.replaceChildren(...repos.map((r) => h("option", { value: dirOf(r) }, `${dirOf(r)} (${r.url})`)));
      repoField.hidden = repos.length < 2;
    }
    none.hidden = repos.length > 0;
    body.hidden = repos.length === 0;
  }

  async function load() {
    if (!repos.length || !running) return;
    const q = repoSel.value ? `?repo=${encodeURIComponent(repoSel.value)}` : "";
    try {
      render(await api("GET", `${base}/status${q}`));
      showError(statusErr, null);
    } catch (e) {
      showError(statusErr, e);
    }
  }
  function refresh() {
    if (!loading) loading = load().finally(() => { loading = null; });
    return loading;
  }

  function render(st) {
    const parts = [st.branch ? `On ${st.branch}` : `Detached at ${String(st.head || "").slice(0, 10)}`];
    if (st.upstream) parts.push(`tracking ${st.upstream}: ${st.ahead} ahead, ${st.behind} behind`);
    parts.push(st.clean ? "nothing to commit" : `${st.files.length} changed file${st.files.length === 1 ? "" : "s"}`);
    summary.textContent = parts.join(" · ") + ".";
    // A few files open with their diffs; many start closed.
    const open = (st.files || []).length <= 5;
    files.replaceChildren(...(st.files || []).map((f) => h("details", { class: "tool changed-file", open, dataset: { path: f.path, status: f.status } },
      h("summary", {}, h("span", { class: `git-status ${f.status}` }, f.status), " ",
        f.old_path ? `${f.old_path} → ${f.path}` : f.path),
      f.diff ? diffView(f.diff, f.path) : h("p", { class: "muted small" }, "No text diff (binary or empty)."),
      f.truncated ? h("p", { class: "muted small" }, "The diff is cut short here.") : null)));
  }

  refreshBtn.addEventListener("click", () => refresh());
  repoSel.addEventListener("change", () => refresh());
  return { el, setSandbox, refresh, get hasRepos() { return repos.length > 0 && running; } };
}

function dirOf(r) {
  if (r.dir) return r.dir;
  const m = String(r.url || "").replace(/\/+$/, "").replace(/\.git$/, "").match(/([^/:]+)$/);
  return m ? m[1] : "";
}

/** diffView renders a unified diff with added and removed lines marked. */
function diffView(text, path) {
  const lines = text.replace(/\n$/, "").split("\n");
  return h("pre", { class: "diff-text", tabindex: "0", role: "region", "aria-label": `Diff of ${path}` }, lines.map((l) => {
    const cls = l.startsWith("+++") || l.startsWith("---") ? "meta" : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : l.startsWith("@@") ? "hunk" : "";
    return h("span", { class: cls || undefined }, l + "\n");
  }));
}
