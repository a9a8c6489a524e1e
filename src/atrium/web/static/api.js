// Atrium's HTTP API from the browser: one credential (an API key, or an access token with its refresh token)
// kept in this tab's sessionStorage, sent as a Bearer header, never put in a URL.

const STORE = "atrium.credential";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let credential = JSON.parse(sessionStorage.getItem(STORE) || "null");
let refreshing = null; // one refresh at a time: a second one with the same token would revoke the session

function keep(value) {
  credential = value;
  if (value) sessionStorage.setItem(STORE, JSON.stringify(value));
  else sessionStorage.removeItem(STORE);
}

export const signedIn = () => credential !== null;
// Who the page acts as, for the header: an email and role after a password login, else the key's kind.
export const identity = () => credential?.kind === "password" ? `${credential.email} (${credential.role})` : "an API key";

export function useKey(key) {
  keep({ kind: "key", access: key.trim() });
}

export async function login(email, password) {
  const pair = await call("POST", "/api/v1/auth/token", { email, password }, { anonymous: true });
  keep({ kind: "password", email, access: pair.access_token, refresh: pair.refresh_token, role: pair.role });
  return pair;
}

export async function signOut() {
  const ending = credential;
  keep(null);
  if (ending?.refresh) {
    await call("POST", "/api/v1/auth/logout", { refresh_token: ending.refresh }, { anonymous: true })
      .catch(() => {});
  }
}

async function refresh() {
  if (!credential?.refresh) return false;
  refreshing ??= call("POST", "/api/v1/auth/refresh", { refresh_token: credential.refresh }, { anonymous: true })
    .then((pair) => { keep({ ...credential, access: pair.access_token, refresh: pair.refresh_token }); return true; })
    .catch(() => { keep(null); return false; })
    .finally(() => { refreshing = null; });
  return refreshing;
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const error = body?.error ?? {};
  return new ApiError(response.status, error.code ?? "http_" + response.status,
                      error.message ?? response.statusText);
}

// fetch with the credential; an expired access token is refreshed once and the request sent again.
export async function send(method, path, { body, headers = {}, anonymous = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    const all = { ...headers };
    if (!anonymous && credential) all.Authorization = "Bearer " + credential.access;
    if (body !== undefined && !(body instanceof FormData)) all["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers: all, body: body === undefined || body instanceof FormData ? body : JSON.stringify(body),
    });
    if (response.ok) return response;
    const error = await errorOf(response);
    if (error.code === "token_expired" && attempt === 0 && await refresh()) continue;
    throw error;
  }
}

export async function call(method, path, body, options = {}) {
  const response = await send(method, path, { ...options, body });
  return response.status === 204 ? null : response.json();
}

// Server-Sent Events of a POST (EventSource cannot send a body or a header): yields {event, id, data}.
export async function* events(path, body) {
  const response = await send("POST", path, { body, headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = { event: "message", id: null, data: [] };
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        if (colon === 0) continue; // a comment (keep-alive)
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") message.event = text;
        else if (field === "id") message.id = text;
        else if (field === "data") message.data.push(text);
      }
      if (message.data.length) yield { ...message, data: JSON.parse(message.data.join("\n")) };
    }
  }
}
