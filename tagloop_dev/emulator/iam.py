"""`--deny-admin`: the emulator answers admin RPCs as Pub/Sub does for a service account without
admin rights (PERMISSION_DENIED), so tests can see the services run with Terraform's IAM.

Emulators have no IAM at all; this mode models the grants of
terraform/modules/identity: nobody may create, change or delete topics or
subscriptions, except subscriptions whose id starts with one of the allowed
prefixes (the inference processes' own, as their IAM condition permits).
Data-plane calls (publish, pull, ack) and reads (get, list) pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

# Publisher/Subscriber methods that change resources, and the request field naming it.
ADMIN_METHODS = {
    "/google.pubsub.v1.Publisher/CreateTopic": "name",
    "/google.pubsub.v1.Publisher/UpdateTopic": "topic.name",
    "/google.pubsub.v1.Publisher/DeleteTopic": "topic",
    "/google.pubsub.v1.Publisher/DetachSubscription": "subscription",
    "/google.pubsub.v1.Subscriber/CreateSubscription": "name",
    "/google.pubsub.v1.Subscriber/UpdateSubscription": "subscription.name",
    "/google.pubsub.v1.Subscriber/DeleteSubscription": "subscription",
    "/google.pubsub.v1.Subscriber/CreateSnapshot": "name",
    "/google.pubsub.v1.Subscriber/UpdateSnapshot": "snapshot.name",
    "/google.pubsub.v1.Subscriber/DeleteSnapshot": "snapshot",
}
SUBSCRIPTION_METHODS = {"CreateSubscription", "UpdateSubscription", "DeleteSubscription"}


def _field(request: Any, dotted: str) -> str:
    value = request
    for part in dotted.split("."):
        value = getattr(value, part)
    return str(value)


class DenyAdmin(grpc.aio.ServerInterceptor):
    """PERMISSION_DENIED for admin RPCs, except on subscriptions with an allowed id prefix."""

    def __init__(self, allowed_subscription_prefixes: Sequence[str] = ()) -> None:
        self.allowed = tuple(allowed_subscription_prefixes)

    def permitted(self, method: str, resource: str) -> bool:
        short = method.rsplit("/", 1)[-1]
        name = resource.rsplit("/", 1)[-1]
        return short in SUBSCRIPTION_METHODS and any(name.startswith(p) for p in self.allowed)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        field = ADMIN_METHODS.get(details.method)
        if handler is None or field is None or handler.unary_unary is None:
            return handler
        inner: Any = handler.unary_unary  # the service's async handler
        method = details.method

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            resource = _field(request, field)
            if not self.permitted(method, resource):
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"User not authorized to perform this action ({method} on {resource}).",
                )
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
