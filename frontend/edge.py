"""What the UI decides about each request at the edge, in one place for both its request paths.

The proxied `/api/*` routes are answered by a plain WSGI handler in front of
Flask (frontend/fast_api.py), everything else by Flask (frontend/app.py). Both
read the same WSGI environ through these functions, so the annotator id, the
headers forwarded to a replica, the annotator cookie and the access log line
are the same whichever path answered.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from werkzeug.http import dump_cookie, parse_cookie
from werkzeug.wsgi import get_host

from tagloop.web.annotators import (
    ANNOTATOR_HEADER,
    COOKIE_MAX_AGE_SECONDS,
    COOKIE_NAME,
    AnnotatorCookies,
    address_annotator,
    identity_annotator,
)

# The access log keeps the logger name it had when Flask hooks wrote it.
access_log = logging.getLogger("frontend.app")

COOKIE_CACHE_ENTRIES = 1024
COOKIE_CACHE_MAX_CHARS = 1024
"""Cookie headers up to this long have their verdict cached (at most ~1 MB per worker)."""


def environ_key(header: str) -> str:
    """Where a WSGI server puts a request header (as werkzeug's `request.headers` reads it)."""
    key = header.upper().replace("-", "_")
    return key if key in {"CONTENT_TYPE", "CONTENT_LENGTH"} else f"HTTP_{key}"


class Edge:
    """Annotator ids, forwarded headers and the annotator cookie, read from a WSGI environ."""

    def __init__(self, secret: bytes, identity_header: str | None) -> None:
        self._cookies = AnnotatorCookies(secret)
        self._identity_key = environ_key(identity_header) if identity_header else None
        # A verdict depends only on the header and the process's fixed secret (the cookie
        # carries no expiry of its own: the browser drops it after Max-Age), so a cached
        # one never goes stale; a browser sends the same header on every call.
        self._cached_verdict: Callable[[str], str | None] = functools.lru_cache(
            maxsize=COOKIE_CACHE_ENTRIES
        )(self._verdict)

    def _verdict(self, cookie_header: str) -> str | None:
        try:
            cookies = parse_cookie(cookie_header)
        except UnicodeDecodeError:  # not UTF-8 (werkzeug decodes it so): none of ours
            return None
        return self._cookies.verify(cookies.get(COOKIE_NAME))

    def cookie_annotator(self, environ: Mapping[str, Any]) -> str | None:
        """The request's verified annotator cookie id ("anon:<id>"), else None."""
        header: str = environ.get("HTTP_COOKIE", "")
        if len(header) > COOKIE_CACHE_MAX_CHARS:
            return self._verdict(header)
        return self._cached_verdict(header)

    def annotator(self, environ: Mapping[str, Any]) -> str:
        """The trusted proxy's user, else this browser's signed cookie, else the address."""
        if self._identity_key and (identity := environ.get(self._identity_key)):
            return identity_annotator(identity)
        return self.cookie_annotator(environ) or address_annotator(environ.get("REMOTE_ADDR"))

    def forwarded(self, environ: Mapping[str, Any]) -> dict[str, str]:
        """The X-Forwarded-* and annotator headers a replica gets (never the client's own)."""
        return {
            "X-Forwarded-For": environ.get("REMOTE_ADDR") or "",
            "X-Forwarded-Proto": environ["wsgi.url_scheme"],
            "X-Forwarded-Host": get_host(environ),  # type: ignore[arg-type]
            ANNOTATOR_HEADER: self.annotator(environ),
        }

    def new_cookie(self, environ: Mapping[str, Any]) -> str:
        """A `Set-Cookie` value with a new anonymous id (as Flask's `set_cookie` writes it)."""
        return dump_cookie(
            COOKIE_NAME,
            self._cookies.issue(),
            max_age=COOKIE_MAX_AGE_SECONDS,
            path="/",
            secure=environ["wsgi.url_scheme"] == "https",
            httponly=True,
            samesite="Strict",
        )


def log_request(
    method: str, path: str, status: int, seconds: float, upstream: str | None, quiet: bool
) -> None:
    """The per-request access line (DEBUG for health checks and scrapes)."""
    access_log.log(
        logging.DEBUG if quiet else logging.INFO,
        "%s %s %s",
        method,
        path,
        status,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "upstream": upstream,
        },
    )
