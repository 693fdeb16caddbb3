"""Drawing on the labels item page in headless Chromium: an annotator outlines a polygon and paints (and erases)
a mask on one slice of a CT volume with the mouse, undoes a box, submits; then a mask on a MONOCHROME1
radiograph. The stored annotations are checked through the library: class, vertices within a pixel, mask
pixels on the right slice and grid. An item assigned to someone else is refused (and audited). No console
errors anywhere (the ``page`` fixture fails the test on any)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from medcycle.auth import audit
from medcycle.labels import readers, schemas, store, tasks
from medcycle.labels.model import Kind, Mask
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.web.labels import item_url
from tests.browser.helpers import SCREENSHOTS, image_shown, log_in
from tests.serving.helpers import serve_app
from tests.web.labels_helpers import OUTLINES_SCHEMA, create_users, ct_series, ingest_phantoms, make_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

SLICES = 7
CT = 64
DX = 96


@dataclass(frozen=True)
class Server:
    url: str
    platform: Platform
    tokens: dict[str, str]
    ct: str
    dx: str  # ann's radiograph (MONOCHROME1)
    other: str  # bob's radiograph, in T-2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """T-1: a CT volume and a MONOCHROME1 radiograph, both for ann; T-2: another radiograph, for bob only."""
    root = tmp_path_factory.mktemp("labels-draw")
    platform = Platform(load_settings(home=root / "home", environment="test", secret_key="z" * 40))
    platform.init()
    ingest_phantoms(platform, root / "mine", slices=SLICES, ct_size=CT, ct_seed=3, radiographs=1, dx_size=DX,
                    source="mine")
    ingest_phantoms(platform, root / "other", slices=None, radiographs=1, dx_size=DX, first_patient=2, source="other")
    with platform.session() as s:
        schemas.add_schema(s, platform.objects, OUTLINES_SCHEMA, actor="ada")
        for name in ("ann", "bob"):
            readers.set_reader(s, name, qualified=True, actor="ada")
        for query, reader in (('source == "mine"', "ann"), ('source == "other"', "bob")):
            items = tasks.task_items(s, schema="outlines", query=query)
            tasks.create_task(s, items, schema="outlines", readers=[reader], seed=1, actor="ada")
        ct = ct_series(s)
        dx, other = (next(iter(tasks.assignments_of(s, t).values()))[0] for t in (1, 2))
        if dx == ct:
            dx = tasks.assignments_of(s, 1)["ann"][1]
        tokens = create_users(s, {"ann": "annotator", "bob": "annotator"})
    try:
        with serve_app(make_app(platform)) as url:
            yield Server(url, platform, tokens, ct, dx, other)
    finally:
        platform.close()


def to_image(canvas: dict[str, float], fx: float, fy: float, size: int) -> tuple[float, float, float, float]:
    """Client coordinates of a point at fractions (fx, fy) of the canvas, and where that is in image pixels."""
    x, y = canvas["x"] + fx * canvas["width"], canvas["y"] + fy * canvas["height"]
    return x, y, (x - canvas["x"]) * size / canvas["width"], (y - canvas["y"]) * size / canvas["height"]


def segment_distance(size: int, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray[Any, Any]:
    """Distance of each pixel centre to the segment a-b, in pixels."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = np.clip(((xx - a[0]) * dx + (yy - a[1]) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
    return np.asarray(np.hypot(xx - a[0] - t * dx, yy - a[1] - t * dy))


def drag(tab: Page, canvas: dict[str, float], start: tuple[float, float],
         end: tuple[float, float]) -> tuple[float, float]:
    """Drag with the mouse between fractions of the canvas; where it ends, in CT pixels."""
    x, y, _, _ = to_image(canvas, *start, CT)
    to_x, to_y, ix, iy = to_image(canvas, *end, CT)
    tab.mouse.move(x, y)
    tab.mouse.down()
    tab.mouse.move(to_x, to_y, steps=5)
    tab.mouse.up()
    return ix, iy


def canvas_box(tab: Page) -> dict[str, float]:
    box = tab.locator("#ld-canvas").bounding_box()
    assert box is not None and box["width"] > 100
    return {k: float(v) for k, v in box.items()}


