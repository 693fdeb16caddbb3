"""Sample annotation sets and a tolerant comparison for the format round-trip tests."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from medcycle.labels.model import Annotation, AnnotationSet, Box, ImageRef, Kind, Mask, Polygon


def disk(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8)


def planar_set(*, readers: bool = True, scores: bool = True, attributes: bool = True) -> AnnotationSet:
    """Two annotated 2D images and one without annotations; every 2D kind, several readers."""
    a = ImageRef("chest1.png", 64, 48, file_name="chest1.png")
    b = ImageRef("scans/chest2.png", 40, 30, file_name="scans/chest2.png")
    c = ImageRef("empty.png", 16, 16, file_name="empty.png")
    alice, bob = ("alice@example.org", "bob@example.org") if readers else (None, None)
    mask = disk(48, 64, 20, 30, 6)
    anns = [
        Annotation(a.key, "nodule", Kind.BOX, Box(3, 4, 20, 17), reader=alice,
                   attributes={"difficult": True} if attributes else {}),
        Annotation(a.key, "nodule", Kind.BOX, Box(10, 12, 30, 40), reader=bob, score=0.75 if scores else None),
        Annotation(a.key, "effusion", Kind.POLYGON, Polygon(((1.5, 2.25), (30.0, 4.0), (12.0, 40.5))), reader=alice),
        Annotation(a.key, "effusion", Kind.MASK, Mask(mask), reader=bob),
        Annotation(a.key, "normal", Kind.CLASS, reader=alice),
        Annotation(b.key, "nodule", Kind.BOX, Box(0, 0, 40, 30), reader=alice),
        Annotation(b.key, "effusion", Kind.POLYGON, Polygon(((0.0, 0.0), (40.0, 0.0), (40.0, 30.0), (0.0, 30.0))),
                   reader=alice),
    ]
    return AnnotationSet((a, b, c), ("nodule", "effusion", "normal"), tuple(anns))


def keep(aset: AnnotationSet, kinds: Iterable[Kind], *, readers: bool = True, scores: bool = True,
         attributes: bool = True, images: bool = True) -> AnnotationSet:
    """What a format keeps of ``aset``: only ``kinds``; readers/scores/attributes dropped when not kept;
    images without annotations dropped when ``images`` is False."""
    allowed = set(kinds)
    anns = [replace(a, reader=a.reader if readers else None, score=a.score if scores else None,
                    attributes=a.attributes if attributes else {})
            for a in aset.annotations if a.kind in allowed]
    refs = aset.images if images else tuple(r for r in aset.images if any(a.image == r.key for a in anns))
    return AnnotationSet(refs, aset.classes, tuple(anns))


def _close(x: float | None, y: float | None, tol: float) -> bool:
    if x is None or y is None:
        return x is y
    return math.isclose(x, y, abs_tol=tol, rel_tol=0)


def same_annotation(a: Annotation, b: Annotation, tol: float = 0.0) -> bool:
    if (a.image, a.label, a.kind, a.reader, a.attributes) != (b.image, b.label, b.kind, b.reader, b.attributes):
        return False
    if not _close(a.score, b.score, 1e-12):
        return False
    ga, gb = a.geometry, b.geometry
    if isinstance(ga, Box) and isinstance(gb, Box):
        return ga.z == gb.z and all(_close(p, q, tol) for p, q in
                                    zip((ga.x0, ga.y0, ga.x1, ga.y1), (gb.x0, gb.y0, gb.x1, gb.y1), strict=True))
    if isinstance(ga, Polygon) and isinstance(gb, Polygon):
        return ga.z == gb.z and len(ga.points) == len(gb.points) and all(
            _close(p[0], q[0], tol) and _close(p[1], q[1], tol) for p, q in zip(ga.points, gb.points, strict=True))
    return ga == gb


def assert_same(expected: AnnotationSet, got: AnnotationSet, tol: float = 0.0, *, image_order: bool = False) -> None:
    """Same images (as a set unless ``image_order``), classes in order, and per image the same
    annotations as a multiset, geometry within ``tol`` px."""
    if image_order:
        assert expected.images == got.images
    else:
        assert sorted(expected.images, key=lambda r: r.key) == sorted(got.images, key=lambda r: r.key)
    assert expected.classes == got.classes
    assert len(expected.annotations) == len(got.annotations), (expected.annotations, got.annotations)
    left = list(got.annotations)
    for a in expected.annotations:
        match = next((i for i, b in enumerate(left) if same_annotation(a, b, tol)), None)
        assert match is not None, f"no match for {a!r} among {left!r}"
        left.pop(match)
