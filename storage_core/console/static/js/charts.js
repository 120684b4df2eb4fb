// Hand-made SVG: quota gauges and the stacked monthly chart (no library, no inline style, no network).

import {bytes, exactBytes, h, s, table} from "./dom.js";

export const SERIES = [
  {field: "charged_consumed_size", name: "Charged", css: "s-charged"},
  {field: "monthly_free_consumed_size", name: "Monthly free", css: "s-monthly"},
  {field: "free_consumed_size", name: "One-time free", css: "s-free"},
];

// what a read-quota answer says of each kind of quota this month
export function quotaKinds(q) {
  const charged = Math.max(0, q.charged_quota_size - q.charged_consumed_size);
  const monthly = Math.max(0, q.monthly_free_quota_size - q.monthly_free_consumed_size);
  return [
    {kind: "charged", name: "Charged", consumed: q.charged_consumed_size, left: charged, css: "s-charged"},
    {kind: "monthly-free", name: "Monthly free", consumed: q.monthly_free_consumed_size, left: monthly,
     css: "s-monthly"},
    {kind: "one-time-free", name: "One-time free", consumed: q.free_consumed_size, left: q.sp_free_quota_size,
     css: "s-free"},
  ];
}

function point(fraction) {
  const angle = Math.PI * (1 - fraction);
  return [50 + 40 * Math.cos(angle), 50 - 40 * Math.sin(angle)];
}

export function gauge({kind, name, consumed, left, css}) {
  const total = consumed + left;
  const fraction = total > 0 ? Math.min(1, consumed / total) : 0;
  const summary = total > 0
    ? `${name} quota: ${bytes(consumed)} consumed, ${bytes(left)} left of ${bytes(total)}`
    : `${name} quota: none this month`;
  const svg = s("svg", {viewBox: "0 0 100 58", class: "gauge-arc", role: "img", "aria-label": summary},
    s("title", {}, summary),
    s("path", {d: "M 10 50 A 40 40 0 0 1 90 50", class: "track", fill: "none", "stroke-width": "10"}));
  if (fraction > 0) {
    const [x, y] = point(fraction);
    svg.appendChild(s("path", {d: `M 10 50 A 40 40 0 0 1 ${x.toFixed(3)} ${y.toFixed(3)}`, class: "value " + css,
                               fill: "none", "stroke-width": "10"}));
  }
  svg.appendChild(s("text", {x: "50", y: "48", "text-anchor": "middle", class: "gauge-percent"},
    total > 0 ? Math.round(fraction * 100) + "%" : "—"));
  return h("figure", {class: "gauge", dataset: {gauge: kind, consumed: String(consumed), left: String(left)}},
    svg,
    h("figcaption", {},
      h("span", {class: "gauge-name"}, name),
      h("span", {class: "gauge-consumed", title: exactBytes(consumed)}, "consumed ", bytes(consumed)),
      h("span", {class: "gauge-left", title: exactBytes(left)}, "left ", bytes(left))));
}

export function gauges(quota) {
  return h("div", {class: "gauges", dataset: {month: quota.year_month}}, quotaKinds(quota).map(gauge));
}

// a round top for the axis in binary units: 300 KiB -> 500 KiB, 1.3 GiB -> 2 GiB
function niceCeiling(value) {
  if (value <= 0) return 1024;
  let unit = 1;
  while (value / unit >= 1024) unit *= 1024;
  const scaled = value / unit;
  const decade = 10 ** Math.floor(Math.log10(scaled));
  const step = [1, 2, 2.5, 5, 10].find((candidate) => candidate * decade >= scaled);
  return step * decade * unit;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function monthLabel(yearMonth) {
  const [year, month] = yearMonth.split("-");
  return MONTHS[Number(month) - 1] + " ’" + year.slice(2);
}

// history: the API's answer (newest first); drawn oldest to newest, left to right
export function stackedChart(history) {
  const months = [...history].reverse();
  const width = 720, height = 280, left = 78, right = 12, top = 16, bottom = 40;
  const plotWidth = width - left - right, plotHeight = height - top - bottom;
  const max = niceCeiling(Math.max(0, ...months.map((m) => m.consumed_size)));
  const y = (value) => top + plotHeight - (value / max) * plotHeight;
  const slot = plotWidth / Math.max(1, months.length);
  const barWidth = Math.max(4, slot * 0.62);
  const label = `Read quota consumed per month, ${months.length} months from ${months[0]?.year_month} to ` +
    `${months[months.length - 1]?.year_month}`;
  const svg = s("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label,
                        id: "history-chart"}, s("title", {}, label));
  for (let i = 0; i <= 4; i += 1) {
    const value = (max * i) / 4;
    svg.appendChild(s("line", {x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid"}));
    svg.appendChild(s("text", {x: left - 6, y: y(value) + 4, "text-anchor": "end", class: "axis"}, bytes(value)));
  }
  months.forEach((month, index) => {
    const x = left + index * slot + (slot - barWidth) / 2;
    const group = s("g", {class: "bar", dataset: {month: month.year_month, consumed: String(month.consumed_size)}});
    let base = 0;
    for (const series of SERIES) {
      const value = month[series.field];
      if (value > 0) {
        const rect = s("rect", {x: x.toFixed(2), width: barWidth.toFixed(2), y: y(base + value).toFixed(2),
                                height: Math.max(0.5, y(base) - y(base + value)).toFixed(2), class: series.css,
                                dataset: {series: series.field, bytes: String(value)}},
          s("title", {}, `${month.year_month} ${series.name}: ${bytes(value)} (${exactBytes(value)})`));
        group.appendChild(rect);
      }
      base += value;
    }
    group.appendChild(s("text", {x: (x + barWidth / 2).toFixed(2), y: height - bottom + 16, "text-anchor": "middle",
                                 class: "axis"}, monthLabel(month.year_month)));
    svg.appendChild(group);
  });
  const legend = h("ul", {class: "legend"}, SERIES.map((series) =>
    h("li", {}, s("svg", {viewBox: "0 0 10 10", class: "swatch", "aria-hidden": "true"},
      s("rect", {width: "10", height: "10", class: series.css})), series.name)));
  const rows = history.map((month) => h("tr", {},
    h("th", {scope: "row"}, month.year_month),
    SERIES.map((series) => h("td", {class: "num", title: exactBytes(month[series.field])}, bytes(month[series.field]))),
    h("td", {class: "num", title: exactBytes(month.consumed_size)}, bytes(month.consumed_size))));
  return h("div", {class: "chart-block"}, svg, legend,
    h("details", {}, h("summary", {}, "Figures as a table"),
      table("Monthly consumption", ["Month", ...SERIES.map((series) => series.name), "Total"], rows,
            {id: "history-table"})));
}

// a used / capacity bar
export function usageBar(used, capacity) {
  if (!capacity) {
    return h("span", {class: "usage", dataset: {used: String(used)}}, bytes(used), " used (no capacity set)");
  }
  const fraction = Math.min(1, used / capacity);
  const level = fraction >= 0.9 ? "full" : fraction >= 0.75 ? "filling" : "ok";
  const text = `${bytes(used)} of ${bytes(capacity)} (${Math.round(fraction * 100)}%)`;
  return h("span", {class: "usage", dataset: {used: String(used), capacity: String(capacity)}},
    s("svg", {viewBox: "0 0 100 8", class: "usage-bar", role: "img", "aria-label": text, preserveAspectRatio: "none"},
      s("rect", {width: "100", height: "8", class: "track"}),
      s("rect", {width: (fraction * 100).toFixed(2), height: "8", class: "fill " + level})),
    h("span", {}, text));
}
