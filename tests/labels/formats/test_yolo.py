"""YOLO txt: normalised boxes, segments and detections; sizes from images= or image files; bad lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medcycle.errors import ValidationFailed
from medcycle.labels import formats
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Polygon

from .helpers import assert_same, keep, planar_set


def test_round_trip_with_images(tmp_path: Path) -> None:
    original = keep(planar_set(), [Kind.BOX, Kind.POLYGON], readers=False, attributes=False)
    written = formats.write(original, "yolo", tmp_path / "yolo")
    names = sorted(p.relative_to(tmp_path / "yolo").as_posix() for p in written)
    assert names == ["classes.txt", "data.yaml", "labels/chest1.txt", "labels/empty.txt", "labels/scans/chest2.txt"]
    second = (tmp_path / "yolo/labels/chest1.txt").read_text().splitlines()[1]
    assert second == "0 0.3125 0.541666666667 0.3125 0.583333333333 0.75"  # box 10,12 → 30,40 on 64x48, score
    back = formats.read(tmp_path / "yolo", "yolo", images=original.images)
    assert_same(original, back, tol=1e-6)


def test_sizes_come_from_image_files_and_class_names_from_data_yaml(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("L", (200, 100)).save(tmp_path / "images/a.png")
    (tmp_path / "labels/a.txt").write_text("1 0.5 0.5 0.1 0.2\n\n0 0.1 0.1 0.2 0.1 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("path: .\nnames:\n  0: lung\n  1: nodule\n")
    aset = formats.read(tmp_path, "yolo")
    assert aset.images == (ImageRef("a.png", 200, 100, file_name="a.png"),)
    assert aset.classes == ("lung", "nodule")
    box, poly = aset.annotations
    assert box.label == "nodule" and box.score is None
    assert_same(AnnotationSet(aset.images, aset.classes, (box,)), AnnotationSet(aset.images, aset.classes, (
        Annotation("a.png", "nodule", Kind.BOX, Box(90, 40, 110, 60)),)), tol=1e-9)
    assert poly.label == "lung" and isinstance(poly.geometry, Polygon) and poly.geometry.points[1] == (40.0, 10.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000),
       st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), max_size=4))
def test_normalisation_round_trips_within_1e6_px(width: int, height: int,
                                                 corners: list[tuple[float, float, float, float]]) -> None:
    ref = ImageRef("i.png", width, height, file_name="i.png")
    boxes = [Box(min(a, b) * width, min(c, d) * height, max(a, b) * width, max(c, d) * height)
             for a, b, c, d in corners]
    original = AnnotationSet((ref,), ("x",), tuple(Annotation("i.png", "x", Kind.BOX, b) for b in boxes))
    back = formats.read(formats.encode(original, "yolo")["labels/i.txt"], "yolo", name="labels/i.txt",
                        images=[ref], classes=["x"])
    assert_same(original, back, tol=1e-6)


@pytest.mark.parametrize(("text", "message"), [
    ("0 0.5 0.5 0.1 0.1\n0 0.5 0.5\n", "labels/img1.txt line 2: expected 5 numbers (class cx cy w h)"),
    ("0 0.5 0.5 0.1\n", "labels/img1.txt line 1: expected 5 numbers (class cx cy w h), 6 (with a score) or a class "
                        "and at least 3 x y pairs, got 4"),
    ("0 0.5 0.5 0.1 0.1\n\n\n0 0.5 0.5 0.1 abc\n", "labels/img1.txt line 4: 'abc' is not a finite number"),
    ("nan 0.5 0.5 0.1 0.1\n", "line 1: 'nan' is not a finite number"),
    ("3 0.5 0.5 0.1 0.1\n", "labels/img1.txt line 1: class 3 is not an index into the 2 classes"),
    ("0.5 0.5 0.5 0.1 0.1\n", "line 1: class 0.5 is not an index"),
    ("0 1.5 0.5 0.1 0.1\n", "labels/img1.txt line 1: coordinate 1.5 is outside 0..1"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n", "got 8"),
])
def test_bad_lines_are_named(text: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        formats.read(text.encode(), "yolo", name="labels/img1.txt", classes=["a", "b"],
                     images=[ImageRef("img1.png", 10, 10, file_name="img1.png")])
    assert message in err.value.message
    assert err.value.details["file"] == "labels/img1.txt"


def test_needs_sizes_and_class_list(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValidationFailed, match="has no class list"):
        formats.read(tmp_path, "yolo")
    (tmp_path / "classes.txt").write_text("a\n")
    with pytest.raises(ValidationFailed, match=r"labels/a.txt: has no image size"):
        formats.read(tmp_path, "yolo")
    (tmp_path / "data.yaml").write_text("names: [a\n")
    with pytest.raises(ValidationFailed, match=r"data.yaml: is not valid YAML"):
        formats.read(tmp_path, "yolo")


def test_refuses_masks_and_corrupt_images(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="YOLO cannot hold annotation 2 \\(mask"):
        formats.encode(keep(planar_set(), [Kind.BOX, Kind.MASK]), "yolo")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images/a.png").write_bytes(b"not a png")
    (tmp_path / "labels/a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "classes.txt").write_text("a\n")
    with pytest.raises(ValidationFailed, match=r"images/a.png: is not a readable image"):
        formats.read(tmp_path, "yolo")
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="PNG")
    (tmp_path / "images/a.png").write_bytes(buffer.getvalue())
    assert formats.read(tmp_path, "yolo").images[0].width == 4
