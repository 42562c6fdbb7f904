// The public JSON API, as the page uses it. The access token lives only in
// this module's memory; the session's refresh token is an HttpOnly cookie the
// server sets on /api/v1/auth/session (this script never sees it).

const SESSION = "/api/v1/auth/session";
// The CSRF proof the session routes require (a custom header).
const CSRF = { "X-Requested-With": "shelfsync" };

let accessToken = null;
let username = null;
let refreshing = null;

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = problem ? problem.code : undefined;
  }
}

async function parse(response) {
  const type = response.headers.get("content-type") || "";
  if (response.status === 204) return null;
  if (type.includes("json")) return response.json();
  return response.text();
}

async function sessionCall(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { ...CSRF, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function adopt(token) {
  accessToken = token.access_token;
  username = token.username;
  return username;
}

export function currentUser() {
  return username;
}

// Log in with the ordinary login, then trade its refresh token for the cookie
// session at once (spending it), so no long-lived token stays in the page.
export async function login(user, password) {
  const response = await fetch("/api/v1/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: user, password }),
  });
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, data);
  return adopt(await sessionCall("POST", SESSION, { refresh_token: data.refresh_token }));
}

// A new access token from the cookie session (after a reload, or on expiry).
// One refresh at a time: the refresh token rotates, and presenting a spent one
// would end the session.
export function resume() {
  if (!refreshing) {
    refreshing = sessionCall("POST", `${SESSION}/refresh`)
      .then(adopt)
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

export async function logout() {
  accessToken = null;
  username = null;
  await sessionCall("DELETE", SESSION);
}

// A bearer request; on 401 the session is refreshed once and the call retried.
export async function api(method, path, { query, body, signal } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const send = () =>
    fetch(url, {
      method,
      signal,
      headers: {
        Authorization: `Bearer ${accessToken}`,
        ...(body ? { "Content-Type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
  let response = await send();
  if (response.status === 401) {
    await resume();
    response = await send();
  }
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
