"""YOLO txt (Darknet / Ultralytics): one ``labels/<image>.txt`` per image, coordinates as fractions.

Each line is ``class cx cy w h`` (a box: centre and size over the image's width and height),
``class cx cy w h score`` (a detection), or ``class x1 y1 x2 y2 ...`` (a polygon, Ultralytics segment
format). ``class`` indexes the class list: ``data.yaml`` (``names:`` list or ``{index: name}``),
``classes.txt`` or ``obj.names`` (one per line), or ``classes=`` given to :func:`read`.

YOLO stores no image size, so import needs the images (``images=``) or the image files in the export
(``images/<name>.<ext>`` beside ``labels/``; only their headers are read). Export writes numbers with
12 significant digits, so coordinates come back within 1e-6 px for images up to 100,000 px wide.
Not kept: readers, attributes, scores of polygons.
"""

from __future__ import annotations

import io
import math
from pathlib import PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from medcycle.labels.formats.bundle import Bundle, safe_relative, unique
from medcycle.labels.formats.images import (
    IMAGE_SUFFIXES,
    Collector,
    ImageIndex,
    by_image,
    check_writable,
    export_name,
    stem,
)
from medcycle.labels.formats.parsing import Where
from medcycle.labels.formats.voc import read_class_list
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Polygon

CLASSES, DATA_YAML = "classes.txt", "data.yaml"
_NOT_LABELS = {"classes.txt", "train.txt", "val.txt", "valid.txt", "test.txt", "readme.txt"}
_TOL = 1e-6


def _yaml_names(bundle: Bundle) -> list[str] | None:
    for name in [*bundle.named(DATA_YAML), *bundle.named("dataset.yaml")]:
        import yaml  # type: ignore[import-untyped,unused-ignore]

        try:
            doc = yaml.safe_load(bundle.text(name))
        except yaml.YAMLError as exc:
            Where(name).fail(f"is not valid YAML: {exc}", "Fix the YAML syntax.")
        names = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(names, list) and all(isinstance(n, str | int) for n in names):
            return [str(n) for n in names]
        if isinstance(names, dict) and all(isinstance(k, int) for k in names):
            if sorted(names) != list(range(len(names))):
                Where(name, "names").fail("should number the classes 0, 1, 2, ... without gaps",
                                          "List every class index from 0.")
            return [str(names[k]) for k in sorted(names)]
        Where(name, "names").fail("is missing or not a list of class names", "Write names: [class0, class1, ...].")
    return None


def _label_files(bundle: Bundle) -> list[str]:
    txt = [n for n in bundle.with_suffix(".txt") if PurePosixPath(n).name.lower() not in _NOT_LABELS]
    if not txt and len(bundle.names) == 1 and "." not in PurePosixPath(bundle.names[0]).name:
        txt = list(bundle.names)  # bytes given without a name
    under = [n for n in txt if "labels" in PurePosixPath(n).parts[:-1]]
    return under or txt


def _image_name(label_file: str) -> str:
    """``labels/train/a.txt`` → ``train/a`` (the image's name without suffix)."""
    parts = PurePosixPath(label_file).parts
    if "labels" in parts[:-1]:
        parts = parts[len(parts) - 1 - parts[::-1].index("labels"):]
        parts = parts[1:] if parts[0] == "labels" else parts
    return str(PurePosixPath(*parts).with_suffix(""))


def _image_files(bundle: Bundle) -> dict[str, str]:
    """Image files in the bundle by their name without suffix, relative to an ``images/`` folder."""
    out = {}
    for name in bundle.with_suffix(*IMAGE_SUFFIXES):
        parts = PurePosixPath(name).parts
        if "images" in parts[:-1]:
            parts = parts[len(parts) - parts[::-1].index("images"):]
        out[stem(str(PurePosixPath(*parts)))] = name
    return out


def _size(bundle: Bundle, name: str) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(bundle.read(name))) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        Where(name).fail(f"is not a readable image: {exc}", "Include the image files, or pass images=.")


