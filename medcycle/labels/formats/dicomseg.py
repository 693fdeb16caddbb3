"""DICOM Segmentation (SEG) objects, written and read with highdicom, on the frames of their source series.

Export writes one binary SEG per image and reader (``<image>.seg.dcm``, or ``<image>.<n>.seg.dcm`` when
an image has several readers): a segment per mask annotation (so masks may overlap), labelled with
its class (SegmentLabel), referencing the source series' instances. The reader becomes
ContentCreatorName; readers ``model:<version>`` also mark their segments AUTOMATIC with that
algorithm version. Source headers are needed: ``series={key: SeriesGeometry | datasets | paths}``.

Import maps every segment's frames back onto the source series' slices by SOP instance UID
(highdicom ``get_pixels_by_source_instance``), so masks come back exactly on the series grid with
its spacing, origin and direction. The series is found among ``series=`` by the SEG's referenced
SeriesInstanceUID (or the image key). :func:`referenced_series` tells a caller which series to fetch.
Not kept: scores, attributes; classes come back in order of first use (or as given with ``classes=``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from medcycle.labels.formats.bundle import Bundle, safe_relative, unique
from medcycle.labels.formats.geometry import SeriesGeometry
from medcycle.labels.formats.images import Collector, ImageIndex, by_image, check_writable, export_name, stem
from medcycle.labels.formats.parsing import Where
from medcycle.labels.model import Annotation, AnnotationSet, Kind, Mask

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
MODEL = "model:"
TISSUE = Code("85756007", "SCT", "Tissue")  # generic property category and type; the class is SegmentLabel
Series = Mapping[str, SeriesGeometry | Sequence[Any]]
_SEG_ERRORS = (InvalidDicomError, ValueError, KeyError, AttributeError, TypeError, IndexError, EOFError)


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def referenced_series(data: bytes, file: str = "seg.dcm") -> list[str]:
    """The SeriesInstanceUIDs a SEG's frames come from (to look the source series up before import)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        return [str(item.SeriesInstanceUID) for item in ds.ReferencedSeriesSequence]
    except _SEG_ERRORS as exc:
        Where(file).fail(f"is not a readable DICOM SEG: {exc}", "Pass a DICOM Segmentation file.")


def _check_text(value: str, what: str, where: Where, *, pn: bool = False) -> str:
    bad = "\\^=" if pn else "\\"
    if len(value) > 64 or any(c in bad or ord(c) < 32 for c in value):
        where.fail(f"{what} {value!r} does not fit DICOM (64 characters, no {' '.join(bad)} or control characters)",
                   "Shorten or rename it before exporting to DICOM SEG.")
    return value


def _segmentation(datasets: Sequence[Any], pixels: np.ndarray[Any, Any], labels: list[str], reader: str | None,
                  where: Where) -> bytes:
    import highdicom as hd

    automatic = reader is not None and reader.startswith(MODEL)
    algorithm = None
    if automatic:
        assert reader is not None
        algorithm = hd.AlgorithmIdentificationSequence(
            name="medcycle model", version=reader[len(MODEL):] or "unknown",
            family=Code("123109", "DCM", "Artificial Intelligence"))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=_check_text(label, "class", where),
            segmented_property_category=TISSUE, segmented_property_type=TISSUE,
            algorithm_type="AUTOMATIC" if automatic else "MANUAL", algorithm_identification=algorithm)
        for i, label in enumerate(labels)
    ]
    creator = None if reader is None else _check_text(reader, "reader", where, pn=True) + "^"
    try:
        seg = hd.seg.Segmentation(
            source_images=list(datasets), pixel_array=pixels, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=900,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medcycle",
            manufacturer_model_name="medcycle", software_versions="medcycle", device_serial_number="0",
            content_label="MEDCYCLE", content_creator_name=creator)
    except (ValueError, TypeError, AttributeError) as exc:
        raise where.error(f"cannot be written as DICOM SEG: {exc}",
                          "Check the source series' headers are complete (UIDs, geometry).") from exc
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def write(aset: AnnotationSet, *, series: Series) -> dict[str, bytes]:
    """A SEG per image and reader, referencing the image's source series."""
    check_writable(aset, "DICOM SEG", {Kind.MASK}, planar=False)
    refs = {r.key: r for r in aset.images}
    files: dict[str, bytes] = {}
    for key, group in by_image(aset).items():
        if not group:
            continue
        where = Where(key)
        if key not in series:
            where.fail("has no source series given", "Pass series={key: SeriesGeometry.from_files(paths)}.")
        grid = SeriesGeometry.coerce(series[key])
        if not grid.datasets:
            where.fail("has a series grid but no DICOM headers to reference",
                       "Pass the series' datasets or files (SeriesGeometry.from_files), not a bare grid.")
        readers: dict[str | None, list[Annotation]] = {}
        for a in group:
            readers.setdefault(a.reader, []).append(a)
        base = stem(export_name(refs[key]))
        for n, (reader, anns) in enumerate(readers.items(), start=1):
            volumes = []
            for a in anns:
                assert isinstance(a.geometry, Mask)
                with where.at(f"mask {a.label!r}").guard():
                    volumes.append(grid.place(a.geometry))
            pixels = np.stack(volumes, axis=-1)
            name = safe_relative(f"{base}.seg.dcm" if len(readers) == 1 else f"{base}.{n}.seg.dcm", f"image {key!r}")
            files[name] = _segmentation(grid.datasets, pixels, [a.label for a in anns], reader, where)
    unique(files, "DICOM SEG file")
    return files


