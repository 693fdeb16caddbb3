"""Drawing on the labels item page, server side: polygons and painted masks posted by the page become immutable
annotations (polygons in image pixels, masks as objects with the grid they were painted on), and bad geometry
is refused with a 4xx naming the field — nothing stored."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from medcycle.auth import audit
from medcycle.catalog.ingest import ingest
from medcycle.catalog.tables import SeriesRow
from medcycle.errors import ValidationFailed
from medcycle.labels import readers, schemas, store, tasks
from medcycle.labels.formats.rle import runs
from medcycle.labels.model import Kind, Mask, Polygon
from medcycle.labels.schemas import SchemaInfo
from medcycle.labels.tables import LabelSchemaRow
from medcycle.platform import Platform
from medcycle.testing.dicom import write_ct_series
from medcycle.web import labels as labels_pages
from medcycle.web import labels_data, labels_images
from tests.web.labels_helpers import OUTLINES_SCHEMA, create_users, ct_series, ingest_phantoms, logged_in, make_app

SLICES = 5
CT = 48
DX = 64


@dataclass
class Drawn:
    platform: Platform
    ct: str
    dx: str
    ann: TestClient
    cal: TestClient  # an annotator with no item in the task


@pytest.fixture
def drawn(platform: Platform, tmp_path: Path) -> Iterator[Drawn]:
    ingest_phantoms(platform, tmp_path / "in", slices=SLICES, ct_size=CT, ct_seed=1, radiographs=1, dx_size=DX)
    with platform.session() as s:
        schemas.add_schema(s, platform.objects, OUTLINES_SCHEMA, origin="outlines.yaml", actor="ada")
        for name in ("ann", "bob"):
            readers.set_reader(s, name, qualified=True, actor="ada")
        items = tasks.task_items(s, schema="outlines", query='source == "phantoms"')
        tasks.create_task(s, items, schema="outlines", readers_per_item=2, readers=["ann", "bob"], seed=1,
                          actor="ada")
        ct = ct_series(s)
        dx = s.scalars(select(SeriesRow.uid).where(SeriesRow.modality != "CT")).one()
        tokens = create_users(s, {"ann": "annotator", "cal": "annotator"})
    with ExitStack() as stack:
        clients = logged_in(stack, make_app(platform), tokens)
        yield Drawn(platform, ct, dx, clients["ann"], clients["cal"])


def url(item: str) -> str:
    return labels_pages.item_url("T-1", item)


def rle(plane: np.ndarray[Any, Any]) -> list[int]:
    return [int(n) for n in runs(plane.ravel())]


def disk(rows: int, cols: int, cx: float, cy: float, r: float) -> np.ndarray[Any, Any]:
    yy, xx = np.mgrid[0:rows, 0:cols]
    return np.asarray((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r)


def colored(png: bytes, color: str) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return int(np.all(pixels == [int(color[i:i + 2], 16) for i in (1, 3, 5)], axis=-1).sum())


def post(client: TestClient, item: str, **fields: Any) -> Any:
    data = {"seconds": "21.5", **{k: v if isinstance(v, str) or k == "classes" else json.dumps(v)
                                  for k, v in fields.items()}}
    return client.post(url(item), data=data)


def test_the_item_page_offers_the_schema_tools_on_the_image_grid(drawn: Drawn) -> None:
    r = drawn.ann.get(url(drawn.ct))
    assert r.status_code == 200
    block = re.search(r'<script type="application/json" id="ld-config">(.*?)</script>', r.text, re.S)
    assert block is not None
    config = json.loads(unescape(block.group(1)))
    assert (config["width"], config["height"], config["slices"]) == (CT, CT, SLICES)
    assert config["tools"] == ["box", "polygon", "brush", "eraser"]
    assert [(c["name"], c["kinds"]) for c in config["classes"]] == [("lesion", ["polygon", "mask"]),
                                                                    ("nodule", ["box"])]
    assert "/static/js/labels_draw.js" in r.text and 'id="ld-canvas"' in r.text
    assert 'name="polygons"' in r.text and 'name="masks"' in r.text
    assert 'id="lv-preset"' in r.text and 'id="lv-slice"' in r.text  # window presets and slices, as for review
    page = drawn.ann.get(url(drawn.dx)).text
    assert 'id="lv-slice"' not in page and '"slices": 1' in unescape(page)


def test_polygons_and_masks_are_stored_with_the_grid_they_were_drawn_on(drawn: Drawn) -> None:
    plane = disk(CT, CT, 20.0, 24.0, 6.0)
    erased = plane.copy()
    erased[:, :18] = False  # what is left after the eraser
    points = [[10.5, 12], [30, 12.25], [30, 30], [10.5, 30]]
    r = post(drawn.ann, drawn.ct, classes=[], boxes=[{"label": "nodule", "box": [1, 2, 5, 6], "z": 1}],
             polygons=[{"label": "lesion", "points": points, "z": 3}],
             masks=[{"label": "lesion", "z": 2, "rows": CT, "columns": CT, "counts": rle(erased)},
                    {"label": "lesion", "z": 4, "rows": CT, "columns": CT, "counts": rle(np.zeros((CT, CT), bool))}])
    assert r.status_code == 303, unescape(r.text)
    with drawn.platform.session() as s:
        found = {a.kind: a for a in store.find(s, task_id=1, item=drawn.ct, reader="ann")}
    assert set(found) == {Kind.BOX, Kind.POLYGON, Kind.MASK}
    polygon = found[Kind.POLYGON]
    assert polygon.label == "lesion" and polygon.geometry == {"points": points, "z": 3}
    assert polygon.seconds == 21.5 and polygon.tool == "medcycle-web"
    mask = found[Kind.MASK]
    assert mask.mask_digest is not None and mask.geometry is not None
    assert mask.geometry["shape"] == [SLICES, CT, CT] and mask.geometry["z"] is None
    # the phantom's grid: slices 1.25 mm apart, 0.7 mm pixels, at the origin, axial
    assert mask.geometry["spacing"] == pytest.approx([1.25, 0.7, 0.7])
    assert mask.geometry["origin"] == pytest.approx([0, 0, 0])
    assert mask.geometry["direction"] == pytest.approx([1, 0, 0, 0, 1, 0, 0, 0, 1])
    loaded = store.load(drawn.platform.objects, mask)
    assert isinstance(loaded.geometry, Mask)
    volume = loaded.geometry.binary
    assert np.array_equal(volume[2], erased) and not volume[[0, 1, 3, 4]].any()
    assert isinstance(store.load(drawn.platform.objects, polygon).geometry, Polygon)
    # the reading is shown back drawn on its slices: the mask's contour on slice 2, the polygon on 3, none on 0
    color = labels_images.PALETTE[0]
    for index, drawn_there in ((2, True), (3, True), (0, False)):
        shown = drawn.ann.get(url(drawn.ct) + "/overlay.png", params={"layers": "ann", "slice": index})
        assert shown.status_code == 200
        assert (colored(shown.content, color) > 20) is drawn_there, index

    # a 2D image: a (rows, cols) mask with its pixel spacing and no slice; polygons need no slice either
    plane = disk(DX, DX, 40, 20, 9)
    r = post(drawn.ann, drawn.dx, classes=[], polygons=[{"label": "lesion", "points": [[0, 0], [64, 0], [64, 64]],
                                                         "z": None}],
             masks=[{"label": "lesion", "z": None, "rows": DX, "columns": DX, "counts": rle(plane)}])
    assert r.status_code == 303, unescape(r.text)
    with drawn.platform.session() as s:
        found = {a.kind: a for a in store.find(s, task_id=1, item=drawn.dx, reader="ann")}
    assert found[Kind.MASK].geometry is not None and found[Kind.MASK].geometry["shape"] == [DX, DX]
    assert found[Kind.MASK].geometry["z"] is None
    assert found[Kind.MASK].geometry["spacing"] == pytest.approx([0.15, 0.15])  # the radiograph's pixel spacing
    dx_mask = store.load(drawn.platform.objects, found[Kind.MASK]).geometry
    assert isinstance(dx_mask, Mask) and np.array_equal(dx_mask.binary, plane)
    assert found[Kind.POLYGON].geometry == {"points": [[0, 0], [64, 0], [64, 64]], "z": None}


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("two vertices", {"polygons": [{"label": "lesion", "points": [[1, 1], [5, 5]], "z": 1}]},
     "polygons[0].points: a polygon needs at least 3 vertices, got 2"),
    ("a vertex outside", {"polygons": [{"label": "lesion", "points": [[1, 1], [60, 10], [5, 9]], "z": 1}]},
     "polygons[0].points[1]: (60, 10) lies outside the 48 × 48 image"),
    ("a negative vertex", {"polygons": [{"label": "lesion", "points": [[1, -0.5], [6, 1], [5, 9]], "z": 1}]},
     "polygons[0].points[0]: (1, -0.5) lies outside"),
    ("no slice on a volume", {"polygons": [{"label": "lesion", "points": [[1, 1], [6, 1], [5, 9]]}]},
     "polygons[0].z: this item has 5 slices"),
    ("a slice past the end", {"polygons": [{"label": "lesion", "points": [[1, 1], [6, 1], [5, 9]], "z": 5}]},
     "polygons[0].z: 5 is not a slice of this item (0 to 4)"),
    ("collinear", {"polygons": [{"label": "lesion", "points": [[1, 1], [2, 2], [3, 3]], "z": 0}]},
     "the vertices lie on one line"),
    ("not a number", {"polygons": [{"label": "lesion", "points": [[1, 1], [2, "x"], [3, 9]], "z": 0}]},
     "polygons[0].points[1]: expected 2 numbers"),
    ("not JSON", {"polygons": "[{"}, "polygons: not JSON"),
    ("a class not in the schema", {"polygons": [{"label": "tumour", "points": [[1, 1], [6, 1], [5, 9]], "z": 1}]},
     "polygons[0].label: 'tumour' is not a class of outlines@1"),
    ("a class of another kind", {"polygons": [{"label": "nodule", "points": [[1, 1], [6, 1], [5, 9]], "z": 1}]},
     "polygons[0].label: 'nodule' may be a box in outlines@1, not a polygon"),
    ("a mask of another size", {"masks": [{"label": "lesion", "z": 1, "rows": 40, "columns": 40,
                                           "counts": [1600]}]},
     "masks[0]: a mask of 40 × 40 (rows × columns) does not fit the image's 48 × 48"),
    ("runs that do not cover it", {"masks": [{"label": "lesion", "z": 1, "rows": CT, "columns": CT,
                                              "counts": [10, 5]}]},
     "masks[0].counts: the runs cover 15 pixels, the mask has 2304"),
    ("negative runs", {"masks": [{"label": "lesion", "z": 1, "rows": CT, "columns": CT,
                                  "counts": [2305, -1]}]}, "masks[0].counts: a run length is negative"),
    ("a mask without a slice", {"masks": [{"label": "lesion", "rows": CT, "columns": CT, "counts": [CT * CT]}]},
     "masks[0].z: this item has 5 slices"),
    ("a mask class of another kind", {"masks": [{"label": "normal", "z": 0, "rows": CT, "columns": CT,
                                                 "counts": [CT * CT]}]},
     "masks[0].label: 'normal' may be a class in outlines@1, not a mask"),
    ("the same slice twice", {"masks": [{"label": "lesion", "z": 0, "rows": CT, "columns": CT, "counts": [CT * CT]},
                                        {"label": "lesion", "z": 0, "rows": CT, "columns": CT, "counts": [CT * CT]}]},
     "masks[1]: a second mask of 'lesion' on slice 0"),
    ("a box outside", {"boxes": [{"label": "nodule", "box": [40, 40, 50, 47], "z": 2}]},
     "boxes[0].box: (50, 47) lies outside the 48 × 48 image"),
]


def test_bad_geometry_is_refused_naming_the_field_and_nothing_is_stored(drawn: Drawn) -> None:
    for name, fields, message in BAD:
        r = post(drawn.ann, drawn.ct, classes=[], **fields)
        assert r.status_code == 422, name
        page = unescape(r.text)
        assert message in page and 'data-testid="form-error"' in page, name
        if "polygons" in fields and isinstance(fields["polygons"], list):  # the drawing comes back to be fixed
            assert json.dumps(fields["polygons"]) in page, name
    with drawn.platform.session() as s:
        assert store.find(s, task_id=1, item=drawn.ct) == []
        assert tasks.item_readers(s, 1, drawn.ct)["ann"] == "assigned"


def test_drawing_on_an_item_not_assigned_is_refused_and_audited(drawn: Drawn) -> None:
    plane = disk(CT, CT, 20, 20, 4)
    r = post(drawn.cal, drawn.ct, classes=[], masks=[{"label": "lesion", "z": 0, "rows": CT, "columns": CT,
                                                       "counts": rle(plane)}])
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    with drawn.platform.session() as s:
        assert store.find(s, task_id=1, item=drawn.ct) == []
        refused = [(e.action, e.details.get("item")) for e in audit.query(s, actor="cal") if e.outcome == "denied"]
    assert ("labels.submit", drawn.ct) in refused


def test_drawn_annotations_checks_against_any_grid() -> None:
    """The library-free part: a grid without a slice axis, and masks unioned per class over slices."""
    from datetime import UTC, datetime

    row = LabelSchemaRow(id="x" * 64, name="outlines", version=1, description=None, level="series",
                         multi_label=False, classes=[{"name": "lesion", "kinds": ["polygon", "mask"]}],
                         origin=None, created_by="ada", created_at=datetime.now(UTC))
    schema = SchemaInfo.of(row)
    grid = labels_images.Grid(width=7, height=5, slices=3, spacing=(2.0, 0.5, 0.5), origin=(1.0, 2.0, 3.0),
                              direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    top = np.zeros((5, 7), bool)
    top[0, :3] = True
    masks = json.dumps([{"label": "lesion", "z": z, "rows": 5, "columns": 7, "counts": rle(top)} for z in (0, 2)])
    anns = labels_data.drawn_annotations("i", "ann", schema=schema, grid=grid, classes=[], boxes="", polygons="",
                                         masks=masks)
    assert len(anns) == 1 and isinstance(anns[0].geometry, Mask)
    mask = anns[0].geometry
    assert mask.array.shape == (3, 5, 7) and mask.spacing == (2.0, 0.5, 0.5) and mask.origin == (1.0, 2.0, 3.0)
    assert mask.binary.sum() == 6 and not mask.binary[1].any()
    flat = labels_images.Grid(width=7, height=5, slices=1)
    with pytest.raises(ValidationFailed, match=r"polygons\[0\].points\[2\]: \(7.5, 1\) lies outside"):
        labels_data.drawn_annotations("i", "ann", schema=schema, grid=flat, classes=[], boxes="",
                                      polygons=json.dumps([{"label": "lesion", "points": [[0, 0], [7, 5], [7.5, 1]]}]),
                                      masks="")
    empty = json.dumps([{"label": "lesion", "z": None, "rows": 5, "columns": 7, "counts": [35]}])
    assert labels_data.drawn_annotations("i", "ann", schema=schema, grid=flat, classes=[], boxes="", polygons="",
                                         masks=empty) == []  # painted, then erased: nothing found


def test_a_volume_stored_against_the_normal_keeps_each_plane_on_its_own_position(platform: Platform,
                                                                                  tmp_path: Path) -> None:
    """Planes in instance-number order that run against the slice normal: the grid's origin is plane 0's
    position and its slice axis points back, so voxel k of a painted mask lies on plane k."""
    import pydicom

    from medcycle.labels.formats.geometry import SeriesGeometry

    paths = write_ct_series(tmp_path / "in", slices=4, size=16, seed=2)
    for path in paths:  # number the slices from the top down
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = 5 - int(ds.InstanceNumber)
        ds.save_as(path)
    assert ingest(platform, [tmp_path / "in"], source="reversed").ingested == 4
    with platform.session() as s:
        series = s.scalars(select(SeriesRow.uid)).one()
        stack = labels_images.item_stack(s, "series", series)
        grid = labels_images.stack_geometry(s, platform.objects, stack)
        flat = labels_images.stack_geometry(s, platform.objects, stack, placed=False)
    positions = [float(pydicom.dcmread(io.BytesIO(platform.objects.get(p.digest)), stop_before_pixels=True)
                       .ImagePositionPatient[2]) for p in stack.planes]
    assert positions == [3.75, 2.5, 1.25, 0.0]
    assert (grid.width, grid.height, grid.slices) == (16, 16, 4) and grid.spacing == pytest.approx((1.25, 0.7, 0.7))
    assert grid.origin == pytest.approx((0, 0, 3.75)) and grid.direction is not None
    placed = SeriesGeometry.of_mask(grid.mask(grid.empty()))
    assert placed is not None
    for k, z in enumerate(positions):
        assert (placed.affine_lps() @ [0, 0, k, 1])[:3] == pytest.approx([0, 0, z])
    assert flat.spacing is None and flat.origin is None  # unplaced: pixel units
