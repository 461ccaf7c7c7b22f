// SVG charts and the world map, drawn here: no chart library, no map tiles.
import { el, fmtTime, svg } from "./dom.js";
import { bySection, percent, totals } from "./posture.js";

// Country shapes (Natural Earth data, served by this server), loaded once when a map is first drawn.
const COUNTRIES_URL = "/assets/vendor/world-atlas/countries-110m.json";
let world = null;

export function barChart(points, { label, value, failed, height = 140 }) {
  const width = 900;
  const max = Math.max(1, ...points.map(value));
  const barWidth = Math.max(1, width / Math.max(points.length, 1) - 1);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height + 18}`, width: "100%" });
  points.forEach((point, i) => {
    const h = (value(point) / max) * height;
    const x = i * (barWidth + 1);
    chart.append(svg("rect", { x, y: height - h, width: barWidth, height: h }, svg("title", {}, `${label(point)}: ${value(point)}`)));
    if (failed) {
      const f = (failed(point) / max) * height;
      if (f > 0) chart.append(svg("rect", { class: "failed", x, y: height - f, width: barWidth, height: f }));
    }
  });
  if (points.length) {
    chart.append(svg("text", { x: 0, y: height + 14 }, label(points[0])));
    chart.append(svg("text", { x: width, y: height + 14, "text-anchor": "end" }, label(points[points.length - 1])));
  }
  return chart;
}

// TopoJSON (world-atlas, Natural Earth data) decoded to polygons of [lon, lat].
function decodeTopology(topo, name) {
  const { scale, translate } = topo.transform;
  const arcs = topo.arcs.map((arc) => {
    let x = 0, y = 0;
    return arc.map(([dx, dy]) => { x += dx; y += dy; return [x * scale[0] + translate[0], y * scale[1] + translate[1]]; });
  });
  const arcPoints = (i) => (i >= 0 ? arcs[i] : arcs[~i].slice().reverse());
  const ring = (indexes) => indexes.flatMap((i, k) => (k ? arcPoints(i).slice(1) : arcPoints(i)));
  return topo.objects[name].geometries.map((g) => {
    const polygons = g.type === "Polygon" ? [g.arcs] : g.type === "MultiPolygon" ? g.arcs : [];
    return { name: g.properties && g.properties.name, polygons: polygons.map((p) => p.map(ring)) };
  });
}

// The world with a principal's usual login places (sized by logins) and an alert's sources.
export async function worldMap(usual, alertPoints) {
  if (!world) {
    const topo = await fetch(COUNTRIES_URL).then((r) => r.json());
    world = decodeTopology(topo, "countries");
  }
  const W = 960, H = 480;
  const project = ([lon, lat]) => [((lon + 180) / 360) * W, ((90 - lat) / 180) * H];
  const map = svg("svg", { class: "map", viewBox: `0 0 ${W} ${H}`, "data-testid": "login-map" });
  // A ring that jumps across the antimeridian starts a new sub-path there instead of drawing
  // a line across the whole map.
  const ringPath = (ring) => ring.map((p, i) => {
    const jump = i > 0 && Math.abs(p[0] - ring[i - 1][0]) > 180;
    return (i === 0 || jump ? "M" : "L") + project(p).map((v) => v.toFixed(1)).join(",");
  }).join("") + "Z";
  for (const country of world) {
    const d = country.polygons.map((polygon) => polygon.map(ringPath).join("")).join("");
    map.append(svg("path", { d }, svg("title", {}, country.name || "")));
  }
  const maxLogins = Math.max(1, ...usual.map((u) => u.logins));
  for (const place of usual) {
    if (place.latitude == null) continue;
    const [x, y] = project([place.longitude, place.latitude]);
    map.append(svg("circle", { class: "usual", cx: x, cy: y, r: 4 + 8 * Math.sqrt(place.logins / maxLogins) },
      svg("title", {}, `${place.city || place.country}: ${place.logins} logins (${place.failed} failed)`)));
  }
  for (const point of alertPoints) {
    if (point.latitude == null) continue;
    const [x, y] = project([point.longitude, point.latitude]);
    map.append(svg("circle", { class: "alert", cx: x, cy: y, r: 6 },
      svg("title", {}, `${point.source_ip} ${point.city || point.country || ""} ${fmtTime(point.event_time)}`)));
  }
  return map;
}

// The score of every evaluation, oldest first: the account's overall line (thick) over one thin
// line per section, on a fixed 0–100% scale so accounts compare at a glance.
export function trendChart(rows) {
  const W = 340, H = 96, left = 34, right = 8, top = 6, bottom = 16;
  const times = [...new Set(rows.map((r) => r.evaluated_at))].sort();
  const chart = svg("svg", { class: "trend", viewBox: `0 0 ${W} ${H}`, "data-points": times.length, role: "img" },
    svg("title", {}, "score per evaluation"));
  const x = (i) => (times.length > 1 ? left + (i * (W - left - right)) / (times.length - 1) : (left + W - right) / 2);
  const y = (score) => top + ((100 - score) * (H - top - bottom)) / 100;
  for (const level of [0, 50, 100]) {
    chart.append(svg("line", { class: "gridline", x1: left, x2: W - right, y1: y(level), y2: y(level) }),
      svg("text", { x: left - 4, y: y(level) + 3, "text-anchor": "end" }, `${level}%`));
  }
  const line = (points, cls) => {
    if (points.length > 1) chart.append(svg("polyline", { class: cls, points: points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ") }));
  };
  const sections = [...new Set(rows.map((r) => r.section))].sort(bySection);
  for (const section of sections) {
    const points = [];
    times.forEach((t, i) => {
      const row = rows.find((r) => r.evaluated_at === t && r.section === section);
      if (row) points.push([x(i), y(row.score)]);
    });
    line(points, `section s-${section}`);
  }
  const overall = times.map((t) => totals(rows.filter((r) => r.evaluated_at === t)));
  line(overall.map((o, i) => [x(i), y(o.score)]), "overall");
  overall.forEach((o, i) => chart.append(svg("circle", { class: "overall", cx: x(i), cy: y(o.score), r: 3 },
    svg("title", {}, `${fmtTime(times[i])}: ${percent(o.score)} (${o.failed} failed, ${o.passed} passed, ${o.suppressed} suppressed)`))));
  if (times.length) {
    chart.append(svg("text", { x: left, y: H - 3 }, fmtTime(times[0])));
    if (times.length > 1) chart.append(svg("text", { x: W - right, y: H - 3, "text-anchor": "end" }, fmtTime(times[times.length - 1])));
  }
  const legend = el("div", { class: "legend trend-legend" },
    el("span", {}, el("i", { class: "swatch overall" }), "overall"),
    sections.map((s) => el("span", {}, el("i", { class: `swatch s-${s}` }), s)));
  return el("div", { class: "trend-box" }, chart, legend);
}
