// A bar chart of usage by day, drawn as SVG (no library, no inline style: the page's CSP allows neither).

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

const first = (object, keys) => keys.map((key) => object?.[key]).find((value) => value !== undefined);

// The days of GET /api/v1/analytics/user, read loosely: a list under `days`, `by_day` or `daily` (or the
// body itself), each with a date and a count of tokens (else requests, else cost).
export function usageDays(body) {
  const list = Array.isArray(body) ? body : first(body, ["days", "by_day", "daily", "usage"]);
  if (!Array.isArray(list)) return null;
  return list.map((row) => ({
    day: String(first(row, ["date", "day", "period"]) ?? "?").slice(0, 10),
    value: Number(first(row, ["total_tokens", "tokens", "requests", "calls", "cost_usd", "cost"]) ?? 0),
    unit: ["total_tokens", "tokens", "requests", "calls", "cost_usd", "cost"].find((key) => key in row) ?? "",
  }));
}

export function barChart(days, { width = 640, height = 220 } = {}) {
  const pad = { left: 48, right: 8, top: 12, bottom: 40 };
  const max = Math.max(1, ...days.map((d) => d.value));
  const step = (width - pad.left - pad.right) / Math.max(1, days.length);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart",
                             "aria-label": `usage by day (${days[0]?.unit || "value"})` });
  const plot = height - pad.top - pad.bottom;
  chart.append(svg("text", { x: 4, y: pad.top + 4, class: "axis" }, String(max)),
               svg("text", { x: 4, y: height - pad.bottom, class: "axis" }, "0"));
  days.forEach((d, i) => {
    const h = (d.value / max) * plot;
    const bar = svg("rect", { x: pad.left + i * step + 2, y: pad.top + plot - h, width: Math.max(1, step - 4),
                              height: h, class: "bar" });
    bar.append(svg("title", {}, `${d.day}: ${d.value} ${d.unit}`));
    chart.append(bar);
    if (days.length <= 14 || i % Math.ceil(days.length / 14) === 0) {
      chart.append(svg("text", { x: pad.left + i * step + step / 2, y: height - pad.bottom + 16,
                                 class: "axis", "text-anchor": "middle" }, d.day.slice(5)));
    }
  });
  return chart;
}
