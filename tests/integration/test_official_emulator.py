"""The official emulator launcher: the reference emulator starts, serves the real client, stops."""

from __future__ import annotations

import pytest

from tagloop.channels.bus import Bus
from tests.fixtures.pubsub import OfficialEmulatorProcess, unique_project

pytestmark = pytest.mark.official_emulator


def test_official_emulator_carries_a_message_and_stops_without_leftovers(
    official_pubsub_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", official_pubsub_emulator)
    bus = Bus(unique_project())
    try:
        topic = bus.ensure_topic("feedback-topic")
        bus.ensure_subscription("feedback-topic", "learner-sub")
        bus.publisher.publish(topic, b"payload", key="value").result(timeout=10)
        received = bus.pull("learner-sub", timeout=10)
        assert [(m.data, m.attributes) for m in received] == [(b"payload", {"key": "value"})]
    finally:
        bus.close()


def test_official_emulator_process_is_gone_after_stop() -> None:
    emulator = OfficialEmulatorProcess().start()
    process = emulator.process
    assert process is not None and process.poll() is None
    emulator.stop()
    assert process.poll() is not None
