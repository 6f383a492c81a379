"""Screenshots of the web UI for the README: main view, queue mode, an error state.

Everything is real and runs on free ports: SeaweedFS with a model trained on
data/train.tsv (metrics measured on data/test.tsv), the Pub/Sub emulator, one
inference replica, the UI server and headless Chromium. Takes about a minute:

    .venv/bin/python docs/screenshots/make.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from tagloop.channels.bus import Bus  # noqa: E402
from tagloop.domain.bundle import save_bundle  # noqa: E402
from tagloop.domain.data import load_labeled  # noqa: E402
from tagloop.domain.evaluation import evaluate  # noqa: E402
from tagloop.domain.model import TagModel  # noqa: E402
from tagloop_dev.emulator.launcher import EmulatorProcess  # noqa: E402
from tagloop_dev.processes import free_port  # noqa: E402
from tagloop_dev.s3server import S3Server  # noqa: E402
from tests.fixtures.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.fixtures.inference import ModelPublisher, replica_env, start_replica  # noqa: E402
from tests.fixtures.keys import model_signer  # noqa: E402
from tests.fixtures.ui import start_ui  # noqa: E402

TITLE = "How to merge two pandas dataframes on a column in Python?"
VIEWPORT = {"width": 1280, "height": 860}


def shoot(page: Page, name: str) -> None:
    page.mouse.move(0, 0)
    page.screenshot(path=HERE / f"{name}.png", full_page=True)
    print(f"wrote docs/screenshots/{name}.png")


def main_view(page: Page, base_url: str) -> None:
    page.goto(base_url + "/")
    page.get_by_label("Title").fill(TITLE)
    tags = page.get_by_role("list", name="Tags").get_by_role("listitem")
    expect(tags.first).to_be_visible()
    add = page.get_by_label("Add tag")
    add.fill("Merge Dataframes")
    add.press("Enter")
    expect(tags.filter(has_text="merge-dataframes")).to_be_visible()
    add.fill("nump")
    expect(page.get_by_role("listbox")).to_be_visible()
    shoot(page, "main")


def queue_mode(page: Page, base_url: str) -> None:
    page.goto(base_url + "/#queue")
    position = page.locator("#queue-position")
    for number in (1, 2):
        expect(position).to_contain_text(f"Title {number} of")
        expect(page.get_by_role("button", name="Accept")).to_be_focused()
        page.keyboard.press("a")
    expect(position).to_contain_text("2 submitted in this browser")
    shoot(page, "queue")


def error_state(page: Page, base_url: str) -> None:
    page.goto(base_url + "/")
    page.get_by_label("Title").fill(
        "Why does my Java HashMap lose entries under concurrent access?"
    )
    expect(page.locator("#title-error")).to_be_visible()
    add = page.get_by_label("Add tag")
    add.fill("java")
    add.press("Enter")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#submit-error")).to_be_visible()
    expect(page.locator("#model-error")).to_be_visible()
    shoot(page, "error")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tagloop-screenshots-") as tmp:
        root = Path(tmp)
        train, test = load_labeled(REPO / "data/train.tsv"), load_labeled(REPO / "data/test.tsv")
        model = TagModel().fit(train.titles, train.tags)
        save_bundle(model, root / "bundle", {})
        with (
            S3Server(root / "s3", port=0, log_path=root / "weed.log") as s3,
            EmulatorProcess() as emulator,
        ):
            os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host  # for this process's Bus
            registry = s3.registry("tagloop-models", signer=model_signer())
            registry.ensure_bucket()
            bus = Bus("tagloop-screenshots")
            for topic in ("tag-feedback", "model-updates"):
                bus.ensure_topic(topic)
            publisher = ModelPublisher(registry, bus, "model-updates", root / "bundle")
            publisher.publish(broadcast=False, metrics=evaluate(model, test.titles, test.tags))
            env = replica_env(
                emulator_host=emulator.host,
                project="tagloop-screenshots",
                s3=s3,
                bucket="tagloop-models",
                cache_dir=root / "cache",
                TAGLOOP_WORKERS="1",
            )
            port = free_port()
            with (
                start_ui([f"http://127.0.0.1:{port}"], TAGLOOP_UI_MODEL_POLL_SECONDS="1") as ui,
                sync_playwright() as playwright,
            ):
                browser = playwright.chromium.launch(
                    executable_path=chromium_path(), args=CHROMIUM_ARGS
                )
                options = {"viewport": VIEWPORT, "locale": "en-GB", "timezone_id": "UTC"}
                with start_replica(env, port=port):
                    main_view(browser.new_page(**options), ui.base_url)
                    queue_mode(browser.new_page(**options), ui.base_url)
                error_state(browser.new_page(**options), ui.base_url)
                browser.close()
            bus.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
