"""Drive the web UI in headless Chromium: log in, open every page in the navigation, log out.

Every page is saved as a screenshot in ``test-artifacts/screenshots/``; a console error, an uncaught page
error (the ``page`` fixture) or a failed request for the page or anything it loads fails the test.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from medcycle.testing.browser import LiveServer
from tests.browser.helpers import shot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

def slug(href: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", href.lower()).strip("-") or "overview"


def test_log_in_visit_every_page_and_log_out(
    live_server: LiveServer, page: Page, console_errors: list[str]
) -> None:
    # Something to chart on the overview.
    for i in range(3):
        live_server.platform.jobs.enqueue("inference", {"i": i})
    live_server.platform.jobs.enqueue("training", {"run": "r1"})

    failed: list[str] = []  # responses of 400 and above from our server: the page or an asset it loads
    page.on("response", lambda r: failed.append(f"{r.status} {r.request.method} {r.url}")
            if r.status >= 400 and r.url.startswith(live_server.url) else None)

    page.goto(f"{live_server.url}/ui/data")
    page.wait_for_url(re.compile(r"/login\?next="))
    assert page.locator("h1").inner_text() == "Log in to medcycle"
    shot(page, "login")

    page.fill("#token", "mct_not_a_token")
    page.click("button[type=submit]")
    assert "That token was not accepted" in page.locator(".alert-error").inner_text()
    shot(page, "login-refused")
    # The refused attempt is a 401 document load, which Chromium reports on the console; that is expected.
    console_errors[:] = [e for e in console_errors if "401" not in e]
    failed[:] = [f for f in failed if not f.startswith("401 POST") or not f.endswith("/login")]
    assert failed == [], failed

    page.fill("#token", live_server.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/ui/data")
    assert page.locator(".who-name").inner_text() == "admin"

    links = page.locator("nav.sidebar a.nav-link")
    entries = [(links.nth(i).get_attribute("href") or "", links.nth(i).inner_text()) for i in range(links.count())]
    hrefs = [href for href, _ in entries]
    assert hrefs[0] == "/" and "/ui/admin/users" in hrefs and len(hrefs) >= 15

    for href, label in entries:
        page.goto(f"{live_server.url}{href}")
        h1 = page.locator("main h1")
        assert h1.count() == 1, href
        assert h1.inner_text().strip(), href
        assert page.title().endswith("· medcycle"), href
        assert page.locator("a.nav-link.active").get_attribute("href") == href, href
        if href == "/":
            page.wait_for_selector("#queue-chart .main-svg")  # plotly drew the chart
            assert page.locator("#queue-chart .bars path").count() >= 2, "one bar per queue"
        assert console_errors == [], f"{label}: {console_errors}"
        assert failed == [], f"{label}: {failed}"
        shot(page, slug(href))

    page.goto(f"{live_server.url}/ui/no-such-page")
    assert page.locator("main h1").inner_text() == "Page not found"
    console_errors[:] = [e for e in console_errors if "404" not in e]
    assert failed == [f"404 GET {live_server.url}/ui/no-such-page"], failed

    page.click("form.logout button")
    page.wait_for_url(f"{live_server.url}/login")
    page.goto(f"{live_server.url}/")
    page.wait_for_url(re.compile(r"/login\?next=/"))
    assert page.locator("h1").inner_text() == "Log in to medcycle"
