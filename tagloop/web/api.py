"""Shared Flask plumbing: JSON errors, strict JSON bodies, security headers, CORS.

Every tagloop HTTP service answers errors as `{"error": {"code", "message"}}`
(contracts §5) and never turns bad input into a 5xx, so the pieces that
enforce that live here once instead of in every app.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from tagloop.domain import strict_json
from tagloop.web import answerstart

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

log = logging.getLogger(__name__)

# JSON answers are never rendered as documents: no scripts, no framing, no referrer.
JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Sent only on answers that travelled over TLS (directly, or per a trusted proxy's
# X-Forwarded-Proto): browsers then refuse plain HTTP to this host for a year.
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
EXPOSED_HEADERS = "Retry-After, X-Model-Version"


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


def error_body(code: str, message: str) -> str:
    """The JSON text of every error answer (contracts §5)."""
    return json.dumps({"error": {"code": code, "message": message}})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    response = Response(error_body(code, message), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


def _http_code(error: HTTPException) -> str:
    """`NotFound` -> "not_found", `RequestEntityTooLarge` -> "request_entity_too_large"."""
    name = type(error).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def http_error(error: HTTPException) -> ApiError:
    """Werkzeug's own errors (404, 405, 413, ...) as the `ApiError` they answer as."""
    allowed = getattr(error, "valid_methods", None)  # MethodNotAllowed's
    headers = {"Allow": ", ".join(allowed)} if error.code == 405 and allowed else {}
    return ApiError(error.code or 500, _http_code(error), error.description or "", headers)


def unexpected_error(method: str, path: str) -> ApiError:
    """A bug, logged with its traceback (call it in an `except`), answered as a plain 500."""
    log.exception("unhandled error on %s %s", method, path)
    return ApiError(500, "internal", "internal server error")


def keep_json_key_order(app: Flask) -> None:
    """JSON answers keep the order the code builds them in (Flask sorts keys by default)."""
    provider = DefaultJSONProvider(app)
    provider.sort_keys = False
    app.json = provider


