// The public API, called with the bearer token kept in sessionStorage (never in a cookie).

const TOKEN_KEY = "storage-console-token";
export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || "HTTP " + status);
    this.status = status;
    this.code = problem.code || "";
    this.problem = problem;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// what the token says of its holder, for display only (the server decides what it may do)
export function claims(value = token()) {
  try {
    const payload = value.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(Array.from(atob(payload), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""));
    const data = JSON.parse(json);
    return {account: String(data.sub || ""), roles: Array.isArray(data.roles) ? data.roles.map(String) : [],
            exp: Number(data.exp) || null};
  } catch {
    return {account: "", roles: [], exp: null};
  }
}

export function authHeaders(extra = {}, value = token()) {
  return value ? {...extra, Authorization: "Bearer " + value} : {...extra};
}

let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export async function problemOf(response) {
  try {
    const body = await response.json();
    return typeof body === "object" && body ? body : {};
  } catch {
    return {title: response.statusText || "HTTP " + response.status};
  }
}

// fetch an API path; JSON in and out; a problem becomes an ApiError
export async function call(method, path, {body, query, headers, raw, tokenValue, root = API} = {}) {
  let url = root + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") params.set(name, String(value));
    }
    const text = params.toString();
    if (text) url += "?" + text;
  }
  const init = {method, credentials: "omit", cache: "no-store",
                headers: authHeaders(headers || {}, tokenValue === undefined ? token() : tokenValue)};
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  if (!response.ok) {
    const problem = await problemOf(response);
    if (response.status === 401 && tokenValue === undefined) onUnauthorized(problem);
    throw new ApiError(response.status, problem);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, query, options = {}) => call("GET", path, {...options, query});
export const post = (path, body, options = {}) => call("POST", path, {...options, body});
export const del = (path) => call("DELETE", path);
