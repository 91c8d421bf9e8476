// The JSON API from the browser: one fetch helper that sends the bearer token when the page was given one.
// A token arrives once as ?token=..., is kept in sessionStorage (this tab only) and removed from the address bar.

const KEY = "tollgate.token";

export class AuthRequired extends Error {}

export function adoptToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(KEY, token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

export function setToken(token) {
  sessionStorage.setItem(KEY, token);
}

export async function getJson(path, params = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  const headers = {}; // nothing but a token, so the request matches the shell's <link rel=preload> when there is one
  const token = sessionStorage.getItem(KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let response = await fetch(url, { headers, credentials: "same-origin" });
  // Chromium hands a <link rel=preload> response to the first matching fetch whatever its headers: a
  // preload sent without the token comes back 401, so ask once more, now really with the token.
  if (response.status === 401 && token) response = await fetch(url, { headers, credentials: "same-origin" });
  if (response.status === 401) throw new AuthRequired("a bearer token is required");
  if (!response.ok) throw new Error(await errorMessage(response, url));
  return response.json();
}

// The API says what went wrong as {"error": "..."} ("no session 'x'"); a page shows that, not the bare status.
async function errorMessage(response, url) {
  try {
    const body = await response.json();
    if (typeof body?.error === "string" && body.error) return body.error;
  } catch {
    // not JSON (a proxy's error page): the status is all there is
  }
  return `${url.pathname}: HTTP ${response.status}`;
}