def install_json_errors(app: Flask) -> None:
    """Every error, including Werkzeug's own (404, 405, 413), answers JSON."""

    def answer(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return answer(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        return answer(http_error(error))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        return answer(unexpected_error(request.method, request.path))


def json_body() -> dict[str, Any]:
    """The request's JSON object, or an `ApiError`: 415 not JSON, 400 not representable.

    400 covers syntax errors and everything `strict_json` refuses (huge or
    non-finite numbers, lone surrogates, duplicate keys, deep nesting), each
    with its own code; a body Python could parse but not handle is never a 5xx.
    Body size is bounded before this by Flask's MAX_CONTENT_LENGTH (413).
    """
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    return json_object(request.get_data(cache=False))


def json_object(data: bytes) -> dict[str, Any]:
    """`data` as a JSON object, or the 400 `ApiError` `json_body` describes."""
    try:
        body = strict_json.loads(data)
    except strict_json.JsonError as error:
        raise ApiError(400, error.code, f"body is not representable JSON: {error.detail}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "body must be a JSON object")
    return body


@functools.cache
def status_line(code: int) -> str:
    """The WSGI status werkzeug writes for `code` ("422 UNPROCESSABLE ENTITY", "599 UNKNOWN"):
    the plain WSGI routes in front of Flask answer exactly as Flask would."""
    return Response(status=code).status


def declared_length(environ: Mapping[str, Any], limit: int, absent: str = "") -> int | None:
    """The body size a plain WSGI route may read whole: a plain decimal `Content-Length`
    (`absent` stands in when there is none) of at most `limit`, and no `Transfer-Encoding`.
    None leaves the request to Flask, the reference for every other case (411, 413,
    chunked bodies, odd lengths)."""
    if "HTTP_TRANSFER_ENCODING" in environ:
        return None
    declared: str = environ.get("CONTENT_LENGTH") or absent
    if not (declared.isascii() and declared.isdigit()):
        return None
    length = int(declared)
    return length if length <= limit else None


def install_security_headers(
    app: Flask, csp: str = JSON_CSP, extra: Mapping[str, str] | None = None
) -> None:
    """Defensive headers (and `extra` ones) on every response; a view may set its own first."""
    answerstart.add_hook(app, SecurityHeaders(csp, extra or {}))


class SecurityHeaders:
    """Adds the constant headers as the answer starts (a hook of tagloop/web/answerstart.py).

    At the WSGI layer this is a few tuple appends per request; as a Flask
    after-request hook through `Response.headers` it cost ~40 µs, a tenth of a
    whole bare Flask request. Headers already set (by a view, a hook or an
    upstream whose answer the UI relays) are kept.
    """

    def __init__(self, csp: str, extra: Mapping[str, str]) -> None:
        defaults = [*SECURITY_HEADERS.items(), ("Content-Security-Policy", csp), *extra.items()]
        # Each header with its lower-cased name, computed once rather than per answer.
        self.defaults = [(name.lower(), (name, value)) for name, value in defaults]
        self.over_tls = [*self.defaults, (HSTS[0].lower(), HSTS)]

    def __call__(
        self, environ: WSGIEnvironment, status: str, headers: list[tuple[str, str]], _: float
    ) -> None:
        # Read at start time: a trusted proxy's X-Forwarded-Proto has been applied by now.
        tls = environ.get("wsgi.url_scheme") == "https"
        present = {name.lower() for name, _ in headers}
        headers.extend(
            header
            for lowered, header in (self.over_tls if tls else self.defaults)
            if lowered not in present
        )


def refuse_redirects(app: Flask) -> None:
    """Route matching never answers a redirect (`//x` -> `/x`, `/x` -> `/x/`).

    Werkzeug builds such redirects from the request's Host header, so any client
    could have a service point a browser at another site; a path that is not
    exactly a route is a 404 instead.
    """
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False


def install_cors(app: Flask, origin: str, path_prefix: str = "/api/") -> None:
    """Allow exactly one browser origin (the UI's) to call `path_prefix*`; no credentials.

    Other origins get no CORS headers, so browsers refuse them. Preflights
    are answered here, before routing, so they never count as 405s.
    """
    allow = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        "Access-Control-Max-Age": "600",
    }

    @app.before_request
    def _preflight() -> Response | None:
        if request.method == "OPTIONS" and request.path.startswith(path_prefix):
            response = Response(status=204)
            if request.headers.get("Origin") == origin:
                response.headers.update(allow)
            return response
        return None

    answerstart.add_hook(app, CorsHeaders(origin, path_prefix))


_ALLOW_NAMES = frozenset({"access-control-allow-origin", "access-control-expose-headers"})


class CorsHeaders:
    """`Vary: Origin` on `path_prefix*`, and the allow headers for `origin`, as the answer
    starts (a hook of tagloop/web/answerstart.py, for the reason `SecurityHeaders` gives)."""

    def __init__(self, origin: str, path_prefix: str) -> None:
        self.origin = origin
        self.path_prefix = path_prefix
        self.allow = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Expose-Headers", EXPOSED_HEADERS),
        ]

    def __call__(
        self, environ: WSGIEnvironment, status: str, headers: list[tuple[str, str]], _: float
    ) -> None:
        path = "/" + environ.get("PATH_INFO", "").lstrip("/")  # as Flask's request.path
        if not path.startswith(self.path_prefix):
            return
        names = [name.lower() for name, _ in headers]
        if "vary" not in names:
            headers.append(("Vary", "Origin"))
        else:
            vary = headers[names.index("vary")][1]
            if "origin" not in vary.lower():
                headers[:] = [(n, v) for n, v in headers if n.lower() != "vary"]
                headers.append(("Vary", f"{vary}, Origin" if vary else "Origin"))
        if environ.get("HTTP_ORIGIN") == self.origin:
            if not _ALLOW_NAMES.isdisjoint(names):
                headers[:] = [(n, v) for n, v in headers if n.lower() not in _ALLOW_NAMES]
            headers.extend(self.allow)
