"""The UI server: settings, static files and security headers, queue, and the /api proxy.

The proxy is exercised against real HTTP servers on free ports: small
contract-shaped upstreams that say who answered, a port nobody listens on, and
a socket that hangs up after reading the request.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from frontend.app import MAX_BODY_BYTES, STATIC_DIR, create_app
from frontend.proxy import UpstreamPool
from frontend.settings import UISettings
from frontend.tag_rules import tag_rules
from tagloop.domain.tags import ALIASES, MAX_TAG_LENGTH
from tagloop.settings import ConfigError
from tagloop.web.annotators import AnnotatorCookies, address_annotator
from tests.fixtures.pubsub import free_port
from tests.fixtures.ui import TAGLOOP, start_ui

TITLES = [f"title number {i}" for i in range(45)]


def stub_upstream(name: str, release: threading.Event) -> Flask:
    """An upstream that answers with its name and what it received."""
    app = Flask(name)

    @app.route("/api/echo", methods=["GET", "POST"])
    def echo():  # type: ignore[no-untyped-def]
        response = jsonify(
            upstream=name,
            method=request.method,
            query=request.query_string.decode(),
            body=request.get_data(as_text=True),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        response.headers["X-Upstream"] = name
        return response

    @app.post("/api/feedback")
    def limited():  # type: ignore[no-untyped-def]
        response = jsonify(error={"code": "rate_limited", "message": "slow down"})
        response.status_code = 429
        response.headers["Retry-After"] = "7"
        return response

    @app.get("/api/wait")
    def wait():  # type: ignore[no-untyped-def]
        release.wait(10)
        return jsonify(upstream=name)

    return app


@pytest.fixture(scope="module")
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture(scope="module")
def upstreams(release: threading.Event) -> Iterator[list[str]]:
    """Two running stub upstreams, "a" and "b"."""
    servers: list[BaseWSGIServer] = []
    for name in ("a", "b"):
        server = make_server("127.0.0.1", 0, stub_upstream(name, release), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{server.server_port}" for server in servers]
    for server in servers:
        server.shutdown()


@pytest.fixture(scope="module")
def hang_up() -> Iterator[str]:
    """An upstream that reads the request and closes the connection without answering."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def dead_upstream() -> str:
    return f"http://127.0.0.1:{free_port()}"


def settings_for(upstreams: list[str], **changes: object) -> UISettings:
    base = UISettings.from_env({"TAGLOOP_UI_UPSTREAMS": ",".join(upstreams)})
    return replace(base, **changes)  # type: ignore[arg-type]


def client_for(upstreams: list[str], **changes: object) -> FlaskClient:
    return create_app(settings_for(upstreams, **changes), TITLES).test_client()


