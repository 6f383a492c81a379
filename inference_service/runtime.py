"""Per-process state of an inference worker: the served model and its background parts.

Created with the Flask app (cheap, no network), started after gunicorn forked
the worker: gRPC channels and boto3 clients must belong to the process that
uses them.
"""

from __future__ import annotations

import logging

from inference_service.config import InferenceSettings
from inference_service.feedback import FeedbackPublisher, rate_limiter
from inference_service.loader import ModelLoader
from inference_service.model_holder import ModelHolder
from inference_service.reloader import Reloader
from tagloop.channels.bus import Bus
from tagloop.channels.registry import Registry
from tagloop.web.httpmetrics import multiprocess_dir

log = logging.getLogger(__name__)

NO_KEY_REASON = (
    "no model verification key: set TAGLOOP_MODEL_PUBLIC_KEYS or TAGLOOP_MODEL_PUBLIC_KEYS_FILE "
    "to the learner's public key (models are never loaded unverified)"
)


class Runtime:
    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.holder = ModelHolder()
        self.bus = Bus(settings.common.gcp_project)  # clients are created on first use
        self.feedback = FeedbackPublisher(
            self.bus,
            settings.common.feedback_topic,
            settings.publish_timeout_seconds,
            rate_limiter(settings.feedback_rate, settings.feedback_burst, multiprocess_dir()),
        )
        self.reloader: Reloader | None = None
        self.not_ready_reason = "no model loaded yet"
        # Read here, in gunicorn's master (preload): a bad key file stops the replica at boot.
        self.trusted = settings.keys.trusted()

    def start(self) -> None:
        """Begin loading the promoted model and listening for updates (in the background).

        Without a trusted key nothing is loaded: the replica stays up (feedback
        still works) but not ready, and /readyz says why.
        """
        trusted = self.trusted
        if trusted is None:
            self.not_ready_reason = NO_KEY_REASON
            log.error("not loading any model: %s", NO_KEY_REASON)
            return
        registry = Registry.from_settings(self.settings.common, trusted=trusted)
        self.reloader = Reloader(
            self.bus,
            registry,
            ModelLoader(registry, self.settings.model_cache_dir, trusted),
            self.holder,
            self.settings.common.model_topic,
            self.settings.reconcile_seconds,
            self.settings.common.pubsub_provision,
        )
        self.reloader.start()

    def stop(self) -> None:
        """Clean shutdown: delete this process's subscription, flush and close the clients."""
        if self.reloader is not None:
            self.reloader.stop()
            self.reloader = None
        try:
            self.bus.close()
        except Exception as error:
            log.warning("closing the Pub/Sub clients failed: %s", error)
