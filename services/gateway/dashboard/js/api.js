// The public API, called with the API key from sessionStorage. Nothing here logs: responses hold PHI.

const KEY_STORAGE = "skintriage.apiKey";

/** An error answered by the API (or the network), carrying the machine code. */
export class ApiError extends Error {
  constructor(status, code, message, details, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.requestId = requestId;
  }

  /** "code: message" for display; the code is what support and the docs refer to. */
  display() {
    const rid = this.requestId ? ` (request ${this.requestId})` : "";
    return `${this.code}: ${this.message}${rid}`;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

const unauthorizedListeners = [];

/** Called whenever the API answers 401 with the stored key (revoked or wrong). */
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

async function toError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const err = body && body.error;
  if (err && typeof err.code === "string") {
    return new ApiError(response.status, err.code, err.message || "", err.details, err.request_id);
  }
  return new ApiError(response.status, `http.${response.status}`, response.statusText || "request failed");
}

/** fetch() with the Bearer key; throws ApiError for any non-2xx answer or network failure. */
export async function request(path, { method = "GET", body, headers = {}, key, signal } = {}) {
  const apiKey = key ?? getKey();
  const all = { ...headers };
  if (apiKey) all.Authorization = `Bearer ${apiKey}`;
  let response;
  try {
    response = await fetch(path, { method, body, headers: all, signal, cache: "no-store" });
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network.unreachable", "the gateway could not be reached");
  }
  if (!response.ok) {
    const error = await toError(response);
    if (response.status === 401 && key === undefined) unauthorizedListeners.forEach((fn) => fn(error));
    throw error;
  }
  return response;
}

export async function getJson(path, options) {
  const response = await request(path, options);
  return response.json();
}

/** A blob: URL of an image the API serves only with the key (the caller revokes it). */
export async function getBlobUrl(path, options) {
  const response = await request(path, options);
  const blob = await response.blob();
  return URL.createObjectURL(blob);
}

/** Who a key belongs to (GET /v1/me): checks the key before it is kept, and gives the role. */
export function getMe(key) {
  return getJson("/v1/me", key === undefined ? {} : { key });
}

/** A query string of the set parameters (empty values are left out). */
function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

function sendJson(path, method, payload) {
  return getJson(path, {
    method,
    body: JSON.stringify(payload),
    headers: { "Content-Type": "application/json" },
  });
}

export function listReports(params, signal) {
  return getJson(`/v1/reports${query(params)}`, { signal });
}

export function getJob(jobId) {
  return getJson(`/v1/jobs/${encodeURIComponent(jobId)}`);
}

export function getBatch(batchId) {
  return getJson(`/v1/batches/${encodeURIComponent(batchId)}`);
}

export function submitImage(file, fields, filename) {
  const form = new FormData();
  form.append("file", file, filename || file.name || "image.jpg");
  appendFields(form, fields);
  return getJson("/v1/images", { method: "POST", body: form });
}

export function submitBatch(files, fields) {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  appendFields(form, fields);
  return getJson("/v1/batches", { method: "POST", body: form });
}

function appendFields(form, fields) {
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null && String(value).trim() !== "") form.append(name, String(value).trim());
  }
}

// -- Reviews (issue 12): the versioned sign-off of a result.

export function listReviews(jobId) {
  return getJson(`/v1/jobs/${encodeURIComponent(jobId)}/reviews`);
}

export function createReview(jobId, review) {
  return sendJson(`/v1/jobs/${encodeURIComponent(jobId)}/reviews`, "POST", review);
}

// -- Lesions (issue 12): one lesion's images over time, and a patient's lesions.

export function getLesion(lesionId) {
  return getJson(`/v1/lesions/${encodeURIComponent(lesionId)}`);
}

export function listLesions(patientRef) {
  return getJson(`/v1/lesions${query({ patient_ref: patientRef })}`);
}

/** Start following a lesion: {patient_ref, label, body_site, laterality, body_map} -> LesionView. */
export function createLesion(lesion) {
  return sendJson("/v1/lesions", "POST", lesion);
}

// -- Administration (issue 12): monitoring, the audit trail, users and keys (admins only).

export function getMonitoring(params) {
  return getJson(`/v1/monitoring${query(params)}`);
}

export function listAudit(params) {
  return getJson(`/v1/audit${query(params)}`);
}

export function listUsers() {
  return getJson("/v1/users");
}

export function createUser(name, role) {
  return sendJson("/v1/users", "POST", { name, role });
}

export function disableUser(userId) {
  return getJson(`/v1/users/${encodeURIComponent(userId)}/disable`, { method: "POST" });
}

export function listKeys() {
  return getJson("/v1/api-keys");
}

export function createKey(userId, expiresInDays) {
  return sendJson(`/v1/users/${encodeURIComponent(userId)}/api-keys`, "POST", { expires_in_days: expiresInDays });
}

export async function revokeKey(keyId) {
  await request(`/v1/api-keys/${encodeURIComponent(keyId)}`, { method: "DELETE" });
}
