"""The broker's in-memory state: stored messages, leases, streams, subscriptions, topics.

Plain data holders with the few operations that only touch themselves; the
delivery rules that tie them together live in `broker`. Everything here runs
on the event-loop thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from google.pubsub_v1 import types

from tagloop_dev.emulator.filters import Predicate
from tagloop_dev.emulator.limits import Backoff, BrokerError, DeadLetter, Pb, seconds

PubsubMessage: Any = types.PubsubMessage.pb()
Topic: Any = types.Topic.pb()
Subscription: Any = types.Subscription.pb()
SnapshotPb: Any = types.Snapshot.pb()

MAX_BATCH_MESSAGES = 1000  # per Pull / StreamingPull response
MAX_BATCH_BYTES = 4 * 1024 * 1024


class Stored:
    """A published message, shared by every subscription it was fanned out to."""

    __slots__ = ("message", "refs", "size")

    def __init__(self, message: Pb, size: int, refs: int) -> None:
        self.message = message
        self.size = size
        self.refs = refs  # subscriptions that still hold it unacknowledged (persisted holds)


class Lease:
    """Delivery state of one message in one subscription (from its first delivery)."""

    __slots__ = ("attempt", "deadline", "delayed", "stream")

    def __init__(self) -> None:
        self.attempt = 0
        self.deadline: float | None = None  # None: not leased, waiting to be delivered
        self.stream: Stream | None = None  # the flow-control window it counts against
        self.delayed = False  # backing off (retry policy) before its next delivery


class Stream:
    """One StreamingPull connection: its flow-control window and wake-up event."""

    __slots__ = (
        "ack_deadline",
        "closed",
        "max_bytes",
        "max_messages",
        "outstanding",
        "outstanding_bytes",
        "subscription",
        "wake",
    )

    def __init__(self, subscription: Sub, max_messages: int, max_bytes: int, deadline: int) -> None:
        self.subscription = subscription
        self.max_messages = max_messages  # 0 = unlimited
        self.max_bytes = max_bytes
        self.ack_deadline = deadline
        self.outstanding = 0
        self.outstanding_bytes = 0
        self.wake = asyncio.Event()
        self.closed: BrokerError | None = None  # why the server ends the stream (OK: client left)

    def end(self, reason: BrokerError) -> None:
        """Make the stream's handler finish with `reason` (first reason wins)."""
        if self.closed is None:
            self.closed = reason
        self.wake.set()

    def room(self) -> tuple[int, int]:
        """How many messages and bytes may still be sent before acks come back."""
        count = MAX_BATCH_MESSAGES
        if self.max_messages:
            count = min(count, self.max_messages - self.outstanding)
        size = MAX_BATCH_BYTES
        if self.max_bytes:
            size = min(size, self.max_bytes - self.outstanding_bytes)
        return count, size


@dataclass(frozen=True)
class Policies:
    """What a subscription's config means for delivery, validated once per create/update."""

    ttl: float | None = None
    predicate: Predicate | None = None
    dead_letter: DeadLetter | None = None
    backoff: Backoff | None = None


class Sub:
    """A subscription: its config, its unacknowledged messages and its consumers."""

    __slots__ = (
        "deleted",
        "epoch",
        "held",
        "holds",
        "last_active",
        "leases",
        "name",
        "pb",
        "pending",
        "policies",
        "pull_event",
        "ready",
        "retained",
        "streams",
    )

    def __init__(self, pb: Pb, policies: Policies) -> None:
        self.name = pb.name
        self.pb = pb
        self.policies = policies
        self.pending: dict[int, Stored] = {}  # every unacknowledged message, by sequence number
        self.leases: dict[int, Lease] = {}  # messages delivered at least once and not acked
        self.ready: deque[int] = deque()  # deliverable now (may hold stale, acked numbers)
        self.retained: dict[int, Stored] = {}  # acked, kept for seek (retain_acked_messages)
        self.holds: dict[str, int] = {}  # ordering keys waiting for a backed-off message
        self.held: dict[str, list[int]] = {}  # their later messages, in order
        self.epoch = 0  # bumped by seek: backoff timers of an older epoch are void
        self.streams: set[Stream] = set()
        self.pull_event = asyncio.Event()
        self.last_active = time.monotonic()
        self.deleted = False

    @property
    def ack_deadline(self) -> int:
        return int(self.pb.ack_deadline_seconds)

    @property
    def ordered(self) -> bool:
        return bool(self.pb.enable_message_ordering)

    @property
    def exactly_once(self) -> bool:
        return bool(self.pb.enable_exactly_once_delivery)

    @property
    def retention(self) -> float:
        return seconds(self.pb.message_retention_duration)

    def notify(self) -> None:
        for stream in self.streams:
            stream.wake.set()
        self.pull_event.set()


@dataclass
class Snap:
    """A snapshot: the subscription's unacked messages then, plus the topic's since."""

    pb: Pb
    pending: dict[int, Stored]


@dataclass
class TopicState:
    pb: Pb
    subscriptions: dict[str, Sub]
    snapshots: dict[str, Snap] = field(default_factory=dict)
    log: dict[int, Stored] = field(default_factory=dict)  # kept for topic retention (seek)

    @property
    def retention(self) -> float:
        return seconds(self.pb.message_retention_duration)


def publish_seconds(stored: Stored) -> float:
    stamp = stored.message.publish_time
    return float(stamp.seconds + stamp.nanos / 1e9)