def _parse_line(line: str, where: Where, classes: list[str], ref: ImageRef) -> Annotation:
    parts = line.split()
    values = []
    for p in parts:
        try:
            value = float(p)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            where.fail(f"{p!r} is not a finite number", "Each line is numbers: class cx cy w h (normalised to 0..1).")
        values.append(value)
    n = len(values)
    if not (n in (5, 6) or (n >= 7 and n % 2 == 1)):
        where.fail(f"expected 5 numbers (class cx cy w h), 6 (with a score) or a class and at least 3 x y pairs, "
                   f"got {n}", "Fix or remove this line.")
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < len(classes):
        where.fail(f"class {parts[0]} is not an index into the {len(classes)} classes",
                   "Class indices count from 0 in the order of classes.txt / data.yaml names.")
    coords = values[1:5] if n <= 6 else values[1:]
    for v in coords:
        if not -_TOL <= v <= 1 + _TOL:
            where.fail(f"coordinate {v} is outside 0..1", "YOLO coordinates are fractions of the image size.")
    label, w, h = classes[int(cls)], ref.width, ref.height
    with where.guard():
        if n <= 6:
            cx, cy, bw, bh = coords
            box = Box((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            return Annotation(ref.key, label, Kind.BOX, box, score=values[5] if n == 6 else None)
        points = tuple((x * w, y * h) for x, y in zip(coords[0::2], coords[1::2], strict=True))
        return Annotation(ref.key, label, Kind.POLYGON, Polygon(points))


def read(bundle: Bundle, *, images: ImageIndex, classes: list[str] | None = None) -> AnnotationSet:
    names = classes or _yaml_names(bundle) or read_class_list(bundle, CLASSES, "obj.names")
    if not names:
        Where(bundle.label).fail("has no class list (data.yaml, classes.txt or obj.names)",
                                 "Include the class list, or pass classes=[...] in index order.")
    files = _label_files(bundle)
    if not files:
        Where(bundle.label).fail("holds no YOLO label (.txt) files", "Point at the folder holding labels/*.txt.")
    pictures = _image_files(bundle)
    found = Collector()
    for file in files:
        image = _image_name(file)
        where = Where(file)
        if images.given:
            ref = images.resolve(image, None, None, where)
        elif image in pictures:
            width, height = _size(bundle, pictures[image])
            ref = images.resolve(image + PurePosixPath(pictures[image]).suffix, width, height, where)
        else:
            where.fail("has no image size: YOLO does not store it",
                       "Include the images (images/<name>.png beside labels/), or pass images=.")
        found.image(ref, where)
        for no, line in enumerate(bundle.text(file).splitlines(), start=1):
            if line.strip():
                found.add(_parse_line(line, where.at_line(no), names, ref))
    return found.build(names)


def _num(v: float) -> str:
    return format(v, ".12g")


def write(aset: AnnotationSet) -> dict[str, bytes]:
    """``labels/<image>.txt`` per image, ``classes.txt`` and ``data.yaml``."""
    import yaml  # type: ignore[import-untyped,unused-ignore]

    check_writable(aset, "YOLO", {Kind.BOX, Kind.POLYGON})
    refs = {r.key: r for r in aset.images}
    names = {k: safe_relative(f"labels/{stem(export_name(r))}.txt", f"image {k!r}") for k, r in refs.items()}
    unique(names.values(), "YOLO label file")
    index = {c: i for i, c in enumerate(aset.classes)}
    files: dict[str, bytes] = {}
    for key, group in by_image(aset).items():
        w, h = refs[key].width, refs[key].height
        lines = []
        for a in group:
            geom = a.geometry
            if isinstance(geom, Box):
                fields: list[Any] = [(geom.x0 + geom.x1) / 2 / w, (geom.y0 + geom.y1) / 2 / h,
                                     geom.width / w, geom.height / h]
                if a.score is not None:
                    fields.append(a.score)
            else:
                assert isinstance(geom, Polygon)
                fields = [v for x, y in geom.points for v in (x / w, y / h)]
            lines.append(" ".join([str(index[a.label]), *(_num(v) for v in fields)]))
        files[names[key]] = "".join(f"{line}\n" for line in lines).encode("utf-8")
    files[CLASSES] = "".join(f"{c}\n" for c in aset.classes).encode("utf-8")
    data = {"nc": len(aset.classes), "names": list(aset.classes)}
    files[DATA_YAML] = yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8")
    return files


def sniff(bundle: Bundle) -> bool:
    """Any label file whose first non-empty line is numbers."""
    for file in _label_files(bundle)[:20]:
        for line in bundle.text(file).splitlines():
            if line.strip():
                try:
                    values = [float(p) for p in line.split()]
                except ValueError:
                    return False
                return len(values) >= 5
    return False
