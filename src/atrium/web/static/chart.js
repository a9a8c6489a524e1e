// A bar chart of usage by day, drawn as SVG (no library, no inline style: the page's CSP allows neither).

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

const first = (object, keys) => keys.map((key) => object?.[key]).find((value) => value !== undefined);

const UNITS = ["total_tokens", "tokens", "requests", "calls", "cost_usd", "cost"];
const DAY_MS = 86_400_000;

// The days of GET /api/v1/analytics/user?group_by=day: `{start, end, groups: [{key: "YYYY-MM-DD",
// total_tokens, requests, cost_usd, ...}]}`, every day of the period shown (a day without calls is 0). Read
// loosely (a list under `days` or `by_day`, dated by `date` or `day`) so that a change of shape shows as
// "unavailable" (null), not as a broken chart.
export function usageDays(body) {
  const list = first(body, ["groups", "days", "by_day", "daily"]);
  if (!Array.isArray(list)) return null;
  const unit = UNITS.find((key) => list.some((row) => key in row) || key in (body.totals ?? {}));
  if (unit === undefined) return null;
  const byDay = new Map(list.map((row) => [String(first(row, ["key", "date", "day"])).slice(0, 10), Number(row[unit] ?? 0)]));
  const start = Date.parse(body.start), end = Date.parse(body.end);
  const days = Number.isNaN(start) || Number.isNaN(end) || end < start || end - start > 366 * DAY_MS
    ? [...byDay.keys()].sort()
    : Array.from({ length: (end - start) / DAY_MS + 1 }, (_, i) => new Date(start + i * DAY_MS).toISOString().slice(0, 10));
  return days.map((day) => ({ day, value: byDay.get(day) ?? 0, unit }));
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
                              height: h, class: "bar", "data-day": d.day, "data-value": d.value });
    bar.append(svg("title", {}, `${d.day}: ${d.value} ${d.unit}`));
    chart.append(bar);
    if (days.length <= 14 || i % Math.ceil(days.length / 14) === 0) {
      chart.append(svg("text", { x: pad.left + i * step + step / 2, y: height - pad.bottom + 16,
                                 class: "axis", "text-anchor": "middle" }, d.day.slice(5)));
    }
  });
  return chart;
}
