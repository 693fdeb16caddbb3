"""The labels pages in headless Chromium: an annotator's queue → an item → the slice slider changes the image →
a box drawn on the canvas and a class chosen → submitted → progress updates; a lead's review (layer toggles) and
agreement heatmaps. No console errors anywhere (the ``page`` fixture fails the test on any)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from medcycle.labels import readers, schemas, store, tasks
from medcycle.labels.model import Annotation, Box, Kind
from medcycle.platform import Platform
from medcycle.settings import load_settings
from tests.browser.helpers import image_shown, log_in, shot
from tests.serving.helpers import serve_app
from tests.web.labels_helpers import FINDINGS_SCHEMA, create_users, ct_series, ingest_phantoms, make_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

SLICES = 7


@dataclass(frozen=True)
class Server:
    url: str
    platform: Platform
    tokens: dict[str, str]
    ct: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A CT volume and two radiographs; task T-1 read by ann and bob (both read every item, blinded); ada leads."""
    root = tmp_path_factory.mktemp("labels-browser")
    platform = Platform(load_settings(home=root / "home", environment="test", secret_key="y" * 40))
    platform.init()
    ingest_phantoms(platform, root / "in", slices=SLICES, ct_size=64, ct_seed=5, radiographs=2, dx_size=96)
    with platform.session() as s:
        schemas.add_schema(s, platform.objects, FINDINGS_SCHEMA, actor="ada")
        for name in ("ann", "bob"):
            readers.set_reader(s, name, qualified=True, actor="ada")
        items = tasks.task_items(s, schema="findings", query='source == "phantoms"')
        tasks.create_task(s, items, schema="findings", readers_per_item=2, readers=["ann", "bob"],
                          adjudication_threshold=0.9, seed=2, actor="ada")
        ct = ct_series(s)
        tokens = create_users(s, {"ada": "admin", "ann": "annotator", "bob": "annotator"})
    try:
        with serve_app(make_app(platform)) as url:
            yield Server(url, platform, tokens, ct)
    finally:
        platform.close()


def test_queue_item_slider_box_and_submit(server: Server, page: Page, console_errors: list[str]) -> None:
    log_in(page, server.url, server.tokens["ann"], "/ui/labels/queue")
    assert page.locator("main h1").inner_text() == "My queue"
    assert page.locator("[data-testid=queue-count]").inner_text() == "3"
    assert page.locator("[data-testid=progress-T-1] .lv-progress-text").inner_text() == "0 / 3"
    page.click(f"a[data-item='{server.ct}']")
    page.wait_for_selector("[data-testid=label-form]")
    assert page.locator("[data-testid=slice-label]").inner_text() == f"{SLICES // 2 + 1} / {SLICES}"
    first = image_shown(page)
    before = page.locator("#lv-image").screenshot()

    # the slider: two slices further, a new image is asked for, loads, and looks different
    page.focus("#lv-slice")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"() => document.getElementById('lv-image').getAttribute('src') !== {first!r}")
    after_src = image_shown(page)
    assert f"slice={SLICES // 2 + 2}" in after_src
    assert page.locator("[data-testid=slice-label]").inner_text() == f"{SLICES // 2 + 3} / {SLICES}"
    assert page.locator("#lv-image").screenshot() != before
    page.select_option("#lv-preset", "lung")
    page.wait_for_function("() => document.getElementById('lv-image').getAttribute('src').includes('preset=lung')")
    image_shown(page)

    # a box dragged on the canvas, in image pixels of the slice shown, and a class
    canvas = page.locator("#lv-canvas").bounding_box()
    assert canvas is not None and canvas["width"] > 100
    x, y, w = canvas["x"], canvas["y"], canvas["width"]
    page.mouse.move(x + w * 0.25, y + w * 0.25)
    page.mouse.down()
    page.mouse.move(x + w * 0.4, y + w * 0.4, steps=4)
    page.mouse.move(x + w * 0.5, y + w * 0.5, steps=4)
    page.mouse.up()
    assert page.locator("[data-testid=box-list] li").count() == 1
    assert "on slice" in page.locator("[data-testid=box-list] li").inner_text()
    page.check("input[name=classes][value=abnormal]")
    page.wait_for_function("() => document.getElementById('lv-clock').textContent !== '0 s'")
    shot(page, "labels-item")
    page.click("[data-testid=submit]")

    # on to the next item; progress counts the reading
    page.wait_for_url(re.compile(r"done="))
    assert "Submitted" in page.locator("[data-testid=flash]").inner_text()
    assert page.locator("[data-testid=item-progress] .lv-progress-text").inner_text() == "1 / 3"
    with server.platform.session() as s:
        found = store.find(s, task_id=1, item=server.ct, reader="ann")
    box = next(a for a in found if a.kind is Kind.BOX)
    assert next(a for a in found if a.kind is Kind.CLASS).label == "abnormal"
    assert box.geometry is not None and box.geometry["z"] == SLICES // 2 + 2
    assert 14 <= box.geometry["x0"] <= 18 and 30 <= box.geometry["x1"] <= 34  # 64 px shown at the canvas' width
    assert box.seconds is not None and box.seconds >= 1.0 and box.tool == "medcycle-web"
    page.goto(f"{server.url}/ui/labels/queue")
    assert page.locator("[data-testid=queue-count]").inner_text() == "2"
    assert page.locator("[data-testid=progress-T-1] .lv-progress-text").inner_text() == "1 / 3"


def test_lead_reviews_layers_and_sees_agreement_heatmaps(server: Server, page: Page,
                                                         console_errors: list[str]) -> None:
    with server.platform.session() as s:
        open_items = {e.item for e in tasks.reader_queue(s, "ann")}
        for reader in ("ann", "bob"):
            for item in sorted(open_items if reader == "ann" else {e.item for e in tasks.reader_queue(s, reader)}):
                boxes = [Annotation(item, "nodule", Kind.BOX, Box(8, 8, 20, 20 if reader == "ann" else 30, z=None))]
                tasks.submit(s, server.platform.objects, "T-1", item, reader,
                             [Annotation(item, "normal", Kind.CLASS), *boxes], seconds=30)
    log_in(page, server.url, server.tokens["ada"], "/ui/labels/tasks/T-1")
    for reader in ("ann", "bob"):
        assert page.locator(f"[data-reader={reader}] .lv-progress-text").inner_text() == "3 / 3"
    page.click("[data-testid=agreement-link]")
    page.wait_for_selector("#matrix-0 .main-svg")
    assert page.locator("[data-testid=matrix]").count() == 3
    page.wait_for_selector("#chart-items .main-svg")
    shot(page, "labels-agreement")

    page.goto(f"{server.url}/ui/labels/tasks/T-1/items/{server.ct}/review")
    first = image_shown(page)
    assert "layers=ann,bob" in first
    page.uncheck("input[data-layer=ann]")
    page.wait_for_function(f"() => document.getElementById('lv-image').getAttribute('src') !== {first!r}")
    assert "layers=ann" not in image_shown(page)
    shot(page, "labels-review")
