"""The emulator's broker: topics, subscriptions, leases, delivery and flow control.

All methods run on the asyncio event-loop thread, so the state needs no locks;
a method mutates everything it has to before its first `await` (the durable
commit), which keeps every RPC atomic. Messages are protobuf objects shared by
all the subscriptions they fan out to; per-message Python work is kept to a
few dictionary operations because the client libraries push thousands of
messages per second through here.

Semantics follow Google Cloud Pub/Sub: at-least-once delivery, ack deadlines
with redelivery, nack (deadline 0) redelivers at once, a message reaches only
the subscriptions that existed when it was published, subscriptions expire
after `expiration_policy.ttl` of inactivity. Deliberate leniencies for tests:
any positive expiration TTL is accepted (Pub/Sub wants at least a day), and
`delivery_attempt` is always set (Pub/Sub sets it only with a dead-letter
policy). Delivery counts and leases are not persisted: after a restart every
unacknowledged message is simply ready again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.pubsub_v1 import types

from tagloop_dev.emulator.store import Snapshot, Store

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    # proto-plus builds these protobuf classes at run time from descriptors,
    # so there is no static declaration of their fields for mypy to check.
    PubsubMessage: TypeAlias = Any
    Topic: TypeAlias = Any
    Subscription: TypeAlias = Any
else:
    PubsubMessage = types.PubsubMessage.pb()
    Topic = types.Topic.pb()
    Subscription = types.Subscription.pb()

DELETED_TOPIC = "_deleted-topic_"
DEFAULT_ACK_DEADLINE = 10
MIN_ACK_DEADLINE, MAX_ACK_DEADLINE = 10, 600
DEFAULT_EXPIRATION_TTL = 31 * 24 * 3600
DEFAULT_RETENTION = 7 * 24 * 3600
MAX_BATCH_MESSAGES = 1000  # per Pull / StreamingPull response
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_ATTRIBUTES, MAX_KEY_BYTES, MAX_VALUE_BYTES = 100, 256, 1024
PULL_WAIT_SECONDS = 5.0  # how long a Pull without return_immediately waits for messages

_RESOURCE = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
_TOPIC_NAME = re.compile(rf"projects/[^/]+/topics/{_RESOURCE}")
_SUBSCRIPTION_NAME = re.compile(rf"projects/[^/]+/subscriptions/{_RESOURCE}")
_PROJECT_NAME = re.compile(r"projects/[^/]+")
_UPDATABLE_SUBSCRIPTION_FIELDS = {
    "ack_deadline_seconds",
    "expiration_policy",
    "labels",
    "message_retention_duration",
    "retain_acked_messages",
    "retry_policy",
}


class BrokerError(Exception):
    """A request the broker refuses; `code` is the gRPC status the client must see."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(name: str) -> BrokerError:
    return BrokerError(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={name}).")


