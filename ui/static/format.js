// Human units and DOM building: every page formats numbers through here, so a figure reads the same everywhere.

const int = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function num(value) {
  return int.format(Number(value ?? 0));
}

export function tokens(value) {
  return `${num(value)}`;
}

export function usd(value) {
  return `$${Number(value ?? 0).toFixed(4)}`;
}

export function bytes(value) {
  const n = Number(value ?? 0);
  if (n < 1024) return `${num(n)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];  // binary units, named as such
  let scaled = n / 1024;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${scaled.toFixed(scaled < 10 ? 1 : 0)} ${units[unit]}`;
}

export function exactBytes(value) {
  const n = Number(value ?? 0);
  return n < 1024 ? `${num(n)} B` : `${num(n)} B (${bytes(n)})`;
}

export function ms(value) {
  const n = Number(value ?? 0);
  if (n < 1000) return `${num(n)} ms`;
  if (n < 59_950) return `${(n / 1000).toFixed(1)} s`;  // from 59.95 s one decimal would say "60.0 s"
  // Whole seconds first, then minutes: rounding the seconds alone said "5 min 60 s" for 5 min 59.6 s.
  const secondsTotal = Math.round(n / 1000);
  const minutes = Math.floor(secondsTotal / 60);
  if (minutes < 60) return `${minutes} min ${secondsTotal % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function seconds(value) {
  return ms(Number(value ?? 0) * 1000);
}

export function date(value) {
  if (value === null || value === undefined || value === "") return null;
  if (value instanceof Date) return value;
  if (typeof value === "number") return new Date(value > 1e12 ? value : value * 1000);
  const text = String(value);
  return new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text : `${text.replace(" ", "T")}Z`);
}

export function time(value) {
  const d = date(value);
  if (!d || Number.isNaN(d.getTime())) return "—";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function plural(n, word) {
  return `${num(n)} ${word}${Number(n) === 1 ? "" : "s"}`;
}

// Milliseconds from start to end, to the microsecond: Date keeps whole milliseconds, and gateway times carry
// microseconds, so a 2.2 ms call would show as 2 or 3 ms depending on where its ends fell.
export function span(start, end) {
  const a = micros(start);
  const b = micros(end);
  return a !== null && b !== null ? (b - a) / 1000 : 0;
}

function micros(value) {
  const fraction = typeof value === "string" ? /\.(\d+)/.exec(value) : null;
  const d = date(fraction ? value.replace(fraction[0], "") : value);
  if (!d || Number.isNaN(d.getTime())) return null;
  return d.getTime() * 1000 + (fraction ? Number(fraction[1].padEnd(6, "0").slice(0, 6)) : 0);
}

// el("td", {class: "num"}, "text", child) -> an element; attributes starting with "on" become listeners.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A wide table (the sessions list has 16 columns) scrolls inside its own box rather than widening the page.
export function table(caption, headers, rows, attrs = {}) {
  return el("div", { class: "table-scroll" }, el("table", attrs,
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", class: h.num ? "num" : null, "aria-sort": h.sort ?? null }, h.label ?? h)))),
    el("tbody", {}, rows)));
}

export function cell(value, attrs = {}) {
  return el("td", attrs, value);
}

export function numCell(value, attrs = {}) {
  return el("td", { class: "num", ...attrs }, value);
}
