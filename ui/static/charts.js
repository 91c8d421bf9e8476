// Two small SVG charts drawn here, no library: result bytes over time (points) and a histogram of result sizes.

import { bytes, time } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const W = 560;
const H = 180;
const PAD = { left: 56, right: 12, top: 10, bottom: 28 };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function frame(title) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "chart" });
  root.append(svg("title", {}, title));
  root.append(svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: "axis" }));
  root.append(svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, class: "axis" }));
  return root;
}

function yLabels(root, max) {
  for (const share of [0, 0.5, 1]) {
    const y = H - PAD.bottom - share * (H - PAD.top - PAD.bottom);
    root.append(svg("text", { x: PAD.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, bytes(max * share)));
  }
}

// points: [{at: Date, value: bytes, calls: count}], one per time bucket (empty ones too, as 0): a line through
// them all, a dot on each bucket that had calls carrying its exact figures (data-at, data-bytes, data-calls).
export function bytesOverTime(points, title) {
  const root = frame(title);
  if (!points.length) return root;
  const t0 = Math.min(...points.map((p) => p.at.getTime()));
  const t1 = Math.max(...points.map((p) => p.at.getTime()));
  const max = Math.max(1, ...points.map((p) => p.value));
  const x = (t) => PAD.left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right) : (W - PAD.left - PAD.right) / 2);
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  yLabels(root, max);
  if (points.length > 1) {
    root.append(svg("polyline", { class: "line", points: points.map((p) => `${x(p.at.getTime())},${y(p.value)}`).join(" ") }));
  }
  for (const p of points.filter((q) => q.calls > 0)) {
    const dot = svg("circle", { cx: x(p.at.getTime()), cy: y(p.value), r: 3, class: "dot",
      "data-at": p.at.toISOString(), "data-bytes": p.value, "data-calls": p.calls });
    dot.append(svg("title", {}, `${time(p.at)}: ${bytes(p.value)} in ${p.calls} call${p.calls === 1 ? "" : "s"}`));
    root.append(dot);
  }
  root.append(svg("text", { x: PAD.left, y: H - 8, class: "tick" }, time(new Date(t0))));
  if (t1 > t0) root.append(svg("text", { x: W - PAD.right, y: H - 8, class: "tick", "text-anchor": "end" }, time(new Date(t1))));
  return root;
}

// buckets: [{lo, hi, count}] in bytes
export function histogram(buckets, title) {
  const root = frame(title);
  if (!buckets.length) return root;
  const max = Math.max(1, ...buckets.map((b) => b.count));
  const width = (W - PAD.left - PAD.right) / buckets.length;
  root.append(svg("text", { x: PAD.left - 6, y: PAD.top + 8, class: "tick", "text-anchor": "end" }, String(max)));
  buckets.forEach((b, i) => {
    const h = (b.count / max) * (H - PAD.top - PAD.bottom);
    const bar = svg("rect", { x: PAD.left + i * width + 1, y: H - PAD.bottom - h, width: Math.max(1, width - 2), height: h, class: "bar",
      "data-lo": b.lo, "data-hi": b.hi, "data-count": b.count });
    bar.append(svg("title", {}, `${bytes(b.lo)}–${bytes(b.hi)}: ${b.count} results`));
    root.append(bar);
    if (i % Math.ceil(buckets.length / 6) === 0) {
      root.append(svg("text", { x: PAD.left + i * width, y: H - 8, class: "tick" }, bytes(b.lo)));
    }
  });
  return root;
}
