"""Shared Flask plumbing: JSON errors, strict JSON bodies, security headers, CORS.

Every tagloop HTTP service answers errors as `{"error": {"code", "message"}}`
(contracts §5) and never turns bad input into a 5xx, so the pieces that
enforce that live here once instead of in every app.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# JSON answers are never rendered as documents: no scripts, no framing, no referrer.
JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class ApiError(Exception):
    """A client or dependency error that becomes a JSON error response."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    response = Response(body, status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


def _http_code(error: HTTPException) -> str:
    """`NotFound` -> "not_found", `RequestEntityTooLarge` -> "request_entity_too_large"."""
    name = type(error).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def install_json_errors(app: Flask) -> None:
    """Every error, including Werkzeug's own (404, 405, 413), answers JSON."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        response = error_response(error.code or 500, _http_code(error), error.description or "")
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")


def json_body() -> dict[str, Any]:
    """The request's JSON object, or an `ApiError`: 415 not JSON, 400 malformed or not an object.

    Body size is bounded before this by Flask's MAX_CONTENT_LENGTH (413).
    """
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = json.loads(request.get_data(cache=False))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "body must be a JSON object")
    return body


def install_security_headers(app: Flask, csp: str = JSON_CSP) -> None:
    """Defensive headers on every response; a view may set its own CSP first."""

    defaults = [*SECURITY_HEADERS.items(), ("Content-Security-Policy", csp)]

    @app.after_request
    def _headers(response: Response) -> Response:
        # One pass over the response's headers (this runs on every request).
        present = {name.lower() for name, _ in response.headers.items()}
        response.headers.extend([(n, v) for n, v in defaults if n.lower() not in present])
        return response


def install_cors(app: Flask, origin: str, path_prefix: str = "/api/") -> None:
    """Allow exactly one browser origin (the UI's) to call `path_prefix*`; no credentials.

    Other origins get no CORS headers, so browsers refuse them. Preflights
    are answered here, before routing, so they never count as 405s.
    """
    allow = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Expose-Headers": "Retry-After, X-Model-Version",
        "Access-Control-Max-Age": "600",
    }

    def _applies() -> bool:
        return request.path.startswith(path_prefix)

    @app.before_request
    def _preflight() -> Response | None:
        if request.method == "OPTIONS" and _applies():
            response = Response(status=204)
            if request.headers.get("Origin") == origin:
                response.headers.update(allow)
            return response
        return None

    @app.after_request
    def _cors(response: Response) -> Response:
        if _applies():
            vary = response.headers.get("Vary", "")
            if "origin" not in vary.lower():
                response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
            if request.headers.get("Origin") == origin:
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Expose-Headers"] = "Retry-After, X-Model-Version"
        return response
