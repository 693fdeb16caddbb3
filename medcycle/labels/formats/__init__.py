"""Labeling-tool formats: import into and export from the annotation model (:mod:`medcycle.labels.model`).

One module per format, each with ``read(bundle, *, images, ...)`` and ``write(aset, ...)``; this
registry opens the input (folder, zip, file or bytes), tells the format from the content when not
named, checks the options, and imports heavy modules (nibabel, highdicom) only when their format is used::

    aset = read("export/", "coco", images=catalog_images)   # or read(path) to detect the format
    write(aset, "yolo", "out/")                              # a folder, a file, or "out.zip"
    files = encode(aset, "cvat")                             # {relative name: bytes}, e.g. for an API response

Every format round-trips its kinds (see each module's docstring for what it keeps and the precision);
malformed input raises :class:`~medcycle.errors.ValidationFailed` naming the file and element or line.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from medcycle.errors import UsageError, ValidationFailed
from medcycle.labels.formats.bundle import Bundle, open_bundle, write_files
from medcycle.labels.formats.geometry import SeriesGeometry
from medcycle.labels.formats.images import ImageIndex
from medcycle.labels.formats.parsing import Node, XNode, load_json, load_xml
from medcycle.labels.model import AnnotationSet, ImageRef, Kind

__all__ = ["FORMATS", "Format", "SeriesGeometry", "detect", "encode", "read", "write"]


@dataclass(frozen=True, slots=True)
class Format:
    """A format: its name, what it holds, and the module implementing ``read`` and ``write``."""

    name: str
    title: str
    module: str
    kinds: frozenset[Kind]
    single_file: bool  # one annotation file (COCO, CVAT, Label Studio) rather than a tree of them

    def _load(self) -> Any:
        return importlib.import_module(f"medcycle.labels.formats.{self.module}")

    @property
    def reader(self) -> Callable[..., AnnotationSet]:
        fn: Callable[..., AnnotationSet] = self._load().read
        return fn

    @property
    def writer(self) -> Callable[..., dict[str, bytes]]:
        fn: Callable[..., dict[str, bytes]] = self._load().write
        return fn


_K = Kind
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("coco", "COCO JSON", "coco", frozenset({_K.BOX, _K.POLYGON, _K.MASK}), True),
    Format("voc", "Pascal VOC XML (LabelImg)", "voc", frozenset({_K.BOX}), False),
    Format("yolo", "YOLO txt", "yolo", frozenset({_K.BOX, _K.POLYGON}), False),
    Format("cvat", "CVAT XML 1.1 for images", "cvat", frozenset({_K.CLASS, _K.BOX, _K.POLYGON, _K.MASK}), True),
    Format("supervisely", "Supervisely JSON", "supervisely",
           frozenset({_K.CLASS, _K.BOX, _K.POLYGON, _K.MASK}), False),
    Format("labelstudio", "Label Studio JSON", "labelstudio",
           frozenset({_K.CLASS, _K.BOX, _K.POLYGON, _K.MASK}), True),
    Format("nifti", "NIfTI label maps", "nifti", frozenset({_K.MASK}), False),
    Format("dicom-seg", "DICOM SEG", "dicomseg", frozenset({_K.MASK}), False),
)}


def _format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown labels format {name!r}", hint=f"Use one of: {', '.join(FORMATS)}.") from None


def _call(fn: Callable[..., Any], fmt: str, first: Any, fixed: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    """Call a format's function, turning unknown or missing options into a usage error naming them."""
    params = inspect.signature(fn).parameters
    allowed = [p for p in params.values() if p.kind == p.KEYWORD_ONLY and p.name not in fixed]
    unknown = sorted(set(options) - {p.name for p in allowed})
    if unknown:
        raise UsageError(f"format {fmt!r} takes no option {unknown[0]!r}",
                         hint=f"Its options: {', '.join(p.name for p in allowed) or 'none'}.")
    missing = [p.name for p in allowed if p.default is p.empty and p.name not in options]
    if missing:
        raise UsageError(f"format {fmt!r} needs the option {missing[0]!r}",
                         hint="See the format's documentation in docs/labels.md.")
    return fn(first, **fixed, **options)


def read(source: str | Path | bytes, fmt: str | None = None, *, images: Iterable[ImageRef] | None = None,
         name: str | None = None, **options: Any) -> AnnotationSet:
    """Import an export (folder, zip, file or bytes named ``name``) in ``fmt`` (detected when None).

    ``images``: the images the export was made from, to map the tool's file names back to catalog keys and
    check their sizes (needed by YOLO without image files). Format options: see each module.
    """
    bundle = open_bundle(source, name)
    spec = _format(fmt or detect_bundle(bundle))
    result: AnnotationSet = _call(spec.reader, spec.name, bundle, {"images": ImageIndex(images)}, options)
    return result


def encode(aset: AnnotationSet, fmt: str, **options: Any) -> dict[str, bytes]:
    """The export's files as ``{relative POSIX name: bytes}``."""
    spec = _format(fmt)
    files: dict[str, bytes] = _call(spec.writer, spec.name, aset, {}, options)
    return files


def write(aset: AnnotationSet, fmt: str, dest: str | Path, **options: Any) -> list[Path]:
    """Export to ``dest``: the file itself for a single-file format given a file name, a ``.zip``,
    or a folder (created). Returns the paths written."""
    return write_files(encode(aset, fmt, **options), dest, single=_format(fmt).single_file)


# --- detection -----------------------------------------------------------------------------------


def _json_format(node: Node, name: str) -> str | None:
    from medcycle.labels.formats import coco, labelstudio, supervisely

    if coco.sniff(node):
        return "coco"
    if labelstudio.sniff(node):
        return "labelstudio"
    if supervisely.sniff(node, name):
        return "supervisely"
    return None


def _xml_format(node: XNode) -> str | None:
    from medcycle.labels.formats import cvat, voc

    if cvat.sniff(node):
        return "cvat"
    return "voc" if voc.sniff(node) else None


def _file_format(name: str, data: bytes) -> str | None:
    from medcycle.labels.formats.dicomseg import is_dicom

    lower = name.lower()
    if is_dicom(data[:132]):
        return "dicom-seg"
    if data[:2] == b"\x1f\x8b" or lower.endswith((".nii", ".nii.gz")) or data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return _xml_format(load_xml(data, name))
    if head.startswith((b"{", b"[")):
        return _json_format(load_json(data, name), name)
    return None


def detect_bundle(bundle: Bundle) -> str:
    """The format of a bundle from its content (file names only break ties)."""
    from medcycle.labels.formats import yolo

    if any(PurePosixPath(n).name == "meta.json" for n in bundle.names) and any(
            PurePosixPath(n).parent.name == "ann" for n in bundle.names):
        return "supervisely"
    ranked = sorted(bundle.names, key=lambda n: (not n.lower().endswith((".json", ".xml", ".nii.gz", ".nii", ".dcm")),
                                                 n.count("/"), n))
    for name in ranked[:50]:
        if name.lower().endswith((".txt", ".yaml", ".names", *_IMAGE_LIKE)):
            continue
        found = _file_format(name, bundle.read(name))
        if found is not None:
            return found
    if yolo.sniff(bundle):
        return "yolo"
    raise ValidationFailed(f"{bundle.label}: cannot tell which labels format this is",
                           hint=f"Name the format: one of {', '.join(FORMATS)}.")


_IMAGE_LIKE = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


def detect(source: str | Path | bytes, name: str | None = None) -> str:
    """The format of an export (folder, zip, file or bytes) from its content."""
    return detect_bundle(open_bundle(source, name))
