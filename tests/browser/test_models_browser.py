"""Promote and roll back a model by clicking through its registry page in headless Chromium.

The gates are enforced in the page as in the CLI: a version whose gate report failed is refused with the reason
on an error page until it is forced with a reason; rollback puts production back on the earlier version. No
console errors."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from medcycle.models import cards, registry
from medcycle.testing.browser import LiveServer
from tests.browser.helpers import log_in, shot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

MODEL = "lesions-bt"  # the live server is shared with other browser tests: a name of our own
HUMAN = {"intended_use": "Second reader on adult PA chest radiographs.",
         "out_of_scope_use": "Children, CT, lateral views, any use without a radiologist."}


@pytest.fixture(scope="module")
def two_versions(live_server: LiveServer) -> None:
    p = live_server.platform
    weights = [p.objects.put(f"{MODEL} weights {i}".encode()).digest for i in (1, 2)]
    contract = {"input": {"modality": ["DX"]}, "output": {"classes": ["normal", "lesion"]}}
    with p.session() as s:
        for digest in weights:
            registry.register(s, p.objects, MODEL, weights_digest=digest, contract=contract,
                              task="classification-2d", actor="eng")
        registry.record_gate_report(s, f"{MODEL}@v1", passed=True, policy="gates.yaml",
                                    summary={"gates": [{"name": "metrics", "passed": True, "reasons": []}]})
        registry.record_gate_report(s, f"{MODEL}@v2", passed=False, policy="gates.yaml",
                                    summary={"gates": [{"name": "stress", "passed": False,
                                                        "reasons": ["blur 1.5: sensitivity drops 0.2"]}]})
        cards.edit(s, f"{MODEL}@v1", HUMAN, actor="eng")


def production(live_server: LiveServer) -> int:
    with live_server.platform.session(write=False) as s:
        return registry.resolve(s, f"{MODEL}@production").version


def test_promote_force_and_roll_back_in_the_browser(live_server: LiveServer, two_versions: None, page: Page,
                                                    console_errors: list[str]) -> None:
    log_in(page, live_server.url, live_server.token, f"/ui/models/{MODEL}")

    page.locator("[data-testid=promote-v1] button").click()  # a passing gate report and a complete card
    page.wait_for_url(re.compile(rf"/ui/models/{MODEL}#history"))
    assert production(live_server) == 1
    assert "promote" in page.locator("[data-testid=history]").inner_text()

    page.locator("[data-testid=promote-v2] button").click()  # its gates failed: refused, with the reason
    assert "failed its release gates" in page.locator("main").inner_text()
    assert production(live_server) == 1
    refused = [e for e in console_errors if "/v2/promote" in e and "409" in e]
    assert len(refused) == 1  # the browser logs the 409 page itself: expected here, and only that one
    console_errors.remove(refused[0])

    page.goto(f"{live_server.url}/ui/models/{MODEL}")
    page.fill("[data-testid=promote-v2] input[name=reason]", "hotfix for site B")
    page.locator("[data-testid=promote-v2] button").click()
    page.wait_for_url(re.compile(rf"/ui/models/{MODEL}#history"))
    assert production(live_server) == 2 and "hotfix for site B" in page.locator("[data-testid=history]").inner_text()
    shot(page, "models-promoted")

    page.fill("[data-testid=rollback-production] input[name=reason]", "false positives at site B")
    page.locator("[data-testid=rollback-production] button").click()
    page.wait_for_url(re.compile(rf"/ui/models/{MODEL}#history"))
    assert production(live_server) == 1
    history = page.locator("[data-testid=history]").inner_text()
    assert "rollback" in history and "false positives at site B" in history
    with live_server.platform.session(write=False) as s:
        assert [m.action for m in registry.alias_history(s, MODEL)] == ["promote", "force", "rollback"]
    shot(page, "models-rolled-back")
