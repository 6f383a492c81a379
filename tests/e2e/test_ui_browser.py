"""The tagging UI end to end: headless Chromium -> UI server -> a real inference
replica (gunicorn) -> the Pub/Sub emulator, with the model in SeaweedFS.

Every correction is checked where it lands: on a subscription of the feedback
topic, byte for byte what the learner would receive.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, Request, expect

from tagloop.channels.bus import Bus
from tagloop.domain.messages import FEEDBACK_SCHEMA
from tagloop.domain.tags import ALIASES, InvalidTag, normalize_tag
from tagloop_dev.s3server import S3Server
from tests.fixtures.inference import (
    ModelPublisher,
    Replica,
    inference_setup,
    replica_env,
    start_replica,
)
from tests.fixtures.keys import model_signer
from tests.fixtures.pubsub import free_port, unique_project
from tests.fixtures.s3 import unique_bucket
from tests.fixtures.ui import UIServer, start_ui
from tests.fixtures.wait import wait_until

pytestmark = pytest.mark.slow

FEEDBACK_TOPIC = "tag-feedback"
FEEDBACK_BURST = 3
TITLE = "How to merge two pandas dataframes on a column in Python?"


@dataclass
class Loop:
    """One replica on a fixed port (so it can be stopped and restarted) behind a UI server."""

    env: dict[str, str]
    port: int
    bus: Bus
    publisher: ModelPublisher
    ui: UIServer | None = None
    replica: Replica | None = None
    _running: AbstractContextManager[Replica] | None = field(default=None, repr=False)

    def start_replica(self) -> Replica:
        self._running = start_replica(self.env, port=self.port)
        self.replica = self._running.__enter__()
        return self.replica

    def stop_replica(self) -> None:
        assert self._running is not None
        self._running.__exit__(None, None, None)
        self._running = self.replica = None

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Ask the replica itself (not through the UI) what the page should show."""
        assert self.replica is not None
        response = self.replica.session.request(
            method, self.replica.base_url + path, timeout=10, **kwargs
        )
        response.raise_for_status()
        return response.json()

    def subscribe_feedback(self) -> str:
        """A fresh subscription on the feedback topic: sees only what is published from now."""
        name = f"ui-test-{random.getrandbits(48):012x}"
        self.bus.ensure_subscription(FEEDBACK_TOPIC, name)
        return name

    def collect(self, subscription: str, count: int) -> list[dict[str, Any]]:
        """Wait for `count` feedback messages; then make sure no extra one follows."""
        received: list[Any] = []

        def probe() -> bool:
            batch = self.bus.pull(subscription, max_messages=10, timeout=2.0)
            if batch:
                self.bus.ack(subscription, [item.ack_id for item in batch])
                received.extend(batch)
            return len(received) >= count

        wait_until(probe, timeout=20, what=f"{count} feedback message(s)")
        received.extend(self.bus.pull(subscription, max_messages=10, timeout=1.0))
        assert len(received) == count, [item.data for item in received]
        assert all(item.attributes["schema"] == FEEDBACK_SCHEMA for item in received)
        return [json.loads(item.data) for item in received]


@pytest.fixture(scope="module")
def loop(
    s3_server: S3Server,
    pubsub_emulator: str,
    model_bundle: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Loop]:
    project, bucket = unique_project("ui"), unique_bucket("ui")
    registry = s3_server.registry(bucket, signer=model_signer())
    registry.ensure_bucket()
    bus = Bus(project)
    bus.ensure_topic(FEEDBACK_TOPIC)
    bus.ensure_topic("model-updates")
    publisher = ModelPublisher(registry, bus, "model-updates", model_bundle)
    publisher.publish(broadcast=False, metrics={"f1_macro": 0.5, "accuracy": 0.4, "rows": 4000})
    env = replica_env(
        emulator_host=pubsub_emulator,
        project=project,
        s3=s3_server,
        bucket=bucket,
        cache_dir=tmp_path_factory.mktemp("ui-inference-cache"),
        TAGLOOP_WORKERS="1",
        TAGLOOP_RECONCILE_SECONDS="1",
        # Three corrections per client, then one per 100 s: each test is its own client.
        TAGLOOP_FEEDBACK_BURST=str(FEEDBACK_BURST),
        TAGLOOP_FEEDBACK_RATE="0.01",
    )
    state = Loop(env, free_port(), bus, publisher)
    state.start_replica()
    try:
        with start_ui(
            [f"http://127.0.0.1:{state.port}"],
            TAGLOOP_UI_MODEL_POLL_SECONDS="0.5",
            TAGLOOP_PROXY_HOPS="1",
        ) as ui:
            state.ui = ui
            yield state
    finally:
        if state.replica is not None:
            state.stop_replica()
        bus.close()


