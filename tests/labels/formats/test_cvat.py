"""CVAT XML 1.1 for images: boxes, polygons, masks (bounding-box RLE), tags, attributes; bad files."""

from __future__ import annotations

import numpy as np
import pytest

from medcycle.errors import ValidationFailed
from medcycle.labels import formats
from medcycle.labels.model import Annotation, AnnotationSet, ImageRef, Kind, Mask

from .helpers import assert_same, keep, planar_set

ALL = [Kind.CLASS, Kind.BOX, Kind.POLYGON, Kind.MASK]


def test_round_trip_keeps_every_kind_and_string_attributes() -> None:
    original = keep(planar_set(), ALL, readers=False, scores=False)
    original = AnnotationSet(original.images, original.classes, (
        *original.annotations,
        Annotation("empty.png", "normal", Kind.CLASS, attributes={"view": "PA", "occluded": True}),
    ))
    xml = formats.encode(original, "cvat")["annotations.xml"]
    assert b"<version>1.1</version>" in xml and b'<attribute name="difficult">true</attribute>' in xml
    back = formats.read(xml, "cvat", name="annotations.xml")
    assert_same(original, back, image_order=True)


def test_mask_rle_is_row_major_over_its_bounding_box() -> None:
    array = np.zeros((6, 8), dtype=np.uint8)
    array[2, 3:6] = 1
    array[3, 4] = 1
    aset = AnnotationSet((ImageRef("m.png", 8, 6, file_name="m.png"),), ("x",),
                         (Annotation("m.png", "x", Kind.MASK, Mask(array)),))
    xml = formats.encode(aset, "cvat")["annotations.xml"].decode()
    assert 'rle="0, 3, 1, 1, 1" left="3" top="2" width="3" height="2"' in xml  # 1 1 1 / 0 1 0
    assert_same(aset, formats.read(xml.encode(), "cvat", name="annotations.xml"))


def test_reads_a_cvat_export() -> None:
    xml = b"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><job><labels><label><name>car</name></label><label><name>road</name></label></labels></job></meta>
  <image id="0" name="frames/f1.jpg" width="100" height="50" subset="default">
    <box label="car" source="manual" occluded="0" xtl="10.50" ytl="5.00" xbr="20.00" ybr="15.25" z_order="0">
      <attribute name="color">red</attribute>
    </box>
    <polyline label="road" source="manual" occluded="0" points="0,0;10,10" z_order="0"/>
  </image>
</annotations>"""
    with pytest.raises(ValidationFailed, match=r"annotations.xml: annotations/image\[1\]/polyline\[1\] is a polyline"):
        formats.read(xml, "cvat", name="annotations.xml")
    aset = formats.read(xml, "cvat", name="annotations.xml", skip_unsupported=True)
    assert aset.classes == ("car", "road")
    [car] = aset.annotations
    assert car.attributes == {"color": "red"} and car.image == "frames/f1.jpg"


def _cvat(shape: str) -> bytes:
    return (f'<annotations><version>1.1</version><image id="0" name="a.png" width="10" height="10">{shape}'
            f"</image></annotations>").encode()


@pytest.mark.parametrize(("data", "message"), [
    (_cvat('<box label="a" xtl="1" ytl="1" xbr="x" ybr="2"/>'),
     "annotations.xml: annotations/image[1]/box[1] attribute xbr='x' is not a number"),
    (_cvat('<box label="a" xtl="1" ytl="1" xbr="2"/>'), "annotations/image[1]/box[1] has no attribute 'ybr'"),
    (_cvat('<box xtl="1" ytl="1" xbr="2" ybr="2"/>'), "box[1] has no attribute 'label'"),
    (_cvat('<box label="a" xtl="5" ytl="1" xbr="2" ybr="2"/>'), "box[1] is invalid: box (5.0, 1.0, 2.0, 2.0) has its"),
    (_cvat('<polygon label="a" points="1,1;2;3,3"/>'), "polygon[1] attribute points has '2', not an x,y pair"),
    (_cvat('<polygon label="a" points="1,1;2,2"/>'), "polygon[1] is invalid: a polygon needs at least 3 points"),
    (_cvat('<mask label="a" rle="1, 2" left="0" top="0" width="2" height="2"/>'),
     "mask[1] attribute rle is not valid: the runs cover 3 pixels, the mask has 4"),
    (_cvat('<mask label="a" rle="4" left="9" top="0" width="2" height="2"/>'), "mask[1] box left=9 top=0"),
    (_cvat('<box label="a" xtl="1" ytl="1" xbr="2" ybr="2" rotation="30"/>'), "box[1] is rotated"),
    (b'<annotations><version>2.0</version></annotations>', "annotations/version is '2.0'"),
    (b'<annotations><version>1.1</version><track id="0" label="a"/></annotations>', "track[1] is a video track"),
    (b'<annotations><version>1.1</version><image id="0" name="a.png" width="w" height="1"/></annotations>',
     "image[1] attribute width='w' is not a number"),
])
def test_malformed_files_name_the_element(data: bytes, message: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        formats.read(data, "cvat", name="annotations.xml")
    assert message in err.value.message


def test_empty_mask_cannot_be_exported() -> None:
    aset = AnnotationSet((ImageRef("m.png", 4, 4, file_name="m.png"),), ("x",),
                         (Annotation("m.png", "x", Kind.MASK, Mask(np.zeros((4, 4), np.uint8))),))
    with pytest.raises(ValidationFailed, match=r"cannot hold the empty mask of annotation 0 on 'm.png'"):
        formats.encode(aset, "cvat")
