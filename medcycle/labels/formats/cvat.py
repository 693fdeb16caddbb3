"""CVAT XML 1.1 "for images": ``<image>`` elements holding ``<box>``, ``<polygon>``, ``<mask>`` and ``<tag>``.

* Box ``xtl ytl xbr ybr`` and polygon ``points="x,y;x,y;..."`` are in the model's pixel coordinates.
  CVAT itself writes two decimals; this exporter writes the exact value.
* ``<mask rle="..." left top width height>``: runs over the mask's bounding box, row-major, starting
  with background (:func:`.rle.cvat_decode`); an empty mask has no bounding box and is refused on export.
* ``<tag label>`` is an image-level class (``Kind.CLASS``).
* ``<attribute name>value</attribute>`` ↔ ``attributes`` as strings (``true``/``false`` ↔ booleans);
  ``occluded="1"`` ↔ ``attributes["occluded"] = True``.
* The class list is ``meta/*/labels/label/name`` (task, job or project meta), in order.
Not kept: readers, scores, ``z_order``, groups. Refused on import unless ``skip_unsupported=True``:
video tracks, polylines, points, ellipses, cuboids, skeletons, rotated boxes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from medcycle.labels.formats import rle
from medcycle.labels.formats.bundle import Bundle
from medcycle.labels.formats.images import Collector, ImageIndex, by_image, canvas, check_writable, export_name
from medcycle.labels.formats.parsing import Where, XNode, dump_xml, fmt_number, load_xml
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Mask, Polygon

FILE = "annotations.xml"
_SHAPES = {"box", "polygon", "mask", "tag"}
_OTHER = {"polyline", "points", "ellipse", "cuboid", "skeleton"}


def _attributes(shape: XNode) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in shape.children("attribute"):
        value = attr.el.text or ""
        out[attr.attr("name")] = {"true": True, "false": False}.get(value, value)
    if shape.opt_attr("occluded") == "1":
        out["occluded"] = True
    return out


def _points(shape: XNode) -> tuple[tuple[float, float], ...]:
    raw = shape.attr("points")
    out = []
    for pair in raw.split(";"):
        xy = pair.split(",")
        try:
            x, y = float(xy[0]), float(xy[1])
        except (ValueError, IndexError):
            shape.fail(f"attribute points has {pair!r}, not an x,y pair", "Write points as x1,y1;x2,y2;...")
        if len(xy) != 2:
            shape.fail(f"attribute points has {pair!r}, not an x,y pair", "Write points as x1,y1;x2,y2;...")
        out.append((x, y))
    return tuple(out)


def _mask(shape: XNode, ref: ImageRef) -> Mask:
    left, top = shape.attr_int("left"), shape.attr_int("top")
    width, height = shape.attr_int("width"), shape.attr_int("height")
    if left < 0 or top < 0 or width <= 0 or height <= 0 or left + width > ref.width or top + height > ref.height:
        shape.fail(f"box left={left} top={top} width={width} height={height} is outside the "
                   f"{ref.width}x{ref.height} image", "The mask's bounding box must lie inside the image.")
    try:
        counts = [int(v) for v in shape.attr("rle").replace(" ", "").split(",")]
        crop = rle.cvat_decode(counts, height, width)
    except ValueError as exc:
        shape.fail(f"attribute rle is not valid: {exc}", "rle lists run lengths covering width x height pixels.")
    array = canvas(ref, shape.where)
    array[top:top + height, left:left + width] = crop
    return Mask(array)


def _shape(shape: XNode, ref: ImageRef, skip: bool) -> Annotation | None:
    tag = shape.tag
    if tag not in _SHAPES:
        if skip:
            return None
        shape.fail(f"is a {tag}, which medcycle does not hold", "Pass skip_unsupported=True to leave these out.")
    label = shape.attr("label")
    attributes = _attributes(shape)
    geom: Box | Polygon | Mask | None
    with shape.where.guard():
        if tag == "tag":
            return Annotation(ref.key, label, Kind.CLASS, None, attributes=attributes)
        if tag == "box":
            if float(shape.opt_attr("rotation") or 0) != 0:
                if skip:
                    return None
                shape.fail("is rotated, which medcycle boxes are not", "Pass skip_unsupported=True to leave it out.")
            geom = Box(shape.attr_number("xtl"), shape.attr_number("ytl"), shape.attr_number("xbr"),
                       shape.attr_number("ybr"))
            return Annotation(ref.key, label, Kind.BOX, geom, attributes=attributes)
        if tag == "polygon":
            return Annotation(ref.key, label, Kind.POLYGON, Polygon(_points(shape)), attributes=attributes)
        return Annotation(ref.key, label, Kind.MASK, _mask(shape, ref), attributes=attributes)


def read(bundle: Bundle, *, images: ImageIndex, file: str | None = None,
         skip_unsupported: bool = False) -> AnnotationSet:
    name = bundle.one(".xml", "CVAT", file)
    root = load_xml(bundle.read(name), name)
    if root.tag != "annotations":
        root.fail("is not a CVAT <annotations> document", "Export with the format 'CVAT for images 1.1'.")
    version = root.opt_child("version")
    if version is not None and version.opt_text() != "1.1":
        version.fail(f"is {version.opt_text()!r}; this reader reads CVAT XML 1.1", "Export as CVAT for images 1.1.")
    classes = []
    meta = root.opt_child("meta")
    for owner in meta.children() if meta is not None else []:
        labels = owner.opt_child("labels")
        for label in labels.children("label") if labels is not None else []:
            classes.append(label.child("name").text())
    tracks = root.children("track")
    if tracks and not skip_unsupported:
        tracks[0].fail("is a video track; this reader reads image annotations",
                       "Export as 'CVAT for images 1.1', or pass skip_unsupported=True.")
    found = Collector()
    for image in root.children("image"):
        ref = found.image(images.resolve(image.attr("name"), image.attr_int("width"), image.attr_int("height"),
                                         image.where), image.where)
        for shape in image.children():
            if shape.tag not in _SHAPES | _OTHER:
                continue
            annotation = _shape(shape, ref, skip_unsupported)
            if annotation is not None:
                found.add(annotation)
    return found.build(classes)


def _attrs_out(el: ET.Element, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        if key == "occluded" and el.tag != "tag":
            continue  # a shape's XML attribute; a tag has none, so it goes in as an <attribute>
        sub = ET.SubElement(el, "attribute", name=str(key))
        sub.text = ("true" if value else "false") if isinstance(value, bool) else str(value)


def write(aset: AnnotationSet) -> dict[str, bytes]:
    """One ``annotations.xml`` (CVAT for images 1.1)."""
    check_writable(aset, "CVAT XML", {Kind.CLASS, Kind.BOX, Kind.POLYGON, Kind.MASK})
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = "medcycle export"
    ET.SubElement(task, "size").text = str(len(aset.images))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for c in aset.classes:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = c
        ET.SubElement(label, "type").text = "any"
        ET.SubElement(label, "attributes")
    refs = {r.key: r for r in aset.images}
    for i, (key, group) in enumerate(by_image(aset).items()):
        ref = refs[key]
        image = ET.SubElement(root, "image", id=str(i), name=export_name(ref), width=str(ref.width),
                              height=str(ref.height))
        for n, a in enumerate(group):
            common = {"label": a.label, "source": "manual",
                      "occluded": "1" if a.attributes.get("occluded") else "0"}
            geom = a.geometry
            if geom is None:
                el = ET.SubElement(image, "tag", label=a.label, source="manual")
            elif isinstance(geom, Box):
                corners = {"xtl": geom.x0, "ytl": geom.y0, "xbr": geom.x1, "ybr": geom.y1}
                el = ET.SubElement(image, "box", {**common, **{k: fmt_number(v) for k, v in corners.items()},
                                                  "z_order": "0"})
            elif isinstance(geom, Polygon):
                points = ";".join(f"{fmt_number(x)},{fmt_number(y)}" for x, y in geom.points)
                el = ET.SubElement(image, "polygon", {**common, "points": points, "z_order": "0"})
            else:
                binary = geom.binary
                rows, cols = np.nonzero(binary.any(axis=1))[0], np.nonzero(binary.any(axis=0))[0]
                if not rows.size:
                    raise Where(FILE).error(f"cannot hold the empty mask of annotation {n} on {key!r}",
                                            "CVAT masks need at least one pixel; leave empty masks out.")
                top, left = int(rows[0]), int(cols[0])
                crop = binary[top:int(rows[-1]) + 1, left:int(cols[-1]) + 1]
                el = ET.SubElement(image, "mask", {**common, "rle": ", ".join(str(c) for c in rle.cvat_encode(crop)),
                                                   "left": str(left), "top": str(top), "width": str(crop.shape[1]),
                                                   "height": str(crop.shape[0]), "z_order": "0"})
            _attrs_out(el, a.attributes)
    return {FILE: dump_xml(root)}


def sniff(root: XNode) -> bool:
    return root.tag == "annotations" and (root.opt_child("version") is not None or bool(root.children("image")))
