"""The model history page end to end: headless Chromium -> UI server -> a real learner
(its registry in SeaweedFS, its broadcasts on the Pub/Sub emulator).

Two versions exist: the learner's bootstrap model (promoted by the gate) and a
second one the gate held back. The page plots both, lists the decisions, and
offers promote and rollback only once an admin token is typed in; both
actions, done through the page, move `models/current.json`. Staged through
the learner's admin API, the second version's rollout (stage, evidence, the
reason of each change) is shown, and advanced and rolled back from the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tagloop.channels.registry import Registry
from tagloop.domain.rollout import Stage
from tagloop.learner_client import LearnerClient
from tagloop_dev.s3server import S3Server
from tests.fixtures.keys import model_signer
from tests.fixtures.learning import ADMIN_TOKEN, LearnerStack, store_copy
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
    learner_url: str


@pytest.fixture
def history(learner_stack: LearnerStack, s3_server: S3Server, tmp_path: Path) -> Iterator[History]:
    learner = learner_stack.learner(TAGLOOP_REFIT_EVERY="100000").start()
    registry = s3_server.registry(learner_stack.registry.bucket, signer=model_signer())
    bootstrap = learner.get("/api/status")["current_version"]
    held_back = {"promoted": False, "reason": HELD_BACK}
    second = store_copy(registry, bootstrap, tmp_path, held_back, f1_macro_shift=-0.1)
    # No replica: the history page needs only the learner.
    with start_ui([f"http://127.0.0.1:{free_port()}"], TAGLOOP_UI_LEARNER_URL=learner.url) as ui:
        yield History(ui, registry, bootstrap, second, learner.url)
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


def test_rollout_stage_and_reasons_listed_then_advanced_and_rolled_back(
    ui_page: Page, history: History
) -> None:
    page = ui_page
    page.goto(history.ui.base_url + "/history")
    expect(page.locator("#rollout-status")).to_have_text(
        "Staged rollout is off: promoted candidates are served at once."
    )
    LearnerClient(history.learner_url, ADMIN_TOKEN).stage(history.second, "shadow", "by the test")

    page.reload()
    expect(page.locator("#rollout-version")).to_have_text(history.second)
    expect(page.locator("#rollout-stage")).to_have_text("shadow")
    expect(page.locator("#rollout-base")).to_have_text(history.bootstrap)
    expect(page.get_by_role("table", name="Live evidence of this stage")).to_contain_text(
        "Corrections scored"
    )
    changes = page.get_by_role("list", name="Stage changes").get_by_role("listitem")
    expect(changes).to_have_count(1)
    expect(changes.first).to_contain_text("shadow")
    expect(changes.first).to_contain_text("by the test")
    advance = page.get_by_role("button", name=f"Advance {history.second} to canary")
    expect(advance).to_be_hidden()
    assert serious_violations(page) == []

    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Use token").click()
    advance.click()
    expect(page.locator("#admin-status")).to_contain_text(f"{history.second} is now in canary")
    expect(page.locator("#rollout-stage")).to_have_text("canary")
    expect(changes).to_have_count(2)
    expect(changes.first).to_contain_text("set by an operator on the model history page")
    record = history.registry.rollout_record()
    assert record is not None and record.stage is Stage.CANARY

    page.get_by_role("button", name="Roll back the candidate").click()
    expect(page.locator("#rollout-stage")).to_have_text("rolled back")
    expect(changes).to_have_count(3)
    expect(page.get_by_role("button", name="Roll back the candidate")).to_be_hidden()
    expect(row(page, history.second)).to_contain_text("rolled back from canary")
    assert history.registry.current_version() == history.bootstrap

    # Each version's recorded stage changes, fetched when opened (GET /ui/models/<v>/stages).
    row(page, history.second).get_by_label(f"Stage changes of {history.second}").click()
    recorded = row(page, history.second).locator(".stage-changes li")
    expect(recorded).to_have_count(3)
    expect(recorded.nth(0)).to_contain_text("shadow")
    expect(recorded.nth(0)).to_contain_text("by the test")
    expect(recorded.nth(2)).to_contain_text("rolled back")
    row(page, history.bootstrap).get_by_label(f"Stage changes of {history.bootstrap}").click()
    expect(row(page, history.bootstrap)).to_contain_text("None recorded.")
    assert serious_violations(page) == []
