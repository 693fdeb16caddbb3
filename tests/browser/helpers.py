"""Steps the browser tests share: log in through the login form, save a screenshot, wait for the labels viewer's
image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def log_in(tab: Page, url: str, token: str, target: str) -> None:
    """Open ``target`` (a path on the server at ``url``) signed out: the page must send the browser to the login
    form, and signing in there with ``token`` must bring it back to exactly ``target``."""
    tab.goto(f"{url}{target}")
    tab.wait_for_url(re.compile(r"/login\?next="))
    tab.fill("#token", token)
    tab.click("button[type=submit]")
    tab.wait_for_url(re.compile(re.escape(f"{url}{target}") + "$"))


def shot(tab: Page, name: str) -> None:
    """A full-page screenshot in ``test-artifacts/screenshots/NAME.png``, taken from the top of the page (else the
    sticky top bar lands mid-page)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.evaluate("window.scrollTo(0, 0)")
    tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def image_shown(tab: Page) -> str:
    """Wait until the viewer's image has loaded what it asked for; return its URL."""
    tab.wait_for_function("() => { const i = document.getElementById('lv-image');"
                          " return i.complete && i.naturalWidth > 0 && document.getElementById('lv').dataset.loaded"
                          " === i.getAttribute('src'); }")
    src: str = tab.get_attribute("#lv-image", "src") or ""
    return src
