"""The UI proxy's HTTP/1.1 client against a real socket that answers canned bytes.

The replicas answer with Content-Length; the other framings, a closed
kept-alive connection and broken answers are what a misbehaving or restarting
upstream sends, and must end as a clean answer or an OSError, never a hang.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frontend.http1 import AnswerParser, ConnectFailed, RawAnswer, ResponseBroken, Upstream
from tagloop_dev.processes import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class CannedServer:
    """Accepts connections; answers each request (one recv) with the next canned bytes."""

    def __init__(self, answers: list[bytes], close_after: bool = False) -> None:
        self.answers = list(answers)
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_one = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/prefix/"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.answers and (request := conn.recv(65536)):
                    self.requests.append(request)
                    conn.sendall(self.answers.pop(0))
                    if self.close_after:
                        break
            self.closed_one.set()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def canned() -> Iterator[list[CannedServer]]:
    servers: list[CannedServer] = []
    yield servers
    for server in servers:
        server.close()


def upstream(server: CannedServer, read_timeout: float = 5.0) -> Upstream:
    return Upstream(server.url, 2.0, read_timeout, pool_size=2)


def start(canned: list[CannedServer], answers: list[bytes], close_after: bool = False) -> Upstream:
    server = CannedServer(answers, close_after)
    canned.append(server)
    return upstream(server)


def test_keep_alive_reuses_one_connection_and_sends_one_request(
    canned: list[CannedServer],
) -> None:
    client = start(canned, [OK, OK])
    for _ in range(2):
        answer = client.request("POST", "/api/predict", b'{"a":1}', [("X-Request-ID", "r1")])
        assert (answer.status, answer.body) == (200, b"{}")
        assert ("Content-Type", "application/json") in answer.headers
    server = canned[0]
    assert server.connections == 1
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /prefix/api/predict HTTP/1.1"
    assert b"Content-Length: 7" in head and b"X-Request-ID: r1" in head
    assert body == b'{"a":1}'


def test_a_closed_kept_alive_connection_is_replaced(canned: list[CannedServer]) -> None:
    client = start(canned, [OK, OK], close_after=True)
    assert client.request("GET", "/api/tags", b"", []).status == 200
    assert canned[0].closed_one.wait(5)
    # The server closed it after answering: the idle socket is readable (EOF) and dropped.
    assert client.request("GET", "/api/tags", b"", []).status == 200
    assert canned[0].connections == 2


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", b"{}"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil-close", b"until-close"),
    ],
)
def test_other_framings(canned: list[CannedServer], answer: bytes, body: bytes) -> None:
    client = start(canned, [answer], close_after=True)
    assert client.request("GET", "/api/model", b"", []).body == body


def test_head_has_no_body_despite_content_length(canned: list[CannedServer]) -> None:
    client = start(canned, [b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", OK])
    assert client.request("HEAD", "/api/model", b"", []).body == b""
    assert client.request("GET", "/api/model", b"", []).body == b"{}"  # framing intact


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70_000,
    ],
)
def test_broken_answers_are_response_broken(canned: list[CannedServer], answer: bytes) -> None:
    client = start(canned, [answer], close_after=True)
    with pytest.raises(ResponseBroken):
        client.request("GET", "/api/model", b"", [])


def test_refused_connection_is_connect_failed() -> None:
    client = Upstream(f"http://127.0.0.1:{free_port()}", 2.0, 5.0, pool_size=2)
    with pytest.raises(ConnectFailed):
        client.request("GET", "/api/model", b"", [])


def test_silent_upstream_is_a_timeout(canned: list[CannedServer]) -> None:
    server = CannedServer([])  # accepts (listen backlog), never answers
    canned.append(server)
    with pytest.raises(TimeoutError):
        upstream(server, read_timeout=0.2).request("GET", "/api/model", b"", [])


FRAMINGS = [
    OK,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=1\r\n{}\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nuntil-close",
    b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
]


def parse_in_pieces(data: bytes, cuts: list[int], head_only: bool = False) -> RawAnswer:
    """What the parser makes of `data` arriving in pieces cut at `cuts`, then the close."""
    parser = AnswerParser(head_only)
    edges = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    for start, stop in itertools.pairwise(edges):
        if (answer := parser.feed(data[start:stop])) is not None:
            return answer
    return parser.end()


@given(
    answer=st.sampled_from(FRAMINGS),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_answers_parse_alike_however_the_bytes_arrive(answer: bytes, cuts: list[int]) -> None:
    assert parse_in_pieces(answer, cuts) == parse_in_pieces(answer, [])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            OK,
            RawAnswer(
                200, [("Content-Type", "application/json"), ("Content-Length", "2")], b"{}", True
            ),
        ),
        (FRAMINGS[1], RawAnswer(200, [("Transfer-Encoding", "chunked")], b"{}!", True)),
        (FRAMINGS[2], RawAnswer(204, [("X-A", "b")], b"", True)),
        (FRAMINGS[3], RawAnswer(200, [], b"until-close", False)),
        (
            FRAMINGS[4],
            RawAnswer(503, [("Connection", "close"), ("Content-Length", "3")], b"bye", False),
        ),
    ],
)
def test_parsed_answers(answer: bytes, expected: RawAnswer) -> None:
    assert parse_in_pieces(answer, []) == expected


def test_bytes_past_the_answer_stay_in_the_buffer() -> None:
    parser = AnswerParser(head_only=False)
    assert parser.feed(OK + b"HTTP/1.1 2") is not None
    assert parser.buffer == b"HTTP/1.1 2"


@pytest.mark.parametrize("cut", [0, 5, len(OK) - 1])
def test_a_close_before_the_answer_is_complete_is_response_broken(cut: int) -> None:
    parser = AnswerParser(head_only=False)
    assert parser.feed(OK[:cut]) is None
    with pytest.raises(ResponseBroken):
        parser.end()
