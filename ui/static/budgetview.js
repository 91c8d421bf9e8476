// Budget figures shared by the servers and budgets pages: limit names, amounts in their unit, use meters.

import { bytes, el, num, seconds, tokens } from "./format.js";

export const LIMIT_LABELS = {
  max_request_bytes: "Request size per call",
  max_result_bytes: "Result size per call",
  session_bytes: "Bytes per session",
  session_calls: "Calls per session",
  session_tokens: "Est. tokens per session",
  day_bytes: "Bytes per day",
  day_calls: "Calls per day",
  day_tokens: "Est. tokens per day",
};

export function amount(limit, value) {
  if (limit.endsWith("bytes")) return bytes(value);
  if (limit.endsWith("tokens")) return tokens(value);
  return num(value);
}

export async function budgetsOrNothing(getJson) {
  try {
    return await getJson("/api/budgets");
  } catch {
    return { upstreams: [] };
  }
}

// One row per windowed limit: a labelled <meter> and "used of allowed".
export function usageMeters(usage, id) {
  if (!usage?.length) return el("p", { class: "muted small" }, "No windowed limits.");
  return el("ul", { class: "meters", id }, usage.map((u) => {
    const meterId = `${id}-${u.limit}`;
    const share = u.allowed ? u.used / u.allowed : 1;
    return el("li", { dataset: { limit: u.limit } },
      el("label", { for: meterId }, LIMIT_LABELS[u.limit] ?? u.limit),
      el("meter", { id: meterId, min: 0, max: u.allowed || 1, low: 0.7 * (u.allowed || 1), high: 0.9 * (u.allowed || 1),
        optimum: 0, value: Math.min(u.used, u.allowed || u.used) }),
      el("span", { class: "num", dataset: { k: "used" } }, `${amount(u.limit, u.used)} of ${amount(u.limit, u.allowed)}`),
      el("span", { class: "muted num" }, ` ${(100 * share).toFixed(1)}%`));
  }));
}

export function resetText(day) {
  if (!day) return "—";
  return `in ${seconds(day.resets_in_seconds)} (${day.reset_at})`;
}