def _grid_for(uid: str, grids: dict[str, SeriesGeometry], where: Where) -> tuple[str, SeriesGeometry]:
    for key, grid in grids.items():
        if key == uid or grid.series_uid == uid:
            return key, grid
    where.fail(f"segments series {uid}, which is not among the series given",
               "Pass series={key: SeriesGeometry.from_files(paths)} for the source series "
               "(referenced_series() names it).")


def read(bundle: Bundle, *, images: ImageIndex, series: Series, classes: Sequence[str] | None = None) -> AnnotationSet:
    import highdicom as hd

    grids = {k: SeriesGeometry.coerce(v) for k, v in series.items()}
    found = Collector()
    files = [n for n in bundle.names if n.lower().endswith(".dcm") or is_dicom(bundle.read(n)[:132])]
    if not files:
        Where(bundle.label).fail("holds no DICOM files", "Point at the SEG file(s).")
    for file in files:
        where = Where(file)
        data = bundle.read(file)
        try:
            seg = hd.seg.segread(io.BytesIO(data))
        except _SEG_ERRORS as exc:
            where.fail(f"is not a readable DICOM SEG: {exc}", "Pass a DICOM Segmentation file.")
        uids = referenced_series(data, file)
        if len(uids) != 1:
            where.fail(f"references {len(uids)} series; this reader reads SEGs of one series",
                       "Split the SEG per source series.")
        key, grid = _grid_for(uids[0], grids, where)
        missing = {str(sop) for _, _, sop in seg.get_source_image_uids()} - set(grid.instance_uids)
        if missing:
            where.fail(f"segments {len(missing)} instance(s) that are not slices of the series given "
                       f"(e.g. {sorted(missing)[0]})", "Pass the series the SEG was made on, with all its slices.")
        planar_default = grid.shape[0] == 1
        ref = images.resolve(key, grid.shape[2], grid.shape[1], where,
                             depth=None if planar_default else grid.shape[0])
        found.image(ref, where, again=True)
        creator = seg.get("ContentCreatorName")
        reader = (str(creator).rstrip("^") or None) if creator else None
        for number in seg.segment_numbers:
            label = str(seg.get_segment_description(number).segment_label)
            try:
                pixels = seg.get_pixels_by_source_instance(
                    source_sop_instance_uids=list(grid.instance_uids), segment_numbers=[number],
                    assert_missing_frames_are_empty=True)
            except (ValueError, KeyError, IndexError) as exc:
                where.fail(f"segment {number} does not fit the source series: {exc}",
                           "Pass the series the SEG was made on.")
            with where.at(f"segment {number}").guard():
                mask = grid.mask_for(pixels[..., 0] != 0, ref.depth is None)
                found.add(Annotation(ref.key, label, Kind.MASK, mask, reader=reader))
    return found.build(classes)