CLIENTS = itertools.count(1)


@pytest.fixture
def page(ui_page: Page, loop: Loop) -> Page:
    """The UI in a fresh browser context that the rate limiter sees as a client of its own.

    The UI server trusts one proxy hop here, as behind an ingress, so the
    address in X-Forwarded-For is the client the inference service limits.
    """
    assert loop.ui is not None
    ui_page.context.set_extra_http_headers({"X-Forwarded-For": f"198.51.100.{next(CLIENTS)}"})
    ui_page.goto(loop.ui.base_url + "/")
    return ui_page


def chip_tags(page: Page) -> list[str]:
    items = page.get_by_role("list", name="Tags").get_by_role("listitem").all_inner_texts()
    return [text.split()[0] for text in items]


def expect_chips(page: Page, tags: list[str]) -> None:
    items = page.get_by_role("list", name="Tags").get_by_role("listitem")
    expect(items).to_have_count(len(tags))
    for item, tag in zip(items.all(), tags, strict=True):
        expect(item).to_have_text(re.compile(rf"^{re.escape(tag)}\b"))


def test_predict_correct_and_submit(page: Page, loop: Loop) -> None:
    expected = loop.api("POST", "/api/predict", json={"title": TITLE})
    predicted = [item["tag"] for item in expected["tags"]]
    vocabulary = loop.api("GET", "/api/tags")["tags"]
    subscription = loop.subscribe_feedback()

    page.get_by_label("Title").fill(TITLE)
    expect_chips(page, predicted)
    first = page.get_by_role("list", name="Tags").get_by_role("listitem").first
    expect(first).to_contain_text(f"{round(expected['tags'][0]['score'] * 100)}%")
    expect(page.locator("#prediction-status")).to_contain_text(expected["model_version"])

    # Remove the last predicted tag with a click.
    removed = predicted[-1]
    page.get_by_role("button", name=f"Remove {removed}").click()
    # Add a known tag through the autocomplete, choosing the option with the keyboard.
    known = next(
        t for t in ("csv", "numpy", "sql", "json") if t in vocabulary and t not in predicted
    )
    add = page.get_by_label("Add tag")
    add.fill(known[:-1])
    option = page.get_by_role("option").filter(has_text=re.compile(rf"^{re.escape(known)}\b"))
    expect(option).to_be_visible()
    for _ in range(10):
        add.press("ArrowDown")
        if option.get_attribute("aria-selected") == "true":
            break
    add.press("Enter")
    # And a brand-new one, typed the way people type.
    add.fill("  Merge   Dataframes ")
    add.press("Enter")
    new_chip = (
        page.get_by_role("list", name="Tags")
        .get_by_role("listitem")
        .filter(has_text="merge-dataframes")
    )
    expect(new_chip).to_contain_text("new")

    tags = chip_tags(page)
    assert sorted(tags) == sorted([*predicted[:-1], known, "merge-dataframes"])
    with page.expect_request("**/api/feedback") as sent:
        page.get_by_role("button", name="Submit").click()
    expect(page.locator("#submit-status")).to_contain_text("Received")
    body = sent.value.post_data_json
    assert body is not None
    feedback_id = body["feedback_id"]

    [message] = loop.collect(subscription, 1)
    submitted_at = message.pop("submitted_at")
    assert datetime.fromisoformat(submitted_at.replace("Z", "+00:00")).tzinfo is not None
    # The browser's anonymous id, from the UI server's signed cookie (not its address).
    assert re.fullmatch(r"anon:[0-9a-f]{32}", message.pop("annotator"))
    assert message == {
        "feedback_id": feedback_id,
        "title": TITLE,
        "tags": tags,
        "predicted_tags": predicted,
        "model_version": expected["model_version"],
    }
    # Cleared for the next title.
    expect(page.get_by_label("Title")).to_have_value("")
    expect(page.get_by_role("list", name="Tags").get_by_role("listitem")).to_have_count(0)


