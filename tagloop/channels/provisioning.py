"""Who creates the Pub/Sub resources, and what a failed Pub/Sub call means.

Locally the services create the topics and subscriptions they use
(`TAGLOOP_PUBSUB_PROVISION=true`, the default: an emulator starts empty). In
the cloud Terraform creates them and the services' service accounts may not
(`false`): the learner then only checks that its subscription exists, and an
inference process creates nothing but its own per-process subscription on
the model topic (its IAM condition allows exactly the `inference-` prefix).

Every Pub/Sub call made here is wrapped so that a failure says which call on
which resource failed, which permission the call needs, and whether retrying
can help: permission denied, invalid argument and not found are permanent
(someone has to change IAM or Terraform), anything else is transient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.api_core import exceptions as gexc

from tagloop.channels.bus import Bus, PublishError

T = TypeVar("T")

# Errors that no amount of retrying fixes: IAM, configuration, missing resources.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    gexc.PermissionDenied,
    gexc.Unauthenticated,
    gexc.InvalidArgument,
    gexc.NotFound,
)

# The IAM permission each call needs (terraform/modules/identity grants them).
PERMISSIONS = {
    "create topic": "pubsub.topics.create",
    "create subscription": "pubsub.subscriptions.create (and pubsub.topics.attachSubscription)",
    "get subscription": "pubsub.subscriptions.get",
    "pull": "pubsub.subscriptions.consume",
    "publish": "pubsub.topics.publish",
}

# Prefix of every inference process's own subscription; the inference service
# account's IAM condition (terraform/modules/identity) allows only this prefix.
INFERENCE_SUBSCRIPTION_PREFIX = "inference-"


class PubSubFailure(Exception):
    """A Pub/Sub call failed: which call, on which resource, and whether retrying helps.

    A ValueError inside one is a configuration error (`Bus.ensure_subscription`
    found the subscription on another topic): permanent as well.
    """

    def __init__(self, call: str, resource: str, error: Exception) -> None:
        self.call = call
        self.resource = resource
        self.error = error
        self.permanent = isinstance(_cause(error), (*PERMANENT_ERRORS, ValueError))
        super().__init__(self._describe())

    @property
    def permission(self) -> str:
        return PERMISSIONS.get(self.call, "unknown")

    def _describe(self) -> str:
        cause = _cause(self.error)
        detail = getattr(cause, "message", None) or str(cause)
        if isinstance(cause, gexc.PermissionDenied | gexc.Unauthenticated):
            return (
                f"permission denied: {self.call} on {self.resource} needs {self.permission}"
                f" ({detail})"
            )
        if isinstance(cause, gexc.NotFound):
            return (
                f"not found: {self.resource} ({self.call}); with TAGLOOP_PUBSUB_PROVISION=false"
                f" Terraform must create it ({detail})"
            )
        if isinstance(cause, gexc.InvalidArgument | ValueError):
            return f"invalid: {self.call} on {self.resource}: {detail}"
        return f"{self.call} on {self.resource} failed ({type(cause).__name__}: {detail})"


def _cause(error: BaseException) -> BaseException:
    """The Pub/Sub error behind a wrapper (PublishError chains it)."""
    if isinstance(error, PublishError) and error.__cause__ is not None:
        return error.__cause__
    return error


def is_permanent(error: BaseException) -> bool:
    """True when retrying cannot help: IAM, a missing resource, a configuration mistake."""
    cause = _cause(error)
    if isinstance(cause, PubSubFailure):
        return cause.permanent
    return isinstance(cause, PERMANENT_ERRORS)


def guarded(call: str, resource: str, action: Callable[[], T]) -> T:
    """Run one Pub/Sub call; any failure becomes a PubSubFailure that names call and resource."""
    try:
        return action()
    except PubSubFailure:
        raise
    except Exception as error:
        raise PubSubFailure(call, resource, error) from error


class Provisioner:
    """Creates (provision=True) or only relies on (False) the resources a service uses."""

    def __init__(self, bus: Bus, provision: bool) -> None:
        self.bus = bus
        self.provision = provision

    def topic(self, topic: str, timeout: float) -> str:
        """The topic's path, created first when provisioning.

        Without provisioning nothing is checked: publishers hold no
        `topics.get`, and the first publish reports a missing topic.
        """
        path = self.bus.topic_path(topic)
        if self.provision:
            guarded("create topic", path, lambda: self.bus.ensure_topic(topic, timeout))
        return path

    def durable_subscription(
        self, topic: str, subscription: str, ack_deadline_seconds: int, timeout: float
    ) -> str:
        """The learner's subscription: created with its topic, or checked to exist on the topic."""
        path = self.bus.subscription_path(subscription)
        if self.provision:
            self.topic(topic, timeout)
            return guarded(
                "create subscription",
                path,
                lambda: self.bus.ensure_subscription(
                    topic, subscription, ack_deadline_seconds=ack_deadline_seconds, timeout=timeout
                ),
            )
        attached = guarded(
            "get subscription", path, lambda: self.bus.subscription_topic(subscription, timeout)
        )
        if attached != self.bus.topic_path(topic):
            raise PubSubFailure(
                "get subscription",
                path,
                ValueError(f"attached to {attached}, not to {self.bus.topic_path(topic)}"),
            )
        return path

    def own_subscription(
        self, topic: str, subscription: str, expiration_ttl_seconds: int, timeout: float
    ) -> str:
        """A per-process subscription, always created by its process (the fan-out).

        A missing topic is created only when provisioning; in the cloud it is
        Terraform's, and its absence is a permanent failure.
        """
        path = self.bus.subscription_path(subscription)

        def create() -> str:
            return guarded(
                "create subscription",
                path,
                lambda: self.bus.ensure_subscription(
                    topic,
                    subscription,
                    expiration_ttl_seconds=expiration_ttl_seconds,
                    timeout=timeout,
                ),
            )

        try:
            return create()
        except PubSubFailure as failure:
            if not (self.provision and isinstance(failure.error, gexc.NotFound)):
                raise
        self.topic(topic, timeout)
        return create()
