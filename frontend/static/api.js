// HTTP calls to the UI server (same origin) and errors in plain words.

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the server could not be reached
   * @param {string} code the server's error code, or "network"
   * @param {string} message the server's message
   * @param {number|null} retryAfter seconds from a Retry-After header
   */
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function request(method, path, body, signal, headers = {}) {
  const init = { method, signal, headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "the server could not be reached");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // A proxy or crash page without JSON: described by the status alone.
  }
  if (response.ok) return data;
  const detail = data && data.error ? data.error : {};
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  throw new ApiError(
    response.status,
    detail.code || "http_" + response.status,
    detail.message || response.statusText || "no details",
    Number.isFinite(retryAfter) ? retryAfter : null,
  );
}

export const api = {
  config: () => request("GET", "/ui/config"),
  queue: (offset, limit) => request("GET", `/ui/queue?offset=${offset}&limit=${limit}`),
  secondOpinions: () => request("GET", "/ui/queue/second-opinions"),
  predict: (title, signal) => request("POST", "/api/predict", { title }, signal),
  predictMany: (titles, signal) => request("POST", "/api/predict", { titles }, signal),
  feedback: (payload) => request("POST", "/api/feedback", payload),
  model: () => request("GET", "/api/model"),
  tags: () => request("GET", "/api/tags"),
  models: () => request("GET", "/ui/models"),
  promote: (version, token) =>
    request("POST", `/ui/models/${encodeURIComponent(version)}/promote`, undefined, undefined, {
      Authorization: `Bearer ${token}`,
    }),
  rollback: (token) =>
    request("POST", "/ui/models/rollback", undefined, undefined, {
      Authorization: `Bearer ${token}`,
    }),
};

/** True when the failure means "no model loaded yet" rather than "service unreachable". */
export function isNoModel(error) {
  return error instanceof ApiError && error.status === 503 && !error.code.startsWith("upstream");
}

/**
 * One or two sentences for people, not developers: what went wrong, what to do.
 * @param {unknown} error
 * @param {"predict"|"submit"|"model"|"load"} action what the user was doing
 */
export function describeError(error, action) {
  if (!(error instanceof ApiError)) return "Something unexpected went wrong. Try again.";
  const keep = {
    predict: " Your title is kept; predictions come back when the service does.",
    submit: " Nothing is lost: press Submit to send it again. It will be counted once.",
    model: "",
    load: " Try again in a moment.",
  }[action];
  if (error.status === 0) {
    return "Cannot reach the tagloop server: check your network connection." + keep;
  }
  if (error.code.startsWith("upstream")) {
    const what = {
      upstream_timeout: "took too long to answer",
      upstream_failed: "dropped the connection",
    }[error.code];
    return `The tagging service ${what ?? "is not reachable right now"}.` + keep;
  }
  if (error.status === 429) {
    const wait = error.retryAfter ? `${error.retryAfter} seconds` : "a few seconds";
    return `Too many requests in a short time. Wait ${wait}, then try again.` + keep;
  }
  if (error.status === 503 && action !== "submit") {
    return (
      "No model is loaded yet, so there are no predictions. " +
      "You can still add tags yourself and submit."
    );
  }
  if (error.status === 503) {
    return `The service cannot take corrections right now (${error.message}).` + keep;
  }
  if (error.status === 413) return `That is too long for the server: ${error.message}`;
  if (error.status >= 400 && error.status < 500) {
    return `The server did not accept this: ${error.message}`;
  }
  return `The server failed (HTTP ${error.status}).` + keep;
}