def test_keyboard_alone_edits_and_submits(page: Page, loop: Loop) -> None:
    subscription = loop.subscribe_feedback()
    page.get_by_label("Title").focus()
    page.keyboard.type("Python regex to split a string on commas")
    page.keyboard.press("Enter")  # predict now, go to the tag input
    expect(page.get_by_label("Add tag")).to_be_focused()
    expect(page.get_by_role("list", name="Tags").get_by_role("listitem").first).to_be_visible()
    before = chip_tags(page)
    page.keyboard.type("Thread Safety")
    page.keyboard.press("Enter")
    expect_chips(page, [*before, "thread-safety"])
    page.keyboard.press("Backspace")  # in the empty field: removes the last tag
    expect_chips(page, before)
    page.keyboard.type("thread_safety")
    page.keyboard.press("Enter")
    expect_chips(page, [*before, "thread-safety"])
    # Back to the last tag's remove button; focus is visible on every stop.
    for _ in range(10):
        page.keyboard.press("Shift+Tab")
        focused = page.evaluate(
            """() => ({remove: document.activeElement.dataset.remove ?? null,
                       outline: getComputedStyle(document.activeElement).outlineWidth})"""
        )
        assert float(focused["outline"].removesuffix("px")) >= 2
        if focused["remove"]:
            break
    assert focused["remove"] == "thread-safety"
    page.keyboard.press("Delete")
    expect_chips(page, before)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#submit-status")).to_contain_text("Received")
    [message] = loop.collect(subscription, 1)
    assert message["tags"] == before


def test_queue_accepts_three_titles_with_the_keyboard_alone(page: Page, loop: Loop) -> None:
    assert loop.ui is not None
    queue = requests.get(loop.ui.base_url + "/ui/queue?limit=3", timeout=5).json()["items"]
    titles = [item["title"] for item in queue]
    expected = loop.api("POST", "/api/predict", json={"titles": titles})["predictions"]
    subscription = loop.subscribe_feedback()

    page.goto(loop.ui.base_url + "/#queue")
    position = page.locator("#queue-position")
    for number, title in enumerate(titles, start=1):
        expect(position).to_contain_text(f"Title {number} of 20,000")
        expect(page.get_by_label("Title")).to_have_value(title)
        expect(page.get_by_role("button", name="Accept")).to_be_focused()
        page.keyboard.press("a")
    expect(position).to_contain_text("Title 4 of 20,000 · 3 submitted in this browser")

    messages = loop.collect(subscription, 3)
    assert [m["title"] for m in messages] == titles
    for message, prediction in zip(messages, expected, strict=True):
        tags = [t["tag"] for t in prediction["tags"]]
        assert message["tags"] == tags
        assert message["predicted_tags"] == tags
        assert message["model_version"] == prediction["model_version"]

    page.reload()  # the browser remembers what was submitted
    expect(position).to_contain_text("Title 4 of 20,000 · 3 submitted in this browser")
    page.keyboard.press("s")  # skip
    expect(position).to_contain_text("Title 5 of 20,000")


def test_outage_keeps_the_work_and_the_retry_is_counted_once(page: Page, loop: Loop) -> None:
    subscription = loop.subscribe_feedback()
    title = "Why does my Java HashMap lose entries under concurrent access?"
    loop.stop_replica()
    try:
        page.get_by_label("Title").fill(title)
        title_error = page.locator("#title-error")
        expect(title_error).to_contain_text("not reachable")
        expect(page.get_by_label("Title")).to_have_value(title)
        add = page.get_by_label("Add tag")
        add.fill("java")
        add.press("Enter")
        attempts: list[Any] = []

        def record(request: Request) -> None:
            if request.url.endswith("/api/feedback"):
                attempts.append(request.post_data_json)

        page.on("request", record)
        page.get_by_role("button", name="Submit").click()
        submit_error = page.locator("#submit-error")
        expect(submit_error).to_contain_text("press Submit to send it again")
        expect(page.get_by_label("Title")).to_have_value(title)
        expect_chips(page, ["java"])
        page.reload()  # even a reload loses nothing
        expect(page.get_by_label("Title")).to_have_value(title)
        expect_chips(page, ["java"])
    finally:
        loop.start_replica()
    expect(page.locator("#model-error")).to_be_hidden()
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#submit-status")).to_contain_text("Received")

    [message] = loop.collect(subscription, 1)
    assert len(attempts) == 2
    assert attempts[0]["feedback_id"] == attempts[1]["feedback_id"] == message["feedback_id"]
    assert message["tags"] == ["java"]
    assert message["title"] == title


