"""The UI server: settings, static files and security headers, queue, and the /api proxy.

The proxy is exercised against real HTTP servers on free ports: small
contract-shaped upstreams that say who answered, a port nobody listens on, and
a socket that hangs up after reading the request.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from frontend.app import MAX_BODY_BYTES, STATIC_DIR, create_app
from frontend.proxy import ROUTES, UpstreamError, UpstreamPool
from frontend.settings import UISettings
from frontend.tag_rules import tag_rules
from tagloop.domain.tags import ALIASES, MAX_TAG_LENGTH
from tagloop.settings import ConfigError
from tagloop.web.annotators import COOKIE_NAME, AnnotatorCookies, address_annotator
from tagloop.web.forwarding import ProxyChain, parse_networks
from tests.fixtures.pubsub import free_port

TITLES = [f"title number {i}" for i in range(45)]


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
    assert (settings.workers, settings.threads, settings.proxy.hops) == (2, 4, 0)


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
        ("TAGLOOP_UI_LEARNER_URL", "learner:8010"),
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


PAGES = ("/", "/history")


@pytest.mark.parametrize("page", ["index.html", "history.html"])
def test_page_has_no_inline_code_and_only_local_references(page: str) -> None:
    parser = _Inline()
    parser.feed((STATIC_DIR / page).read_text())
    assert parser.problems == []
    for reference in parser.references:
        assert reference.startswith(("/static/", "#")) or reference in PAGES, reference
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


def test_second_opinions_come_from_the_learner_for_this_browsers_annotator(
    upstreams: list[str],
) -> None:
    settings = settings_for(upstreams, learner_url=upstreams[0])
    client = create_app(settings, TITLES).test_client()
    client.get("/")  # the browser gets its anonymous annotator cookie
    cookie = client.get_cookie(COOKIE_NAME)
    assert cookie is not None
    annotator = AnnotatorCookies(settings.annotator_secret).verify(cookie.value)
    assert annotator is not None
    # ?annotator= is not passed on: a browser cannot ask on someone else's behalf.
    answer = client.get("/ui/queue/second-opinions?limit=1&annotator=anon:other")
    assert answer.status_code == 200
    assert answer.get_json() == {"items": [f"for {annotator}"]}


@pytest.mark.parametrize(
    "learner",
    [
        None,  # not configured: the file order
        "dead",  # nobody listens
        "hang_up",  # the connection drops
        "bad_answer",  # the stub's second item is not a title
    ],
)
def test_no_second_opinions_when_the_learner_cannot_say(
    upstreams: list[str], hang_up: str, learner: str | None
) -> None:
    url = {"dead": dead_upstream(), "hang_up": hang_up, "bad_answer": upstreams[0]}
    client = client_for(upstreams, learner_url=url.get(learner or ""))
    answer = client.get("/ui/queue/second-opinions?limit=2")
    assert answer.status_code == 200
    assert answer.get_json() == {"items": []}


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
    client.get("/api/tags")
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'tagloop_http_requests_total{endpoint="/api/<path:rest>",method="GET",status="200"}' in text
    )
    assert "tagloop_ui_upstream_attempts_total" in text


# --- the /api proxy ------------------------------------------------------------------


def test_requests_alternate_between_upstreams(upstreams: list[str]) -> None:
    client = client_for(upstreams)
    answered = [client.get("/api/tags").get_json()["upstream"] for _ in range(4)]
    assert sorted(answered) == ["a", "a", "b", "b"]
    assert answered[0] != answered[1]


def test_request_is_forwarded_faithfully(upstreams: list[str]) -> None:
    client = client_for(upstreams[:1])
    response = client.post(
        "/api/predict?x=1&y=%C3%A9",
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
    client = client_for(upstreams[:1], proxy=ProxyChain(1, 1, parse_networks("n", "10.0.0.0/8")))
    echoed = client.get(
        "/api/tags",
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
        response = client.post("/api/predict", data="x")
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


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/api/feedback", 502), ("POST", "/api/predict", 200), ("GET", "/api/tags", 200)],
)
def test_broken_connection_repeats_reads_and_predictions_but_never_feedback(
    upstreams: list[str], hang_up: str, method: str, path: str, status: int
) -> None:
    """Issue 11, reproduction 11: a prediction in flight on a dead replica is sent once more."""
    pool = UpstreamPool([hang_up, upstreams[0]], timeout_seconds=5)  # first turn: hang_up
    client = create_app(settings_for([hang_up, upstreams[0]]), TITLES, pool=pool).test_client()
    response = client.open(path, method=method, data="{}", content_type="application/json")
    assert response.status_code == status
    if status == 502:
        assert error_of(response)["code"] == "upstream_failed"
    else:
        assert response.get_json()["upstream"] == "a"


def test_a_repeatable_request_is_sent_at_most_twice(hang_up: str) -> None:
    attempts: list[str] = []
    pool = UpstreamPool(
        [hang_up, hang_up + "/x", hang_up + "/y"],
        timeout_seconds=5,
        on_attempt=lambda upstream, outcome: attempts.append(outcome),
    )
    with pytest.raises(UpstreamError) as failed:
        pool.forward(pool.prepare("POST", "/api/predict", b"{}", {}, {}))
    assert failed.value.status == 502
    assert attempts == ["broken", "broken"]


def test_slow_upstream_is_a_504(upstreams: list[str]) -> None:
    response = client_for(upstreams[:1], upstream_timeout_seconds=0.3).get("/api/model")
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"


def test_oversized_body_is_refused_before_forwarding(upstreams: list[str]) -> None:
    response = client_for(upstreams[:1]).post(
        "/api/predict", data=b"x" * (MAX_BODY_BYTES + 1), content_type="application/json"
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_entity_too_large"


# --- the edge: only the API's own routes, no redirects, HSTS over TLS ---------------------


def test_proxied_routes_are_exactly_the_inference_api() -> None:
    spec = json.loads(
        (Path(__file__).parents[2] / "inference_service" / "openapi.json").read_text()
    )
    documented = {
        path: {method.upper() for method in operations}
        for path, operations in spec["paths"].items()
        if path.startswith("/api/")
    }
    assert {path: set(methods) - {"HEAD"} for path, methods in ROUTES.items()} == documented


@pytest.mark.parametrize(
    "path",
    [
        "/api/..%2fmetrics",
        "/api/..%2Fmetrics",
        "/api/%2e%2e/metrics",
        "/api/../metrics",
        "/api//model",
        "/api/model/",
        "/api/%6dodel",
        "/api/echo",
        "/api/tags/../model",
    ],
)
def test_only_exact_api_routes_are_forwarded(upstreams: list[str], path: str) -> None:
    """Issue 11, reproduction 8: nothing but the public API is reachable through the UI."""
    response = client_for(upstreams[:1]).get(path, headers={"Host": "evil.example"})
    assert response.status_code == 404, path
    assert "Location" not in response.headers
    assert error_of(response)["code"] == "not_found"


def test_a_known_route_with_another_method_is_405(upstreams: list[str]) -> None:
    response = client_for(upstreams[:1]).delete("/api/model")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


def test_hsts_only_over_tls(upstreams: list[str]) -> None:
    plain = client_for(upstreams[:1]).get("/")
    assert "Strict-Transport-Security" not in plain.headers
    direct = client_for(upstreams[:1]).get("/", base_url="https://ui.example")
    assert direct.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    proxied = client_for(
        upstreams[:1], proxy=ProxyChain(1, 1, parse_networks("n", "10.0.0.0/8"))
    ).get(
        "/api/tags",
        headers={"X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert "max-age=31536000" in proxied.headers["Strict-Transport-Security"]
    untrusted = client_for(
        upstreams[:1], proxy=ProxyChain(1, 1, parse_networks("n", "10.0.0.0/8"))
    ).get("/", headers={"X-Forwarded-Proto": "https"}, environ_base={"REMOTE_ADDR": "203.0.113.5"})
    assert "Strict-Transport-Security" not in untrusted.headers


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("35.191.1.1", "198.51.100.7, 34.120.0.9", "198.51.100.7"),  # GCLB: "<client>, <lb>"
        ("35.191.1.1", "6.6.6.6, 198.51.100.7, 34.120.0.9", "198.51.100.7"),  # spoof prepended
        ("203.0.113.5", "6.6.6.6, 198.51.100.7, 34.120.0.9", "203.0.113.5"),  # untrusted peer
    ],
)
def test_behind_googles_load_balancer_the_client_is_the_second_entry_from_the_right(
    upstreams: list[str], peer: str, forwarded_for: str, client: str
) -> None:
    """Issue 14, item 2: one hop that appends two addresses (TAGLOOP_PROXY_FORWARDED_FOR_ENTRIES=2)."""
    settings = UISettings.from_env(
        {
            "TAGLOOP_UI_UPSTREAMS": upstreams[0],
            "TAGLOOP_PROXY_HOPS": "1",
            "TAGLOOP_PROXY_FORWARDED_FOR_ENTRIES": "2",
            "TAGLOOP_TRUSTED_PROXY_NETWORKS": "35.191.0.0/16, 130.211.0.0/22",
        }
    )
    echoed = (
        create_app(settings, TITLES)
        .test_client()
        .get(
            "/api/tags",
            headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"},
            environ_base={"REMOTE_ADDR": peer},
        )
        .get_json()
    )
    assert echoed["headers"]["x-forwarded-for"] == client


def test_bad_trusted_networks_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="TAGLOOP_TRUSTED_PROXY_NETWORKS"):
        UISettings.from_env({"TAGLOOP_TRUSTED_PROXY_NETWORKS": "10.0.0.0/8, nonsense"})


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
    seen = {client.get("/api/tags").get_json()["headers"]["x-tagloop-annotator"] for _ in range(3)}
    [annotator] = seen
    assert re.fullmatch(r"anon:[0-9a-f]{32}", annotator)
    assert "Set-Cookie" not in client.get("/ui/config").headers  # kept, not re-issued
    other = client_for(upstreams[:1])
    other.get("/")
    assert other.get("/api/tags").get_json()["headers"]["x-tagloop-annotator"] != annotator


def test_forged_or_missing_cookies_count_as_the_client_address(upstreams: list[str]) -> None:
    for cookie in ("tagloop_annotator=deadbeef.forged", ""):
        echoed = (
            client_for(upstreams[:1])
            .get(
                "/api/tags",
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
    echoed = client.get(
        "/api/tags", headers={header: "accounts.google.com:alice@example.com"}
    ).get_json()
    assert echoed["headers"]["x-tagloop-annotator"] == "user:accounts.google.com:alice@example.com"
    assert "alice" not in str(
        client_for(upstreams[:1])
        .get("/api/tags", headers={header: "accounts.google.com:alice@example.com"})
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


# --- under gunicorn, as `tagloop serve ui` ----------------------------------------------
