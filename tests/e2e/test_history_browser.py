"""The model history page end to end: headless Chromium -> UI server -> a real learner
(its registry in SeaweedFS, its broadcasts on the Pub/Sub emulator).

Two versions exist: the learner's bootstrap model (promoted by the gate) and a
second one the gate held back. The page plots both, lists the decisions, and
offers promote and rollback only once an admin token is typed in; both
actions, done through the page, move `models/current.json`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tagloop.channels.registry import Registry, new_version
from tagloop_dev.s3server import S3Server
from tests.fixtures.keys import model_signer
from tests.fixtures.learning import ADMIN_TOKEN, LearnerStack
from tests.fixtures.pubsub import free_port
from tests.fixtures.ui import UIServer, start_ui
from tests.fixtures.wait import wait_until

pytestmark = pytest.mark.slow

HELD_BACK = "held back for the test"
AXE_OPTIONS = {"runOnly": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}


@dataclass
class History:
    ui: UIServer
    registry: Registry
    bootstrap: str
    second: str


@pytest.fixture
def history(learner_stack: LearnerStack, s3_server: S3Server, tmp_path: Path) -> Iterator[History]:
    learner = learner_stack.learner(TAGLOOP_REFIT_EVERY="100000").start()
    registry = s3_server.registry(learner_stack.registry.bucket, signer=model_signer())
    bootstrap = learner.get("/api/status")["current_version"]
    second = new_version()
    bundle = registry.fetch(bootstrap, tmp_path / "bundle")
    metadata = {**registry.get_metadata(bootstrap), "version": second}
    metadata["decision"] = {"promoted": False, "reason": HELD_BACK}
    metadata["metrics"] = {**metadata["metrics"], "f1_macro": metadata["metrics"]["f1_macro"] - 0.1}
    registry.put_version(second, bundle, metadata)
    # No replica: the history page needs only the learner.
    with start_ui([f"http://127.0.0.1:{free_port()}"], TAGLOOP_UI_LEARNER_URL=learner.url) as ui:
        yield History(ui, registry, bootstrap, second)
    assert learner.stop() == 0


def row(page: Page, version: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#versions tr[data-version="{version}"]')


def test_plot_decisions_and_admin_controls_only_with_the_token(
    ui_page: Page, history: History
) -> None:
    page = ui_page
    page.goto(history.ui.base_url + "/history")
    expect(page.get_by_role("status").first).to_have_text("2 versions.")
    expect(page.locator("#current-version")).to_have_text(history.bootstrap)

    plot = page.get_by_role("img", name="Test-set scores of 2 model versions, oldest first")
    expect(plot).to_be_visible()
    f1 = plot.locator('g.series[data-metric="f1_macro"]')
    expect(f1.locator("polyline")).to_have_count(1)
    expect(f1.locator("circle")).to_have_count(2)
    assert plot.locator("g.series").count() >= 3  # F1 macro, F1 micro, accuracy, AP, ROC AUC
    # The held-back version is drawn hollow (rejected), the bootstrap filled (promoted).
    fills = f1.locator("circle").evaluate_all("dots => dots.map(d => d.getAttribute('fill'))")
    assert fills[1] == "#ffffff" and fills[0] != "#ffffff"
    expect(page.get_by_role("list", name="Legend")).to_contain_text("F1 macro")

    expect(row(page, history.second)).to_contain_text(f"rejected: {HELD_BACK}")
    expect(row(page, history.bootstrap)).to_contain_text("promoted")
    expect(row(page, history.bootstrap)).to_contain_text("(current)")

    expect(page.get_by_role("button", name="Roll back to the previous version")).to_be_hidden()
    expect(page.get_by_role("button", name=f"Promote {history.second}")).to_have_count(0)
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert serious_violations(page) == []

    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Use token").click()
    expect(page.get_by_role("button", name="Roll back to the previous version")).to_be_focused()
    assert serious_violations(page) == []


def serious_violations(page: Page) -> list[tuple[str, str]]:
    result = Axe().run(page, options=AXE_OPTIONS)
    return [
        (violation["id"], str([node["target"] for node in violation["nodes"]]))
        for violation in result.response["violations"]
        if violation["impact"] in {"serious", "critical"}
    ]


def test_promote_then_roll_back_through_the_page(ui_page: Page, history: History) -> None:
    page = ui_page
    page.goto(history.ui.base_url + "/history")
    expect(page.locator("#current-version")).to_have_text(history.bootstrap)

    # A wrong token: the learner refuses, nothing moves, the controls go away again.
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("button", name=f"Promote {history.second}").click()
    expect(page.locator("#admin-error")).to_have_text("The learner refused the admin token.")
    expect(page.get_by_role("button", name="Roll back to the previous version")).to_be_hidden()
    assert history.registry.current_version() == history.bootstrap

    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("button", name=f"Promote {history.second}").click()
    expect(page.locator("#admin-status")).to_contain_text(
        f"Version {history.second} is now current"
    )
    expect(page.locator("#current-version")).to_have_text(history.second)
    assert history.registry.current_version() == history.second

    page.get_by_role("button", name="Roll back to the previous version").click()
    expect(page.locator("#admin-status")).to_contain_text(
        f"Version {history.bootstrap} is now current"
    )
    expect(page.locator("#current-version")).to_have_text(history.bootstrap)
    wait_until(lambda: history.registry.current_version() == history.bootstrap, timeout=10)
    expect(row(page, history.bootstrap)).to_contain_text("(current)")

    # The token lived in the page only: a reload has no admin controls.
    page.reload()
    expect(page.locator("#current-version")).to_have_text(history.bootstrap)
    expect(page.get_by_role("button", name="Roll back to the previous version")).to_be_hidden()
