"""Label Studio JSON: percent coordinates, brush RLE, choices, readers and predictions; bad tasks."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from medcycle.errors import ValidationFailed
from medcycle.labels import formats
from medcycle.labels.formats import rle
from medcycle.labels.model import Annotation, AnnotationSet, ImageRef, Kind, Mask

from .helpers import assert_same, keep, planar_set

ALL = [Kind.CLASS, Kind.BOX, Kind.POLYGON, Kind.MASK]


def test_round_trip_with_readers_scores_and_models() -> None:
    base = keep(planar_set(), ALL, attributes=False)
    original = AnnotationSet(base.images, base.classes, (
        *base.annotations,
        Annotation("scans/chest2.png", "nodule", Kind.BOX, base.annotations[0].geometry, reader="model:v3", score=0.9),
    ))
    tasks = json.loads(formats.encode(original, "labelstudio")["tasks.json"])
    assert [p["model_version"] for p in tasks[1]["predictions"]] == ["v3"]
    assert tasks[0]["annotations"][0]["completed_by"] == {"email": "alice@example.org"}
    back = formats.read(json.dumps(tasks).encode(), "labelstudio", images=original.images,
                        classes=list(original.classes))
    assert_same(original, back, tol=1e-9)


def test_percent_coordinates_and_upload_prefixed_names() -> None:
    task = {"data": {"image": "/data/upload/3/8f1c2a9b-chest.png"}, "annotations": [{"completed_by": 7, "result": [
        {"type": "rectanglelabels", "original_width": 200, "original_height": 100,
         "value": {"x": 10, "y": 20, "width": 25, "height": 50, "rotation": 0, "rectanglelabels": ["nodule"]}}]}]}
    catalog = [ImageRef("1.2.3", 200, 100, file_name="chest.png")]
    aset = formats.read(json.dumps([task]).encode(), "labelstudio", images=catalog)
    [a] = aset.annotations
    assert a.image == "1.2.3" and a.reader == "7"
    assert (a.geometry.x0, a.geometry.y0, a.geometry.x1, a.geometry.y1) == (20, 20, 70, 70)  # type: ignore[union-attr]
    without = formats.read(json.dumps([task]).encode(), "labelstudio")
    assert without.images == (ImageRef("/data/upload/3/8f1c2a9b-chest.png", 200, 100,
                                       file_name="/data/upload/3/8f1c2a9b-chest.png"),)


def test_brush_masks_decode_as_label_studio_writes_them() -> None:
    mask = np.zeros((6, 5), dtype=np.uint8)
    mask[1:4, 2:4] = 1
    # label_studio_converter.brush.mask2rle: the mask (0/255) repeated over the 4 RGBA channels
    encoded = rle.ls_encode(np.repeat((mask * 255).ravel(), 4))
    task = {"data": {"image": "m.png"}, "annotations": [{"result": [
        {"type": "brushlabels", "original_width": 5, "original_height": 6,
         "value": {"format": "rle", "rle": encoded, "brushlabels": ["lesion"]}}]}]}
    [a] = formats.read(json.dumps(task).encode(), "labelstudio").annotations
    assert a.geometry == Mask(mask)


def test_cancelled_annotations_and_unsupported_results() -> None:
    result = {"type": "textarea", "value": {"text": ["note"]}}
    task = {"data": {"image": "a.png"}, "annotations": [
        {"was_cancelled": True, "result": [{"type": "choices", "value": {"choices": ["x"]}}]},
        {"result": [result, {"type": "choices", "value": {"choices": ["normal"]}}]}]}
    with pytest.raises(ValidationFailed, match=r"tasks.json: annotations\[1\].result\[0\].type is 'textarea'"):
        formats.read(json.dumps(task).encode(), "labelstudio", name="tasks.json",
                     images=[ImageRef("a.png", 4, 4, file_name="a.png")])
    aset = formats.read(json.dumps(task).encode(), "labelstudio", skip_unsupported=True,
                        images=[ImageRef("a.png", 4, 4, file_name="a.png")])
    assert [(a.label, a.kind) for a in aset.annotations] == [("normal", Kind.CLASS)]


def _task(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"data": {"image": "a.png"}, "annotations": [{"result": [
        {"original_width": 10, "original_height": 10, **result}]}]}]


RECT = {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 2, "height": 2, "rectanglelabels": ["a"]}}


@pytest.mark.parametrize(("tasks", "message"), [
    (_task({**RECT, "value": {"x": 1, "y": 1, "width": 2, "rectanglelabels": ["a"]}}),
     "tasks.json: [0].annotations[0].result[0].value.height is missing"),
    (_task({**RECT, "value": {**RECT["value"], "x": "1"}}), "result[0].value.x should be a finite number"),
    (_task({**RECT, "value": {**RECT["value"], "rotation": 45}}), "result[0].value.rotation is not 0"),
    (_task({"type": "polygonlabels", "value": {"points": [[1, 1], [2]], "polygonlabels": ["a"]}}),
     "result[0].value.points[1] has 1 numbers, expected 2"),
    (_task({"type": "brushlabels", "value": {"format": "rle", "rle": [1, 2, 3], "brushlabels": ["a"]}}),
     "result[0].value.rle is not valid brush RLE"),
    (_task({**RECT, "original_width": 20}), "tasks.json: [0] gives image 'a.png' the size 20x10, but it is 10x10"),
    ([{"data": {"img": "a.png"}}], "tasks.json: [0].data.image is missing"),
    ([{"data": {"image": "a.png"}}], "tasks.json: [0] gives no size for image 'a.png'"),
])
def test_malformed_tasks_are_named(tasks: list[dict[str, Any]], message: str) -> None:
    images = None if "no size" in message else [ImageRef("a.png", 10, 10, file_name="a.png")]
    with pytest.raises(ValidationFailed) as err:
        formats.read(json.dumps(tasks).encode(), "labelstudio", name="tasks.json", images=images)
    assert message in err.value.message
