"""The emulator's broker: topics, subscriptions, snapshots, leases, delivery and flow control.

All methods run on the asyncio event-loop thread, so the state (`state`)
needs no locks; a method mutates everything it has to before its first
`await` (the durable commit), which keeps every RPC atomic. Messages are
protobuf objects shared by all the subscriptions they fan out to; per-message
Python work is kept to a few dictionary operations because the client
libraries push thousands of messages per second through here.

Semantics follow Google Cloud Pub/Sub: at-least-once delivery, ack deadlines
with redelivery; a nack or an expired deadline redelivers at once, or after
the retry policy's exponential backoff; after `max_delivery_attempts` a
dead-letter policy forwards the message to its topic; with message ordering a
redelivery brings back the later outstanding messages of the same key too, in
order; a filter decides at publish time which messages a subscription gets;
messages older than the retention are dropped; seek moves a subscription to a
time or a snapshot; subscriptions expire after `expiration_policy.ttl` of
inactivity. Validation ranges are in `limits`. A deliberate leniency:
`delivery_attempt` is always set (Pub/Sub sets it only with a dead-letter
policy). Persisted (`--data-dir`): topics, subscriptions, unacked messages;
not persisted: delivery counts, leases, snapshots and acked messages retained
for seek.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.pubsub_v1 import types

from tagloop_dev.emulator import limits
from tagloop_dev.emulator.limits import (
    MAX_ACK_DEADLINE,
    MAX_ATTRIBUTES,
    MAX_KEY_BYTES,
    MAX_SUBSCRIPTION_RETENTION,
    MAX_VALUE_BYTES,
    BrokerError,
    Limits,
    Pb,
    check_ack_deadline,
    check_name,
    invalid,
)
from tagloop_dev.emulator.state import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    Lease,
    Policies,
    PubsubMessage,
    Snap,
    SnapshotPb,
    Stored,
    Stream,
    Sub,
    Subscription,
    Topic,
    TopicState,
    publish_seconds,
)
from tagloop_dev.emulator.store import Snapshot, Store

log = logging.getLogger(__name__)

DELETED_TOPIC = "_deleted-topic_"
DEFAULT_ACK_DEADLINE = 10
DEFAULT_EXPIRATION_TTL = 31 * 24 * 3600
DEFAULT_RETENTION = 7 * 24 * 3600
SNAPSHOT_LIFETIME = 7 * 24 * 3600
PULL_WAIT_SECONDS = 5.0  # how long a Pull without return_immediately waits for messages
INVALID_ACK_ID = "PERMANENT_FAILURE_INVALID_ACK_ID"
DEAD_LETTER_ATTRIBUTES = (
    "CloudPubSubDeadLetterSourceDeliveryCount",
    "CloudPubSubDeadLetterSourceSubscription",
    "CloudPubSubDeadLetterSourceSubscriptionProject",
    "CloudPubSubDeadLetterSourceTopicPublishTime",
)
UPDATABLE_SUBSCRIPTION_FIELDS = frozenset(
    {
        "ack_deadline_seconds",
        "dead_letter_policy",
        "enable_exactly_once_delivery",
        "expiration_policy",
        "labels",
        "message_retention_duration",
        "push_config",
        "retain_acked_messages",
        "retry_policy",
    }
)
UPDATABLE_TOPIC_FIELDS = frozenset({"labels", "message_retention_duration"})

Batch = list[tuple[str, Stored, int]]  # (ack id, message, delivery attempt)
Delayed = tuple[float, int, Sub, int, list[tuple[int, Lease]], str]


def not_found(name: str) -> BrokerError:
    return BrokerError(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={name}).")


def already_exists(name: str) -> BrokerError:
    return BrokerError(
        grpc.StatusCode.ALREADY_EXISTS, f"Resource already exists in the project (resource={name})."
    )


def parse_ack_ids(ack_ids: Iterable[str]) -> list[tuple[str, int, int]]:
    """Ack ids are "<sequence>-<attempt>", so a stale one cannot touch a newer lease."""
    parsed = []
    for ack_id in ack_ids:
        seq, _, attempt = ack_id.partition("-")
        try:
            parsed.append((ack_id, int(seq), int(attempt)))
        except ValueError:
            raise invalid("You have passed an invalid ack ID to the service.") from None
    return parsed


def _merge(request: Any, current: Any, paths: list[str], allowed: frozenset[str]) -> Any:
    """A copy of `current` with the `paths` of `request` applied (only `allowed` ones)."""
    if not paths or not set(paths) <= allowed:
        raise invalid(f"update_mask must name some of {sorted(allowed)}, not {paths}")
    updated = type(current)()
    updated.CopyFrom(current)
    for path in paths:
        updated.ClearField(path)
        if request.DESCRIPTOR.fields_by_name[path].message_type is None:
            setattr(updated, path, getattr(request, path))
        elif path == "labels":
            updated.labels.update(request.labels)
        elif request.HasField(path):
            getattr(updated, path).CopyFrom(getattr(request, path))
    return updated


class Broker:
    """The whole emulated Pub/Sub service for any number of projects."""

    def __init__(self, store: Store | None = None, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.topics: dict[str, TopicState] = {}
        self.subscriptions: dict[str, Sub] = {}
        self.snapshots: dict[str, Snap] = {}
        self._next_id = 1
        self._expiry: list[tuple[float, int, Sub, list[tuple[int, int]]]] = []
        self._delayed: list[Delayed] = []
        self._tiebreak = itertools.count()
        if store is not None:
            self._restore(store.load())

    # -- persistence -----------------------------------------------------

    def _restore(self, snapshot: Snapshot) -> None:
        for data in snapshot.topics:
            topic = Topic.FromString(data)
            self.topics[topic.name] = TopicState(topic, {})
        for data in snapshot.subscriptions:
            pb = Subscription.FromString(data)
            sub = Sub(pb, self._policies(pb, check=False))
            self.subscriptions[sub.name] = sub
            if sub.pb.topic in self.topics and not pb.detached:
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
            return self.topics[check_name(name, "topic")]
        except KeyError:
            raise not_found(name) from None

    async def create_topic(self, request: Pb) -> Pb:
        name = check_name(request.name, "topic")
        if name in self.topics:
            raise already_exists(name)
        self.limits.check_topic(request)
        topic = Topic()
        topic.CopyFrom(request)
        self.topics[name] = TopicState(topic, {})
        self._persist_topic(topic)
        await self._commit()
        log.info("created topic %s", name)
        return topic

    def _persist_topic(self, topic: Pb) -> None:
        if self.store is not None:
            self.store.put_topic(topic.name, topic.SerializeToString())

    def get_topic(self, name: str) -> Pb:
        return self._topic(name).pb

    async def update_topic(self, request: types.UpdateTopicRequest) -> Pb:
        """Labels and message retention, the topic fields clients change."""
        topic = self._topic(request.topic.name)
        paths = list(request.update_mask.paths)
        updated = _merge(request.topic, topic.pb, paths, UPDATABLE_TOPIC_FIELDS)
        self.limits.check_topic(updated)
        topic.pb = updated
        if not updated.HasField("message_retention_duration"):
            topic.log.clear()
        self._persist_topic(updated)
        await self._commit()
        return updated

    async def delete_topic(self, name: str) -> None:
        topic = self._topic(name)
        del self.topics[name]
        for sub in topic.subscriptions.values():
            sub.pb.topic = DELETED_TOPIC
            self._persist_subscription(sub)
        for snap in topic.snapshots.values():
            snap.pb.topic = DELETED_TOPIC
        if self.store is not None:
            self.store.delete_topic(name)
        await self._commit()
        log.info("deleted topic %s", name)

    def list_topics(self, project: str) -> list[Pb]:
        prefix = check_name(project, "project") + "/topics/"
        return [t.pb for n, t in sorted(self.topics.items()) if n.startswith(prefix)]

    def topic_subscriptions(self, name: str) -> list[str]:
        return sorted(self._topic(name).subscriptions)

    def topic_snapshots(self, name: str) -> list[str]:
        return sorted(self._topic(name).snapshots)

    async def publish(self, topic_name: str, messages: list[Pb]) -> list[str]:
        """Stamp ids and publish time, fan out to the topic's current subscriptions."""
        topic = self._topic(topic_name)
        if not messages:
            raise invalid("The request contains no messages.")
        sizes = [self._check_message(message) for message in messages]
        ids = self._fan_out(topic, messages, sizes)
        await self._commit()
        return ids

    @staticmethod
    def _check_message(message: Pb) -> int:
        """The message's size, once it passed the service's per-message limits."""
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
        size: int = message.ByteSize()
        limits.check_message_size(size)
        return size

    def _fan_out(self, topic: TopicState, messages: list[Pb], sizes: list[int]) -> list[str]:
        """Publish without waiting for durability (the caller commits)."""
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        first = self._next_id
        self._next_id += len(messages)
        seqs = list(range(first, self._next_id))
        ids = [str(seq) for seq in seqs]
        unfiltered = [sub for sub in topic.subscriptions.values() if sub.policies.predicate is None]
        stored = []
        for message, message_id, size in zip(messages, ids, sizes, strict=True):
            message.message_id = message_id
            stamp = message.publish_time
            stamp.seconds = seconds
            stamp.nanos = nanos
            stored.append(Stored(message, size, len(unfiltered)))
        pairs = list(zip(seqs, stored, strict=True))
        deliveries: list[tuple[str, int]] = []  # (subscription, seq), for the store
        for sub in topic.subscriptions.values():
            predicate = sub.policies.predicate
            chosen = pairs
            if predicate is not None:
                chosen = [(seq, s) for seq, s in pairs if predicate(s.message.attributes)]
                for _, s in chosen:
                    s.refs += 1
            if chosen:
                sub.pending.update(chosen)
                sub.ready.extend(seq for seq, _ in chosen)
                sub.notify()
                if self.store is not None:
                    deliveries.extend((sub.name, seq) for seq, _ in chosen)
        for snap in topic.snapshots.values():
            snap.pending.update(pairs)
        if topic.pb.HasField("message_retention_duration"):
            topic.log.update(pairs)
        if self.store is not None:
            self.store.set_next_id(self._next_id)
            if deliveries:
                self.store.add_messages(
                    [(seq, s.message.SerializeToString()) for seq, s in pairs if s.refs]
                )
                self.store.add_pending(deliveries)
        return ids

    # -- subscriptions -----------------------------------------------------

    def _subscription(self, name: str) -> Sub:
        try:
            return self.subscriptions[check_name(name, "subscription")]
        except KeyError:
            raise not_found(name) from None

    def _attached(self, name: str) -> Sub:
        """A subscription that may deliver (a detached one answers FAILED_PRECONDITION)."""
        sub = self._subscription(name)
        if sub.pb.detached:
            raise BrokerError(
                grpc.StatusCode.FAILED_PRECONDITION, f"Subscription {name} is detached."
            )
        return sub

    def _policies(self, pb: Pb, check: bool = True) -> Policies:
        """Validate a subscription config (unless restoring) and derive its delivery rules."""
        if check:
            check_ack_deadline(pb.ack_deadline_seconds)
            self.limits.check_retention(
                pb.message_retention_duration, MAX_SUBSCRIPTION_RETENTION, "message retention"
            )
            limits.check_subscription_features(pb)
        dead_letter_topic = pb.dead_letter_policy.dead_letter_topic
        return Policies(
            ttl=self.limits.check_expiration(pb) if check else limits.ttl(pb),
            predicate=limits.subscription_filter(pb),
            dead_letter=limits.dead_letter(pb, not check or dead_letter_topic in self.topics),
            backoff=limits.backoff(pb),
        )

    async def create_subscription(self, request: Pb) -> Pb:
        name = check_name(request.name, "subscription")
        topic = self._topic(request.topic)
        if name in self.subscriptions:
            raise already_exists(name)
        pb = Subscription()
        pb.CopyFrom(request)
        if not pb.ack_deadline_seconds:
            pb.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
        if not pb.HasField("expiration_policy"):
            pb.expiration_policy.ttl.seconds = DEFAULT_EXPIRATION_TTL
        if not pb.HasField("message_retention_duration"):
            pb.message_retention_duration.seconds = DEFAULT_RETENTION
        if (
            pb.dead_letter_policy.dead_letter_topic
            and not pb.dead_letter_policy.max_delivery_attempts
        ):
            pb.dead_letter_policy.max_delivery_attempts = limits.DEFAULT_DELIVERY_ATTEMPTS
        pb.state = types.Subscription.State.ACTIVE
        sub = Sub(pb, self._policies(pb))
        self.subscriptions[name] = sub
        topic.subscriptions[name] = sub
        self._persist_subscription(sub)
        await self._commit()
        log.info("created subscription %s on %s", name, request.topic)
        return pb

    def get_subscription(self, name: str) -> Pb:
        return self._subscription(name).pb

    async def update_subscription(self, request: types.UpdateSubscriptionRequest) -> Pb:
        """Apply the fields named in `update_mask` (the ones the service lets change)."""
        sub = self._subscription(request.subscription.name)
        paths = list(request.update_mask.paths)
        updated = _merge(request.subscription, sub.pb, paths, UPDATABLE_SUBSCRIPTION_FIELDS)
        if not updated.ack_deadline_seconds:
            updated.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
        if not updated.HasField("message_retention_duration"):
            updated.message_retention_duration.seconds = DEFAULT_RETENTION
        policies = self._policies(updated)
        sub.pb, sub.policies = updated, policies
        if not updated.retain_acked_messages:
            sub.retained.clear()
        sub.last_active = time.monotonic()
        self._persist_subscription(sub)
        await self._commit()
        return updated

    def list_subscriptions(self, project: str) -> list[Pb]:
        prefix = check_name(project, "project") + "/subscriptions/"
        return [s.pb for n, s in sorted(self.subscriptions.items()) if n.startswith(prefix)]

    async def delete_subscription(self, name: str) -> None:
        self._drop_subscription(self._subscription(name))
        await self._commit()
        log.info("deleted subscription %s", name)

    async def detach_subscription(self, name: str) -> None:
        """Stop delivery for good: its messages are dropped, consumers are told why."""
        sub = self._subscription(name)
        if sub.pb.detached:
            return
        topic = self.topics.get(sub.pb.topic)
        if topic is not None:
            topic.subscriptions.pop(sub.name, None)
        sub.pb.detached = True
        self._end_streams(sub, self._attached_error(sub))
        self._remove(sub, list(sub.pending), set(), retain=False)
        sub.retained.clear()
        self._persist_subscription(sub)
        await self._commit()
        log.info("detached subscription %s", name)

    @staticmethod
    def _attached_error(sub: Sub) -> BrokerError:
        return BrokerError(
            grpc.StatusCode.FAILED_PRECONDITION, f"Subscription {sub.name} is detached."
        )

    @staticmethod
    def _end_streams(sub: Sub, reason: BrokerError) -> None:
        for stream in sub.streams:
            stream.end(reason)
        sub.pull_event.set()

    def _drop_subscription(self, sub: Sub) -> None:
        del self.subscriptions[sub.name]
        topic = self.topics.get(sub.pb.topic)
        if topic is not None:
            topic.subscriptions.pop(sub.name, None)
        sub.deleted = True
        self._end_streams(sub, not_found(sub.name))
        gone = [seq for seq, stored in sub.pending.items() if self._unref(stored)]
        if self.store is not None:
            self.store.delete_subscription(sub.name, gone)

    @staticmethod
    def _unref(stored: Stored) -> bool:
        """Drop one subscription's hold on a message; True when nobody holds it any more."""
        stored.refs -= 1
        return stored.refs == 0

    # -- snapshots and seek ----------------------------------------------------

    def _snapshot(self, name: str) -> Snap:
        try:
            return self.snapshots[check_name(name, "snapshot")]
        except KeyError:
            raise not_found(name) from None

    def create_snapshot(self, name: str, subscription: str, labels: dict[str, str]) -> Pb:
        """Capture the subscription's unacked messages; it gathers the topic's later ones too."""
        check_name(name, "snapshot")
        sub = self._attached(subscription)
        if name in self.snapshots:
            raise already_exists(name)
        topic = self.topics.get(sub.pb.topic)
        if topic is None:
            raise BrokerError(
                grpc.StatusCode.FAILED_PRECONDITION, f"The topic of {subscription} was deleted."
            )
        oldest = min((publish_seconds(s) for s in sub.pending.values()), default=time.time())
        pb = SnapshotPb(name=name, topic=sub.pb.topic, labels=labels)
        pb.expire_time.FromNanoseconds(int((oldest + SNAPSHOT_LIFETIME) * 1e9))
        snap = Snap(pb, dict(sub.pending))
        self.snapshots[name] = topic.snapshots[name] = snap
        log.info("created snapshot %s of %s", name, subscription)
        return pb

    def get_snapshot(self, name: str) -> Pb:
        return self._snapshot(name).pb

    def list_snapshots(self, project: str) -> list[Pb]:
        prefix = check_name(project, "project") + "/snapshots/"
        return [s.pb for n, s in sorted(self.snapshots.items()) if n.startswith(prefix)]

    def update_snapshot(self, request: types.UpdateSnapshotRequest) -> Pb:
        snap = self._snapshot(request.snapshot.name)
        paths = list(request.update_mask.paths)
        snap.pb = _merge(request.snapshot, snap.pb, paths, frozenset({"labels"}))
        return snap.pb

    def delete_snapshot(self, name: str) -> None:
        snap = self._snapshot(name)
        del self.snapshots[name]
        topic = self.topics.get(snap.pb.topic)
        if topic is not None:
            topic.snapshots.pop(name, None)

    async def seek(self, name: str, when: Timestamp | None, snapshot: str | None) -> None:
        """Make exactly the target messages unacked: those of the snapshot, or those
        published at or after `when` that are still retained (unacked, acked with
        retain_acked_messages, or in the topic's retention log)."""
        sub = self._attached(name)
        predicate = sub.policies.predicate
        if snapshot is not None:
            snap = self._snapshot(snapshot)
            if snap.pb.topic != sub.pb.topic:
                raise invalid(f"Snapshot {snapshot} is not of the topic of {name}.")
            candidates: Iterable[tuple[int, Stored]] = snap.pending.items()
        else:
            cutoff = (when or Timestamp()).ToNanoseconds() / 1e9
            topic = self.topics.get(sub.pb.topic)
            log_items = topic.log.items() if topic is not None else ()
            candidates = (
                (seq, stored)
                for seq, stored in itertools.chain(
                    sub.pending.items(), sub.retained.items(), log_items
                )
                if publish_seconds(stored) >= cutoff
            )
        target = {
            seq: stored
            for seq, stored in candidates
            if predicate is None or predicate(stored.message.attributes)
        }
        self._reset(sub, target)
        await self._commit()

    def _reset(self, sub: Sub, target: dict[int, Stored]) -> None:
        streams: set[Stream] = set()
        for seq, lease in sub.leases.items():
            if lease.deadline is not None:
                self._unlease(sub, seq, lease, streams)
        sub.leases.clear()
        sub.holds.clear()
        sub.held.clear()
        sub.epoch += 1
        self._remove(sub, [seq for seq in sub.pending if seq not in target], streams)
        added = sorted(seq for seq in target if seq not in sub.pending)
        for seq in added:
            stored = target[seq]
            stored.refs += 1
            sub.retained.pop(seq, None)
        sub.pending = dict(sorted({**sub.pending, **{s: target[s] for s in added}}.items()))
        sub.ready = deque(sub.pending)
        if self.store is not None and added:
            self.store.add_messages([(s, target[s].message.SerializeToString()) for s in added])
            self.store.add_pending([(sub.name, s) for s in added])
        for stream in streams:
            stream.wake.set()
        sub.notify()

    # -- delivery ------------------------------------------------------------

    def _lease(
        self, sub: Sub, count: int, size: int, seconds: float, stream: Stream | None
    ) -> Batch:
        """Take up to `count` ready messages (and about `size` bytes) and lease them."""
        deadline = time.monotonic() + seconds
        batch: Batch = []
        expiring: list[tuple[int, int]] = []
        pending, leases, ready, holds = sub.pending, sub.leases, sub.ready, sub.holds
        taken = 0
        while ready and len(batch) < count:
            seq = ready.popleft()
            stored = pending.get(seq)
            if stored is None:
                continue  # acknowledged while waiting (a late ack of an earlier delivery)
            if holds and stored.message.ordering_key in holds:
                sub.held[stored.message.ordering_key].append(seq)
                continue  # an earlier message of its key is backing off
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

    def _retry(self, sub: Sub, failed: list[tuple[int, Lease]], streams: set[Stream]) -> None:
        """Deliveries that ended without an ack (nack, expiry; already unleased):
        dead-letter those out of attempts, back the rest off or make them ready."""
        dead_letter = sub.policies.dead_letter
        if dead_letter is not None:
            spent = [seq for seq, lease in failed if lease.attempt >= dead_letter.max_attempts]
            if spent and self._forward(sub, spent):
                self._remove(sub, spent, streams, retain=False)
                failed = [(seq, lease) for seq, lease in failed if seq in sub.pending]
        if sub.ordered:
            failed = self._with_followers(sub, failed, streams)
        if not failed:
            return
        backoff = sub.policies.backoff
        if backoff is None:
            sub.ready.extendleft(sorted((seq for seq, _ in failed), reverse=True))
            sub.notify()
            return
        groups: dict[str, list[tuple[int, Lease]]] = {}
        for seq, lease in failed:
            key = sub.pending[seq].message.ordering_key if sub.ordered else ""
            groups.setdefault(key or f"\0{seq}", []).append((seq, lease))
        now = time.monotonic()
        for key, items in groups.items():
            delay = max(backoff.delay(lease.attempt) for _, lease in items)
            for _, lease in items:
                lease.delayed = True
            held = "" if key.startswith("\0") else key
            if held:
                sub.holds[held] = sub.holds.get(held, 0) + 1
                sub.held.setdefault(held, [])
            entry = (now + delay, next(self._tiebreak), sub, sub.epoch, items, held)
            heapq.heappush(self._delayed, entry)

    def _with_followers(
        self, sub: Sub, failed: list[tuple[int, Lease]], streams: set[Stream]
    ) -> list[tuple[int, Lease]]:
        """With ordering, a redelivery brings back the later outstanding messages of its key."""
        first: dict[str, int] = {}
        for seq, _ in failed:
            key = sub.pending[seq].message.ordering_key
            if key and seq < first.get(key, seq + 1):
                first[key] = seq
        if not first:
            return failed
        chosen = {seq for seq, _ in failed}
        for seq, lease in sub.leases.items():
            if lease.deadline is None or seq in chosen:
                continue
            key = sub.pending[seq].message.ordering_key
            if key in first and seq > first[key]:
                self._unlease(sub, seq, lease, streams)
                failed.append((seq, lease))
        return failed

    def _forward(self, sub: Sub, seqs: list[int]) -> bool:
        """Publish copies to the dead-letter topic with the attributes the service adds."""
        dead_letter = sub.policies.dead_letter
        assert dead_letter is not None
        topic = self.topics.get(dead_letter.topic)
        if topic is None:
            log.warning("dead-letter topic %s of %s is gone", dead_letter.topic, sub.name)
            return False
        project, _, sub_id = sub.name.removeprefix("projects/").partition("/subscriptions/")
        copies = []
        for seq in seqs:
            original = sub.pending[seq].message
            copy = PubsubMessage(data=original.data, ordering_key=original.ordering_key)
            copy.attributes.update(original.attributes)
            values = (
                str(sub.leases[seq].attempt),
                sub_id,
                project,
                original.publish_time.ToJsonString(),
            )
            copy.attributes.update(zip(DEAD_LETTER_ATTRIBUTES, values, strict=True))
            copies.append(copy)
        self._fan_out(topic, copies, [copy.ByteSize() for copy in copies])
        log.info("forwarded %d messages of %s to %s", len(seqs), sub.name, dead_letter.topic)
        return True

    async def pull(self, name: str, max_messages: int, wait_seconds: float) -> Batch:
        """Unary Pull: what is ready now, else wait up to `wait_seconds` for something."""
        if max_messages <= 0:
            raise invalid("max_messages must be positive")
        sub = self._attached(name)
        count = min(max_messages, MAX_BATCH_MESSAGES)
        deadline = time.monotonic() + wait_seconds
        while True:
            sub.last_active = time.monotonic()
            batch = self._lease(sub, count, MAX_BATCH_BYTES, sub.ack_deadline, None)
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0 or sub.deleted or sub.pb.detached:
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
        sub = self._attached(name)
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

    def _remove(
        self, sub: Sub, seqs: Iterable[int], streams: set[Stream], retain: bool = True
    ) -> list[int]:
        """Take messages out of a subscription for good (ack, dead letter, seek, retention)."""
        removed: list[int] = []
        gone: list[int] = []
        pending, leases = sub.pending, sub.leases
        keep = retain and sub.pb.retain_acked_messages
        for seq in seqs:
            lease = leases.pop(seq, None)
            if lease is not None and lease.deadline is not None:
                self._unlease(sub, seq, lease, streams)
            stored = pending.pop(seq, None)
            if stored is None:
                continue
            removed.append(seq)
            if keep:
                sub.retained[seq] = stored
            if self._unref(stored):
                gone.append(seq)
        if self.store is not None and removed:
            self.store.remove_pending(sub.name, removed, gone)
        return removed

    def _current(self, sub: Sub, parsed: list[tuple[str, int, int]]) -> dict[str, str]:
        """For exactly-once subscriptions: the ack ids that no longer name a live lease."""
        if not sub.exactly_once:
            return {}
        now = time.monotonic()
        failures = {}
        for ack_id, seq, attempt in parsed:
            lease = sub.leases.get(seq)
            if (
                lease is None
                or lease.attempt != attempt
                or lease.deadline is None
                or lease.deadline < now
            ):
                failures[ack_id] = INVALID_ACK_ID
        return failures

    async def acknowledge(self, name: str, ack_ids: Iterable[str]) -> dict[str, str]:
        """Ack; returns the ack ids that failed (only exactly-once subscriptions fail any)."""
        sub = self._subscription(name)
        parsed = parse_ack_ids(ack_ids)
        sub.last_active = time.monotonic()
        failures = self._current(sub, parsed)
        streams: set[Stream] = set()
        # Any delivery's ack counts (the message was processed), except under exactly-once.
        removed = self._remove(sub, (s for a, s, _ in parsed if a not in failures), streams)
        for stream in streams:
            stream.wake.set()
        if removed:
            await self._commit()
        return failures

    async def modify_ack_deadline(
        self, name: str, ack_ids: Iterable[str], seconds: int
    ) -> dict[str, str]:
        """Extend leases, or with 0 seconds nack them; returns failed ids as `acknowledge`."""
        if not 0 <= seconds <= MAX_ACK_DEADLINE:
            raise invalid(f"ack_deadline_seconds must be between 0 and {MAX_ACK_DEADLINE}")
        sub = self._subscription(name)
        parsed = parse_ack_ids(ack_ids)
        now = sub.last_active = time.monotonic()
        failures = self._current(sub, parsed)
        leases = sub.leases
        current = []
        for ack_id, seq, attempt in parsed:
            lease = leases.get(seq)
            if (
                ack_id not in failures
                and lease is not None
                and lease.attempt == attempt
                and lease.deadline is not None
            ):
                current.append((seq, lease))
        if not current:
            return failures
        if seconds == 0:
            streams: set[Stream] = set()
            for seq, lease in current:
                self._unlease(sub, seq, lease, streams)
            self._retry(sub, current, streams)
            for stream in streams:
                stream.wake.set()
            await self._commit()
            return failures
        deadline = now + seconds
        for _, lease in current:
            lease.deadline = deadline
        heapq.heappush(
            self._expiry,
            (deadline, next(self._tiebreak), sub, [(seq, lease.attempt) for seq, lease in current]),
        )
        return failures

    # -- housekeeping ------------------------------------------------------------

    def expire_leases(self, now: float) -> int:
        """Retry messages whose ack deadline passed; returns how many."""
        heap = self._expiry
        expired = 0
        while heap and heap[0][0] <= now:
            _, _, sub, entries = heapq.heappop(heap)
            if sub.deleted:
                continue
            failed = []
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
                failed.append((seq, lease))
            if failed:
                self._retry(sub, failed, streams)
                for stream in streams:
                    stream.wake.set()
                expired += len(failed)
        if expired:
            self._commit_soon()
        return expired

    def release_backoffs(self, now: float) -> int:
        """Make messages whose retry backoff ended deliverable, with what their key held back."""
        heap = self._delayed
        released = 0
        while heap and heap[0][0] <= now:
            _, _, sub, epoch, items, key = heapq.heappop(heap)
            if sub.deleted or epoch != sub.epoch:
                continue
            seqs = []
            for seq, lease in items:
                if sub.leases.get(seq) is lease and lease.delayed:
                    lease.delayed = False
                    seqs.append(seq)
            if key:
                sub.holds[key] -= 1
                if not sub.holds[key]:
                    del sub.holds[key]
                    seqs.extend(sub.held.pop(key))
            if seqs:
                sub.ready.extendleft(sorted(seqs, reverse=True))
                sub.notify()
                released += len(seqs)
        return released

    def expire_messages(self, now: float) -> int:
        """Drop messages older than their subscription's (or topic's) retention."""
        dropped = 0
        for sub in self.subscriptions.values():
            cutoff = now - sub.retention
            if sub.pending:
                old = _older(sub.pending, cutoff)
                if old:
                    streams: set[Stream] = set()
                    dropped += len(self._remove(sub, old, streams, retain=False))
                    for stream in streams:
                        stream.wake.set()
            for seq in [seq for seq, s in sub.retained.items() if publish_seconds(s) < cutoff]:
                del sub.retained[seq]  # kept in ack order, not publish order
        for topic in self.topics.values():
            for seq in _older(topic.log, now - topic.retention):
                del topic.log[seq]
        if dropped:
            self._commit_soon()
        return dropped

    def expire_subscriptions(self, now: float) -> list[str]:
        """Delete subscriptions idle for longer than their expiration TTL."""
        expired = [
            sub
            for sub in self.subscriptions.values()
            if sub.policies.ttl is not None
            and not sub.streams
            and now - sub.last_active >= sub.policies.ttl
        ]
        for sub in expired:
            self._drop_subscription(sub)
            log.info("subscription %s expired after %ss of inactivity", sub.name, sub.policies.ttl)
        if expired:
            self._commit_soon()
        return [sub.name for sub in expired]

    def _commit_soon(self) -> None:
        """Housekeeping's changes become durable shortly; nobody waits for them."""
        if self.store is not None:
            self.store.commit()


def _older(messages: dict[int, Stored], cutoff: float) -> list[int]:
    """The leading run of messages published before `cutoff` (they are in publish order)."""
    old = []
    for seq, stored in messages.items():
        if publish_seconds(stored) >= cutoff:
            break
        old.append(seq)
    return old
