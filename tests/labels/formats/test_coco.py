"""COCO JSON: round trips (boxes, polygons, RLE masks, scores, crowd) and malformed files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcycle.errors import ValidationFailed
from medcycle.labels import formats
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Mask

from .helpers import assert_same, keep, planar_set

KINDS = [Kind.BOX, Kind.POLYGON, Kind.MASK]


@pytest.mark.parametrize("counts", ["compressed", "uncompressed"])
def test_round_trip_without_images(counts: str) -> None:
    original = keep(planar_set(), KINDS, readers=False)
    files = formats.encode(original, "coco", rle_counts=counts)
    doc = json.loads(files["annotations.json"])
    rle_counts = next(a["segmentation"]["counts"] for a in doc["annotations"] if isinstance(a["segmentation"], dict))
    assert isinstance(rle_counts, str if counts == "compressed" else list)
    back = formats.read(files["annotations.json"], "coco", name="annotations.json")
    assert_same(original, back, tol=1e-9, image_order=True)


def test_round_trip_through_a_file_maps_names_back_to_catalog_keys(tmp_path: Path) -> None:
    catalog = [ImageRef("1.2.840.1", 64, 48, file_name="a.png"), ImageRef("1.2.840.2", 40, 30, file_name="b.png")]
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[5:9, 7:20] = 1
    original = AnnotationSet(tuple(catalog), ("lesion",), (
        Annotation("1.2.840.1", "lesion", Kind.MASK, Mask(mask), attributes={"iscrowd": True}),
        Annotation("1.2.840.2", "lesion", Kind.BOX, Box(1.25, 2.5, 3.75, 10.0), score=0.5,
                   attributes={"source": "model"}),
    ))
    [path] = formats.write(original, "coco", tmp_path / "out.json")
    assert path == tmp_path / "out.json"
    doc = json.loads(path.read_text())
    assert doc["annotations"][0]["iscrowd"] == 1 and doc["annotations"][0]["bbox"] == [7, 5, 13, 4]
    assert doc["annotations"][1]["bbox"] == [1.25, 2.5, 2.5, 7.5]
    back = formats.read(path, "coco", images=catalog)
    assert_same(original, back)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(0, 300), st.floats(0, 300)),
                min_size=1, max_size=5))
def test_boxes_round_trip_within_float_rounding(boxes: list[tuple[float, float, float, float]]) -> None:
    ref = ImageRef("x.png", 800, 800, file_name="x.png")
    original = AnnotationSet((ref,), ("a",), tuple(
        Annotation("x.png", "a", Kind.BOX, Box(x, y, x + w, y + h)) for x, y, w, h in boxes))
    back = formats.read(formats.encode(original, "coco")["annotations.json"], "coco")
    assert_same(original, back, tol=1e-9)


def test_multi_part_polygon_becomes_one_annotation_per_part() -> None:
    doc = _doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9],
                             "segmentation": [[0, 0, 4, 0, 4, 4], [5, 5, 9, 5, 9, 9]]}])
    aset = formats.read(json.dumps(doc).encode(), "coco", name="a.json")
    assert [a.kind for a in aset.annotations] == [Kind.POLYGON, Kind.POLYGON]
    assert aset.classes == ("cat",)


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}],
    }
    doc.update(changes)
    return doc


BAD_ANN = {"id": 1, "image_id": 1, "category_id": 1}


@pytest.mark.parametrize(("doc", "message"), [
    (_doc(annotations=[{**BAD_ANN, "bbox": [1, 2, 3]}]), "annotations.json: annotations[0].bbox has 3 numbers"),
    (_doc(annotations=[{**BAD_ANN, "bbox": [1, 2, 3, "x"]}]), "annotations[0].bbox[3] should be a finite number"),
    (_doc(annotations=[{**BAD_ANN, "image_id": 7, "bbox": [1, 2, 3, 4]}]), "annotations[0].image_id is 7"),
    (_doc(annotations=[{**BAD_ANN, "category_id": 3, "bbox": [1, 2, 3, 4]}]), "annotations[0].category_id is 3"),
    (_doc(annotations=[{**BAD_ANN, "bbox": [1, 2, -3, 4]}]), "annotations[0].bbox has a negative width"),
    (_doc(annotations=[{**BAD_ANN}]), "annotations[0].bbox is missing"),
    (_doc(annotations=[{**BAD_ANN, "segmentation": [[1, 2, 3, 4]]}]), "annotations[0].segmentation[0] has 4 numbers"),
    (_doc(annotations=[{**BAD_ANN, "segmentation": {"size": [10, 10], "counts": "0!"}}]),
     "annotations[0].segmentation.counts is not valid RLE"),
    (_doc(annotations=[{**BAD_ANN, "segmentation": {"size": [10, 10], "counts": [3, 4]}}]),
     "annotations[0].segmentation.counts is not valid RLE: the runs cover 7 pixels"),
    (_doc(annotations=[{**BAD_ANN, "segmentation": {"size": [5, 10], "counts": [50]}}]),
     "annotations[0].segmentation.size is 5x10"),
    (_doc(images=[{"id": 1, "file_name": "a.png", "height": 10}]), "images[0].width is missing"),
    (_doc(categories=[{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}]), "categories[1].id repeats"),
    (_doc(annotations=[{**BAD_ANN, "bbox": [1, 1, 2, 2], "iscrowd": 2}]), "annotations[0].iscrowd should be 0 or 1"),
])
def test_malformed_files_name_the_element(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        formats.read(json.dumps(doc).encode(), "coco", name="annotations.json")
    assert message in err.value.message
    assert err.value.hint and err.value.details["file"] == "annotations.json"


def test_invalid_json_names_the_line() -> None:
    with pytest.raises(ValidationFailed, match=r"annotations.json line 3: column \d+: invalid JSON"):
        formats.read(b'{\n "images": [],\n "categories": [,]}', "coco", name="annotations.json")
    with pytest.raises(ValidationFailed, match="invalid JSON: NaN is not a number"):
        formats.read(b'{"images": [], "categories": [], "x": NaN}', "coco", name="annotations.json")


def test_refuses_what_coco_cannot_hold() -> None:
    with pytest.raises(ValidationFailed, match="COCO cannot hold annotation 4 \\(class 'normal'"):
        formats.encode(planar_set(), "coco")
    ref = ImageRef("v", 8, 8)
    sliced = AnnotationSet((ref,), ("a",), (Annotation("v", "a", Kind.BOX, Box(0, 0, 1, 1, z=3)),))
    with pytest.raises(ValidationFailed, match="lies on slice 3"):
        formats.encode(sliced, "coco")
    wrong = AnnotationSet((ref,), ("a",), (Annotation("v", "a", Kind.MASK, Mask(np.zeros((4, 8), np.uint8))),))
    with pytest.raises(ValidationFailed, match="has a mask of shape \\(4, 8\\)"):
        formats.encode(wrong, "coco")


def test_size_mismatch_with_given_images_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="size 10x10, but it is 20x10"):
        formats.read(json.dumps(_doc()).encode(), "coco", images=[ImageRef("k", 20, 10, file_name="a.png")])
    with pytest.raises(ValidationFailed, match="not among the given images"):
        formats.read(json.dumps(_doc()).encode(), "coco", images=[ImageRef("k", 10, 10, file_name="b.png")])