def test_model_panel_reports_a_new_version(page: Page, loop: Loop) -> None:
    current = loop.api("GET", "/api/model")
    expect(page.locator("#model-version")).to_have_text(current["version"])
    expect(page.get_by_role("row", name=re.compile("F1 \\(macro\\)"))).to_contain_text("0.500")
    version = loop.publisher.publish(metrics={"f1_macro": 0.61, "rows": 4000})
    expect(page.locator("#model-version")).to_have_text(version, timeout=20_000)
    notice = page.locator("#model-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text(f"{version} now serves (was {current['version']})")
    expect(page.get_by_role("row", name=re.compile("F1 \\(macro\\)"))).to_contain_text("0.610")


def submit_title(page: Page, title: str) -> None:
    page.get_by_label("Title").fill(title)
    expect(page.get_by_role("list", name="Tags").get_by_role("listitem").first).to_be_visible()
    page.get_by_role("button", name="Submit").click()


def test_rate_limit_is_explained_and_nothing_is_lost(page: Page, loop: Loop) -> None:
    status = page.locator("#submit-status")
    for number in range(FEEDBACK_BURST):
        submit_title(page, f"How do I read a CSV file with Python, part {number}?")
        expect(status).to_contain_text("Received")
    title = "How do I read a CSV file with Python, one time too many?"
    submit_title(page, title)
    expect(page.locator("#submit-error")).to_contain_text(
        re.compile(r"Too many requests in a short time\. Wait \d+ seconds")
    )
    expect(page.get_by_label("Title")).to_have_value(title)


def test_no_model_yet_then_the_first_one_arrives(
    ui_page: Page,
    s3_server: S3Server,
    pubsub_emulator: str,
    model_bundle: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # No version published: the replica starts without a model.
    with inference_setup(
        s3_server,
        pubsub_emulator,
        model_bundle,
        tmp_path_factory.mktemp("ui-empty-cache"),
        publish_first=False,
        TAGLOOP_WORKERS="1",
        TAGLOOP_RECONCILE_SECONDS="1",
    ) as setup:
        bus = setup.publisher.bus
        bus.ensure_topic(FEEDBACK_TOPIC)
        subscription = f"ui-test-{random.getrandbits(48):012x}"
        bus.ensure_subscription(FEEDBACK_TOPIC, subscription)
        with start_ui([setup.replica.base_url], TAGLOOP_UI_MODEL_POLL_SECONDS="0.5") as ui:
            page = ui_page
            page.goto(ui.base_url + "/")
            expect(page.locator("#model-error")).to_contain_text("No model is loaded yet")
            title = "Sorting a list of tuples by the second element"
            page.get_by_label("Title").fill(title)
            expect(page.locator("#title-error")).to_contain_text(
                "No model is loaded yet, so there are no predictions"
            )
            # Typed but not yet added: Submit takes it along.
            page.get_by_label("Add tag").fill("Python")
            page.get_by_role("button", name="Submit").click()
            expect(page.locator("#submit-status")).to_contain_text("Received")
            [received] = wait_until(lambda: bus.pull(subscription, timeout=2.0), timeout=20)
            message = json.loads(received.data)
            assert (message["title"], message["tags"]) == (title, ["python"])
            assert (message["predicted_tags"], message["model_version"]) == ([], None)

            # The first model arrives: the panel shows it and predictions work again.
            version = setup.publisher.publish()
            expect(page.locator("#model-version")).to_have_text(version, timeout=20_000)
            page.get_by_label("Title").fill(title)
            expect(page.locator("#prediction-status")).to_contain_text(version)
            expect(page.locator("#title-error")).to_be_hidden()


CRITICAL = {"serious", "critical"}


def test_no_serious_accessibility_violations(page: Page, loop: Loop) -> None:
    axe = Axe()
    options = {"runOnly": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}
    page.get_by_label("Title").fill(TITLE)
    expect(page.get_by_role("list", name="Tags").get_by_role("listitem").first).to_be_visible()
    page.get_by_label("Add tag").fill("py")
    expect(page.get_by_role("listbox")).to_be_visible()
    views = {"main view": axe.run(page, options=options)}
    page.get_by_role("button", name="Queue").click()
    expect(page.get_by_role("button", name="Accept")).to_be_focused()
    views["queue"] = axe.run(page, options=options)
    page.get_by_role("button", name="Single title").click()
    page.get_by_label("Title").fill("x" * 400)  # longer than any title the API accepts
    expect(page.locator("#title-error")).to_contain_text(
        "The server did not accept this: title is longer than 300 characters"
    )
    expect(page.get_by_label("Title")).to_have_attribute("aria-invalid", "true")
    views["error"] = axe.run(page, options=options)
    problems = {
        view: [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]])
            for v in result.response["violations"]
            if v["impact"] in CRITICAL
        ]
        for view, result in views.items()
    }
    assert problems == {view: [] for view in views}


