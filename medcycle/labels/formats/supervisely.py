"""Supervisely JSON: ``meta.json`` (classes, tags) and ``<dataset>/ann/<image>.json`` per image.

* ``rectangle``: ``points.exterior = [[left, top], [right, bottom]]`` in whole pixels with right and
  bottom *inclusive* (as the Supervisely SDK counts width = right - left + 1), so the model's
  ``Box(x0, y0, x1, y1)`` is ``[[x0, y0], [x1 - 1, y1 - 1]]``; export rounds to whole pixels.
* ``polygon``: ``points.exterior`` as written (holes, ``interior``, are refused unless skipped).
* ``bitmap``: ``{"data": base64(zlib(PNG)), "origin": [x, y]}`` — the mask cropped to its bounding box;
  an empty mask has none and is refused on export.
* Image tags ↔ image-level classes (``Kind.CLASS``); ``labelerLogin`` ↔ ``Annotation.reader``; object
  tags ↔ ``attributes`` (strings and numbers as tag values, ``True`` as a tag without value).
* Every class is listed in ``meta.json`` classes, in order (shape ``any`` when it has several), so
  the class list comes back in order.
Not kept: scores, ``False``/list/dict attributes, object descriptions.
"""

from __future__ import annotations

import base64
import binascii
import io
import zlib
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from medcycle.labels.formats.bundle import Bundle, safe_relative, unique
from medcycle.labels.formats.images import Collector, ImageIndex, by_image, canvas, check_writable, export_name
from medcycle.labels.formats.parsing import Node, Where, dump_json, load_json
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Mask, Polygon

META = "meta.json"
_SHAPE = {Kind.BOX: "rectangle", Kind.POLYGON: "polygon", Kind.MASK: "bitmap"}
_PALETTE = ["#E6194B", "#3CB44B", "#FFE119", "#4363D8", "#F58231", "#911EB4", "#46F0F0", "#F032E6"]


def _bitmap(node: Node, ref: ImageRef) -> Mask:
    origin = node.key("origin").numbers(2)
    x, y = int(origin[0]), int(origin[1])
    data = node.key("data")
    array = canvas(ref, node.where)
    limit = array.size * 8 + (1 << 20)
    try:
        packed = base64.b64decode(data.text(), validate=True)
        inflater = zlib.decompressobj()
        png = inflater.decompress(packed, limit)
        if inflater.unconsumed_tail:
            data.fail("inflates to more than the image could hold", "Re-export the bitmap.")
        with Image.open(io.BytesIO(png)) as im:
            w, h = im.size
            if x < 0 or y < 0 or x + w > ref.width or y + h > ref.height:
                data.fail(f"is a {w}x{h} bitmap at origin ({x}, {y}), outside the {ref.width}x{ref.height} image",
                          "The bitmap must lie inside the image.")
            if im.mode in ("RGBA", "LA", "PA"):
                crop = np.asarray(im.convert("RGBA"))[:, :, 3] != 0
            elif im.mode == "P":
                crop = np.asarray(im) != 0
            else:
                arr = np.asarray(im.convert("L") if im.mode not in ("1", "L", "I", "I;16") else im)
                crop = arr != 0
    except (binascii.Error, ValueError, zlib.error) as exc:
        data.fail(f"is not base64 of zlib-compressed PNG: {exc}", "Re-export the bitmap.")
    except (UnidentifiedImageError, OSError) as exc:
        data.fail(f"does not hold a readable PNG: {exc}", "Re-export the bitmap.")
    array[y:y + h, x:x + w] = crop
    return Mask(array)


def _exterior(points: Node) -> list[tuple[float, float]]:
    out = []
    for p in points.key("exterior").items():
        xy = p.numbers(2)
        out.append((xy[0], xy[1]))
    return out


