"""Editing a dataset card in headless Chromium: open the form from a version's card, write, save, see it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from medcycle.datasets import items, versions
from medcycle.testing.browser import LiveServer
from tests.browser.helpers import log_in, shot
from tests.browser.test_catalog_browser import populate

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser
DATASET = "card-demo"


def test_write_the_card_in_the_browser(
    live_server: LiveServer, page: Page, console_errors: list[str], tmp_path: Path
) -> None:
    populate(live_server.platform, tmp_path / "in")  # first: it fills the shared server only when it has no dataset
    with live_server.platform.session() as s:
        if DATASET not in {d.name for d in items.list_datasets(s)}:
            items.create_dataset(s, DATASET, query='source == "clinic-c"', description="card editing demo")
            versions.freeze(s, live_server.platform.objects, DATASET, tag="v1.0")
    log_in(page, live_server.url, live_server.token, f"/ui/datasets/{DATASET}/v1")
    assert page.locator("#card p.missing").count() >= 5  # nothing written yet
    page.click("[data-testid=edit-card]")
    page.wait_for_url(re.compile(rf"/ui/datasets/{DATASET}/card\?back=v1"))
    assert page.locator("main h1").inner_text() == f"Edit the card of {DATASET}"
    page.fill("#field-motivation", "Benchmark for card editing.\nTwo lines.")
    page.fill("#field-limitations", "Synthetic data from one source.")
    shot(page, "dataset-card-edit")
    page.click("form[data-testid=card-form] button[type=submit]")  # Chromium sends Sec-Fetch-Site: same-origin
    page.wait_for_url(re.compile(rf"/ui/datasets/{DATASET}/v1\?saved=1"))
    assert page.locator("[data-testid=saved]").is_visible()
    card = page.locator("#card").inner_text()
    assert "Benchmark for card editing." in card and "Synthetic data from one source." in card
    page.goto(f"{live_server.url}/ui/datasets/{DATASET}")
    assert "Two lines." in page.locator("[data-testid=field-motivation]").inner_text()
    shot(page, "dataset-card-saved")
    assert console_errors == []