def error_of(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    body = response.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


# --- settings ------------------------------------------------------------------


def test_settings_defaults_are_the_local_stack() -> None:
    settings = UISettings.from_env({})
    assert settings.upstreams == ("http://127.0.0.1:8001", "http://127.0.0.1:8002")
    assert settings.unlabeled_data == Path("data/unlabeled.tsv")
    assert (settings.workers, settings.threads, settings.proxy_hops) == (2, 4, 0)


def test_upstreams_are_normalised() -> None:
    settings = UISettings.from_env(
        {"TAGLOOP_UI_UPSTREAMS": " http://a:8001/ ,https://b.example,, http://a:8001"}
    )
    assert settings.upstreams == ("http://a:8001", "https://b.example")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TAGLOOP_UI_UPSTREAMS", "ftp://host:21"),
        ("TAGLOOP_UI_UPSTREAMS", "127.0.0.1:8001"),
        ("TAGLOOP_UI_UPSTREAMS", "http://host:99999"),
        ("TAGLOOP_UI_UPSTREAMS", "http://host/?x=1"),
        ("TAGLOOP_UI_UPSTREAMS", " , "),
        ("TAGLOOP_UI_UPSTREAM_TIMEOUT_SECONDS", "0"),
        ("TAGLOOP_UI_MODEL_POLL_SECONDS", "soon"),
        ("TAGLOOP_PROXY_HOPS", "-1"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        UISettings.from_env({name: value})


# --- static files, headers, queue ---------------------------------------------------


def test_index_and_assets_carry_a_strict_csp(upstreams: list[str]) -> None:
    client = client_for(upstreams)
    page = client.get("/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    script = client.get("/static/app.js")
    assert script.status_code == 200
    assert script.mimetype == "text/javascript"  # ES modules need a JavaScript MIME type
    assert "default-src 'self'" in script.headers["Content-Security-Policy"]
    assert client.get("/static/style.css").mimetype == "text/css"


class _Inline(HTMLParser):
    """Collects everything a strict CSP would block or that loads from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.references: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "style" or "style" in attributes:
            self.problems.append(f"inline style on <{tag}>")
        if tag == "script" and not attributes.get("src"):
            self.problems.append("inline <script>")
        self.problems += [f"handler {a} on <{tag}>" for a in attributes if a.startswith("on")]
        self.references += [attributes[a] or "" for a in ("src", "href") if a in attributes]


def test_page_has_no_inline_code_and_only_local_references() -> None:
    parser = _Inline()
    parser.feed((STATIC_DIR / "index.html").read_text())
    assert parser.problems == []
    for reference in parser.references:
        assert reference.startswith(("/static/", "#")), reference
        if reference.startswith("/static/"):
            assert (STATIC_DIR / reference.removeprefix("/static/")).is_file(), reference
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path.name
        if path.suffix == ".js":
            assert not re.search(r"\bimport\s.*from\s+[\"'](?!\./)", text), path.name


def test_queue_pages_through_the_titles(upstreams: list[str]) -> None:
    client = client_for(upstreams)
    first = client.get("/ui/queue?limit=20").get_json()
    assert first["total"] == 45
    assert first["items"][0] == {"index": 0, "title": "title number 0"}
    assert len(first["items"]) == 20
    last = client.get("/ui/queue?offset=40&limit=20").get_json()
    assert [item["index"] for item in last["items"]] == [40, 41, 42, 43, 44]
    assert client.get("/ui/queue?offset=45").get_json()["items"] == []


@pytest.mark.parametrize("query", ["offset=-1", "offset=x", "limit=0", "limit=101", "limit=1e3"])
def test_bad_queue_query_is_a_clear_400(upstreams: list[str], query: str) -> None:
    response = client_for(upstreams).get(f"/ui/queue?{query}")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_query"
    assert query.partition("=")[0] in error["message"]


def test_unknown_paths_and_methods_answer_json_errors(upstreams: list[str]) -> None:
    client = client_for(upstreams)
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    wrong = client.post("/ui/queue")
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


def test_config_carries_the_servers_tag_rules(upstreams: list[str]) -> None:
    config = client_for(upstreams, model_poll_seconds=2.5).get("/ui/config").get_json()
    assert config["model_poll_seconds"] == 2.5
    assert config["queue_size"] == 45
    rules = config["tag_rules"]
    assert rules["aliases"] == ALIASES
    assert rules["max_length"] == MAX_TAG_LENGTH
    assert rules["fold"]["ß"] == "ss"
    assert "\u00a0" in rules["whitespace"]
    assert "_" not in rules["whitespace"]


def test_tag_rules_whitespace_is_what_python_strips() -> None:
    whitespace = tag_rules()["whitespace"]
    assert isinstance(whitespace, str)
    assert (whitespace + "x" + whitespace).strip() == "x"
    assert all(re.fullmatch(r"\s", c) for c in whitespace)


def test_health_and_metrics(upstreams: list[str]) -> None:
    client = client_for(upstreams)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    client.get("/api/echo")
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'tagloop_http_requests_total{endpoint="/api/<path:rest>",method="GET",status="200"}' in text
    )
    assert "tagloop_ui_upstream_attempts_total" in text


# --- the /api proxy ------------------------------------------------------------------


def test_requests_alternate_between_upstreams(upstreams: list[str]) -> None:
    client = client_for(upstreams)
    answered = [client.get("/api/echo").get_json()["upstream"] for _ in range(4)]
    assert sorted(answered) == ["a", "a", "b", "b"]
    assert answered[0] != answered[1]


def test_request_is_forwarded_faithfully(upstreams: list[str]) -> None:
    client = client_for(upstreams[:1])
    response = client.post(
        "/api/echo?x=1&y=%C3%A9",
        data='{"title": "héllo"}',
        headers={
            "Content-Type": "application/json",
            "X-Request-ID": "req-1",
            "X-Forwarded-For": "6.6.6.6",
            "Cookie": "session=secret",
            "Authorization": "Bearer nope",
        },
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    echoed = response.get_json()
    assert echoed["method"] == "POST"
    assert echoed["query"] == "x=1&y=%C3%A9"
    assert echoed["body"] == '{"title": "héllo"}'
    headers = echoed["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] == "req-1"
    assert headers["x-forwarded-for"] == "10.1.2.3"  # the client, never what it claims
    assert "cookie" not in headers
    assert "authorization" not in headers
    assert response.headers["X-Upstream"] == "a"


def test_client_address_is_taken_from_trusted_proxies_only(upstreams: list[str]) -> None:
    client = client_for(upstreams[:1], proxy_hops=1)
    echoed = client.get(
        "/api/echo",
        headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    ).get_json()
    assert echoed["headers"]["x-forwarded-for"] == "203.0.113.9"


def test_upstream_errors_pass_through_unchanged(upstreams: list[str]) -> None:
    response = client_for(upstreams[:1]).post("/api/feedback", json={"title": "t"})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert error_of(response) == {"code": "rate_limited", "message": "slow down"}


def test_a_stopped_upstream_is_skipped(upstreams: list[str]) -> None:
    dead = dead_upstream()
    pool = UpstreamPool([dead, upstreams[0]], timeout_seconds=5)
    app = create_app(settings_for([dead, upstreams[0]]), TITLES, pool=pool)
    client = app.test_client()
    for _ in range(3):
        response = client.post("/api/echo", data="x")
        assert response.status_code == 200
        assert response.get_json()["upstream"] == "a"
    assert pool.order()[-1] == dead  # tried last while it is known to be down
    assert pool.order()[-1] == dead


def test_all_upstreams_down_is_a_503_json_error() -> None:
    response = client_for([dead_upstream(), dead_upstream()]).get("/api/model")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    error = error_of(response)
    assert error["code"] == "upstream_unavailable"
    assert "cannot be reached" in error["message"]


def test_broken_connection_retries_reads_but_never_a_post(
    upstreams: list[str], hang_up: str
) -> None:
    pool = UpstreamPool([hang_up, upstreams[0]], timeout_seconds=5)
    client = create_app(settings_for([hang_up, upstreams[0]]), TITLES, pool=pool).test_client()
    post = client.post("/api/echo", data="once")  # first turn: hang_up first
    assert post.status_code == 502
    assert error_of(post)["code"] == "upstream_failed"
    pool.order()  # skip a turn, so that the next request starts at hang_up again
    get = client.get("/api/echo")
    assert get.status_code == 200
    assert get.get_json()["upstream"] == "a"


def test_slow_upstream_is_a_504(upstreams: list[str]) -> None:
    response = client_for(upstreams[:1], upstream_timeout_seconds=0.3).get("/api/wait")
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"


def test_oversized_body_is_refused_before_forwarding(upstreams: list[str]) -> None:
    response = client_for(upstreams[:1]).post(
        "/api/echo", data=b"x" * (MAX_BODY_BYTES + 1), content_type="application/json"
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_entity_too_large"


# --- under gunicorn, as `tagloop serve ui` ----------------------------------------------


def test_served_by_gunicorn_with_worker_metrics(upstreams: list[str]) -> None:
    with start_ui(upstreams, TAGLOOP_WORKERS="2") as ui:
        session = requests.Session()
        page = session.get(ui.base_url + "/", timeout=5)
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        for _ in range(6):
            assert session.get(ui.base_url + "/api/echo", timeout=5).status_code == 200
        metrics = session.get(ui.base_url + "/metrics", timeout=5).text
        count = re.search(
            r'tagloop_http_requests_total\{endpoint="/api/<path:rest>",method="GET",status="200"\} (\S+)',
            metrics,
        )
        assert count is not None
        assert float(count.group(1)) == 6.0  # summed over both workers


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TAGLOOP_UI_UPSTREAMS": "nonsense"}, "TAGLOOP_UI_UPSTREAMS"),
        ({"TAGLOOP_UNLABELED_DATA": "/nonexistent/unlabeled.tsv"}, "no such file"),
    ],
)
def test_bad_configuration_stops_start_up_with_a_clear_message(
    env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [str(TAGLOOP), "serve", "ui", "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


# --- annotator ids ---------------------------------------------------------------


def annotator_cookie(response) -> str:  # type: ignore[no-untyped-def]
    [header] = [
        h for h in response.headers.getlist("Set-Cookie") if h.startswith("tagloop_annotator=")
    ]
    return header


def test_each_browser_gets_a_signed_httponly_samesite_annotator_cookie(
    upstreams: list[str],
) -> None:
    client = client_for(upstreams[:1])
    first = client.get("/")
    header = annotator_cookie(first)
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    # The browser now sends it: the replica is told this browser's anonymous id, every time.
    seen = {
        client.post("/api/echo", json={}).get_json()["headers"]["x-tagloop-annotator"]
        for _ in range(3)
    }
    [annotator] = seen
    assert re.fullmatch(r"anon:[0-9a-f]{32}", annotator)
    assert "Set-Cookie" not in client.get("/ui/config").headers  # kept, not re-issued
    other = client_for(upstreams[:1])
    other.get("/")
    assert (
        other.post("/api/echo", json={}).get_json()["headers"]["x-tagloop-annotator"] != annotator
    )


def test_forged_or_missing_cookies_count_as_the_client_address(upstreams: list[str]) -> None:
    for cookie in ("tagloop_annotator=deadbeef.forged", ""):
        echoed = (
            client_for(upstreams[:1])
            .post(
                "/api/echo",
                json={},
                headers={"Cookie": cookie, "X-Tagloop-Annotator": "anon:chosen-by-the-client"},
                environ_base={"REMOTE_ADDR": "10.9.8.7"},
            )
            .get_json()
        )
        assert echoed["headers"]["x-tagloop-annotator"] == address_annotator("10.9.8.7")


def test_a_trusted_identity_header_names_the_annotator_where_configured(
    upstreams: list[str],
) -> None:
    header = "X-Goog-Authenticated-User-Email"
    client = client_for(upstreams[:1], identity_header=header)
    echoed = client.post(
        "/api/echo", json={}, headers={header: "accounts.google.com:alice@example.com"}
    ).get_json()
    assert echoed["headers"]["x-tagloop-annotator"] == "user:accounts.google.com:alice@example.com"
    assert "alice" not in str(
        client_for(upstreams[:1])
        .post("/api/echo", json={}, headers={header: "accounts.google.com:alice@example.com"})
        .get_json()["headers"]["x-tagloop-annotator"]
    ), "not trusted unless configured"


def test_the_cookie_secret_is_a_setting() -> None:
    secret = "s" * 32
    settings = UISettings.from_env({"TAGLOOP_UI_ANNOTATOR_SECRET": secret})
    assert settings.annotator_secret == secret.encode()
    with pytest.raises(ConfigError, match="TAGLOOP_UI_ANNOTATOR_SECRET"):
        UISettings.from_env({"TAGLOOP_UI_ANNOTATOR_SECRET": "short"})
    cookies = AnnotatorCookies(secret.encode())
    value = cookies.issue()
    assert cookies.verify(value) == f"anon:{value.split('.')[0]}"
    assert AnnotatorCookies(b"another secret").verify(value) is None
