"""Pascal VOC (LabelImg): 1-based inclusive pixels, one XML per image, malformed and hostile XML."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcycle.errors import ValidationFailed
from medcycle.labels import formats
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind

from .helpers import assert_same, keep, planar_set


def test_round_trip_through_a_folder(tmp_path: Path) -> None:
    original = keep(planar_set(), [Kind.BOX], readers=False, scores=False)
    written = formats.write(original, "voc", tmp_path / "voc")
    assert sorted(p.relative_to(tmp_path / "voc").as_posix() for p in written) == [
        "chest1.xml", "classes.txt", "empty.xml", "scans/chest2.xml"]
    back = formats.read(tmp_path / "voc", "voc")
    assert_same(original, back)


def test_pixel_convention_is_one_based_inclusive() -> None:
    ref = ImageRef("a.png", 10, 10, file_name="a.png")
    aset = AnnotationSet((ref,), ("dot",), (Annotation("a.png", "dot", Kind.BOX, Box(0, 0, 1, 1)),))
    xml = formats.encode(aset, "voc")["a.xml"].decode()
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        assert f"<{tag}>1</{tag}>" in xml  # the single pixel (0, 0) is 1..1 in VOC
    labelimg = (b"<annotation><filename>b.jpg</filename><size><width>20</width><height>10</height>"
                b"<depth>3</depth></size><object><name>cat</name><difficult>1</difficult>"
                b"<bndbox><xmin>3</xmin><ymin>2</ymin><xmax>8</xmax><ymax>9</ymax></bndbox></object></annotation>")
    back = formats.read(labelimg, "voc", name="b.xml")
    assert back.annotations[0].geometry == Box(2, 1, 8, 9)
    assert back.annotations[0].attributes == {"difficult": True}
    assert back.images == (ImageRef("b.jpg", 20, 10, file_name="b.jpg"),)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 90), st.floats(0, 90), st.floats(0, 30), st.floats(0, 30)), max_size=4))
def test_boxes_come_back_rounded_to_whole_pixels(boxes: list[tuple[float, float, float, float]]) -> None:
    ref = ImageRef("a.png", 128, 128, file_name="a.png")
    original = AnnotationSet((ref,), ("a",), tuple(
        Annotation("a.png", "a", Kind.BOX, Box(x, y, x + w, y + h)) for x, y, w, h in boxes))
    back = formats.read(formats.encode(original, "voc")["a.xml"], "voc", name="a.xml", classes=["a"])
    assert_same(original, back, tol=0.5)
    for a in back.annotations:
        assert isinstance(a.geometry, Box) and all(float(v).is_integer() for v in
                                                   (a.geometry.x0, a.geometry.y0, a.geometry.x1, a.geometry.y1))


def _voc(body: str) -> bytes:
    return (f"<annotation><filename>a.png</filename><size><width>10</width><height>10</height></size>"
            f"{body}</annotation>").encode()


@pytest.mark.parametrize(("data", "message"), [
    (_voc("<object><name>c</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>x</xmax><ymax>2</ymax></bndbox></object>"),
     "a.xml: annotation/object[1]/bndbox/xmax is not a number: 'x'"),
    (_voc("<object><name>c</name></object><object><name>c</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
          "<xmax>2</xmax></bndbox></object>"), "a.xml: annotation/object[1]/bndbox is missing"),
    (_voc("<object><name>c</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax></bndbox></object>"),
     "annotation/object[1]/bndbox/ymax is missing"),
    (_voc("<object><bndbox/></object>"), "annotation/object[1]/name is missing"),
    (_voc("<object><name>c</name><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox>"
          "</object>"), "has xmax/ymax before xmin/ymin"),
    (_voc("<object><name>c</name><difficult>yes</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
          "<ymax>2</ymax></bndbox></object>"), "annotation/object[1]/difficult should be 0 or 1"),
    (b"<annotation><filename>a.png</filename><object>", "a.xml line 1: column"),
    (b"<annotations/>", "is not a VOC <annotation> document"),
    (b"<annotation><filename>a.png</filename></annotation>", "gives no size for image 'a.png'"),
])
def test_malformed_files_name_the_element(data: bytes, message: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        formats.read(data, "voc", name="a.xml")
    assert message in err.value.message


def test_entity_declarations_are_refused() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<annotation><filename>&lol2;</filename></annotation>")
    with pytest.raises(ValidationFailed, match="declares a DOCTYPE or entities"):
        formats.read(bomb, "voc", name="a.xml")


def test_refuses_polygons_and_unsafe_file_names() -> None:
    with pytest.raises(ValidationFailed, match="Pascal VOC cannot hold annotation 2 \\(polygon"):
        formats.encode(planar_set(), "voc")
    evil = ImageRef("k", 10, 10, file_name="../../etc/passwd.png")
    with pytest.raises(ValidationFailed, match="not a safe relative file name"):
        formats.encode(AnnotationSet((evil,), (), ()), "voc")
    twins = (ImageRef("k1", 10, 10, file_name="a.png"), ImageRef("k2", 10, 10, file_name="a.jpg"))
    with pytest.raises(ValidationFailed, match=r"same VOC file: a.xml"):
        formats.encode(AnnotationSet(twins, (), ()), "voc")
