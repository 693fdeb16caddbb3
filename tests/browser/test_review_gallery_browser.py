"""The review gallery in headless Chromium: a real model is trained and evaluated (cases drawn worst first),
a reviewer records a verdict and pins a case from the gallery; the DB holds both (audited), and the next
``evaluate`` with the regression suite judges the pinned case. No console errors (the ``page`` fixture)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from medcycle.auth.tables import AuditEventRow
from medcycle.evaluation.policy import parse
from medcycle.evaluation.run import evaluate
from medcycle.models import registry
from medcycle.models.tables import CaseReviewRow
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.training.config import example, validate
from medcycle.training.demo_data import generate, load
from medcycle.training.trainers import train_version
from tests.browser.helpers import log_in, shot
from tests.serving.helpers import serve_app
from tests.training.conftest import pin_deid_key

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class Gallery:
    url: str
    token: str
    platform: Platform
    ref: str
    dataset: str
    report: str


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gallery]:
    from medcycle.api.app import create_app

    root = tmp_path_factory.mktemp("review-gallery")
    platform = Platform(load_settings(home=root / "home", environment="test", secret_key="r" * 40))
    token = platform.init().admin_token
    assert token is not None
    pin_deid_key(platform)
    demo = generate(root / "demo", seed=0, radiographs=48, volumes=0, size=64)
    dataset = load(platform, demo.root, kinds=("xr",))["demo-xr"]
    data = example("classification-2d", dataset)
    data["training"] = {**data["training"], "threads": 1, "epochs": 2, "early_stopping": None}
    data["model"] = {"name": "tiny-cnn", "width": 8, "depth": 2}
    data["input"] = {**data["input"], "size": [32, 32]}
    result = train_version(platform, validate(data), dataset=dataset, run_options={
        "journal_dir": root / "journals", "resources": False, "capture_output": False, "capture": False,
        "flush_interval": 0.05})
    with platform.session() as s:
        ref = registry.register(s, platform.objects, "nodules", run_id=result.run_id, task="classification-2d").ref
    ev = evaluate(platform, ref, dataset, parse({"bootstrap": {"resamples": 20}, "gallery": {"limit": 6}}, "g.yaml"))
    assert ev.report_id is not None and len(ev.cases_list) == 6

    try:
        with serve_app(create_app(platform)) as url:
            yield Gallery(url, token, platform, ref, dataset, ev.report_id)
    finally:
        platform.close()


def test_review_a_case_and_pin_it_into_the_regression_suite(gallery: Gallery, page: Page,
                                                            console_errors: list[str]) -> None:
    target = f"/ui/evaluation/{gallery.report}/review"
    log_in(page, gallery.url, gallery.token, "/ui/evaluation")
    page.click(f"[data-testid=review-{gallery.report}]")
    page.wait_for_url(re.compile(re.escape(gallery.url + target)))

    cards = page.locator("[data-testid=case]")
    assert cards.count() == 6
    # worst first: the probability of the true class rises down the page (error falls)
    errors = [float(cards.nth(i).locator("dd.sorted").inner_text()) for i in range(6)]
    assert errors == sorted(errors, reverse=True)
    image = cards.first.locator("img.review-image")
    page.wait_for_function("img => img.complete && img.naturalWidth >= 256", arg=image.element_handle())
    shot(page, "review-gallery")

    worst = cards.first
    key = worst.get_attribute("data-key")
    assert key
    truth = worst.locator("[data-testid=truth]").inner_text()
    worst.locator("input[name=verdict][value=label_error]").check()
    worst.locator("textarea[name=note]").fill("the lesion is outside the lung field")
    worst.locator("[data-testid=verdict-form] button").click()
    page.wait_for_function("el => el.textContent.includes('saved')",
                           arg=worst.locator("[data-testid=verdict-status]").element_handle())
    worst.locator("[data-testid=pin-form] button").click()
    page.wait_for_function("el => el.textContent.includes('pinned')",
                           arg=worst.locator("[data-testid=pin-status]").element_handle())

    # the page shows both after a reload; sorting by the other metric reverses the order
    page.reload()
    again = page.locator(f"[data-testid=case][data-key='{key}']")
    assert again.locator("input[value=label_error]").is_checked()
    assert "pinned by admin" in again.locator("[data-testid=pin-status]").inner_text()
    assert "label_error 1" in page.locator("[data-testid=verdict-counts]").inner_text()
    page.select_option("[data-testid=sort]", "p_true")
    page.click("[data-testid=sort-form] button")
    page.wait_for_url(re.compile(r"sort=p_true"))
    assert page.locator("[data-testid=case]").first.get_attribute("data-key") == key

    p = gallery.platform
    with p.session(write=False) as s:
        row = s.get(CaseReviewRow, (gallery.report, key))
        assert row is not None and row.verdict == "label_error" and row.reviewer == "admin"
        assert row.note == "the lesion is outside the lung field"
        pins = {c.case_key: c for c in registry.pinned_cases(s, "nodules")}
        assert pins[key].expected == truth and pins[key].pinned_by == "admin"
        actions = [a.action for a in s.scalars(select(AuditEventRow).where(AuditEventRow.target_id.like("nodules%")))]
        assert "model.case_review" in actions and "model.pin" in actions

    # the next evaluation with the regression suite judges the pinned case
    ev = evaluate(p, gallery.ref, gallery.dataset, parse({"regression": True, "bootstrap": {"resamples": 10},
                                                          "gallery": {"limit": 0}}, "r.yaml"), record=False)
    reg = next(g for g in ev.gates if g.name == "regression")
    assert reg.data["pinned"] == 1 and [c["case"] for c in reg.data["cases"]] == [key]
    assert reg.data["cases"][0]["expected"] == truth
    assert not console_errors
