// Sandbox list and create form.
import { api, followLogs, sandboxCosts } from "./api.js";
import { h, field, errorBox, busy, showError, pick, ago, money } from "./dom.js";

const ACTIVE = new Set(["creating", "running", "terminating"]);

// The list's scope: "" (personal), a team ID, or "shared".
const SCOPE_KEY = "techboss.scope";
function currentScope() { try { return localStorage.getItem(SCOPE_KEY) || ""; } catch { return ""; } }
function setScope(v) { try { if (v) localStorage.setItem(SCOPE_KEY, v); else localStorage.removeItem(SCOPE_KEY); } catch { /* private mode */ } }

/** sandboxImage returns a short image description for a sandbox record. */
export function sandboxImage(sb) {
  const spec = sb.spec || sb;
  const img = spec.image_base || "—";
  const n = (spec.dockerfile_commands || []).length;
  return n ? `${img} + ${n} command${n > 1 ? "s" : ""}` : img;
}

/** sandboxesView renders the list and the create form. */
export function sandboxesView({ main }, args = []) {
  let timer = null;
  let stopped = false;
  const listErr = errorBox("list");
  const tbody = h("tbody", {});
  // tabindex: on a phone the table scrolls sideways inside its own box,
  // which the keyboard must reach even when no row has a link.
  const table = h("table", { "aria-label": "Sandboxes", tabindex: "0" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Sandbox"), h("th", {}, "State"), h("th", {}, "Image"), h("th", {}, "Age"),
      h("th", {}, "Last activity"), h("th", { class: "num" }, "Cost so far"))),
    tbody);
  const showAll = h("input", { type: "checkbox" });
  showAll.addEventListener("change", () => refresh());
  // Whose sandboxes: yours, a team's (GET /sandbox?team=), or the ones
  // shared with you; the choice is kept in this browser and new
  // sandboxes are created in the chosen team.
  const scope = h("select", { name: "scope" }, h("option", { value: "" }, "Personal"), h("option", { value: "shared" }, "Shared with me"));
  scope.addEventListener("change", () => { setScope(scope.value); refresh(); });
  const teamName = h("input", { type: "text", name: "team_name", autocomplete: "off", placeholder: "e.g. core" });
  const teamErr = errorBox("team");
  teamErr.id = "team-err";
  teamName.setAttribute("aria-describedby", teamErr.id);
  const teamBtn = h("button", { type: "submit" }, "Create team");
  const teamForm = h("form", { class: "row team-form", "aria-label": "Create a team" },
    h("div", { class: "grow" }, field("New team", teamName)), teamBtn);
  teamForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    teamName.removeAttribute("aria-invalid");
    if (!teamName.value.trim()) { teamName.setAttribute("aria-invalid", "true"); showError(teamErr, new Error("Name the team first.")); teamName.focus(); return; }
    const t = await busy([teamBtn, teamName], teamErr, async () => {
      try {
        return await api("POST", "/teams", { name: teamName.value.trim() });
      } catch (err) {
        if ((err.fields || []).some((f) => f.field === "name")) { teamName.setAttribute("aria-invalid", "true"); setTimeout(() => teamName.focus()); }
        throw err;
      }
    });
    if (!t) return;
    teamName.value = "";
    setScope(t.id);
    await loadTeams();
    refresh();
  });
  async function loadTeams() {
    let teams = [];
    try {
      const d = await api("GET", "/teams");
      teams = (d && d.teams) || [];
    } catch { /* a server without teams: Personal only */ }
    scope.replaceChildren(h("option", { value: "" }, "Personal"),
      ...teams.map((t) => h("option", { value: t.id }, `Team ${t.name}${t.role && t.role !== "owner" ? ` (${t.role})` : ""}`)),
      h("option", { value: "shared" }, "Shared with me"));
    scope.value = currentScope();
    if (scope.value !== currentScope()) { setScope(""); scope.value = ""; }
  }
  const empty = h("p", { class: "muted empty-list", hidden: true }, "No sandboxes yet. Create one below.");
  const more = h("p", { class: "muted small", hidden: true }, "Showing the newest 200 sandboxes.");

  const form = createForm(async (created) => {
    await refresh();
    const id = pick(created, "sandbox_id", "id");
    if (id) location.hash = `#/sandbox/${encodeURIComponent(id)}`;
  }, () => refresh(), args[0] === "from" ? args[1] : "");

  main.append(
    h("h1", {}, "Sandboxes"),
    h("section", { class: "panel", "aria-labelledby": "sb-list-h" },
      h("div", { class: "row" }, h("h2", { id: "sb-list-h", class: "grow" }, "Your sandboxes"),
        field("Sandboxes of", scope), field("Show terminated", showAll)),
      listErr, table, empty, more,
      h("details", { class: "teams" }, h("summary", {}, "Teams"), teamForm, teamErr)),
    form);

  async function refresh() {
    if (stopped) return;
    clearTimeout(timer);
    try {
      const sc = currentScope();
      const q = sc === "shared" ? "&shared=true" : sc ? `&team=${encodeURIComponent(sc)}` : "";
      const [data, costs] = await Promise.all([api("GET", `/sandbox?limit=200${q}`), sandboxCosts()]);
      if (sc !== currentScope()) return; // the choice changed meanwhile
      const list = Array.isArray(data) ? data : (data && (data.sandboxes || data.items)) || [];
      showError(listErr, null);
      more.hidden = !(data && data.next_cursor);
      render(list, costs);
      // Poll while something is changing state.
      if (list.some((s) => s.status === "creating" || s.status === "terminating")) timer = setTimeout(refresh, 1500);
    } catch (err) {
      showError(listErr, err);
    }
  }

  function render(list, costs) {
    const rows = list
      .filter((s) => showAll.checked || ACTIVE.has(s.status) || s.status === "failed")
      .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    empty.hidden = rows.length > 0;
    tbody.replaceChildren(...rows.map((s) => {
      const id = pick(s, "sandbox_id", "id");
      const name = (s.spec && s.spec.name) || s.name || id;
      return h("tr", { dataset: { sandbox: id } },
        h("td", {}, h("a", { href: `#/sandbox/${encodeURIComponent(id)}` }, name),
          name !== id ? h("div", { class: "muted small" }, id) : null),
        h("td", {}, h("span", { class: `badge ${s.status}` }, s.status),
          s.reason ? h("div", { class: "muted small" }, s.reason) : null,
          s.status === "failed" || s.status === "lost" ? deleteButton(s, name) : null),
        h("td", {}, sandboxImage(s)),
        h("td", {}, ago(s.created_at)),
        h("td", {}, ago(pick(s, "last_active_at", "updated_at"))),
        h("td", { class: "num", dataset: { cost: "" } }, money(pick(s, "cost_usd") ?? costs.get(id) ?? 0)));
    }));
  }

  // Delete of a sandbox that failed or was lost: the row goes at once
  // (put back, with the error, if the server refuses).
  function deleteButton(s, name) {
    const id = pick(s, "sandbox_id", "id");
    const b = h("button", { type: "button", class: "danger small", "aria-label": `Delete ${name}` }, "Delete");
    b.addEventListener("click", async () => {
      const row = b.closest("tr");
      const next = row.nextElementSibling || row.previousElementSibling;
      row.hidden = true;
      empty.hidden = [...tbody.rows].some((r) => !r.hidden);
      (next ? next.querySelector("a") : showAll).focus();
      try {
        await api("DELETE", `/sandbox/${encodeURIComponent(id)}`);
      } catch (err) {
        row.hidden = false;
        empty.hidden = true;
        showError(listErr, err);
        return;
      }
      refresh();
    });
    return h("div", {}, b);
  }

  loadTeams();
  refresh();
  return { cleanup() { stopped = true; clearTimeout(timer); } };
}

