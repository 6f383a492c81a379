"""The main-loop request parser accepts only what gunicorn's parser reads the same way.

For every request `RequestReader.parse` accepts, gunicorn's own parser (fed the
same bytes, same configuration, same peer) must produce the same request
fields and `gunicorn.http.wsgi.create` the same WSGI environ; everything else
must be refused, so that gunicorn's ordinary path answers it.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tagloop.web.main_loop import MAX_BODY_BYTES, RequestReader, SimpleRequest

ROUTES = {("POST", "/api/predict"), ("GET", "/api/model")}
TRUSTED = ("127.0.0.1", 40000)
UNTRUSTED = ("10.1.2.3", 40000)
SERVER = ("127.0.0.1", 8000)
# Environ values that are objects made per request (compared by their contents elsewhere).
PER_REQUEST_OBJECTS = {"wsgi.input", "wsgi.errors", "gunicorn.socket", "wsgi.early_hints"}


def request(
    target: bytes = b"/api/predict",
    method: bytes = b"POST",
    headers: tuple[bytes, ...] = (b"Host: example.org", b"Content-Type: application/json"),
    body: bytes = b'{"title": "x"}',
    length: bool = True,
) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", *headers]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def reader(**settings_: Any) -> RequestReader:
    cfg = Config()
    for name, value in settings_.items():
        cfg.set(name, value)
    return RequestReader(cfg, ROUTES)


def gunicorn_request(cfg: Config, data: bytes, peer: tuple[str, int]) -> Any:
    return next(RequestParser(cfg, iter([data]), peer))


def environ_of(req: Any, cfg: Config, peer: tuple[str, int]) -> dict[str, Any]:
    _, environ = wsgi.create(req, io.BytesIO(), peer, SERVER, cfg)
    return {k: v for k, v in environ.items() if k not in PER_REQUEST_OBJECTS}


def assert_read_as_gunicorn_reads(
    ours: SimpleRequest, data: bytes, cfg: Config, peer: tuple[str, int]
) -> None:
    theirs = gunicorn_request(cfg, data, peer)
    for field in ("method", "uri", "path", "query", "fragment", "version", "headers", "scheme"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.should_close() == theirs.should_close()
    assert ours.body.read() == theirs.body.read()
    ours.body.seek(0)
    assert environ_of(ours, cfg, peer) == environ_of(theirs, cfg, peer)


def test_a_plain_prediction_request_is_read_as_gunicorn_reads_it() -> None:
    main_loop = reader()
    data = request()
    parsed = main_loop.parse(data, TRUSTED)
    assert parsed is not None
    assert (parsed.method, parsed.path, parsed.query) == ("POST", "/api/predict", "")
    assert_read_as_gunicorn_reads(parsed, data, main_loop.cfg, TRUSTED)


@pytest.mark.parametrize(
    ("proto", "peer", "scheme"),
    [
        (b"https", TRUSTED, "https"),
        (b"http", TRUSTED, "http"),
        (b"https", UNTRUSTED, "http"),  # only trusted proxies may say so
    ],
)
def test_the_scheme_follows_forwarded_proto_from_trusted_peers_only(
    proto: bytes, peer: tuple[str, int], scheme: str
) -> None:
    main_loop = reader()
    data = request(headers=(b"Host: h", b"X-Forwarded-Proto: " + proto))
    parsed = main_loop.parse(data, peer)
    assert parsed is not None and parsed.scheme == scheme
    assert_read_as_gunicorn_reads(parsed, data, main_loop.cfg, peer)


@pytest.mark.parametrize(
    "data",
    [
        request(target=b"/api/other"),  # not a registered route
        request(method=b"PUT"),
        request(target=b"/api/%70redict"),  # escapes: gunicorn decodes, Flask routes on that
        request(target=b"//api/predict"),
        request(target=b"http://h/api/predict"),
        request(headers=(b"Host: a", b"Host: b")),  # repeated fields
        request(headers=(b"X_Forwarded_For: 1.2.3.4",)),  # underscores: gunicorn drops them
        request(headers=(b"Connection: close",)),
        request(headers=(b"Transfer-Encoding: chunked",)),
        request(headers=(b"Expect: 100-continue",)),
        request(headers=(b"Upgrade: h2c",)),
        request(headers=(b"X-Caf\xc3\xa9: 1",)),
        request(headers=(b"X-Note: caf\xc3\xa9",)),
        request(headers=(b"X-Note: a\x00b",)),
        request(headers=(b"X-Note : spaced name",)),
        request(headers=(b"X-Note: folded", b" continuation")),
        request(headers=(b"X-Forwarded-Proto: https", b"X-Forwarded-Ssl: off")),
        request(headers=(b"Content-Length: 5",)),  # a second Content-Length
        request(length=False),  # a POST body without a length: read to the end by gunicorn
        request() + b"GET /api/model HTTP/1.1\r\n\r\n",  # pipelined: the thread path reads on
        request()[:-1],  # incomplete
        request(body=b"x" * (MAX_BODY_BYTES + 1)),
        request().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        request().replace(b"POST /api", b"POST  /api", 1),
        request(target=b"/api/predict?" + b"q" * 5000),  # over limit_request_line
        request(headers=tuple(b"X-H%d: v" % i for i in range(101))),  # over limit_request_fields
    ],
)
def test_anything_unusual_is_left_to_gunicorn(data: bytes) -> None:
    assert reader().parse(data, TRUSTED) is None


def test_a_server_without_main_loop_routes_or_with_other_framing_parses_nothing() -> None:
    assert RequestReader(Config(), set()).parse(request(), TRUSTED) is None
    assert reader(proxy_protocol="v1").parse(request(), TRUSTED) is None


# Mostly well-formed pieces (so that many requests are accepted and compared), some not.
_GOOD_NAMES = st.sampled_from(
    [b"Host", b"Accept", b"X-Request-ID", b"Content-Type", b"X-Forwarded-Proto", b"Cookie",
     b"X-Forwarded-For", b"X-Forwarded-Ssl", b"user-agent", b"X-FORWARDED-PROTOCOL"]
)  # fmt: skip
_BAD_NAMES = st.sampled_from(
    [b"X_Under", b"Transfer-Encoding", b"Expect", b"Connection", b"bad name", b"", b"Host\xc3"]
)
_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"))
_GOOD_VALUES = _PRINTABLE.map(str.encode) | st.sampled_from([b"https", b"ssl", b"on", b"a,b"])
_BAD_VALUES = st.binary(max_size=8) | st.sampled_from([b"keep-alive", b"close", b"a\rb"])
_FIELD = st.one_of(
    st.tuples(_GOOD_NAMES, _GOOD_VALUES),
    st.tuples(_GOOD_NAMES, _GOOD_VALUES),
    st.tuples(_GOOD_NAMES, _GOOD_VALUES),
    st.tuples(_GOOD_NAMES | _BAD_NAMES, _GOOD_VALUES | _BAD_VALUES),
)
_ROUTES = st.sampled_from(
    [(b"POST", b"/api/predict"), (b"GET", b"/api/model"), (b"POST", b"/api/predict?x=1&y=2"),
     (b"GET", b"/api/model?a=b"), (b"POST", b"/api/predict?"), (b"GET", b"/api/model?a=/b?c")]
) | st.tuples(
    st.sampled_from([b"POST", b"GET", b"HEAD", b"post"]),
    st.sampled_from([b"/api/model?a=%20", b"/api//model", b"/api/predict#f", b"*",
                     b"/api/pr\xc3\xa9dict", b"/api/model;p", b"/api/predict"]),
)  # fmt: skip


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=_ROUTES,
    fields=st.lists(_FIELD, max_size=5, unique_by=lambda f: f[0].lower()),
    body=st.binary(max_size=40),
    length=st.booleans(),
    peer=st.sampled_from([TRUSTED, UNTRUSTED]),
)
def test_whatever_it_accepts_gunicorn_reads_the_same(
    route: tuple[bytes, bytes],
    fields: list[tuple[bytes, bytes]],
    body: bytes,
    length: bool,
    peer: tuple[str, int],
) -> None:
    main_loop = reader()
    method, target = route
    headers = tuple(name + b": " + value for name, value in fields)
    data = request(target, method, headers, body if method == b"POST" else b"", length)
    parsed = main_loop.parse(data, peer)
    event("accepted" if parsed else "left to gunicorn")
    if parsed is not None:
        assert_read_as_gunicorn_reads(parsed, data, main_loop.cfg, peer)
