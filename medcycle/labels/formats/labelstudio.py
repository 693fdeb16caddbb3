"""Label Studio JSON: a list of tasks, each with ``data.image``, ``annotations`` and ``predictions``.

* ``rectanglelabels`` (``x, y, width, height``) and ``polygonlabels`` (``points``) are in percent of
  ``original_width`` / ``original_height``; they come back within 1e-6 px (float rounding).
* ``brushlabels`` with ``format: "rle"``: Label Studio's rle-pack of an RGBA image whose alpha is the
  mask (:func:`.rle.ls_decode`), as ``label_studio_converter.brush`` writes it.
* ``choices`` ↔ image-level classes (``Kind.CLASS``).
* One Label Studio annotation per reader (``completed_by``: an id, an ``{"email": ...}`` object or a
  string ↔ ``Annotation.reader``); readers ``model:<version>`` ↔ ``predictions`` with that
  ``model_version``; ``score`` on a result ↔ ``Annotation.score``. Cancelled annotations are skipped.
* Image sizes come from the results' ``original_width`` / ``original_height``: a task without results
  (an image nobody annotated) needs ``images=``.
* The class list is not in the export (it is in the project's labeling config): classes come back in
  order of first use, or as given with ``classes=``.
Not kept: attributes, rotated rectangles and other result types (refused unless ``skip_unsupported``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medcycle.labels.formats import rle
from medcycle.labels.formats.bundle import Bundle
from medcycle.labels.formats.images import Collector, ImageIndex, by_image, check_writable, export_name
from medcycle.labels.formats.parsing import Node, dump_json, load_json
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Mask, Polygon

FILE = "tasks.json"
MODEL = "model:"
_TYPES = {"rectanglelabels": Kind.BOX, "polygonlabels": Kind.POLYGON, "brushlabels": Kind.MASK,
          "choices": Kind.CLASS}


def _reader(entry: Node) -> str | None:
    who = entry.opt("completed_by")
    if who is None or not isinstance(who.value, dict):
        return entry.opt_text("completed_by")
    for key in ("email", "username", "id"):
        found = who.opt_text(key)
        if found:
            return found
    return None


def _size(task: Node) -> tuple[int | None, int | None]:
    for group in ("annotations", "predictions"):
        entries = task.opt(group)
        for entry in entries.items() if entries is not None else []:
            results = entry.opt("result")
            for r in results.items() if results is not None else []:
                if r.has("original_width") and r.has("original_height"):
                    return r.key("original_width").integer(), r.key("original_height").integer()
    return None, None


def _results(result: Node, ref: ImageRef, reader: str | None, skip: bool) -> list[Annotation]:
    kind_name = result.key("type").text().lower()
    if kind_name not in _TYPES:
        if skip:
            return []
        result.where.at("type").fail(f"is {kind_name!r}, which medcycle does not hold",
                                     "Pass skip_unsupported=True to leave these results out.")
    for dim, expected in (("original_width", ref.width), ("original_height", ref.height)):
        node = result.opt(dim)
        if node is not None and node.integer() != expected:
            node.fail(f"is {node.integer()}, but the image is {ref.width}x{ref.height}",
                      "The result was drawn on another version of the image.")
    value = result.key("value")
    score_node = result.opt("score")
    score = score_node.number() if score_node is not None else None
    labels = [n.text() for n in value.key(kind_name).items()]
    w, h = ref.width, ref.height
    geom: Box | Polygon | Mask | None = None
    with value.where.guard():
        if kind_name == "rectanglelabels":
            rotation = value.opt("rotation")
            if rotation is not None and rotation.number() != 0:
                if skip:
                    return []
                rotation.fail("is not 0; medcycle boxes are not rotated", "Pass skip_unsupported=True to skip it.")
            x, y = value.key("x").number() * w / 100, value.key("y").number() * h / 100
            geom = Box(x, y, x + value.key("width").number() * w / 100, y + value.key("height").number() * h / 100)
        elif kind_name == "polygonlabels":
            points = []
            for p in value.key("points").items():
                px, py = p.numbers(2)
                points.append((px * w / 100, py * h / 100))
            geom = Polygon(tuple(points))
        elif kind_name == "brushlabels":
            if value.has("format") and value.key("format").text() != "rle":
                value.where.at("format").fail("is not 'rle'", "Export brush masks in Label Studio's RLE format.")
            data = value.key("rle")
            try:
                flat = rle.ls_decode([int(v) for v in data.numbers()], w * h * 4)
            except ValueError as exc:
                data.fail(f"is not valid brush RLE: {exc}", "Re-export the brush mask.")
            geom = Mask((flat.reshape(h, w, 4)[:, :, 3] != 0).astype(np.uint8))
        out = []
        for label in labels:
            out.append(Annotation(ref.key, label, _TYPES[kind_name], geom, reader=reader, score=score))
        return out


def read(bundle: Bundle, *, images: ImageIndex, file: str | None = None, data_key: str = "image",
         classes: list[str] | None = None, skip_unsupported: bool = False) -> AnnotationSet:
    name = bundle.one(".json", "Label Studio", file)
    root = load_json(bundle.read(name), name)
    tasks = [root] if isinstance(root.value, dict) else root.items()
    found = Collector()
    for task in tasks:
        image = task.key("data").key(data_key).text()
        width, height = _size(task)
        ref = found.image(images.resolve(image, width, height, task.where), task.where)
        annotations = task.opt("annotations")
        for entry in annotations.items() if annotations is not None else []:
            cancelled = entry.opt("was_cancelled")
            if cancelled is not None and cancelled.value is True:
                continue
            results = entry.opt("result")
            for result in results.items() if results is not None else []:
                for a in _results(result, ref, _reader(entry), skip_unsupported):
                    found.add(a)
        predictions = task.opt("predictions")
        for entry in predictions.items() if predictions is not None else []:
            version = entry.opt("model_version")
            reader = MODEL + str(version.value) if version is not None and str(version.value) else "model"
            results = entry.opt("result")
            for result in results.items() if results is not None else []:
                for a in _results(result, ref, reader, skip_unsupported):
                    found.add(a)
    return found.build(classes)


def _result(a: Annotation, ref: ImageRef, rid: str) -> dict[str, Any]:
    w, h = ref.width, ref.height
    geom = a.geometry
    common: dict[str, Any] = {"id": rid, "to_name": "image", "original_width": w, "original_height": h,
                              "image_rotation": 0}
    out: dict[str, Any]
    if geom is None:
        out = {**common, "type": "choices", "from_name": "choice", "value": {"choices": [a.label]}}
    elif isinstance(geom, Box):
        out = {**common, "type": "rectanglelabels", "from_name": "label",
               "value": {"x": geom.x0 / w * 100, "y": geom.y0 / h * 100, "width": geom.width / w * 100,
                         "height": geom.height / h * 100, "rotation": 0, "rectanglelabels": [a.label]}}
    elif isinstance(geom, Polygon):
        out = {**common, "type": "polygonlabels", "from_name": "polygon",
               "value": {"points": [[x / w * 100, y / h * 100] for x, y in geom.points], "closed": True,
                         "polygonlabels": [a.label]}}
    else:
        alpha = geom.binary.astype(np.uint8) * 255
        out = {**common, "type": "brushlabels", "from_name": "brush",
               "value": {"format": "rle", "rle": rle.ls_encode(np.repeat(alpha.ravel(), 4)),
                         "brushlabels": [a.label]}}
    if a.score is not None:
        out["score"] = a.score
    return out


def write(aset: AnnotationSet, *, data_key: str = "image") -> dict[str, bytes]:
    """One ``tasks.json``: a task per image; an annotation per reader, a prediction per model version."""
    check_writable(aset, "Label Studio", {Kind.CLASS, Kind.BOX, Kind.POLYGON, Kind.MASK})
    refs = {r.key: r for r in aset.images}
    tasks = []
    for t, (key, group) in enumerate(by_image(aset).items(), start=1):
        sources: dict[str | None, list[Annotation]] = {}
        for a in group:
            sources.setdefault(a.reader, []).append(a)
        annotations: list[dict[str, Any]] = []
        predictions: list[dict[str, Any]] = []
        for n, (reader, anns) in enumerate(sources.items(), start=1):
            results = [_result(a, refs[key], f"t{t}r{n}n{i}") for i, a in enumerate(anns, start=1)]
            if reader is not None and reader.startswith(MODEL):
                predictions.append({"model_version": reader[len(MODEL):], "result": results})
            else:
                entry: dict[str, Any] = {"id": len(annotations) + 1, "result": results, "was_cancelled": False}
                if reader is not None:
                    entry["completed_by"] = {"email": reader}
                annotations.append(entry)
        tasks.append({"id": t, "data": {data_key: export_name(refs[key])}, "annotations": annotations,
                      "predictions": predictions})
    return {FILE: dump_json(tasks, FILE)}


def sniff(node: Node) -> bool:
    value = node.value
    if isinstance(value, dict):
        return "data" in value and ("annotations" in value or "predictions" in value)
    return isinstance(value, list) and bool(value) and all(isinstance(t, dict) and "data" in t for t in value[:20])
