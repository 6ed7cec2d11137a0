// Ports tab: the ports listening inside the sandbox (polled while the tab is
// open), each with "Open preview" (the server's proxy, in a new tab) and
// share links: a URL with a signed token and an expiry, revocable.
import { api } from "./api.js";
import { h, field, errorBox, busy, showError, when, poller } from "./dom.js";

const POLL_MS = 3000;
const EXPIRIES = [["900", "15 minutes"], ["3600", "1 hour"], ["86400", "1 day"], ["604800", "7 days"]];

/** portsPanel renders the Ports tab; returns {el, show(), hide(), setRunning(bool), cleanup()}. */
export function portsPanel(id) {
  const base = `/sandbox/${encodeURIComponent(id)}/ports`;
  const err = errorBox("ports");
  const body = h("tbody");
  const empty = h("p", { class: "muted small", hidden: true },
    "Nothing is listening yet. Start a server (for example python3 -m http.server 8000 in Processes) and it shows up here.");
  const refreshBtn = h("button", { type: "button" }, "Refresh");
  const list = h("section", { class: "panel", "aria-labelledby": "ports-title" },
    h("div", { class: "row" }, h("h2", { id: "ports-title", class: "grow" }, "Listening ports"), refreshBtn),
    h("table", { class: "ports" }, h("thead", {}, h("tr", {},
      h("th", { class: "num" }, "Port"), h("th", {}, "Address"), h("th", {}, "Process"),
      h("th", {}, h("span", { class: "sr-only" }, "Actions")))), body),
    empty, err);

  // Share links of one port at a time.
  const shareTitle = h("h2", { id: "share-title", class: "grow", tabindex: "-1" }, "Share links");
  const expiry = h("select", { name: "expires_in_s" }, EXPIRIES.map(([v, t]) => h("option", { value: v, selected: v === "3600" }, t)));
  const create = h("button", { type: "submit", class: "primary" }, "Create link");
  const shareErr = errorBox("share");
  const made = h("div", { class: "share-made", hidden: true });
  const linksBody = h("tbody");
  const noLinks = h("p", { class: "muted small", hidden: true }, "No links yet.");
  const closeShare = h("button", { type: "button" }, "Close");
  const shareForm = h("form", { class: "row", "aria-label": "Create a share link" }, field("Expires after", expiry), create);
  const share = h("section", { class: "panel", "aria-labelledby": "share-title", hidden: true },
    h("div", { class: "row" }, shareTitle, closeShare),
    h("p", { class: "muted small" }, "Anyone with a link can open this port's preview until it expires or is revoked."),
    shareForm, shareErr, made,
    h("table", { class: "links" }, h("thead", {}, h("tr", {}, h("th", {}, "Link"), h("th", {}, "Expires"),
      h("th", {}, h("span", { class: "sr-only" }, "Actions")))), linksBody), noLinks);

  const el = h("div", {}, list, share);

  let sharePort = null;
  const poll = poller(async () => {
    const data = await api("GET", base);
    return (data && data.ports) || [];
  }, render, (e) => showError(err, e), POLL_MS);
  const refresh = poll.refresh;

  function render(ports) {
    empty.hidden = ports.length > 0;
    body.replaceChildren(...ports.map((p) => {
      const url = p.preview_url || `${base}/${p.port}/`;
      const open = h("a", { href: url, target: "_blank", rel: "noopener", class: "button", "aria-label": `Open preview of port ${p.port}` }, "Open preview");
      const shareBtn = h("button", { type: "button", "aria-label": `Share link for port ${p.port}` }, "Share link");
      shareBtn.addEventListener("click", () => openShare(p.port));
      return h("tr", { dataset: { port: String(p.port) } },
        h("td", { class: "num" }, String(p.port)),
        h("td", {}, h("code", {}, p.address || "")),
        h("td", {}, p.process || h("span", { class: "muted" }, "—")),
        h("td", {}, h("div", { class: "row" }, open, shareBtn)));
    }));
  }

  async function openShare(port) {
    sharePort = port;
    share.hidden = false;
    shareTitle.textContent = `Share links for port ${port}`;
    made.hidden = true;
    made.replaceChildren();
    showError(shareErr, null);
    shareTitle.focus();
    await loadLinks();
  }

  async function loadLinks() {
    const port = sharePort;
    if (port == null) return;
    let data;
    try {
      data = await api("GET", `${base}/${port}/links`);
    } catch (e) {
      showError(shareErr, e);
      return;
    }
    if (port !== sharePort) return;
    const links = (data && data.links) || [];
    noLinks.hidden = links.length > 0;
    linksBody.replaceChildren(...links.map((l) => {
      const revoke = h("button", { type: "button", class: "danger", "aria-label": `Revoke link ${l.link_id}` }, "Revoke");
      revoke.addEventListener("click", () => busy(revoke, shareErr, async () => {
        await api("DELETE", `${base}/${port}/links/${encodeURIComponent(l.link_id)}`);
        made.hidden = true;
        await loadLinks();
        create.focus();
      }));
      return h("tr", { dataset: { link: l.link_id } },
        h("td", {}, l.url ? h("code", { class: "cmdline" }, absolute(l.url)) : h("code", {}, l.link_id)),
        h("td", {}, when(l.expires_at)),
        h("td", {}, revoke));
    }));
  }

  shareForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const port = sharePort;
    const link = await busy([create, expiry], shareErr, () => api("POST", `${base}/${port}/links`, { expires_in_s: Number(expiry.value) }));
    if (!link || port !== sharePort) return;
    const url = absolute(link.url);
    const out = h("input", { type: "text", readonly: true, value: url, class: "token-once", "aria-label": "Share link URL" });
    const copy = h("button", { type: "button" }, "Copy");
    const copied = h("span", { class: "muted small", role: "status" });
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(url);
        copied.textContent = "Copied.";
      } catch {
        out.select();
        copied.textContent = "Select and copy the link (the clipboard is not available here).";
      }
    });
    made.replaceChildren(h("div", { class: "row" }, h("div", { class: "grow" }, out), copy),
      h("p", { class: "muted small" }, "Expires ", when(link.expires_at), ". ", copied));
    made.hidden = false;
    out.focus();
    out.select();
    await loadLinks();
  });

  closeShare.addEventListener("click", () => {
    sharePort = null;
    share.hidden = true;
    refreshBtn.focus();
  });
  refreshBtn.addEventListener("click", () => refresh());

  return {
    el,
    show: poll.show,
    hide: poll.hide,
    setRunning: poll.setRunning,
    cleanup() { poll.hide(); },
  };
}

function absolute(url) {
  try { return new URL(url, location.origin).href; } catch { return url; }
}
