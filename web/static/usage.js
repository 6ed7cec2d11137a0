// Usage: tokens and cost by day and model, with a bar chart.
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
  const totals = h("p", { class: "muted" });
  main.append(h("h1", {}, "Usage"),
    h("section", { class: "panel" }, h("div", { class: "row" }, field("Period", days)), err, totals, chart),
    h("section", { class: "panel", "aria-labelledby": "u-model-h" }, h("h2", { id: "u-model-h" }, "By model"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", { class: "num" }, "Input tokens"),
        h("th", { class: "num" }, "Output tokens"), h("th", { class: "num" }, "Cost"))), byModel)),
    h("section", { class: "panel", "aria-labelledby": "u-day-h" }, h("h2", { id: "u-day-h" }, "By day"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Day"), h("th", {}, "Model"), h("th", { class: "num" }, "Input tokens"),
        h("th", { class: "num" }, "Output tokens"), h("th", { class: "num" }, "Cost"))), byDay)));

  async function load() {
    const since = new Date(Date.now() - Number(days.value) * 86400000).toISOString().slice(0, 10);
    const data = await busy(days, err, () => api("GET", `/usage?since=${since}`));
    if (!data) return;
    const rows = normalise(data);
    const model = new Map();
    const day = new Map();
    let tIn = 0, tOut = 0, tCost = 0;
    for (const r of rows) {
      const m = model.get(r.model) || { in: 0, out: 0, cost: 0 };
      m.in += r.in; m.out += r.out; m.cost += r.cost;
      model.set(r.model, m);
      day.set(r.day, (day.get(r.day) || 0) + r.cost);
      tIn += r.in; tOut += r.out; tCost += r.cost;
    }
    totals.textContent = `${num(tIn)} input tokens · ${num(tOut)} output tokens · ${money(tCost)}`;
    byModel.replaceChildren(...[...model].map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { class: "num" }, num(v.in)),
      h("td", { class: "num" }, num(v.out)), h("td", { class: "num" }, money(v.cost)))));
    byDay.replaceChildren(...rows.sort((a, b) => b.day.localeCompare(a.day)).map((r) => h("tr", {}, h("td", {}, r.day), h("td", {}, r.model),
      h("td", { class: "num" }, num(r.in)), h("td", { class: "num" }, num(r.out)), h("td", { class: "num" }, money(r.cost)))));
    if (!rows.length) byDay.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No usage in this period.")));
    chart.replaceChildren(barChart([...day].sort((a, b) => a[0].localeCompare(b[0]))));
  }
  days.addEventListener("change", load);
  load();
  return {};
}

function normalise(data) {
  const list = Array.isArray(data) ? data
    : data.by_day_model || data.rows || data.items || data.by_day || data.days || [];
  return list.map((r) => ({
    day: String(r.day || r.date || r.bucket || "").slice(0, 10),
    model: r.model || "—",
    in: Number(r.input_tokens || 0) + Number(r.cache_read_input_tokens || 0) + Number(r.cache_creation_input_tokens || 0),
    out: Number(r.output_tokens || 0),
    cost: Number(r.cost_usd ?? r.cost ?? 0),
  }));
}

function barChart(points) {
  const W = 720, H = 200, pad = 30;
  const svg = h("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Cost per day" });
  const max = Math.max(0.0001, ...points.map((p) => p[1]));
  const bw = points.length ? (W - 2 * pad) / points.length : 0;
  svg.append(h("svg:line", { class: "axis", x1: pad, y1: H - pad, x2: W - pad, y2: H - pad }));
  svg.append(h("svg:text", { x: 2, y: 12 }, money(max)));
  points.forEach(([d, v], i) => {
    const bh = ((H - 2 * pad) * v) / max;
    const rect = h("svg:rect", { class: "bar", x: pad + i * bw + 2, y: H - pad - bh, width: Math.max(1, bw - 4), height: bh });
    rect.append(h("svg:title", {}, `${d}: ${money(v)}`));
    svg.append(rect);
    if (points.length <= 31 && (points.length < 10 || i % Math.ceil(points.length / 10) === 0)) {
      svg.append(h("svg:text", { x: pad + i * bw + bw / 2, y: H - pad + 14, "text-anchor": "middle" }, d.slice(5)));
    }
  });
  if (!points.length) svg.append(h("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data"));
  return svg;
}