def test_an_annotator_draws_a_polygon_and_paints_a_mask_and_submits(server: Server, page: Page,
                                                                    console_errors: list[str]) -> None:
    log_in(page, server.url, server.tokens["ann"], item_url("T-1", server.ct))
    page.wait_for_selector("[data-testid=label-form]")
    page.wait_for_function("() => document.getElementById('lv').dataset.drawReady === '1'")
    first = image_shown(page)
    page.focus("#lv-slice")
    page.keyboard.press("ArrowRight")  # slice 4 of 0..6
    page.wait_for_function(f"() => document.getElementById('lv-image').getAttribute('src') !== {first!r}")
    assert f"slice={SLICES // 2 + 1}" in image_shown(page)
    page.select_option("#lv-preset", "lung")  # window presets work while drawing
    page.wait_for_function("() => document.getElementById('lv-image').getAttribute('src').includes('preset=lung')")
    image_shown(page)
    canvas = canvas_box(page)

    # a box, then undone
    page.check("[data-testid=tool-box]")
    assert page.locator("#ld-class").input_value() == "nodule"  # the class list follows the tool
    x0, y0, _, _ = to_image(canvas, 0.1, 0.1, CT)
    x1, y1, _, _ = to_image(canvas, 0.2, 0.2, CT)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    assert page.locator("[data-testid=box-list] li").count() == 1
    page.click("[data-testid=undo]")
    assert page.locator("[data-testid=box-list] li").count() == 0

    # a polygon: four clicks, a wrong fifth undone, then a click on the first point closes it
    page.check("[data-testid=tool-polygon]")
    page.select_option("#ld-class", "lesion")
    canvas = canvas_box(page)
    fractions = [(0.2, 0.2), (0.6, 0.25), (0.55, 0.7), (0.25, 0.6)]
    expected = []
    for fx, fy in fractions:
        x, y, ix, iy = to_image(canvas, fx, fy, CT)
        page.mouse.click(x, y)
        expected.append((ix, iy))
    x, y, _, _ = to_image(canvas, 0.9, 0.9, CT)
    page.mouse.click(x, y)
    page.keyboard.press("Control+z")
    x, y, _, _ = to_image(canvas, *fractions[0], CT)
    page.mouse.click(x, y)
    polygons = page.locator("[data-testid=polygon-list] li")
    assert polygons.count() == 1 and f"lesion, 4 points on slice {SLICES // 2 + 2}" in polygons.inner_text()
    # edit: drag the second vertex away and undo that (a vertex left there could not be grabbed again below),
    # then drag it somewhere else
    drag(page, canvas, fractions[1], (0.9, 0.5))
    page.click("[data-testid=undo]")
    expected[1] = drag(page, canvas, fractions[1], (0.7, 0.15))

    # a brush stroke of radius 3, and the eraser (radius 3) at its end
    page.check("[data-testid=tool-brush]")
    page.focus("#ld-radius")
    page.keyboard.press("ArrowLeft")  # 4 -> 3 image pixels
    assert page.locator("#ld-radius-label").inner_text() == "3 px"
    canvas = canvas_box(page)
    ax, ay, a_x, a_y = to_image(canvas, 0.65, 0.3, CT)
    bx, by, b_x, b_y = to_image(canvas, 0.8, 0.55, CT)
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move(bx, by, steps=10)
    page.mouse.up()
    page.check("[data-testid=tool-eraser]")
    page.mouse.click(bx, by)
    masks = page.locator("[data-testid=mask-list] li")
    assert masks.count() == 1 and f"lesion on slice {SLICES // 2 + 2}" in masks.inner_text()
    page.wait_for_function("() => document.getElementById('lv-clock').textContent !== '0 s'")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "labels-draw.png"), full_page=True)
    page.click("[data-testid=submit]")
    page.wait_for_url(re.compile(r"done="))
    assert "Submitted" in page.locator("[data-testid=flash]").inner_text()

    with server.platform.session() as s:
        found = store.find(s, task_id=1, item=server.ct, reader="ann")
    assert sorted(a.kind.value for a in found) == ["mask", "polygon"]
    polygon = next(a for a in found if a.kind is Kind.POLYGON)
    assert polygon.label == "lesion" and polygon.geometry is not None
    assert polygon.geometry["z"] == SLICES // 2 + 1
    got = np.array(polygon.geometry["points"])
    assert got.shape == (4, 2) and np.abs(got - np.array(expected)).max() <= 1.0
    assert polygon.seconds is not None and polygon.seconds >= 1.0 and polygon.tool == "medcycle-web"
    record = next(a for a in found if a.kind is Kind.MASK)
    assert record.label == "lesion" and record.mask_digest is not None
    mask = store.load(server.platform.objects, record).geometry
    assert isinstance(mask, Mask) and mask.array.shape == (SLICES, CT, CT)
    assert mask.spacing == pytest.approx((1.25, 0.7, 0.7)) and mask.origin == pytest.approx((0, 0, 0))
    painted = mask.binary[SLICES // 2 + 1]
    assert not np.delete(mask.binary, SLICES // 2 + 1, axis=0).any()  # only the slice painted on
    stroke = segment_distance(CT, (a_x, a_y), (b_x, b_y))
    rubbed = segment_distance(CT, (b_x, b_y), (b_x, b_y))
    assert painted[(stroke <= 2.0) & (rubbed > 4.0)].all()
    assert not painted[(stroke > 4.0) | (rubbed < 2.0)].any()
    assert 40 < painted.sum() < 200

    # the next item, a MONOCHROME1 radiograph: one brush dab in the middle, radius 4
    assert item_url("T-1", server.dx) in page.url
    page.wait_for_function("() => document.getElementById('lv').dataset.drawReady === '1'")
    image_shown(page)
    assert page.locator("#lv-slice").count() == 0
    canvas = canvas_box(page)
    page.check("[data-testid=tool-brush]")
    canvas = canvas_box(page)
    x, y, ix, iy = to_image(canvas, 0.5, 0.5, DX)
    page.mouse.click(x, y)
    assert "lesion: " in page.locator("[data-testid=mask-list] li").inner_text()
    page.click("[data-testid=submit]")
    page.wait_for_url(re.compile(r"/ui/labels/queue\?task=T-1&done="))
    with server.platform.session() as s:
        (record,) = store.find(s, task_id=1, item=server.dx, reader="ann")
    mask = store.load(server.platform.objects, record).geometry
    assert isinstance(mask, Mask) and mask.array.shape == (DX, DX) and mask.z is None
    dab = segment_distance(DX, (ix, iy), (ix, iy))
    assert mask.binary[dab <= 3.0].all() and not mask.binary[dab > 5.0].any()

    # an item of another reader: 404 for the page and for a submission, both audited
    for response in (page.request.get(f"{server.url}{item_url('T-2', server.other)}"),
                     page.request.post(f"{server.url}{item_url('T-2', server.other)}",
                                       form={"masks": "[]", "polygons": "[]", "seconds": "1"})):
        assert response.status == 404
    with server.platform.session() as s:
        refused = {(e.action, e.details.get("item")) for e in audit.query(s, actor="ann") if e.outcome == "denied"}
        assert store.find(s, item=server.other) == []
    assert {("labels.item.read", server.other), ("labels.submit", server.other)} <= refused


def test_an_unfinished_polygon_stops_the_submission(server: Server, page: Page, console_errors: list[str]) -> None:
    """An unfinished polygon (two points) stops the submission in the page; nothing is sent or stored."""
    log_in(page, server.url, server.tokens["bob"], item_url("T-2", server.other))
    page.wait_for_function("() => document.getElementById('lv').dataset.drawReady === '1'")
    image_shown(page)
    canvas = canvas_box(page)
    page.check("[data-testid=tool-polygon]")
    for fx, fy in ((0.3, 0.3), (0.6, 0.3)):
        x, y, _, _ = to_image(canvas, fx, fy, DX)
        page.mouse.click(x, y)
    page.click("[data-testid=submit]")
    assert "at least 3 points" in page.locator("[data-testid=draw-help]").inner_text()
    assert page.locator("[data-testid=submit]").is_enabled()
    x, y, _, _ = to_image(canvas, 0.5, 0.7, DX)
    page.mouse.click(x, y)
    page.keyboard.press("Enter")
    assert page.locator("[data-testid=polygon-list] li").count() == 1
    page.click("[data-testid=submit]")
    page.wait_for_url(re.compile(r"done="))
    with server.platform.session() as s:
        (record,) = store.find(s, task_id=2, item=server.other, reader="bob")
    assert record.kind is Kind.POLYGON and record.geometry is not None and record.geometry["z"] is None
    assert len(record.geometry["points"]) == 3