def _object(obj: Node, ref: ImageRef, skip: bool) -> Annotation | None:
    label = obj.key("classTitle").text()
    kind = obj.key("geometryType").text()
    reader = obj.opt_text("labelerLogin")
    attributes: dict[str, Any] = {}
    tags = obj.opt("tags")
    for tag in tags.items() if tags is not None else []:
        value = tag.opt("value")
        attributes[tag.key("name").text()] = True if value is None else value.value
    with obj.where.guard():
        if kind == "rectangle":
            points = obj.key("points")
            ext = _exterior(points)
            if len(ext) != 2:
                points.where.at("exterior").fail(f"has {len(ext)} points; a rectangle has 2",
                                                 "Give [[left, top], [right, bottom]].")
            (x0, y0), (x1, y1) = ext
            geom: Box | Polygon | Mask = Box(x0, y0, x1 + 1, y1 + 1)
            kind_ = Kind.BOX
        elif kind == "polygon":
            points = obj.key("points")
            holes = points.opt("interior")
            if holes is not None and holes.items():
                if skip:
                    return None
                holes.fail("has holes, which medcycle polygons do not", "Pass skip_unsupported=True to leave it out.")
            geom, kind_ = Polygon(tuple(_exterior(points))), Kind.POLYGON
        elif kind == "bitmap":
            geom, kind_ = _bitmap(obj.key("bitmap"), ref), Kind.MASK
        else:
            if skip:
                return None
            obj.where.at("geometryType").fail(f"is {kind!r}, which medcycle does not hold",
                                              "Pass skip_unsupported=True to leave these out.")
        return Annotation(ref.key, label, kind_, geom, reader=reader, attributes=attributes)


def _ann_files(bundle: Bundle, meta: str | None) -> list[str]:
    root = str(PurePosixPath(meta).parent) if meta else ""
    inside = [n for n in bundle.with_suffix(".json")
              if "ann" in PurePosixPath(n).parts[:-1] and (not root or root == "." or n.startswith(root + "/"))]
    if inside or meta:
        return inside
    return [n for n in bundle.with_suffix(".json")]


def read(bundle: Bundle, *, images: ImageIndex, skip_unsupported: bool = False) -> AnnotationSet:
    metas = bundle.named(META)
    meta = metas[0] if metas else None
    classes: list[str] = []
    if meta is not None:
        doc = load_json(bundle.read(meta), meta)
        for cls in doc.key("classes").items():
            classes.append(cls.key("title").text())
    files = _ann_files(bundle, meta)
    if not files:
        Where(bundle.label).fail("holds no annotation files (<dataset>/ann/<image>.json)",
                                 "Point at the Supervisely project folder (with meta.json).")
    found = Collector()
    for file in files:
        ann = load_json(bundle.read(file), file)
        size = ann.key("size")
        parts = PurePosixPath(file).parts
        after = parts[len(parts) - parts[::-1].index("ann"):] if "ann" in parts[:-1] else parts[-1:]
        name = str(PurePosixPath(*after))[: -len(".json")]  # the image's name: what follows ann/
        ref = found.image(images.resolve(name, size.key("width").integer(), size.key("height").integer(),
                                         ann.where), ann.where)
        tags = ann.opt("tags")
        for tag in tags.items() if tags is not None else []:
            with tag.where.guard():
                found.add(Annotation(ref.key, tag.key("name").text(), Kind.CLASS, reader=tag.opt_text("labelerLogin")))
        objects = ann.opt("objects")
        for obj in objects.items() if objects is not None else []:
            annotation = _object(obj, ref, skip_unsupported)
            if annotation is not None:
                found.add(annotation)
    return found.build(classes)


