"""Issue 18 end to end: two annotators in two browsers grow the validated test set.

The whole local stack (`tagloop up`, our emulator) with a refit every seven
corrections. Annotator A (one browser context, so one signed cookie) tags four
queue titles; annotator B (another context) opens the queue, is offered A's
titles first as second opinions, and agrees on three. The seventh correction
triggers a refit whose candidate records the validated set: exactly those three
titles (the digest says so), never the one only A corrected.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect

from learning_service.validated import ValidatedSet
from tagloop.domain.text import normalize_title
from tests.fixtures.stack import StackProcess, learner_status, loop_env, scrape
from tests.fixtures.wait import wait_until

pytestmark = pytest.mark.slow

AGREED = 3
CORRECTIONS = AGREED + 1 + AGREED  # A: three shared titles and one alone; B: the three
TAGS = ["python"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path) -> Iterator[StackProcess]:
    var = tmp_path_factory.mktemp("validated") / "var"
    env = loop_env(small_corpus, TAGLOOP_REFIT_EVERY=str(CORRECTIONS))
    with StackProcess(var, env=env) as up:
        yield up


@pytest.fixture
def annotator_page(browser: Browser, stack: StackProcess) -> Iterator[Callable[[], Page]]:
    """Opens the queue in a browser context of its own (its own cookie: its own annotator);
    every page fails the test on an uncaught JavaScript error."""
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def open_queue() -> Page:
        context = browser.new_context(locale="en-GB", timezone_id="UTC")
        contexts.append(context)
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
        page.goto(stack.ui_url + "/#queue")
        return page

    yield open_queue
    for context in contexts:
        context.close()
    assert not problems, "\n".join(problems)


def tag_and_submit(page: Page, version: str) -> str:
    """Replace the predicted tags of the shown queue title with TAGS and submit; its title."""
    expect(page.locator("#prediction-status")).to_contain_text(version)
    title = page.get_by_label("Title").input_value()
    chips = page.get_by_role("list", name="Tags").get_by_role("listitem")
    add = page.get_by_label("Add tag")
    add.focus()
    for _ in range(20):
        if not chips.count():
            break
        add.press("Backspace")  # in the empty field: removes the last tag
    add.fill(TAGS[0])
    add.press("Enter")
    expect(chips).to_have_count(1)
    with page.expect_response("**/api/feedback") as answer:
        page.get_by_role("button", name="Accept").click()
    assert answer.value.status == 202
    expect(page.get_by_label("Title")).not_to_have_value(title)  # the next one is shown
    return title


def feedback_rows(stack: StackProcess) -> int:
    return int(learner_status(stack)["corpus"]["feedback_rows"])


def newest_candidate(stack: StackProcess, after: str) -> dict[str, Any] | None:
    models = requests.get(f"{stack.learner_url}/api/models", timeout=5).json()["models"]
    newest = models[0] if models else None
    return newest if newest and newest["version"] != after else None


def test_titles_two_annotators_agree_on_join_the_validated_set(
    stack: StackProcess, annotator_page: Callable[[], Page], tmp_path: Path
) -> None:
    version = learner_status(stack)["current_version"]
    assert version is not None
    position = "#queue-position"

    first = annotator_page()
    expect(first.locator(position)).to_contain_text("Title 1 of")
    titles = [tag_and_submit(first, version) for _ in range(AGREED + 1)]
    *shared, alone = titles
    wait_until(lambda: feedback_rows(stack) == AGREED + 1, timeout=30, what="A's corrections")

    second = annotator_page()
    for title in shared:  # offered first, oldest first
        expect(second.locator(position)).to_contain_text("Second opinion")
        expect(second.get_by_label("Title")).to_have_value(title)
        tag_and_submit(second, version)
    expect(second.locator(position)).to_contain_text("Second opinion")
    expect(second.get_by_label("Title")).to_have_value(alone)  # B leaves this one alone
    # A is not offered its own titles: its queue goes on with the file.
    first.reload()
    expect(first.locator(position)).to_contain_text(f"Title {AGREED + 2} of")

    candidate = wait_until(
        lambda: newest_candidate(stack, version), timeout=120, what="the refit's candidate"
    )
    assert candidate is not None
    validated = candidate["validated"]
    expected = ValidatedSet(
        {normalize_title(title): tuple(TAGS) for title in shared}, version=validated["version"]
    )
    assert {key: validated[key] for key in ("version", "digest", "size")} == expected.summary()
    assert validated["metrics"]["rows"] == AGREED
    assert set(validated["metrics"]["per_tag"]) >= set(TAGS)
    assert learner_status(stack)["validated"] == expected.summary()
    assert scrape(stack.learner_url)["tagloop_validated_set_size"][()] == AGREED
    assert not expected.contains(alone)

    out = tmp_path / "validated.parquet"
    data_dir = stack.var_dir / "learner"
    command = [sys.executable, "-m", "tagloop.cli", "export", "--validated-only"]
    command += ["--data-dir", str(data_dir), "--out", str(out)]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    assert re.search(rf"exported {2 * AGREED} validated-set corrections", printed)
