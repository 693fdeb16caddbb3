"""Supervisely JSON: project layout, inclusive rectangles, bitmaps with origin, tags, readers."""

from __future__ import annotations

import base64
import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medcycle.errors import ValidationFailed
from medcycle.labels import formats
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Mask

from .helpers import assert_same, keep, planar_set

ALL = [Kind.CLASS, Kind.BOX, Kind.POLYGON, Kind.MASK]


def test_round_trip_through_a_zip(tmp_path: Path) -> None:
    original = keep(planar_set(), ALL, scores=False)
    [archive] = formats.write(original, "supervisely", tmp_path / "project.zip")
    assert formats.detect(archive) == "supervisely"
    back = formats.read(archive, "supervisely")
    assert_same(original, back)
    files = formats.encode(original, "supervisely")
    assert sorted(files) == ["ds0/ann/chest1.png.json", "ds0/ann/empty.png.json", "ds0/ann/scans/chest2.png.json",
                             "meta.json"]
    meta = json.loads(files["meta.json"])
    assert [c["title"] for c in meta["classes"]] == ["nodule", "effusion", "normal"]
    assert [c["shape"] for c in meta["classes"]] == ["rectangle", "any", "any"]


def test_rectangles_are_inclusive_and_bitmaps_cropped_with_origin() -> None:
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[3:5, 6:9] = 1
    ref = ImageRef("a.png", 12, 10, file_name="a.png")
    aset = AnnotationSet((ref,), ("box", "blob"), (
        Annotation("a.png", "box", Kind.BOX, Box(2, 3, 5, 7), reader="r1", attributes={"grade": 2, "solid": True}),
        Annotation("a.png", "blob", Kind.MASK, Mask(mask)),
    ))
    ann = json.loads(formats.encode(aset, "supervisely")["ds0/ann/a.png.json"])
    rect, bitmap = ann["objects"]
    assert rect["points"]["exterior"] == [[2, 3], [4, 6]] and rect["labelerLogin"] == "r1"
    assert rect["tags"] == [{"name": "grade", "value": 2}, {"name": "solid", "value": None}]
    assert bitmap["bitmap"]["origin"] == [6, 3]
    png = zlib.decompress(base64.b64decode(bitmap["bitmap"]["data"]))
    assert Image.open(io.BytesIO(png)).size == (3, 2)
    back = formats.read(_tree(formats.encode(aset, "supervisely")), "supervisely")
    assert_same(aset, back)


def _tree(files: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"project/{name}", data)
    return buffer.getvalue()


def test_reads_sdk_style_palette_bitmaps() -> None:
    crop = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    im = Image.fromarray(crop)
    im.putpalette([0, 0, 0, 255, 255, 255])
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", transparency=0)
    obj = {"classTitle": "x", "geometryType": "bitmap",
           "bitmap": {"origin": [1, 2], "data": base64.b64encode(zlib.compress(buffer.getvalue())).decode()}}
    aset = formats.read(json.dumps(_ann([obj])).encode(), "supervisely", name="a.png.json")
    geom = aset.annotations[0].geometry
    assert isinstance(geom, Mask) and geom.array[2:4, 1:3].tolist() == [[0, 1], [1, 1]] and geom.array.sum() == 3


def _ann(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"size": {"width": 8, "height": 8}, "tags": [], "objects": objects}


RECT = {"classTitle": "a", "geometryType": "rectangle"}


@pytest.mark.parametrize(("objects", "message"), [
    ([{**RECT, "points": {"exterior": [[1, 1]]}}], "a.png.json: objects[0].points.exterior has 1 points"),
    ([{**RECT, "points": {"exterior": [[1, 1], [2, "x"]]}}], "objects[0].points.exterior[1][1] should be a finite"),
    ([{**RECT}], "objects[0].points is missing"),
    ([{"classTitle": "a", "geometryType": "cuboid"}], "objects[0].geometryType is 'cuboid'"),
    ([{"classTitle": "a", "geometryType": "polygon",
       "points": {"exterior": [[0, 0], [4, 0], [4, 4]], "interior": [[[1, 1], [2, 1], [2, 2]]]}}],
     "objects[0].points.interior has holes"),
    ([{"classTitle": "a", "geometryType": "bitmap", "bitmap": {"origin": [0, 0], "data": "!!!"}}],
     "objects[0].bitmap.data is not base64 of zlib-compressed PNG"),
    ([{"classTitle": "a", "geometryType": "bitmap",
       "bitmap": {"origin": [0, 0], "data": base64.b64encode(zlib.compress(b"nope")).decode()}}],
     "objects[0].bitmap.data does not hold a readable PNG"),
    ([{**RECT, "points": {"exterior": [[5, 1], [2, 2]]}}], "objects[0] is invalid: box"),
])
def test_malformed_objects_are_named(objects: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        formats.read(json.dumps(_ann(objects)).encode(), "supervisely", name="a.png.json")
    assert message in err.value.message


def test_bitmap_outside_the_image_is_refused() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.ones((4, 4), np.uint8)).save(buffer, format="PNG")
    obj = {"classTitle": "x", "geometryType": "bitmap",
           "bitmap": {"origin": [6, 6], "data": base64.b64encode(zlib.compress(buffer.getvalue())).decode()}}
    with pytest.raises(ValidationFailed, match="is a 4x4 bitmap at origin \\(6, 6\\), outside the 8x8 image"):
        formats.read(json.dumps(_ann([obj])).encode(), "supervisely", name="a.png.json")


def test_empty_masks_cannot_be_exported() -> None:
    aset = AnnotationSet((ImageRef("m.png", 4, 4, file_name="m.png"),), ("x",),
                         (Annotation("m.png", "x", Kind.MASK, Mask(np.zeros((4, 4), np.uint8))),))
    with pytest.raises(ValidationFailed, match="cannot hold an empty mask"):
        formats.encode(aset, "supervisely")