function createForm(onCreated, onProgress, fromSnapshot) {
  const inp = {
    name: h("input", { type: "text", placeholder: "optional" }),
    image_base: h("input", { type: "text", value: "host", required: true }),
    dockerfile_commands: h("textarea", { rows: 3, placeholder: "RUN apt-get install -y git\nENV FOO=bar" }),
    volume_name: h("input", { type: "text" }),
    s3_bucket_name: h("input", { type: "text" }),
    s3_key_prefix: h("input", { type: "text" }),
    init_from_s3: h("input", { type: "checkbox" }),
    cpu: h("input", { type: "number", min: "0", step: "0.25" }),
    memory_mb: h("input", { type: "number", min: "0", step: "64" }),
    pids_limit: h("input", { type: "number", min: "0" }),
    disk_mb: h("input", { type: "number", min: "0" }),
    network: h("select", {}, h("option", { value: "none" }, "none (loopback only)"), h("option", { value: "full" }, "full")),
    idle_timeout_s: h("input", { type: "number", min: "0" }),
    max_lifetime_s: h("input", { type: "number", min: "0" }),
    from_snapshot: h("input", { type: "text", value: fromSnapshot || "", placeholder: "snap_…" }),
    // A repository cloned into /workspace through the server's credential
    // broker (the token stays in the server's secret store).
    repo_url: h("input", { type: "text", inputmode: "url", placeholder: "git@github.com:owner/repo or an https URL", autocomplete: "off", spellcheck: false }),
    repo_ref: h("input", { type: "text", placeholder: "default branch", autocomplete: "off", spellcheck: false }),
    repo_credential: h("input", { type: "text", placeholder: "github-token", autocomplete: "off", spellcheck: false }),
    repo_push_prefix: h("input", { type: "text", placeholder: "agent/", autocomplete: "off", spellcheck: false }),
    repo_api_url: h("input", { type: "text", inputmode: "url", autocomplete: "off", spellcheck: false }),
  };
  const errs = {};
  const labelled = (key, label, hint) => {
    errs[key] = errorBox(key);
    errs[key].id = `create-err-${key}`;
    inp[key].setAttribute("aria-describedby", errs[key].id);
    return h("div", {}, field(label, inp[key], hint), errs[key]);
  };
  // Problems of the repository that name no field (the host refused the
  // credential, the clone failed) are said under its fieldset.
  const repoErr = errorBox("repo");
  repoErr.id = "create-err-repo";
  const repoSet = h("fieldset", { class: "repo" }, h("legend", {}, "Repository"),
    h("div", { class: "grid" },
      labelled("repo_url", "Repository URL", "cloned into /workspace at create"),
      labelled("repo_ref", "Branch or tag"),
      labelled("repo_credential", "Credential (secret name)", "a stored secret holding the token; it never enters the sandbox"),
      labelled("repo_push_prefix", "Push branch prefix", "the only branches the sandbox may push (default agent/)"),
      labelled("repo_api_url", "Forge API URL", "self-hosted GitHub or GitLab only")),
    repoErr);
  const submit = h("button", { type: "submit", class: "primary" }, "Create sandbox");
  const formErr = errorBox("create");
  const progress = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  const buildLog = h("pre", { class: "build-log", hidden: true, role: "region", "aria-label": "Build log", tabindex: "0" });
  // One click: name and image in view, everything else under "Advanced"
  // (a <details>: Tab reaches its summary, Enter or Space opens it).
  const advanced = h("details", { class: "advanced", open: !!fromSnapshot },
    h("summary", {}, "Advanced"),
    h("div", { class: "grid" },
      labelled("volume_name", "Volume"),
      labelled("s3_bucket_name", "S3 bucket"),
      labelled("s3_key_prefix", "S3 key prefix"),
      labelled("init_from_s3", "Initialise workspace from S3"),
      labelled("from_snapshot", "Start from snapshot", "a snapshot ID: the workspace starts as that version")),
    h("div", {}, labelled("dockerfile_commands", "Dockerfile commands", "one per line: RUN, ENV, WORKDIR, USER")),
    repoSet,
    h("h3", {}, "Limits and timeouts"),
    h("div", { class: "grid" },
      labelled("cpu", "CPUs"), labelled("memory_mb", "Memory (MiB)"), labelled("pids_limit", "Max processes"),
      labelled("disk_mb", "Disk (MiB)"), labelled("network", "Network"),
      labelled("idle_timeout_s", "Idle timeout (s)"), labelled("max_lifetime_s", "Max lifetime (s)")));
  const form = h("form", { class: "panel", "aria-labelledby": "create-h", novalidate: true },
    h("h2", { id: "create-h" }, "New sandbox"),
    h("div", { class: "grid" },
      labelled("name", "Name"),
      labelled("image_base", "Image", "an OCI image reference, or “host”")),
    advanced,
    h("div", { class: "row" }, submit, progress), buildLog, formErr);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      image_base: inp.image_base.value.trim(),
      dockerfile_commands: inp.dockerfile_commands.value.split("\n").map((l) => l.trim()).filter(Boolean),
      volume_name: inp.volume_name.value.trim(),
      s3_bucket_name: inp.s3_bucket_name.value.trim(),
      s3_key_prefix: inp.s3_key_prefix.value.trim(),
      init_from_s3: inp.init_from_s3.checked,
    };
    if (inp.name.value.trim()) body.name = inp.name.value.trim();
    if (inp.from_snapshot.value.trim()) body.from_snapshot = inp.from_snapshot.value.trim();
    for (const k of ["cpu", "memory_mb", "pids_limit", "disk_mb", "idle_timeout_s", "max_lifetime_s"]) {
      if (inp[k].value !== "") body[k] = Number(inp[k].value);
    }
    if (inp.network.value !== "none") body.network = inp.network.value;
    if (inp.repo_url.value.trim()) {
      const repo = { url: inp.repo_url.value.trim() };
      for (const k of ["ref", "credential", "push_prefix", "api_url"]) {
        const v = inp[`repo_${k}`].value.trim();
        if (v) repo[k] = v;
      }
      body.repo = repo;
    }
    Object.values(errs).forEach((b) => showError(b, null));
    showError(repoErr, null);
    Object.values(inp).forEach((el) => el.removeAttribute("aria-invalid"));
    const started = Date.now();
    const logs = new AbortController();
    let following = null;
    buildLog.textContent = "";
    buildLog.hidden = true;
    // POST /sandbox answers once the sandbox runs; meanwhile find the new
    // sandbox in the list and follow its build log.
    const known = new Set();
    try {
      const cur = await api("GET", "/sandbox?state=creating");
      for (const sb of cur.sandboxes || cur || []) known.add(sb.sandbox_id);
    } catch { /* the create itself reports problems */ }
    const tick = setInterval(async () => {
      progress.textContent = `Building image and starting sandbox… ${Math.round((Date.now() - started) / 1000)} s`;
      onProgress();
      if (following) return;
      try {
        const cur = await api("GET", "/sandbox?state=creating", undefined, { signal: logs.signal });
        const fresh = (cur.sandboxes || []).find((sb) => !known.has(sb.sandbox_id));
        if (!fresh || following) return;
        following = fresh.sandbox_id;
        buildLog.hidden = false;
        followLogs(following, (text) => {
          buildLog.textContent = (buildLog.textContent + text).slice(-8000);
          buildLog.scrollTop = buildLog.scrollHeight;
        }, (st) => {
          // Once the create answered, its outcome is said once, by the form.
          if (!logs.signal.aborted) progress.textContent = `Sandbox ${st.status}${st.reason ? ": " + st.reason : ""}`;
        }, logs.signal).catch(() => {});
      } catch { /* polling is best effort */ }
    }, 1000);
    progress.textContent = "Building image and starting sandbox…";
    const controls = [submit, ...Object.values(inp)];
    let created;
    try {
      created = await busy(controls, formErr, async () => {
        let sb;
        try {
          const team = currentScope();
          sb = await api("POST", "/sandbox", body, team && team !== "shared" ? { headers: { "X-Team": team } } : {});
        } catch (err) {
          // Each problem is said once: a field's next to its input, the
          // rest (and a problem without a field) under the form.
          // "repo[0].ref" is the Branch or tag field.
          for (const f of err.fields || []) f.field = String(f.field).replace(/^repo(\[0\])?\./, "repo_").replace(/^repo$/, "repo_url");
          const placed = (err.fields || []).filter((f) => errs[f.field]);
          for (const f of placed) {
            errs[f.field].textContent = f.reason;
            inp[f.field].setAttribute("aria-invalid", "true");
            if (advanced.contains(inp[f.field])) advanced.open = true;
          }
          if (!placed.length && body.repo && err.status === 424) {
            // The git host refused the credential (or the clone failed).
            advanced.open = true;
            repoErr.textContent = err.message;
            inp.repo_credential.setAttribute("aria-invalid", "true");
            inp.repo_credential.setAttribute("aria-describedby", `${errs.repo_credential.id} ${repoErr.id}`);
            err.shown = true;
            setTimeout(() => inp.repo_credential.focus());
          }
          if (placed.length) {
            err.fields = err.fields.filter((f) => !errs[f.field]);
            if (!err.fields.length) err.shown = true;
            setTimeout(() => inp[placed[0].field].focus()); // once the form is enabled again
          }
          throw err;
        }
        // An asynchronous create answers "creating": follow it until it settles.
        let cur = sb;
        const id = pick(sb, "sandbox_id", "id");
        while (cur && cur.status === "creating") {
          await new Promise((r) => setTimeout(r, 700));
          cur = await api("GET", `/sandbox/${encodeURIComponent(id)}`);
          if (cur.build_log || cur.progress) progress.textContent = String(cur.progress || cur.build_log).slice(-200);
        }
        if (cur && cur.status === "failed") throw new Error(`sandbox failed: ${cur.reason || "unknown reason"}`);
        return sb;
      });
    } finally {
      clearInterval(tick);
      logs.abort();
    }
    progress.textContent = created ? "Created." : "";
    if (created) onCreated(created);
    else onProgress(); // a failed create leaves a failed sandbox: list it now
  });
  if (fromSnapshot) queueMicrotask(() => { form.scrollIntoView(); inp.name.focus(); });
  return form;
}
