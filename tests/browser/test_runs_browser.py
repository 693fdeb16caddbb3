"""The run pages in headless Chromium: tick two runs in the table and compare them (overlaid curves and
parallel coordinates draw), and move a logged image's step slider (the image changes). No console errors."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from medcycle.testing.browser import LiveServer
from tests.browser.helpers import log_in, shot
from tests.web.test_runs_pages import Runs, populate_runs

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def runs(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    # No dataset: the live server is shared with the catalog's browser test, which expects its own.
    return populate_runs(live_server.platform, tmp_path_factory.mktemp("runs"), dataset=False)


def test_select_two_runs_and_compare(live_server: LiveServer, runs: Runs, page: Page,
                                     console_errors: list[str]) -> None:
    log_in(page, live_server.url, live_server.token, "/ui/runs?project=lung")
    table = page.locator("[data-testid=runs-table]")
    assert table.locator("tbody tr").count() == 2
    button = page.locator("#compare-button")
    assert button.is_disabled()
    page.check(f"input[name=ids][value='{runs.base}']")
    assert button.is_disabled() and "tick one more" in page.locator("#compare-count").inner_text()
    page.check(f"input[name=ids][value='{runs.big}']")
    assert button.is_enabled() and page.locator("#compare-count").inner_text() == "2 runs selected."
    assert table.locator("tr.selected").count() == 2
    shot(page, "runs-table")
    button.click()
    page.wait_for_url(re.compile(r"/ui/runs/compare\?ids="))
    assert page.locator("main h1").inner_text() == "Compare runs"

    # Overlaid curves: one chart per metric, one line per run, with a legend naming both.
    page.wait_for_selector("[data-curve='0'] .main-svg")
    first = page.locator("[data-curve='0']")
    assert first.locator(".scatterlayer .trace").count() == 2
    assert sorted(first.locator(".legend .legendtext").all_text_contents()) == ["baseline", "bigger-lr"]
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-curve]')].every(d => d.querySelector('.main-svg'))")

    # Parallel coordinates over lr, optimizer and the final metrics.
    page.wait_for_selector("#parcoords .main-svg")
    axes = page.locator("#parcoords .y-axis").count()
    assert axes >= 4, axes
    titles = page.locator("#parcoords .axis-title").all_text_contents()
    assert {"lr", "optimizer", "val/dice"} <= set(titles), titles

    # Only the params that differ.
    same = page.locator("#param-diff tr.same")
    assert same.count() == 1 and same.first.is_visible()
    page.check("#only-differing")
    assert not same.first.is_visible()
    assert page.locator("#param-diff tr.differs").count() == 2
    shot(page, "runs-compare")
    assert console_errors == []


def test_step_slider_changes_the_image(live_server: LiveServer, runs: Runs, page: Page,
                                       console_errors: list[str]) -> None:
    log_in(page, live_server.url, live_server.token, f"/ui/runs/{runs.base}")
    page.wait_for_selector("[data-chart='metrics'] .main-svg")
    page.wait_for_selector("[data-chart='system'] .main-svg")
    figure = page.locator("figure[data-image-key='val/case']")
    image = figure.locator("img")
    figure.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    before = image.get_attribute("src")
    assert figure.locator(".step-value").inner_text() == "49"
    figure.locator("input[type=range]").evaluate(
        "el => { el.value = '0'; el.dispatchEvent(new Event('input', { bubbles: true })); }")
    assert figure.locator(".step-value").inner_text() == "10"
    after = image.get_attribute("src")
    assert after != before
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert "at step 10" in (image.get_attribute("alt") or "")
    volume = page.locator("figure[data-image-key='val/volume'] img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=volume.element_handle())
    assert "MIP" in (volume.get_attribute("alt") or "")
    shot(page, "run-detail")

    page.goto(f"{live_server.url}/ui/runs/{runs.base}/card")
    page.fill("#conclusions-text", "Flips help.")
    page.click("[data-testid=conclusions-form] button[type=submit]")
    page.wait_for_url(re.compile(r"/card\?saved=1"))
    assert page.locator("[data-testid=conclusions]").inner_text() == "Flips help."
    shot(page, "run-card")
    assert console_errors == []
