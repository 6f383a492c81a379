"""gRPC methods of google.pubsub.v1.Publisher and Subscriber, mapped onto the broker.

The request and response classes are the protobuf messages that ship with
google-cloud-pubsub (`google.pubsub_v1.types`), registered through generic
handlers, so nothing here is hand-written protobuf. Methods the client uses
are implemented; the rest (snapshots, seek, push config) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1 import types

from tagloop_dev.emulator.broker import (
    PULL_WAIT_SECONDS,
    Batch,
    Broker,
    BrokerError,
    Stream,
    check_ack_deadline,
    invalid,
)

log = logging.getLogger(__name__)

EMPTY = empty_pb2.Empty()
PAGE_SIZE = 100
StreamingPullResponse = types.StreamingPullResponse.pb()
PullResponse = types.PullResponse.pb()
PublishResponse = types.PublishResponse.pb()
ListTopicsResponse = types.ListTopicsResponse.pb()
ListSubscriptionsResponse = types.ListSubscriptionsResponse.pb()
ListTopicSubscriptionsResponse = types.ListTopicSubscriptionsResponse.pb()
# The servicer's context: requests and responses are protobuf messages built at run time.
Context = grpc.aio.ServicerContext[Any, Any]

Handler = Callable[[Any, Context], Awaitable[Any]]


def _page(items: list[Any], page_size: int, token: str) -> tuple[list[Any], str]:
    """Offset pagination; the token is the offset of the next page."""
    try:
        start = int(token) if token else 0
    except ValueError:
        raise invalid("Invalid page_token.") from None
    size = page_size if page_size > 0 else PAGE_SIZE
    end = start + size
    return items[start:end], str(end) if end < len(items) else ""


def _fill(batch: Batch, received: Any) -> None:
    for ack_id, stored, attempt in batch:
        received.add(ack_id=ack_id, message=stored.message, delivery_attempt=attempt)


class PubSubService:
    """The handlers; one instance serves every project."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        empty = empty_pb2.Empty

        def pb(name: str) -> Any:
            return getattr(types, name).pb()

        def unary(method: Handler, request: str, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                _guard(method),
                request_deserializer=pb(request).FromString,
                response_serializer=response.SerializeToString,
            )

        publisher = {
            "CreateTopic": unary(self.create_topic, "Topic", pb("Topic")),
            "GetTopic": unary(self.get_topic, "GetTopicRequest", pb("Topic")),
            "ListTopics": unary(self.list_topics, "ListTopicsRequest", ListTopicsResponse),
            "ListTopicSubscriptions": unary(
                self.list_topic_subscriptions,
                "ListTopicSubscriptionsRequest",
                ListTopicSubscriptionsResponse,
            ),
            "DeleteTopic": unary(self.delete_topic, "DeleteTopicRequest", empty),
            "Publish": unary(self.publish, "PublishRequest", PublishResponse),
        }
        subscriber = {
            "CreateSubscription": unary(
                self.create_subscription, "Subscription", pb("Subscription")
            ),
            "GetSubscription": unary(
                self.get_subscription, "GetSubscriptionRequest", pb("Subscription")
            ),
            "UpdateSubscription": unary(
                self.update_subscription, "UpdateSubscriptionRequest", pb("Subscription")
            ),
            "ListSubscriptions": unary(
                self.list_subscriptions, "ListSubscriptionsRequest", ListSubscriptionsResponse
            ),
            "DeleteSubscription": unary(
                self.delete_subscription, "DeleteSubscriptionRequest", empty
            ),
            "Pull": unary(self.pull, "PullRequest", PullResponse),
            "Acknowledge": unary(self.acknowledge, "AcknowledgeRequest", empty),
            "ModifyAckDeadline": unary(self.modify_ack_deadline, "ModifyAckDeadlineRequest", empty),
            "StreamingPull": grpc.stream_stream_rpc_method_handler(
                self.streaming_pull,
                request_deserializer=pb("StreamingPullRequest").FromString,
                response_serializer=StreamingPullResponse.SerializeToString,
            ),
        }
        return [
            grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
            grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
        ]

    # -- Publisher -----------------------------------------------------------

    async def create_topic(self, request: Any, _: Context) -> Any:
        return await self.broker.create_topic(request)

    async def get_topic(self, request: Any, _: Context) -> Any:
        return self.broker.get_topic(request.topic)

    async def list_topics(self, request: Any, _: Context) -> Any:
        topics = self.broker.list_topics(request.project)
        page, token = _page(topics, request.page_size, request.page_token)
        return ListTopicsResponse(topics=page, next_page_token=token)

    async def list_topic_subscriptions(self, request: Any, _: Context) -> Any:
        names = self.broker.topic_subscriptions(request.topic)
        page, token = _page(names, request.page_size, request.page_token)
        return ListTopicSubscriptionsResponse(subscriptions=page, next_page_token=token)

    async def delete_topic(self, request: Any, _: Context) -> Any:
        await self.broker.delete_topic(request.topic)
        return EMPTY

    async def publish(self, request: Any, _: Context) -> Any:
        ids = await self.broker.publish(request.topic, request.messages)
        return PublishResponse(message_ids=ids)

    # -- Subscriber ------------------------------------------------------------

    async def create_subscription(self, request: Any, _: Context) -> Any:
        return await self.broker.create_subscription(request)

    async def get_subscription(self, request: Any, _: Context) -> Any:
        return self.broker.get_subscription(request.subscription)

    async def update_subscription(self, request: Any, _: Context) -> Any:
        return await self.broker.update_subscription(request)

    async def list_subscriptions(self, request: Any, _: Context) -> Any:
        subs = self.broker.list_subscriptions(request.project)
        page, token = _page(subs, request.page_size, request.page_token)
        return ListSubscriptionsResponse(subscriptions=page, next_page_token=token)

    async def delete_subscription(self, request: Any, _: Context) -> Any:
        await self.broker.delete_subscription(request.subscription)
        return EMPTY

    async def pull(self, request: Any, context: Context) -> Any:
        wait = 0.0
        if not request.return_immediately:
            # None without a client deadline (the stubs say float).
            remaining: float | None = context.time_remaining()
            # Answer (possibly empty) before the client's deadline, never with DEADLINE_EXCEEDED.
            wait = (
                PULL_WAIT_SECONDS if remaining is None else min(PULL_WAIT_SECONDS, remaining * 0.8)
            )
        batch = await self.broker.pull(request.subscription, request.max_messages, wait)
        response = PullResponse()
        _fill(batch, response.received_messages)
        return response

    async def acknowledge(self, request: Any, _: Context) -> Any:
        await self.broker.acknowledge(request.subscription, request.ack_ids)
        return EMPTY

    async def modify_ack_deadline(self, request: Any, _: Context) -> Any:
        self.broker.modify_ack_deadline(
            request.subscription, request.ack_ids, request.ack_deadline_seconds
        )
        return EMPTY

    async def streaming_pull(
        self, requests: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[Any]:
        """Push batches while the client's flow-control window has room.

        A reader task consumes the client's later requests (heartbeats, acks,
        new stream deadlines) while this generator writes; the client's acks
        (over this stream or unary Acknowledge) reopen the window.
        """
        try:
            first = await anext(aiter(requests))
        except StopAsyncIteration:
            return
        try:
            stream = self.broker.open_stream(
                first.subscription,
                first.max_outstanding_messages,
                first.max_outstanding_bytes,
                first.stream_ack_deadline_seconds,
            )
        except BrokerError as error:
            await context.abort(error.code, error.message)
        reader = asyncio.create_task(self._read(first, requests, stream))
        try:
            while stream.closed is None:
                batch = self.broker.take(stream)
                if batch:
                    response = StreamingPullResponse()
                    _fill(batch, response.received_messages)
                    yield response
                    continue
                stream.wake.clear()
                await stream.wake.wait()
        finally:
            reader.cancel()
            self.broker.close_stream(stream)
        reason = stream.closed
        if reason.code is not grpc.StatusCode.OK:
            await context.abort(reason.code, reason.message)

    async def _read(self, first: Any, requests: AsyncIterator[Any], stream: Stream) -> None:
        """Apply the client's requests (the first one too) until it half-closes or errs."""
        try:
            await self._stream_request(stream, first)
            async for request in requests:
                await self._stream_request(stream, request)
            stream.end(BrokerError(grpc.StatusCode.OK, "client half-closed the stream"))
        except BrokerError as error:
            stream.end(error)
        except (grpc.RpcError, asyncio.InvalidStateError):
            stream.end(BrokerError(grpc.StatusCode.CANCELLED, "the client went away"))
        except Exception:
            log.exception("internal error on a streaming pull")
            stream.end(BrokerError(grpc.StatusCode.INTERNAL, "internal emulator error"))

    async def _stream_request(self, stream: Stream, request: Any) -> None:
        name = stream.subscription.name
        if request.stream_ack_deadline_seconds:
            stream.ack_deadline = check_ack_deadline(request.stream_ack_deadline_seconds)
        ids, seconds = request.modify_deadline_ack_ids, request.modify_deadline_seconds
        if len(ids) != len(seconds):
            raise invalid("modify_deadline_ack_ids and modify_deadline_seconds differ in length")
        for ack_id, deadline in zip(ids, seconds, strict=True):
            self.broker.modify_ack_deadline(name, [ack_id], deadline)
        if request.ack_ids:
            await self.broker.acknowledge(name, request.ack_ids)


def _guard(method: Handler) -> Handler:
    """Turn broker refusals into gRPC status codes, and crashes into INTERNAL."""

    async def handle(request: Any, context: Context) -> Any:
        try:
            return await method(request, context)
        except BrokerError as error:
            code, message = error.code, error.message
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("internal error in %s", method.__name__)
            code, message = grpc.StatusCode.INTERNAL, "internal emulator error"
        await context.abort(code, message)

    return handle
