// Usage: tokens and cost by day and by model, with a bar chart of cost per day.
import { api } from "./api.js";
import { h, field, errorBox, busy, showError, money, num } from "./dom.js";

/** usageView renders the usage page. */
export function usageView({ main }) {
  const days = h("select", {}, ...[7, 30, 90].map((d) => h("option", { value: String(d) }, `last ${d} days`)));
  days.value = "30";
  const err = errorBox("usage");
  const chart = h("div", {});
  const byDay = h("tbody", {});
  const byModel = h("tbody", {});
  const totals = h("p", { class: "muted", role: "status" });
  const head = (first) => h("thead", {}, h("tr", {}, h("th", {}, first), h("th", { class: "num" }, "Requests"),
    h("th", { class: "num" }, "Input tokens"), h("th", { class: "num" }, "Output tokens"),
    h("th", { class: "num" }, "Cache read"), h("th", { class: "num" }, "Cost")));
  main.append(h("h1", {}, "Usage"),
    h("section", { class: "panel" }, h("div", { class: "row" }, field("Period", days)), err, totals, chart),
    h("section", { class: "panel", "aria-labelledby": "u-model-h" }, h("h2", { id: "u-model-h" }, "By model"),
      h("table", { tabindex: "0", "aria-labelledby": "u-model-h" }, head("Model"), byModel)),
    h("section", { class: "panel", "aria-labelledby": "u-day-h" }, h("h2", { id: "u-day-h" }, "By day"),
      h("table", { tabindex: "0", "aria-labelledby": "u-day-h" }, head("Day"), byDay)));

  async function load() {
    const from = new Date(Date.now() - Number(days.value) * 86400000).toISOString();
    const q = `from=${encodeURIComponent(from)}`;
    const res = await busy(days, err, () => Promise.all([
      api("GET", `/usage?group_by=day&${q}`), api("GET", `/usage?group_by=model&${q}`)]));
    if (!res) return;
    const [dayRows, modelRows] = res.map(rowsOf);
    const sum = dayRows.reduce((a, r) => ({ in: a.in + r.in, out: a.out + r.out, cost: a.cost + r.cost }), { in: 0, out: 0, cost: 0 });
    totals.textContent = `${num(sum.in)} input tokens · ${num(sum.out)} output tokens · ${money(sum.cost)}`;
    const row = (r) => h("tr", {}, h("td", {}, r.key), h("td", { class: "num" }, num(r.requests)), h("td", { class: "num" }, num(r.in)),
      h("td", { class: "num" }, num(r.out)), h("td", { class: "num" }, num(r.cacheRead)), h("td", { class: "num" }, money(r.cost)));
    byModel.replaceChildren(...modelRows.sort((a, b) => b.cost - a.cost).map(row));
    byDay.replaceChildren(...[...dayRows].sort((a, b) => b.key.localeCompare(a.key)).map(row));
    for (const tb of [byModel, byDay]) {
      if (!tb.children.length) tb.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No usage in this period.")));
    }
    // One bar per day of the period, zero where nothing was used.
    const byKey = new Map(dayRows.map((r) => [r.key.slice(0, 10), r]));
    const points = [];
    for (let d = new Date(from.slice(0, 10)); d <= new Date(); d = new Date(d.getTime() + 86400000)) {
      const k = d.toISOString().slice(0, 10);
      const r = byKey.get(k);
      points.push([k, r ? r.cost : 0, r ? r.in + r.out : 0]);
    }
    chart.replaceChildren(barChart(points));
  }
  days.addEventListener("change", load);
  load();
  return {};
}

function rowsOf(data) {
  const list = Array.isArray(data) ? data : (data && (data.groups || data.rows || data.items || data.usage)) || [];
  return list.map((r) => {
    const u = r.usage || r;
    return {
      key: String(r.key ?? r.day ?? r.model ?? "—"),
      requests: Number(r.requests || 0),
      in: Number(u.input_tokens || 0) + Number(u.cache_creation_input_tokens || 0),
      cacheRead: Number(u.cache_read_input_tokens || 0),
      out: Number(u.output_tokens || 0),
      cost: Number(r.cost_usd ?? r.cost ?? 0),
    };
  });
}

function barChart(points) {
  const W = 720, H = 200, pad = 34;
  const svg = h("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Cost per day" });
  const max = Math.max(0.0001, ...points.map((p) => p[1]));
  const bw = points.length ? Math.min(60, (W - 2 * pad) / points.length) : 0;
  svg.append(h("svg:line", { class: "axis", x1: pad, y1: H - pad, x2: W - pad, y2: H - pad }));
  svg.append(h("svg:text", { x: 2, y: 12 }, money(max)));
  points.forEach(([d, v, tokens], i) => {
    const bh = ((H - 2 * pad) * v) / max;
    const rect = h("svg:rect", { class: "bar", x: pad + i * bw + 2, y: H - pad - bh, width: Math.max(1, bw - 4), height: Math.max(0, bh) });
    rect.append(h("svg:title", {}, `${d}: ${money(v)}, ${num(tokens)} tokens`));
    svg.append(rect);
    if (points.length < 12 || i % Math.ceil(points.length / 12) === 0) {
      svg.append(h("svg:text", { x: pad + i * bw + bw / 2, y: H - pad + 14, "text-anchor": "middle" }, d.slice(5, 10)));
    }
  });
  if (!points.length) svg.append(h("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no usage yet"));
  return svg;
}
