"""Pascal VOC XML as LabelImg writes it: one ``<annotation>`` file per image, boxes only.

Coordinates follow the VOC devkit: whole pixels, 1-based and inclusive, so ``xmin = 1`` is the first
column and ``xmax`` is the last column the box covers. The model's box ``[x0, x1)`` (0-based, end
exclusive) therefore maps as ``xmin = x0 + 1``, ``xmax = x1`` (and back: ``x0 = xmin - 1``, ``x1 = xmax``);
a box covering only pixel (0, 0) is ``1 1 1 1`` in VOC and ``Box(0, 0, 1, 1)`` here. Export rounds to whole
pixels (VOC is integer); import accepts fractional values as written.

Kept: ``difficult``, ``truncated``, ``occluded`` (as booleans in ``attributes`` when set) and ``pose``
(when not "Unspecified"). A ``classes.txt`` (LabelImg's class list) is written beside the XML files and
read back for the class order. Not kept: scores, readers, other attributes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import PurePosixPath
from typing import Any

from medcycle.labels.formats.bundle import Bundle, safe_relative, unique
from medcycle.labels.formats.images import Collector, ImageIndex, by_image, check_writable, export_name, stem
from medcycle.labels.formats.parsing import Where, XNode, dump_xml, load_xml
from medcycle.labels.model import Annotation, AnnotationSet, Box, Kind

CLASSES = "classes.txt"
_FLAGS = ("difficult", "truncated", "occluded")


def read_class_list(bundle: Bundle, *names: str) -> list[str] | None:
    """The first class list file found (one name per line), or None."""
    for name in names:
        for path in bundle.named(name):
            return [line.strip() for line in bundle.text(path).splitlines() if line.strip()]
    return None


def _object(obj: XNode, ref_key: str) -> Annotation:
    label = obj.child("name").text()
    box = obj.child("bndbox")
    xmin, ymin, xmax, ymax = (box.child(t).number() for t in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin - 1 or ymax < ymin - 1:
        box.fail(f"has xmax/ymax before xmin/ymin: ({xmin}, {ymin}, {xmax}, {ymax})",
                 "VOC boxes are 1-based and inclusive: xmin <= xmax, ymin <= ymax.")
    attributes: dict[str, Any] = {}
    for flag in _FLAGS:
        node = obj.opt_child(flag)
        if node is not None and node.opt_text() not in (None, "0", "1"):
            node.fail(f"should be 0 or 1, got {node.opt_text()!r}")
        if node is not None and node.opt_text() == "1":
            attributes[flag] = True
    pose = obj.opt_child("pose")
    if pose is not None and pose.opt_text() not in (None, "Unspecified"):
        attributes["pose"] = pose.opt_text()
    with obj.where.guard():
        return Annotation(ref_key, label, Kind.BOX, Box(xmin - 1, ymin - 1, xmax, ymax), attributes=attributes)


def read(bundle: Bundle, *, images: ImageIndex, classes: list[str] | None = None) -> AnnotationSet:
    found = Collector()
    files = bundle.with_suffix(".xml")
    if not files:
        Where(bundle.label).fail("holds no .xml files", "Point at the folder of LabelImg / VOC annotation files.")
    for name in files:
        root = load_xml(bundle.read(name), name)
        if root.tag != "annotation":
            root.fail("is not a VOC <annotation> document", "Each file must have <annotation> as its root.")
        filename = root.child("filename").text()
        path = root.opt_child("path")
        rel = path.opt_text() if path is not None else None
        if rel and not PurePosixPath(rel).is_absolute() and ":" not in rel and PurePosixPath(rel).name == filename:
            filename = rel  # our own exports keep the image's folder in <path>
        size = root.opt_child("size")
        width = int(size.child("width").number()) if size is not None else None
        height = int(size.child("height").number()) if size is not None else None
        ref = found.image(images.resolve(filename, width, height, root.where), root.where)
        for obj in root.children("object"):
            found.add(_object(obj, ref.key))
    listed = classes if classes is not None else read_class_list(bundle, CLASSES, "predefined_classes.txt")
    return found.build(listed)


def _text(parent: ET.Element, tag: str, value: object) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = str(value)
    return el


def write(aset: AnnotationSet) -> dict[str, bytes]:
    """One XML per image (``<image name without suffix>.xml``) and ``classes.txt``; boxes rounded to pixels."""
    check_writable(aset, "Pascal VOC", {Kind.BOX})
    refs = {r.key: r for r in aset.images}
    names = {key: safe_relative(stem(export_name(refs[key])) + ".xml", f"image {key!r}") for key in refs}
    unique(names.values(), "VOC file")
    files: dict[str, bytes] = {}
    for key, group in by_image(aset).items():
        ref = refs[key]
        image_name = export_name(ref)
        root = ET.Element("annotation")
        _text(root, "folder", str(PurePosixPath(image_name).parent) if "/" in image_name else "")
        _text(root, "filename", PurePosixPath(image_name).name)
        _text(root, "path", image_name)
        _text(ET.SubElement(root, "source"), "database", "Unknown")
        size = ET.SubElement(root, "size")
        _text(size, "width", ref.width)
        _text(size, "height", ref.height)
        _text(size, "depth", 1)
        _text(root, "segmented", 0)
        for a in group:
            assert isinstance(a.geometry, Box)
            obj = ET.SubElement(root, "object")
            _text(obj, "name", a.label)
            _text(obj, "pose", a.attributes.get("pose", "Unspecified"))
            for flag in ("truncated", "difficult"):
                _text(obj, flag, 1 if a.attributes.get(flag) else 0)
            if a.attributes.get("occluded"):
                _text(obj, "occluded", 1)
            box = ET.SubElement(obj, "bndbox")
            b = a.geometry
            for tag, value in (("xmin", round(b.x0) + 1), ("ymin", round(b.y0) + 1),
                               ("xmax", round(b.x1)), ("ymax", round(b.y1))):
                _text(box, tag, value)
        files[names[key]] = dump_xml(root)
    files[CLASSES] = "".join(f"{c}\n" for c in aset.classes).encode("utf-8")
    return files


def sniff(root: XNode) -> bool:
    return root.tag == "annotation"
