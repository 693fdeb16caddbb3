"""COCO JSON: ``images``, ``categories`` and ``annotations`` (boxes, polygons, RLE masks, detections).

* ``bbox`` is ``[x, y, width, height]`` in the model's own pixel coordinates (top-left corner of the
  top-left pixel at 0, 0), so boxes and polygons map 1:1.
* ``segmentation`` is a list of polygons (one annotation each on import) or an RLE dict
  ``{"size": [h, w], "counts": ...}`` with counts compressed (string) or not (list) — see :mod:`.rle`.
* ``iscrowd`` 1 ↔ ``attributes["iscrowd"] = True``; ``score`` (detections) ↔ ``Annotation.score``;
  a free ``attributes`` object (as CVAT writes it) ↔ ``Annotation.attributes``.
* Categories are numbered 1.. in class order; the class list is read back in id order.
Not kept: readers, image-level classes (COCO has none — they are refused on export), slice indices.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from medcycle.labels.formats import rle
from medcycle.labels.formats.bundle import Bundle
from medcycle.labels.formats.images import Collector, ImageIndex, by_image, check_writable, export_name
from medcycle.labels.formats.parsing import Node, dump_json, load_json
from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Mask, Polygon

FILE = "annotations.json"


def _polygons(seg: Node) -> list[Polygon]:
    out = []
    for part in seg.items():
        coords = part.numbers()
        if len(coords) % 2 or len(coords) < 6:
            part.fail(f"has {len(coords)} numbers; a polygon is at least 3 x, y pairs",
                      "Write each polygon as [x1, y1, x2, y2, x3, y3, ...].")
        with part.where.guard():
            out.append(Polygon(tuple(zip(coords[0::2], coords[1::2], strict=True))))
    return out


def _mask(seg: Node, ref: ImageRef) -> Mask:
    size = seg.key("size").numbers(2)
    if (int(size[0]), int(size[1])) != (ref.height, ref.width):
        seg.where.at("size").fail(
            f"is {int(size[0])}x{int(size[1])} (rows x cols), the image is {ref.height}x{ref.width}",
            "RLE masks cover the whole image: size is [height, width].")
    counts_node = seg.key("counts")
    try:
        if isinstance(counts_node.value, str):
            counts = rle.coco_decompress(counts_node.value)
        else:
            counts = [int(v) for v in counts_node.numbers()]
        array = rle.coco_decode(counts, ref.height, ref.width)
    except ValueError as exc:
        counts_node.fail(f"is not valid RLE: {exc}", "Re-export the mask; counts must cover height x width pixels.")
    return Mask(array.astype(np.uint8))


def _annotation(node: Node, images: dict[int | str, ImageRef], cats: dict[int | str, str]) -> list[Annotation]:
    image_id = node.key("image_id").ident()
    if image_id not in images:
        node.where.at("image_id").fail(f"is {image_id!r}, which is not in images", "Refer to an id listed in images.")
    cat_id = node.key("category_id").ident()
    if cat_id not in cats:
        node.where.at("category_id").fail(f"is {cat_id!r}, which is not in categories",
                                          "Refer to an id listed in categories.")
    ref, label = images[image_id], cats[cat_id]
    bbox_node = node.opt("bbox")
    bbox = bbox_node.numbers(4) if bbox_node is not None else None
    if bbox is not None and (bbox[2] < 0 or bbox[3] < 0):
        node.where.at("bbox").fail(f"has a negative width or height: {bbox}", "bbox is [x, y, width, height].")
    attributes: dict[str, Any] = {}
    extra = node.opt("attributes")
    if extra is not None:
        attributes.update(extra.mapping())
    crowd = node.opt("iscrowd")
    if crowd is not None and crowd.integer() not in (0, 1):
        crowd.fail("should be 0 or 1")
    if crowd is not None and crowd.integer() == 1:
        attributes["iscrowd"] = True
    score_node = node.opt("score")
    score = score_node.number() if score_node is not None else None
    seg = node.opt("segmentation")
    geometries: list[tuple[Kind, Box | Polygon | Mask]] = []
    if seg is not None and isinstance(seg.value, dict):
        geometries.append((Kind.MASK, _mask(seg, ref)))
    elif seg is not None and isinstance(seg.value, list) and seg.value:
        geometries += [(Kind.POLYGON, p) for p in _polygons(seg)]
    elif seg is not None and not isinstance(seg.value, list):
        seg.fail("should be a list of polygons or an RLE object", "See the COCO data format.")
    else:
        if bbox is None:
            node.where.at("bbox").fail("is missing (and there is no segmentation)", "Give bbox: [x, y, width, height].")
        with node.where.at("bbox").guard():
            geometries.append((Kind.BOX, Box(bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3])))
    out = []
    for kind, geom in geometries:
        with node.where.guard():
            out.append(Annotation(ref.key, label, kind, geom, score=score, attributes=dict(attributes)))
    return out


def read(bundle: Bundle, *, images: ImageIndex, file: str | None = None) -> AnnotationSet:
    name = bundle.one(".json", "COCO", file)
    root = load_json(bundle.read(name), name)
    if isinstance(root.value, list):
        root.fail("is a list: that is a COCO results file, which has no images or categories",
                  "Import the ground-truth file (with images and categories) instead.")
    cats: dict[int | str, str] = {}
    order: list[tuple[int | str, str]] = []
    for cat in root.key("categories").items():
        cid, cname = cat.key("id").ident(), cat.key("name").text()
        if cid in cats:
            cat.where.at("id").fail(f"repeats category id {cid!r}", "Give each category its own id.")
        if cname in cats.values():
            cat.where.at("name").fail(f"repeats category name {cname!r}", "Give each category its own name.")
        cats[cid] = cname
        order.append((cid, cname))
    numbered = sorted((c for c in order if isinstance(c[0], int)), key=lambda c: int(c[0]))
    order = numbered + [c for c in order if isinstance(c[0], str)]  # ids in number order; string ids as listed
    found = Collector()
    refs: dict[int | str, ImageRef] = {}
    for img in root.key("images").items():
        iid = img.key("id").ident()
        if iid in refs:
            img.where.at("id").fail(f"repeats image id {iid!r}", "Give each image its own id.")
        ref = images.resolve(img.key("file_name").text(), img.key("width").integer(), img.key("height").integer(),
                             img.where)
        refs[iid] = found.image(ref, img.where)
    anns = root.opt("annotations")
    for node in anns.items() if anns is not None else []:
        for a in _annotation(node, refs, cats):
            found.add(a)
    return found.build([c for _, c in order])


def _area(points: tuple[tuple[float, float], ...]) -> float:
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def write(aset: AnnotationSet, *, rle_counts: Literal["compressed", "uncompressed"] = "compressed") -> dict[str, bytes]:
    """One ``annotations.json``; masks as RLE with compressed (default) or uncompressed counts."""
    check_writable(aset, "COCO", {Kind.BOX, Kind.POLYGON, Kind.MASK})
    image_ids = {ref.key: i + 1 for i, ref in enumerate(aset.images)}
    cat_ids = {c: i + 1 for i, c in enumerate(aset.classes)}
    out_anns: list[dict[str, Any]] = []
    for group in by_image(aset).values():
        for a in group:
            entry: dict[str, Any] = {"id": len(out_anns) + 1, "image_id": image_ids[a.image],
                                     "category_id": cat_ids[a.label]}
            attrs = dict(a.attributes)
            entry["iscrowd"] = 1 if attrs.pop("iscrowd", False) else 0
            geom = a.geometry
            if isinstance(geom, Box):
                entry.update(bbox=[geom.x0, geom.y0, geom.width, geom.height], area=geom.area, segmentation=[])
            elif isinstance(geom, Polygon):
                b = geom.bounds()
                entry.update(bbox=[b.x0, b.y0, b.width, b.height], area=_area(geom.points),
                             segmentation=[[v for p in geom.points for v in p]])
            elif isinstance(geom, Mask):
                binary = geom.binary
                counts = rle.coco_encode(binary)
                rows, cols = np.nonzero(binary.any(axis=1))[0], np.nonzero(binary.any(axis=0))[0]
                bbox = ([int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
                        if rows.size else [0, 0, 0, 0])
                entry.update(bbox=bbox, area=int(binary.sum()), segmentation={
                    "size": [binary.shape[0], binary.shape[1]],
                    "counts": rle.coco_compress(counts) if rle_counts == "compressed" else counts})
            if a.score is not None:
                entry["score"] = a.score
            if attrs:
                entry["attributes"] = attrs
            out_anns.append(entry)
    doc = {
        "info": {"description": "exported by medcycle"},
        "licenses": [],
        "images": [{"id": image_ids[r.key], "file_name": export_name(r), "width": r.width, "height": r.height}
                   for r in aset.images],
        "categories": [{"id": cat_ids[c], "name": c, "supercategory": ""} for c in aset.classes],
        "annotations": out_anns,
    }
    return {FILE: dump_json(doc, FILE)}


def sniff(node: Node) -> bool:
    return isinstance(node.value, dict) and "images" in node.value and "categories" in node.value
