// The REST API as the console uses it: JSON, the session cookie (sent by the
// browser, HttpOnly: this code never sees it) and the CSRF token, kept in
// memory only and sent in a header with every state-changing request.

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export const session = { user: null, role: null, csrf: null, csrfHeader: 'X-CSRF-Token' };

export function isAdmin() {
  return session.role === 'admin';
}

/** An API error: HTTP status, the server's message and the field it concerns. */
export class ApiError extends Error {
  constructor(status, detail, field = null) {
    super(detail);
    this.status = status;
    this.field = field;
  }
}

let onExpired = () => {};

/** Called when the API answers 401 to a logged-in console (session expired). */
export function setExpiredHandler(fn) {
  onExpired = fn;
}

function detailText(detail) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join('; ');
  return detail ? JSON.stringify(detail) : '';
}

export async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (UNSAFE.has(method) && session.csrf) headers[session.csrfHeader] = session.csrf;
  let response;
  try {
    response = await fetch(path, {
      method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, 'the engine cannot be reached');
  }
  if (response.status === 204) return null;
  let data = null;
  const type = response.headers.get('content-type') || '';
  if (type.includes('json')) {
    try { data = await response.json(); } catch { data = null; }
  }
  if (!response.ok) {
    if (response.status === 401 && session.user && !path.startsWith('/api/session')) {
      onExpired();
    }
    const detail = detailText(data && data.detail) || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, detail, data && data.field ? data.field : null);
  }
  return data;
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body ?? {});
export const put = (path, body) => request('PUT', path, body);
export const del = (path) => request('DELETE', path);

/**
 * /api/health (no session needed) as {ready, detail, version}. A 503 "not
 * ready" is an answer here, not an error: the engine cannot renew its lease
 * and starts no power action. Throws ApiError(0) when the engine cannot be
 * reached.
 */
export async function health() {
  let response;
  let data = null;
  try {
    response = await fetch('/api/health', { headers: { Accept: 'application/json' }, cache: 'no-store' });
    data = await response.json();
  } catch (err) {
    if (!response) throw new ApiError(0, 'the engine cannot be reached');
  }
  if (response.ok || (response.status === 503 && data && data.status === 'not ready')) {
    return { ready: response.ok, detail: (data && data.detail) || '', version: (data && data.version) || '' };
  }
  throw new ApiError(response.status, detailText(data && data.detail) || `${response.status} ${response.statusText}`);
}

function adopt(data) {
  session.user = data.user;
  session.role = data.role;
  session.csrf = data.csrf_token;
  session.csrfHeader = data.csrf_header || 'X-CSRF-Token';
  return data;
}

/** The current session, or null when not logged in. */
export async function resume() {
  try {
    return adopt(await get('/api/session'));
  } catch (err) {
    if (err.status === 401) return null;
    throw err;
  }
}

export async function login(username, password) {
  return adopt(await request('POST', '/api/session', { username, password }));
}

export async function logout() {
  try {
    await request('DELETE', '/api/session');
  } catch (err) {
    if (err.status !== 401) throw err;  // already logged out (expired): nothing to do
  } finally {
    session.user = session.role = session.csrf = null;
  }
}

export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
