"""`POST /api/predict`: validation, the answer, and the plain WSGI route that serves it.

The answer is built once here for both ways in: the Flask view (app.py) and
`PredictRoute`, a WSGI handler placed between the app's middleware and Flask
(issue 19). The route answers the common request itself (JSON body of declared
length within the limit) without Flask's request context, routing, `Request`
and `Response` objects, which cost more per request than the prediction;
every other request to the path (another content type, no or too large a
`Content-Length`, a chunked body, another method) goes on to Flask unchanged.
The middleware around both (trusted proxies, metrics, CORS, security headers)
is the same, so headers and metrics cannot differ; status lines, bodies and
headers of the route's own answers are those of the view
(tests/unit/test_predict_route.py sends both the same requests).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import parse_options_header

from inference_service import drift, metrics, rollout
from inference_service.config import MAX_BATCH, MAX_BODY_BYTES
from inference_service.model_holder import LoadedModel, ModelHolder
from tagloop.domain.messages import InvalidMessage, validate_title
from tagloop.domain.model import Prediction
from tagloop.web.api import (
    ApiError,
    declared_length,
    error_body,
    http_error,
    json_object,
    status_line,
    unexpected_error,
)
from tagloop.web.httpmetrics import ROUTE_KEY

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PATH = "/api/predict"
CANDIDATES = 5
"""Next-best tags returned beside the chosen ones, for the UI's suggestions."""
MODEL_VERSION_HEADER = "X-Model-Version"
JSON = "application/json"


def serving(holder: ModelHolder) -> LoadedModel:
    """The served model, read once (a swap cannot change it under a request), or a 503."""
    loaded = holder.current
    if loaded is None:
        raise ApiError(503, "model_not_loaded", "no model loaded yet; retry shortly")
    return loaded


def answer(holder: ModelHolder, body: dict[str, Any]) -> tuple[str, str]:
    """The JSON answer to a predict body, and its `X-Model-Version` header value.

    The header names the model that answered (every one, in a batch split by a
    canary), so clients and proxies can attribute a prediction without parsing
    the body.
    """
    titles, single = _titles(body)
    served = serving(holder)
    predictions, versions = rollout.predict(served, holder.candidate, titles, CANDIDATES)
    # Drift is measured against the served model's vocabulary and training mix.
    drift.MONITOR.observe(served, predictions)
    results = [_result(*one) for one in zip(titles, predictions, versions, strict=True)]
    text = results[0] if single else '{"predictions": [' + ", ".join(results) + "]}"
    return text, ", ".join(dict.fromkeys(versions))


def _titles(body: dict[str, Any]) -> tuple[list[str], bool]:
    """The validated titles of a predict body, and whether it was the single-title form."""
    if ("title" in body) == ("titles" in body):
        raise ApiError(422, "missing_title", 'send exactly one of "title" or "titles"')
    if "title" in body:
        return [_valid_title(body["title"])], True
    titles = body["titles"]
    if not isinstance(titles, list):
        raise ApiError(422, "wrong_type", "titles must be a list of strings")
    if not titles:
        raise ApiError(422, "empty_batch", "titles is empty")
    if len(titles) > MAX_BATCH:
        raise ApiError(422, "batch_too_large", f"at most {MAX_BATCH} titles per request")
    return [_valid_title(title, f"titles[{i}]") for i, title in enumerate(titles)], False


def _valid_title(title: Any, where: str | None = None) -> str:
    try:
        return validate_title(title)
    except InvalidMessage as error:
        message = f"{where}: {error.detail}" if where else error.detail
        raise ApiError(422, error.reason, message) from None


def _result(title: str, prediction: Prediction, version: str) -> str:
    """Chosen tags with their scores best first, then the best of the rest as candidates:
    the JSON text `json.dumps` gives the object `{"title", "tags": [{"tag", "score"}, ...],
    "model_version", "candidates": [...]}`, written directly (issue 19: building the dicts
    and encoding them cost more than the text). Tag names and versions are few and encoded
    once; scores are finite floats (rounded by `round`, which refuses NaN and infinities),
    which JSON writes as their `repr`. tests/unit/test_predict_route.py holds this to
    `json.dumps`."""
    chosen = len(prediction.tags)
    ranked = prediction.scores
    metrics.observe_tags_per_prediction(chosen)
    return (
        f'{{"title": {json.dumps(title)}, "tags": [{_scored(ranked[:chosen])}], '
        f'"model_version": {_json_string(version)}, '
        f'"candidates": [{_scored(ranked[chosen : chosen + CANDIDATES])}]}}'
    )


def _scored(ranked: list[tuple[str, float]]) -> str:
    return ", ".join(
        [f'{{"tag": {_json_string(tag)}, "score": {score!r}}}' for tag, score in ranked]
    )


@functools.lru_cache(maxsize=4096)
def _json_string(text: str) -> str:
    """A tag name or model version as JSON (a model has ~100 tags; a replica 1-2 versions)."""
    return json.dumps(text)


@functools.lru_cache(maxsize=64)
def _mimetype(content_type: str) -> str:
    """As werkzeug's `Request.mimetype` (a client sends the same few values again and again)."""
    return parse_options_header(content_type)[0].lower()


def _read_body(environ: WSGIEnvironment, length: int) -> bytes:
    """The body as werkzeug's `get_data` reads it, without its stream wrapper: from a server
    that ends the stream itself (gunicorn: `wsgi.input_terminated`) up to its end within
    the limit, else the declared length; a stream that fails, or ends before the declared
    length, is a client that went away."""
    terminated = "wsgi.input_terminated" in environ
    try:
        data: bytes = environ["wsgi.input"].read(MAX_BODY_BYTES if terminated else length)
    except (OSError, ValueError):
        raise http_error(ClientDisconnected()) from None
    if len(data) < length and not terminated:
        raise http_error(ClientDisconnected())
    return data


class PredictRoute:
    """WSGI: `POST /api/predict` with a JSON body of declared length answered here, all else
    by `app` (module docstring)."""

    def __init__(self, app: WSGIApplication, holder: ModelHolder) -> None:
        self.app = app
        self.holder = holder

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        length = declared_length(environ, MAX_BODY_BYTES)
        if length is None or _mimetype(environ.get("CONTENT_TYPE", "")) != JSON:
            return self.app(environ, start_response)
        environ[ROUTE_KEY] = PATH
        try:
            text, versions = answer(self.holder, json_object(_read_body(environ, length)))
        except ApiError as error:
            return _error(start_response, error)
        except Exception:
            return _error(start_response, unexpected_error("POST", PATH))
        body = text.encode()
        start_response(
            "200 OK",
            [
                (MODEL_VERSION_HEADER, versions),
                ("Content-Type", JSON),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]


def _error(start_response: StartResponse, error: ApiError) -> list[bytes]:
    """The answer `tagloop.web.api.error_response` gives, headers in the same order."""
    body = error_body(error.code, error.message).encode()
    start_response(
        status_line(error.status),
        [("Content-Type", JSON), ("Content-Length", str(len(body))), *error.headers.items()],
    )
    return [body]