def invalid(message: str) -> BrokerError:
    return BrokerError(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_name(name: str, pattern: re.Pattern[str], kind: str) -> str:
    if not pattern.fullmatch(name) or name.rsplit("/", 1)[-1].startswith("goog"):
        raise invalid(f"Invalid {kind} name: {name!r}")
    return name


class Stored:
    """A published message, shared by every subscription it was fanned out to."""

    __slots__ = ("message", "refs", "size")

    def __init__(self, message: PubsubMessage, size: int, refs: int) -> None:
        self.message = message
        self.size = size
        self.refs = refs  # subscriptions that still hold it unacknowledged


class Lease:
    """Delivery state of one message in one subscription (from its first delivery)."""

    __slots__ = ("attempt", "deadline", "stream")

    def __init__(self) -> None:
        self.attempt = 0
        self.deadline: float | None = None  # None: not leased, waiting to be delivered
        self.stream: Stream | None = None  # the flow-control window it counts against


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


class Sub:
    """A subscription: its config, its unacknowledged messages and its consumers."""

    __slots__ = (
        "deleted",
        "last_active",
        "leases",
        "name",
        "pb",
        "pending",
        "pull_event",
        "ready",
        "streams",
        "ttl",
    )

    def __init__(self, pb: Subscription) -> None:
        self.name = pb.name
        self.pb = pb
        self.pending: dict[int, Stored] = {}  # every unacknowledged message, by sequence number
        self.leases: dict[int, Lease] = {}  # messages delivered at least once and not acked
        self.ready: deque[int] = deque()  # deliverable now (may hold stale, acked numbers)
        self.streams: set[Stream] = set()
        self.pull_event = asyncio.Event()
        self.last_active = time.monotonic()
        self.deleted = False
        self.ttl = _ttl(pb)

    @property
    def ack_deadline(self) -> int:
        seconds: int = self.pb.ack_deadline_seconds
        return seconds

    def notify(self) -> None:
        for stream in self.streams:
            stream.wake.set()
        self.pull_event.set()


@dataclass
class TopicState:
    pb: Topic
    subscriptions: dict[str, Sub]


Batch = list[tuple[str, Stored, int]]  # (ack id, message, delivery attempt)


def _ttl(pb: Subscription) -> float | None:
    if not pb.HasField("expiration_policy") or not pb.expiration_policy.HasField("ttl"):
        return None
    ttl = pb.expiration_policy.ttl
    return float(ttl.seconds + ttl.nanos / 1e9)


def parse_ack_ids(ack_ids: Iterable[str]) -> list[tuple[int, int]]:
    """Ack ids are "<sequence>-<attempt>", so a stale one cannot touch a newer lease."""
    try:
        return [(int(seq), int(attempt)) for seq, attempt in (a.split("-", 1) for a in ack_ids)]
    except ValueError:
        raise invalid("You have passed an invalid ack ID to the service.") from None


def check_ack_deadline(seconds: int) -> int:
    """A subscription's or stream's ack deadline, in the range Pub/Sub accepts."""
    if not MIN_ACK_DEADLINE <= seconds <= MAX_ACK_DEADLINE:
        raise invalid(f"ack deadlines must be between {MIN_ACK_DEADLINE} and {MAX_ACK_DEADLINE}s")
    return seconds


def _validate_subscription(pb: Subscription) -> None:
    check_ack_deadline(pb.ack_deadline_seconds)
    ttl = _ttl(pb)
    if ttl is not None and ttl <= 0:
        raise invalid("expiration_policy.ttl must be positive")
    if pb.push_config.push_endpoint or pb.filter or pb.enable_exactly_once_delivery:
        raise invalid("push, filters and exactly-once delivery are not supported by this emulator")


class Broker:
    """The whole emulated Pub/Sub service for any number of projects."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self.topics: dict[str, TopicState] = {}
        self.subscriptions: dict[str, Sub] = {}
        self._next_id = 1
        self._expiry: list[tuple[float, int, Sub, list[tuple[int, int]]]] = []
        self._tiebreak = itertools.count()
        if store is not None:
            self._restore(store.load())

    # -- persistence -----------------------------------------------------

    def _restore(self, snapshot: Snapshot) -> None:
        for data in snapshot.topics:
            topic = Topic.FromString(data)
            self.topics[topic.name] = TopicState(topic, {})
        for data in snapshot.subscriptions:
            sub = Sub(Subscription.FromString(data))
            self.subscriptions[sub.name] = sub
            if sub.pb.topic in self.topics:
                self.topics[sub.pb.topic].subscriptions[sub.name] = sub
        messages: dict[int, Stored] = {}
        for msg_id, data in snapshot.messages:
            message = PubsubMessage.FromString(data)
            messages[msg_id] = Stored(message, len(data), 0)
        for sub_name, msg_id in snapshot.pending:
            sub, stored = self.subscriptions[sub_name], messages[msg_id]
            stored.refs += 1
            sub.pending[msg_id] = stored
            sub.ready.append(msg_id)
        self._next_id = snapshot.next_id
        log.info(
            "restored %d topics, %d subscriptions, %d unacknowledged deliveries",
            len(self.topics),
            len(self.subscriptions),
            len(snapshot.pending),
        )

    async def _commit(self) -> None:
        if self.store is not None:
            await self.store.commit()

    def _persist_subscription(self, sub: Sub) -> None:
        if self.store is not None:
            self.store.put_subscription(sub.name, sub.pb.SerializeToString())

    # -- topics ----------------------------------------------------------

    def _topic(self, name: str) -> TopicState:
        try:
            return self.topics[name]
        except KeyError:
            raise not_found(name) from None

    async def create_topic(self, request: Topic) -> Topic:
        name = check_name(request.name, _TOPIC_NAME, "topic")
        if name in self.topics:
            raise BrokerError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"Resource already exists in the project (resource={name}).",
            )
        topic = Topic()
        topic.CopyFrom(request)
        self.topics[name] = TopicState(topic, {})
        if self.store is not None:
            self.store.put_topic(name, topic.SerializeToString())
        await self._commit()
        log.info("created topic %s", name)
        return topic

    def get_topic(self, name: str) -> Topic:
        return self._topic(name).pb

    async def delete_topic(self, name: str) -> None:
        topic = self._topic(name)
        del self.topics[name]
        for sub in topic.subscriptions.values():
            sub.pb.topic = DELETED_TOPIC
            self._persist_subscription(sub)
        if self.store is not None:
            self.store.delete_topic(name)
        await self._commit()
        log.info("deleted topic %s", name)

    def list_topics(self, project: str) -> list[Topic]:
        prefix = check_name(project, _PROJECT_NAME, "project") + "/topics/"
        return [t.pb for n, t in sorted(self.topics.items()) if n.startswith(prefix)]

    def topic_subscriptions(self, name: str) -> list[str]:
        return sorted(self._topic(name).subscriptions)

    async def publish(self, topic_name: str, messages: list[PubsubMessage]) -> list[str]:
        """Stamp ids and publish time, fan out to the topic's current subscriptions."""
        topic = self._topic(topic_name)
        if not messages:
            raise invalid("The request contains no messages.")
        for message in messages:
            if not message.data and not message.attributes:
                raise invalid("Each message must have data or at least one attribute.")
            if message.attributes and (
                len(message.attributes) > MAX_ATTRIBUTES
                or any(
                    len(k.encode()) > MAX_KEY_BYTES or len(v.encode()) > MAX_VALUE_BYTES
                    for k, v in message.attributes.items()
                )
            ):
                raise invalid("Message attributes exceed the Pub/Sub limits.")
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        first = self._next_id
        self._next_id += len(messages)
        seqs = list(range(first, self._next_id))
        ids = [str(seq) for seq in seqs]
        fan_out = len(topic.subscriptions)
        stored = []
        for message, message_id in zip(messages, ids, strict=True):
            message.message_id = message_id
            stamp = message.publish_time
            stamp.seconds = seconds
            stamp.nanos = nanos
            stored.append(Stored(message, message.ByteSize(), fan_out))
        for sub in topic.subscriptions.values():
            sub.pending.update(zip(seqs, stored, strict=True))
            sub.ready.extend(seqs)
            sub.notify()
        if self.store is not None:
            self.store.set_next_id(self._next_id)
            if fan_out:
                self.store.add_messages(
                    [
                        (seq, s.message.SerializeToString())
                        for seq, s in zip(seqs, stored, strict=True)
                    ],
                    list(topic.subscriptions),
                )
            await self.store.commit()
        return ids

    # -- subscriptions -----------------------------------------------------

    def _subscription(self, name: str) -> Sub:
        try:
            return self.subscriptions[name]
        except KeyError:
            raise not_found(name) from None

    async def create_subscription(self, request: Subscription) -> Subscription:
        name = check_name(request.name, _SUBSCRIPTION_NAME, "subscription")
        topic = self._topic(request.topic)
        if name in self.subscriptions:
            raise BrokerError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"Resource already exists in the project (resource={name}).",
            )
        pb = Subscription()
        pb.CopyFrom(request)
        if not pb.ack_deadline_seconds:
            pb.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
        if not pb.HasField("expiration_policy"):
            pb.expiration_policy.ttl.seconds = DEFAULT_EXPIRATION_TTL
        if not pb.HasField("message_retention_duration"):
            pb.message_retention_duration.seconds = DEFAULT_RETENTION
        pb.state = types.Subscription.State.ACTIVE
        _validate_subscription(pb)
        sub = Sub(pb)
        self.subscriptions[name] = sub
        topic.subscriptions[name] = sub
        self._persist_subscription(sub)
        await self._commit()
        log.info("created subscription %s on %s", name, request.topic)
        return pb

    def get_subscription(self, name: str) -> Subscription:
        return self._subscription(name).pb

    async def update_subscription(self, request: types.UpdateSubscriptionRequest) -> Subscription:
        """Apply the fields named in `update_mask` (only ones that are safe to change)."""
        sub = self._subscription(request.subscription.name)
        paths = list(request.update_mask.paths)
        if not paths or not set(paths) <= _UPDATABLE_SUBSCRIPTION_FIELDS:
            raise invalid(f"update_mask must name some of {sorted(_UPDATABLE_SUBSCRIPTION_FIELDS)}")
        updated = Subscription()
        updated.CopyFrom(sub.pb)
        request.update_mask.MergeMessage(
            request.subscription, updated, replace_message_field=True, replace_repeated_field=True
        )
        if not updated.ack_deadline_seconds:
            updated.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
        _validate_subscription(updated)
        sub.pb = updated
        sub.ttl = _ttl(updated)
        sub.last_active = time.monotonic()
        self._persist_subscription(sub)
        await self._commit()
        return updated

    def list_subscriptions(self, project: str) -> list[Subscription]:
        prefix = check_name(project, _PROJECT_NAME, "project") + "/subscriptions/"
        return [s.pb for n, s in sorted(self.subscriptions.items()) if n.startswith(prefix)]

    async def delete_subscription(self, name: str) -> None:
        self._drop_subscription(self._subscription(name))
        await self._commit()
        log.info("deleted subscription %s", name)

    def _drop_subscription(self, sub: Sub) -> None:
        del self.subscriptions[sub.name]
        topic = self.topics.get(sub.pb.topic)
        if topic is not None:
            topic.subscriptions.pop(sub.name, None)
        sub.deleted = True
        for stream in sub.streams:
            stream.end(not_found(sub.name))
        sub.pull_event.set()
        gone = [seq for seq, stored in sub.pending.items() if self._unref(stored)]
        if self.store is not None:
            self.store.delete_subscription(sub.name, gone)

    @staticmethod
    def _unref(stored: Stored) -> bool:
        """Drop one subscription's hold on a message; True when nobody holds it any more."""
        stored.refs -= 1
        return stored.refs == 0

    # -- delivery ------------------------------------------------------------

    def _lease(
        self, sub: Sub, count: int, size: int, seconds: float, stream: Stream | None
    ) -> Batch:
        """Take up to `count` ready messages (and about `size` bytes) and lease them."""
        deadline = time.monotonic() + seconds
        batch: Batch = []
        expiring: list[tuple[int, int]] = []
        pending, leases, ready = sub.pending, sub.leases, sub.ready
        taken = 0
        while ready and len(batch) < count:
            seq = ready.popleft()
            stored = pending.get(seq)
            if stored is None:
                continue  # acknowledged while waiting (a late ack of an earlier delivery)
            if batch and taken + stored.size > size:
                ready.appendleft(seq)
                break
            lease = leases.get(seq)
            if lease is None:
                lease = leases[seq] = Lease()
            lease.attempt += 1
            lease.deadline = deadline
            lease.stream = stream
            taken += stored.size
            batch.append((f"{seq}-{lease.attempt}", stored, lease.attempt))
            expiring.append((seq, lease.attempt))
        if batch:
            heapq.heappush(self._expiry, (deadline, next(self._tiebreak), sub, expiring))
            if stream is not None:
                stream.outstanding += len(batch)
                stream.outstanding_bytes += taken
        return batch

    def _unlease(self, sub: Sub, seq: int, lease: Lease, streams: set[Stream]) -> None:
        """End a lease without an ack (expiry, nack, ack elsewhere) and free its window."""
        stream = lease.stream
        if stream is not None:
            stream.outstanding -= 1
            stream.outstanding_bytes -= sub.pending[seq].size
            streams.add(stream)
        lease.deadline = None
        lease.stream = None

    async def pull(self, name: str, max_messages: int, wait_seconds: float) -> Batch:
        """Unary Pull: what is ready now, else wait up to `wait_seconds` for something."""
        if max_messages <= 0:
            raise invalid("max_messages must be positive")
        sub = self._subscription(name)
        count = min(max_messages, MAX_BATCH_MESSAGES)
        deadline = time.monotonic() + wait_seconds
        while True:
            sub.last_active = time.monotonic()
            batch = self._lease(sub, count, MAX_BATCH_BYTES, sub.ack_deadline, None)
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0 or sub.deleted:
                return batch
            sub.pull_event.clear()
            try:
                await asyncio.wait_for(sub.pull_event.wait(), remaining)
            except TimeoutError:
                return []

    def open_stream(self, name: str, max_messages: int, max_bytes: int, deadline: int) -> Stream:
        check_ack_deadline(deadline)
        if max_messages < 0 or max_bytes < 0:
            raise invalid("max_outstanding_messages and max_outstanding_bytes must not be negative")
        sub = self._subscription(name)
        stream = Stream(sub, max_messages, max_bytes, deadline)
        sub.streams.add(stream)
        sub.last_active = time.monotonic()
        return stream

    def close_stream(self, stream: Stream) -> None:
        stream.subscription.streams.discard(stream)
        stream.subscription.last_active = time.monotonic()

    def take(self, stream: Stream) -> Batch:
        """The next batch for a stream, within its flow-control window."""
        count, size = stream.room()
        if count <= 0 or size <= 0:
            return []
        return self._lease(stream.subscription, count, size, stream.ack_deadline, stream)

    # -- acknowledgements --------------------------------------------------------

    async def acknowledge(self, name: str, ack_ids: Iterable[str]) -> None:
        sub = self._subscription(name)
        parsed = parse_ack_ids(ack_ids)
        sub.last_active = time.monotonic()
        acked: list[int] = []
        gone: list[int] = []
        streams: set[Stream] = set()
        pending, leases = sub.pending, sub.leases
        for seq, _attempt in parsed:  # any delivery's ack counts: the message was processed
            lease = leases.get(seq)
            if lease is not None:
                if lease.deadline is not None:
                    self._unlease(sub, seq, lease, streams)
                del leases[seq]
            stored = pending.pop(seq, None)
            if stored is None:
                continue
            acked.append(seq)
            if self._unref(stored):
                gone.append(seq)
        for stream in streams:
            stream.wake.set()
        if self.store is not None and acked:
            self.store.remove_pending(name, acked, gone)
            await self.store.commit()

    def modify_ack_deadline(self, name: str, ack_ids: Iterable[str], seconds: int) -> None:
        """Extend leases, or with 0 seconds nack them: ready for redelivery at once."""
        if not 0 <= seconds <= MAX_ACK_DEADLINE:
            raise invalid(f"ack_deadline_seconds must be between 0 and {MAX_ACK_DEADLINE}")
        sub = self._subscription(name)
        parsed = parse_ack_ids(ack_ids)
        now = sub.last_active = time.monotonic()
        leases = sub.leases
        current = []
        for seq, attempt in parsed:
            lease = leases.get(seq)
            if lease is not None and lease.attempt == attempt and lease.deadline is not None:
                current.append((seq, lease))
        if not current:
            return
        if seconds == 0:
            streams: set[Stream] = set()
            for seq, lease in current:
                self._unlease(sub, seq, lease, streams)
            sub.ready.extendleft(reversed([seq for seq, _ in current]))
            sub.notify()
            return
        deadline = now + seconds
        for _, lease in current:
            lease.deadline = deadline
        heapq.heappush(
            self._expiry,
            (deadline, next(self._tiebreak), sub, [(seq, lease.attempt) for seq, lease in current]),
        )

    # -- housekeeping ------------------------------------------------------------

    def expire_leases(self, now: float) -> int:
        """Make messages whose ack deadline passed deliverable again; returns how many."""
        heap = self._expiry
        expired = 0
        while heap and heap[0][0] <= now:
            _, _, sub, entries = heapq.heappop(heap)
            if sub.deleted:
                continue
            requeue = []
            streams: set[Stream] = set()
            for seq, attempt in entries:
                lease = sub.leases.get(seq)
                if (
                    lease is None
                    or lease.attempt != attempt
                    or lease.deadline is None
                    or lease.deadline > now
                ):
                    continue  # acked, nacked, redelivered or extended since
                self._unlease(sub, seq, lease, streams)
                requeue.append(seq)
            if requeue:
                sub.ready.extendleft(reversed(requeue))
                sub.notify()
                expired += len(requeue)
        return expired

    def expire_subscriptions(self, now: float) -> list[str]:
        """Delete subscriptions idle for longer than their expiration TTL."""
        expired = [
            sub
            for sub in self.subscriptions.values()
            if sub.ttl is not None and not sub.streams and now - sub.last_active >= sub.ttl
        ]
        for sub in expired:
            self._drop_subscription(sub)
            log.info("subscription %s expired after %ss of inactivity", sub.name, sub.ttl)
        if expired and self.store is not None:
            self.store.commit()  # durable soon; nobody waits for it
        return [sub.name for sub in expired]
