"""`TrustedProxyFix` hands the app the environ werkzeug's ProxyFix would, for a trusted peer,
and the untouched environ otherwise; without forwarded headers it skips ProxyFix's parsing
(issue 19) but still records the original values, which say the peer was trusted."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix

from tagloop.web.forwarding import ORIGINAL, ProxyChain, TrustedProxyFix, parse_networks

HEADERS = [
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
]
VALUES = st.sampled_from(
    ["", "https", "203.0.113.9", "6.6.6.6, 10.0.0.2", "evil.example:8443", "[::1]", "a,,b", "8443"]
)


def seen_by_app(middleware: Any, environ: dict[str, Any]) -> dict[str, Any]:
    """The environ the wrapped app is called with."""
    seen: list[dict[str, Any]] = []

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(dict(env))
        return []

    middleware.app = app
    if isinstance(middleware, TrustedProxyFix):
        middleware.fixed.app = middleware.app
    middleware(dict(environ), None)
    return seen[0]


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(st.sampled_from(HEADERS), VALUES, max_size=5),
    peer=st.sampled_from(["127.0.0.1", "10.1.2.3", "203.0.113.7", "", "unix:/x", "::1"]),
    hops=st.integers(0, 2),
    entries=st.integers(0, 3),
    scheme=st.sampled_from(["http", "https"]),
)
def test_same_environ_as_proxyfix_for_trusted_peers_and_untouched_otherwise(
    headers: dict[str, str], peer: str, hops: int, entries: int, scheme: str
) -> None:
    chain = ProxyChain(hops, entries, parse_networks("test", "127.0.0.0/8,10.0.0.0/8,::1"))
    environ = {
        "REMOTE_ADDR": peer,
        "wsgi.url_scheme": scheme,
        "HTTP_HOST": "replica:8000",
        "SERVER_NAME": "replica",
        "SERVER_PORT": "8000",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/api/predict",
        **headers,
    }
    got = seen_by_app(TrustedProxyFix(None, chain), environ)  # type: ignore[arg-type]
    if peer in {"127.0.0.1", "10.1.2.3", "::1"}:
        reference = ProxyFix(None, x_for=entries, x_proto=hops, x_host=hops)  # type: ignore[arg-type]
        assert got == seen_by_app(reference, environ)
        assert ORIGINAL in got
    else:
        assert got == environ