# The browser's normaliser (static/normalize.js, fed by /ui/config) against tagloop.domain.tags.
CASES = [
    *ALIASES,
    *(alias.upper() for alias in ALIASES),
    "Ruby on Rails",
    "  c#  ",
    "C++",
    ".NET",
    "node.js",
    "python_3",
    "a--b",
    "a - b",
    "-x",
    "x-",
    "x.",
    "++",
    "#",
    "",
    "   ",
    "__",
    "x" * 35,
    "x" * 36,
    "é" * 3,
    "Straße",
    "ﬁle",
    "\u212aotlin",  # Kelvin sign
    "İstanbul",
    "\u00a0js\u2003",
    "tab\tsep",
    "line\nbreak",
    "\x1fjs\x1c",
    "emoji😀",
    "constructor",
    "__proto__",
    "toString",
    "hasOwnProperty",
    "\U0001d52dython",  # mathematical fraktur p
]


def random_cases(count: int) -> list[str]:
    alphabet = "aAzZ09+#.-_ \t\u00a0\u2003\u3000ß\u017f\ufb00İ\u212aé😀\x1c"
    rng = random.Random(6)
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(count)]


def python_normalise(raw: str) -> str | None:
    try:
        return normalize_tag(raw)
    except InvalidTag:
        return None


def test_browser_normalises_tags_exactly_like_the_server(page: Page) -> None:
    cases = CASES + random_cases(3000)
    results = page.evaluate(
        """async (cases) => {
            const { createNormalizer } = await import("/static/normalize.js");
            const config = await (await fetch("/ui/config")).json();
            const normalize = createNormalizer(config.tag_rules);
            return cases.map((raw) => {
                const result = normalize(raw);
                return result.ok ? result.tag : null;
            });
        }""",
        cases,
    )
    mismatches = [
        (raw, python, browser)
        for raw, browser in zip(cases, results, strict=True)
        if (python := python_normalise(raw)) != browser
    ]
    assert mismatches == []
    assert results[: len(ALIASES)] == list(ALIASES.values())


def test_a_retry_keeps_its_feedback_id_and_a_changed_correction_gets_a_new_one(
    page: Page,
) -> None:
    ids = page.evaluate(
        """async () => {
            const { Submission } = await import("/static/submission.js");
            const submission = new Submission();
            const correction = { title: "t", tags: ["python"], predicted_tags: [] };
            const first = submission.prepare(correction).feedback_id;
            const retry = submission.prepare({ ...correction }).feedback_id;
            const changed = submission.prepare({ ...correction, tags: ["java"] }).feedback_id;
            submission.confirmed();
            const next = submission.prepare({ ...correction, tags: ["java"] }).feedback_id;
            return { first, retry, changed, next };
        }"""
    )
    assert ids["first"] == ids["retry"]
    assert len({ids["first"], ids["changed"], ids["next"]}) == 3
    uuid4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert all(uuid4.match(value) for value in ids.values())
