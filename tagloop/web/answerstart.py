"""One WSGI middleware for what every answer gets as it starts: metrics, CORS and
security headers (issue 19).

Each of them used to be its own middleware with its own `start_response`
wrapper: three nested calls and three closures per request, which on a replica
cost about as much as the header work itself. Now each `install_*` function
(`tagloop.web.httpmetrics.install`, `tagloop.web.api.install_cors`,
`install_security_headers`) adds a hook to the one `AnswerStart` at the outside
of the app, and a single wrapper runs the hooks in the order they were
installed: the order the nested wrappers ran in (the first installed was the
innermost, so its wrapper ran first). A middleware installed in between (another
`wsgi_app` wrapper) starts a new `AnswerStart` around it, so the nesting of
everything else stays as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

StartHook = Callable[["WSGIEnvironment", str, list[tuple[str, str]], float], None]
"""`hook(environ, status, headers, started)`: sees (and may edit) an answer's headers as it
starts; `started` is the `time.perf_counter()` at which the request reached the app."""


class AnswerStart:
    """WSGI middleware calling each hook on an answer's status and headers as it starts."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.hooks: list[StartHook] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        started = time.perf_counter()
        hooks = self.hooks

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            for hook in hooks:
                hook(environ, status, headers, started)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def add_hook(app: Flask, hook: StartHook) -> None:
    """Run `hook` as each answer starts, after the hooks installed before it."""
    outer = app.wsgi_app
    if not isinstance(outer, AnswerStart):
        outer = AnswerStart(outer)
        app.wsgi_app = outer  # type: ignore[method-assign]
    outer.hooks.append(hook)
