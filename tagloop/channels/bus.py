"""The message bus: Google Cloud Pub/Sub through the official google-cloud-pubsub client.

The same code talks to the real service and, when `PUBSUB_EMULATOR_HOST` is
set, to the local emulator (the client library switches by itself). gRPC
channels do not survive `fork()`, so the clients are created lazily in the
process that first uses them (and again after a fork), never at import time.

Consumers parse payloads with `parse_or_reject`: a malformed message is
logged, written to a reject log and reported by its reason, and the consumer
acks it anyway, so a poison message is never redelivered forever. The reject
log is bounded (a size cap with rotation, each entry's copy of the payload
capped), so no publisher can fill the disk through it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.futures import StreamingPullFuture
from google.cloud.pubsub_v1.subscriber.message import Message

from tagloop.domain.messages import InvalidMessage, utc_now

log = logging.getLogger(__name__)

T = TypeVar("T")

ACK_BATCH = 2500  # ack ids per Acknowledge request, as the client library batches them
MAX_NAME = 255
_NAME_CHARS = re.compile(r"[^A-Za-z0-9\-_.~+%]")
REJECT_PREVIEW_CHARS = 500
REJECT_DATA_BYTES = 64 * 1024
"""Payload bytes kept per reject entry (the feedback contract's size limit); the rest is
summarised by its length and sha256."""
REJECT_ATTRIBUTE_CHARS = 256
REJECT_ATTRIBUTES = 32
DEFAULT_REJECT_LOG_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_REJECT_LOG_BACKUPS = 3


class PublishError(RuntimeError):
    """The server did not confirm a publish (error or timeout); the message may be lost."""


class Payload(Protocol):
    """Anything that serialises itself as a Pub/Sub message (`Feedback`, `ModelUpdate`)."""

    def to_message(self) -> tuple[bytes, dict[str, str]]: ...


@dataclass(frozen=True)
class Received:
    """A delivered message, independent of the pull style that fetched it."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime
    delivery_attempt: int | None


def unique_subscription_name(prefix: str) -> str:
    """A subscription id no other process uses: prefix, host name, pid and a random part.

    Each inference replica owns one such subscription on the broadcast topic,
    so that every replica hears every model update.
    """
    suffix = f"-{os.getpid()}-{secrets.token_hex(4)}"
    host = _NAME_CHARS.sub("-", socket.gethostname())
    base = _NAME_CHARS.sub("-", f"{prefix}-{host}")
    return base[: MAX_NAME - len(suffix)] + suffix


class Bus:
    """Topics, subscriptions, publishing and pulling for one Google Cloud project."""

    def __init__(self, project_id: str) -> None:
        self.project_id = project_id
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._publisher: pubsub_v1.PublisherClient | None = None
        self._subscriber: pubsub_v1.SubscriberClient | None = None

    # -- clients, per process ------------------------------------------------------

    def _clients(self) -> tuple[pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]:
        with self._lock:
            if self._pid != os.getpid() or self._publisher is None or self._subscriber is None:
                # A fork inherits the parent's clients, whose channels are unusable here:
                # drop them without closing (closing would disturb the parent).
                self._publisher = pubsub_v1.PublisherClient()
                self._subscriber = pubsub_v1.SubscriberClient()
                self._pid = os.getpid()
            return self._publisher, self._subscriber

    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        return self._clients()[0]

    @property
    def subscriber(self) -> pubsub_v1.SubscriberClient:
        return self._clients()[1]

    def topic_path(self, topic: str) -> str:
        return (
            topic if topic.startswith("projects/") else f"projects/{self.project_id}/topics/{topic}"
        )

    def subscription_path(self, subscription: str) -> str:
        if subscription.startswith("projects/"):
            return subscription
        return f"projects/{self.project_id}/subscriptions/{subscription}"

    # -- administration -----------------------------------------------------------

    def ensure_topic(self, topic: str, timeout: float | None = None) -> str:
        """Create the topic unless it exists; returns its path."""
        path = self.topic_path(topic)
        try:
            self.publisher.create_topic(name=path, **_deadline(timeout))
            log.info("created topic %s", path)
        except gexc.AlreadyExists:
            pass
        return path

    def ensure_subscription(
        self,
        topic: str,
        subscription: str,
        ack_deadline_seconds: int = 60,
        expiration_ttl_seconds: int | None = None,
        timeout: float | None = None,
    ) -> str:
        """Create the subscription unless it exists; returns its path.

        `expiration_ttl_seconds` lets Pub/Sub delete the subscription after that
        much inactivity (per-replica subscriptions whose owner died uncleanly).
        An existing subscription on another topic is a configuration error.
        """
        topic_path, path = self.topic_path(topic), self.subscription_path(subscription)
        request: dict[str, Any] = {
            "name": path,
            "topic": topic_path,
            "ack_deadline_seconds": ack_deadline_seconds,
        }
        if expiration_ttl_seconds is not None:
            request["expiration_policy"] = {"ttl": timedelta(seconds=expiration_ttl_seconds)}
        try:
            self.subscriber.create_subscription(request=request, **_deadline(timeout))
            log.info("created subscription %s on %s", path, topic_path)
        except gexc.AlreadyExists:
            existing = self.subscriber.get_subscription(
                subscription=path, **_deadline(timeout)
            ).topic
            if existing != topic_path:
                raise ValueError(
                    f"subscription {path} exists on {existing}, not on {topic_path}"
                ) from None
        return path

    def subscription_topic(self, subscription: str, timeout: float | None = None) -> str:
        """The topic path an existing subscription is attached to (NotFound if none)."""
        path = self.subscription_path(subscription)
        return str(self.subscriber.get_subscription(subscription=path, **_deadline(timeout)).topic)

    def delete_subscription(self, subscription: str, timeout: float | None = None) -> None:
        """Delete the subscription; already gone is fine (clean shutdown is idempotent)."""
        path = self.subscription_path(subscription)
        try:
            self.subscriber.delete_subscription(subscription=path, **_deadline(timeout))
            log.info("deleted subscription %s", path)
        except gexc.NotFound:
            pass

    # -- publishing ---------------------------------------------------------------

    def publish(self, topic: str, message: Payload, timeout: float = 10.0) -> str:
        """Publish and wait until the server assigned a message id, which is returned."""
        data, attributes = message.to_message()
        path = self.topic_path(topic)
        try:
            message_id: str = self.publisher.publish(path, data, **attributes).result(timeout)
            return message_id
        except TimeoutError as error:
            raise PublishError(f"publishing to {path} timed out after {timeout}s") from error
        except gexc.GoogleAPIError as error:
            raise PublishError(f"publishing to {path} failed: {error}") from error

    # -- consuming -------------------------------------------------------------------

    def pull(
        self, subscription: str, max_messages: int = 500, timeout: float = 5.0
    ) -> list[Received]:
        """Synchronous batch pull: what arrives within `timeout` (maybe nothing)."""
        request = {
            "subscription": self.subscription_path(subscription),
            "max_messages": max_messages,
        }
        try:
            # No client-side retry: it would keep an unreachable server's pull going
            # for 60 s whatever `timeout` says; the caller decides how to back off.
            response = self.subscriber.pull(request=request, timeout=timeout, retry=None)
        except gexc.DeadlineExceeded:
            return []
        return [
            Received(
                ack_id=item.ack_id,
                message_id=item.message.message_id,
                data=item.message.data,
                attributes=dict(item.message.attributes),
                publish_time=item.message.publish_time.ToDatetime(tzinfo=UTC),
                delivery_attempt=item.delivery_attempt or None,
            )
            for item in response._pb.received_messages
        ]

    def ack(self, subscription: str, ack_ids: list[str]) -> None:
        path = self.subscription_path(subscription)
        for start in range(0, len(ack_ids), ACK_BATCH):
            batch = ack_ids[start : start + ACK_BATCH]
            self.subscriber.acknowledge(request={"subscription": path, "ack_ids": batch})

    def subscribe(
        self,
        subscription: str,
        callback: Callable[[Received], None],
        max_messages: int = 1000,
    ) -> StreamingPullFuture:
        """Streaming pull in background threads: the callback returning acks, raising nacks.

        `max_messages` bounds the messages in flight (client-side flow control).
        Cancel the returned future to stop; its result() waits for the shutdown.
        """

        def deliver(message: Message) -> None:
            received = Received(
                ack_id=message.ack_id,
                message_id=message.message_id,
                data=message.data,
                attributes=dict(message.attributes),
                publish_time=message.publish_time,
                delivery_attempt=message.delivery_attempt,
            )
            try:
                callback(received)
            except Exception:
                log.exception(
                    "handling message %s failed; nacked for redelivery", message.message_id
                )
                message.nack()
            else:
                message.ack()

        return self.subscriber.subscribe(
            self.subscription_path(subscription),
            deliver,
            flow_control=pubsub_v1.types.FlowControl(max_messages=max_messages),
        )

    def close(self) -> None:
        """Flush pending publishes and close this process's channels."""
        with self._lock:
            if self._pid == os.getpid():
                if self._publisher is not None:
                    self._publisher.stop()
                    self._publisher.transport.close()
                if self._subscriber is not None:
                    self._subscriber.close()
            self._publisher = self._subscriber = None
            self._pid = None


def _deadline(timeout: float | None) -> dict[str, Any]:
    """An overall deadline for an admin call: one attempt bounded by `timeout`.

    A bare `timeout` only bounds each attempt: the client's default retry
    keeps retrying UNAVAILABLE for up to 60 s (subscriber) or 600 s
    (publisher), too long for a start-up or shutdown path while Pub/Sub is
    unreachable. Callers with a deadline retry on their own terms.
    """
    return {} if timeout is None else {"timeout": timeout, "retry": None}


class RejectLog:
    """Bounded JSON-lines file of rejected messages, for inspection and replay.

    When an entry would take the file past `max_bytes` it is rotated like a
    log (`path` -> `path.1` -> ... -> `path.<backups>`, the oldest dropped),
    so the log never holds more than about `(backups + 1) * max_bytes`.
    `path=None` keeps only the log line. Thread-safe: streaming-pull
    callbacks run in a thread pool.
    """

    def __init__(
        self,
        path: Path | None,
        max_bytes: int = DEFAULT_REJECT_LOG_MAX_BYTES,
        backups: int = DEFAULT_REJECT_LOG_BACKUPS,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._size = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._size = path.stat().st_size if path.exists() else 0

    @staticmethod
    def entry(received: Received, error: InvalidMessage) -> dict[str, Any]:
        """What is kept of a rejected message: bounded, whatever the publisher sent."""
        data = received.data
        attributes = dict(list(received.attributes.items())[:REJECT_ATTRIBUTES])
        return {
            "rejected_at": utc_now(),
            "reason": error.reason,
            "detail": error.detail[:REJECT_PREVIEW_CHARS],
            "message_id": received.message_id,
            "publish_time": received.publish_time.isoformat(),
            "delivery_attempt": received.delivery_attempt,
            "attributes": {
                key[:REJECT_ATTRIBUTE_CHARS]: value[:REJECT_ATTRIBUTE_CHARS]
                for key, value in attributes.items()
            },
            "data_bytes": len(data),
            "data_sha256": hashlib.sha256(data).hexdigest(),
            "data_preview": data[:REJECT_PREVIEW_CHARS].decode("utf-8", "replace"),
            "data_base64": base64.b64encode(data[:REJECT_DATA_BYTES]).decode("ascii"),
            "data_truncated": len(data) > REJECT_DATA_BYTES,
        }

    def record(self, received: Received, error: InvalidMessage) -> None:
        if self.path is None:
            return
        line = (json.dumps(self.entry(received, error), ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate(self.path)
            try:
                with self.path.open("ab") as file:
                    file.write(line)
            except OSError as failure:  # the log line above still names the message
                log.error("cannot write the reject log %s: %s", self.path, failure)
                return
            self._size += len(line)

    def _rotate(self, path: Path) -> None:
        for number in range(self.backups, 0, -1):
            older = path.with_name(f"{path.name}.{number}")
            newer = path.with_name(f"{path.name}.{number - 1}") if number > 1 else path
            if newer.exists():
                os.replace(newer, older)
        if path.exists():  # backups == 0: nothing is kept
            path.unlink()
        self._size = 0
        log.info("rotated the reject log %s", path, extra={"reject_log": str(path)})


def parse_or_reject(
    received: Received,
    parser: Callable[[bytes, dict[str, str]], T],
    rejects: RejectLog | None = None,
) -> tuple[T | None, str | None]:
    """Parse a payload, e.g. with `tagloop.domain.messages.parse_feedback`.

    Returns `(value, None)`, or `(None, reason)` for a malformed message after
    logging it and appending it to `rejects`. Either way the caller acks the
    message (returning from a `Bus.subscribe` callback does): a malformed
    payload stays malformed, so redelivering it would only loop. The caller
    counts the reason in its own metrics.
    """
    try:
        return parser(received.data, received.attributes), None
    except Exception as caught:
        # Anything else a parser raises is still about this one message: a payload
        # that breaks the parser must not hold up, or be redelivered with, the rest.
        error = (
            caught
            if isinstance(caught, InvalidMessage)
            else InvalidMessage("unparseable", f"{type(caught).__name__}: {caught}")
        )
        log.warning(
            "rejected message %s: %s",
            received.message_id,
            error,
            exc_info=not isinstance(caught, InvalidMessage),
            extra={"message_id": received.message_id, "reason": error.reason},
        )
        if rejects is not None:
            rejects.record(received, error)
        return None, error.reason