def _encode_bitmap(mask: Mask, where: str) -> dict[str, Any]:
    binary = mask.binary
    rows, cols = np.nonzero(binary.any(axis=1))[0], np.nonzero(binary.any(axis=0))[0]
    if not rows.size:
        raise Where(where).error("cannot hold an empty mask (a Supervisely bitmap needs a pixel)",
                                 "Leave empty masks out of a Supervisely export.")
    crop = binary[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    buffer = io.BytesIO()
    Image.fromarray(crop.astype(np.uint8)).save(buffer, format="PNG")
    data = base64.b64encode(zlib.compress(buffer.getvalue())).decode("ascii")
    return {"data": data, "origin": [int(cols[0]), int(rows[0])]}


def _tag_type(values: list[Any]) -> str:
    if all(v is True for v in values):
        return "none"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "any_number"
    return "any_string"


def write(aset: AnnotationSet, *, dataset: str = "ds0") -> dict[str, bytes]:
    """``meta.json`` and ``<dataset>/ann/<image>.json`` for each image."""
    check_writable(aset, "Supervisely", {Kind.CLASS, Kind.BOX, Kind.POLYGON, Kind.MASK})
    refs = {r.key: r for r in aset.images}
    names = {k: safe_relative(f"{dataset}/ann/{export_name(r)}.json", f"image {k!r}") for k, r in refs.items()}
    unique(names.values(), "Supervisely annotation file")
    shapes: dict[str, set[str]] = {c: set() for c in aset.classes}
    attr_values: dict[str, list[Any]] = {}
    image_tags: list[str] = []
    for a in aset.annotations:
        if a.kind == Kind.CLASS:
            image_tags.append(a.label)
            continue
        shapes[a.label].add(_SHAPE[a.kind])
        for k, v in a.attributes.items():
            if v is True or (isinstance(v, str | int | float) and not isinstance(v, bool)):
                attr_values.setdefault(k, []).append(v)
    tag_types = {k: _tag_type(v) for k, v in attr_values.items()}
    files: dict[str, bytes] = {}
    for key, group in by_image(aset).items():
        ref, objects, tags = refs[key], [], []
        for a in group:
            login = {"labelerLogin": a.reader} if a.reader else {}
            if a.kind == Kind.CLASS:
                tags.append({"name": a.label, "value": None, **login})
                continue
            obj: dict[str, Any] = {"classTitle": a.label, "geometryType": _SHAPE[a.kind], "description": "",
                                   **login}
            obj["tags"] = [{"name": k, "value": None if v is True else (str(v) if tag_types[k] == "any_string" else v)}
                           for k, v in a.attributes.items() if k in tag_types and
                           (v is True or (isinstance(v, str | int | float) and not isinstance(v, bool)))]
            geom = a.geometry
            if isinstance(geom, Box):
                right, bottom = round(geom.x1) - 1, round(geom.y1) - 1
                obj["points"] = {"exterior": [[round(geom.x0), round(geom.y0)], [right, bottom]], "interior": []}
            elif isinstance(geom, Polygon):
                obj["points"] = {"exterior": [[x, y] for x, y in geom.points], "interior": []}
            else:
                assert isinstance(geom, Mask)
                obj["bitmap"] = _encode_bitmap(geom, names[key])
            objects.append(obj)
        doc = {"description": "", "size": {"height": ref.height, "width": ref.width}, "tags": tags,
               "objects": objects}
        files[names[key]] = dump_json(doc, names[key])
    used_tags = list(dict.fromkeys(image_tags))
    meta = {
        "classes": [{"title": c, "shape": next(iter(s)) if len(s) == 1 else "any",
                     "color": _PALETTE[i % len(_PALETTE)], "geometry_config": {}} for i, (c, s) in
                    enumerate(shapes.items())],
        "tags": ([{"name": t, "value_type": "none", "color": _PALETTE[i % len(_PALETTE)]}
                  for i, t in enumerate(used_tags)]
                 + [{"name": k, "value_type": t, "color": "#888888"} for k, t in tag_types.items()
                    if k not in used_tags]),
        "projectType": "images",
    }
    files[META] = dump_json(meta, META)
    return files


def sniff(node: Node, name: str) -> bool:
    value = node.value
    if PurePosixPath(name).name == META:
        return isinstance(value, dict) and "classes" in value
    return isinstance(value, dict) and "objects" in value and "size" in value
