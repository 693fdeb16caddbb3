"""Fixtures for browser tests: a live server on loopback and a headless Chromium page.

Import them explicitly in a test module::

    from medcycle.testing.browser import browser, console_errors, live_server, page  # noqa: F401

* ``live_server`` (session scope): a platform on a temporary home, ``create_app(platform)`` served by
  uvicorn in a background thread on a free ``127.0.0.1`` port; yields :class:`LiveServer`
  (``url``, ``token`` — the admin's API token — and ``platform``).
* ``browser`` (session scope): the system's Chromium (Debian package ``chromium``) driven by Playwright.
* ``page``: a fresh context and page; every console error and uncaught page error is recorded in
  ``console_errors`` and fails the test at teardown.

A missing Chromium or Playwright skips the test (fails it under ``CI=true``, see
:func:`medcycle.testing.services.skip_or_fail`).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.testing.services import skip_or_fail

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LIVE_SECRET = "x" * 40  # a throwaway server for tests
STARTUP_SECONDS = 30.0
PAGE_TIMEOUT_MS = 15_000


@dataclass(frozen=True, slots=True)
class LiveServer:
    """A running medcycle server for browser tests."""

    url: str
    token: str
    platform: Platform


def _wait_until_live(url: str, thread: threading.Thread, deadline: float) -> None:
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError("the live server's thread ended before it answered /livez")
            try:
                if client.get(f"{url}/livez").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"the live server at {url} did not answer /livez within {STARTUP_SECONDS:.0f} s")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """medcycle served by uvicorn on a free loopback port, with an initialised platform."""
    import uvicorn

    from medcycle.api.app import create_app

    home: Path = tmp_path_factory.mktemp("live-server") / "home"
    platform = Platform(load_settings(home=home, environment="test", secret_key=LIVE_SECRET))
    token = platform.init().admin_token
    assert token is not None, "a fresh home must create the admin token"
    app = create_app(platform)

    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say they are TCP;
    # with proto 0 each response's second write waits for the browser's delayed acknowledgement (40 ms)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", http="h11", access_log=False, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="medcycle-live-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_live(url, thread, time.monotonic() + STARTUP_SECONDS)
        yield LiveServer(url=url, token=token, platform=platform)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        platform.close()
    if thread.is_alive():
        raise RuntimeError("the live server did not stop within 15 s")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium from the system (``apt-get install chromium``), driven by Playwright."""
    executable = shutil.which("chromium")
    if executable is None:
        skip_or_fail("chromium is not installed: `apt-get install chromium` (browser tests drive it)")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed: `pip install playwright` (the Python package only)")
    playwright = sync_playwright().start()
    try:
        try:
            chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            skip_or_fail(f"chromium at {executable} did not start: {exc.message.splitlines()[0]}")
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def console_errors() -> list[str]:
    """Console errors and uncaught exceptions the ``page`` saw; the test fails if any remain."""
    return []


@pytest.fixture
def page(browser: Browser, console_errors: list[str]) -> Iterator[Page]:
    """A fresh browser context and page that records console and page errors, failing the test on any."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, service_workers="block")
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    new_page = context.new_page()
    new_page.on(
        "console",
        lambda message: console_errors.append(f"console error on {new_page.url}: {message.text}")
        if message.type == "error" else None,
    )
    new_page.on("pageerror", lambda error: console_errors.append(f"page error on {new_page.url}: {error}"))
    try:
        yield new_page
    finally:
        context.close()
    if console_errors:
        pytest.fail("the browser reported errors:\n" + "\n".join(console_errors), pytrace=False)
