"""The per-file half of ingest, run in worker processes: read, check, de-identify, measure, store.

A worker never writes catalog rows (the parent does, in batches, as the single writer); it stores
the de-identified object (idempotent, atomic) and returns an :class:`Outcome` holding only
pseudonymous values. Nothing it logs or returns names patient data: error reasons are built from
our own words and exception class names, never from exception text or attribute values.

Files travel in batches (:func:`process_batch`): each file is read once (small files into memory, which
the DICOM reader then parses without touching the disk again), whether any of them was ingested before
is asked in one query per batch rather than one per file, and the stored objects are made durable
together at the end of the batch (their fsyncs run in the background meanwhile; see ``defer_sync`` in
:mod:`medcycle.objects.local`), before the outcomes that point at them are returned.

A DICOM file read into memory is de-identified on its encoded bytes (:mod:`medcycle.catalog.deid_fast`) and,
when its pixel data is uncompressed, measured straight from those bytes; whatever that path does not handle
goes through pydicom (``dcmread``, ``deidentify``, ``save_as``), which gives the same dataset.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.uid import UID
from sqlalchemy import Engine, select

from medcycle.catalog import vocab
from medcycle.catalog.deid import DeidOptions, DeidResult, Pseudonymizer, deidentify, quiet_pydicom
from medcycle.catalog.deid_fast import Fallback, FastResult, deidentify_bytes
from medcycle.catalog.inputs import PAIR_IMAGE, InputFile
from medcycle.catalog.pixels import pixel_stats, stored_sample
from medcycle.catalog.readers import DICOM, JPEG, NIFTI, PNG, Parsed, Rejected, Skipped, read_nifti, read_raster, sniff
from medcycle.catalog.tables import IngestFileRow
from medcycle.errors import ValidationFailed
from medcycle.objects.base import CHUNK, ObjectInfo, ObjectStore

# The vocabularies map a handful of distinct header values per source: look each up once per process.
normalise_body_part = functools.lru_cache(maxsize=4096)(vocab.normalise_body_part)
normalise_laterality = functools.lru_cache(maxsize=256)(vocab.normalise_laterality)
normalise_view = functools.lru_cache(maxsize=256)(vocab.normalise_view)

INGESTED, QUARANTINED, DUPLICATE, REJECTED, SKIPPED = "ingested", "quarantined", "duplicate", "rejected", "skipped"
DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
IN_MEMORY = 64 * CHUNK  # files up to this size are read once into memory; larger ones are streamed from disk


@dataclass
class Outcome:
    status: str
    display: str
    key: str | None = None
    reason: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkerContext:
    store: ObjectStore
    engine: Engine | None
    pseudo: Pseudonymizer
    options: DeidOptions
    source: str
    max_bytes: int
    modality: str | None = None
    body_part: str | None = None


def quiet_third_parties() -> None:
    """pydicom/nibabel messages can quote attribute values (patient data): keep them out of our logs."""
    for name in ("pydicom", "nibabel", "PIL"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@contextlib.contextmanager
def materialise(item: InputFile) -> Iterator[Path]:
    """A path on disk for the input (zip members are extracted to a private temp file); a NIfTI pair's header
    comes with its image beside it, under the same stem."""
    if item.member is None and (item.pair is None or item.pair == item.path[:-4] + ".img"):
        yield Path(item.path)
        return
    tmp = Path(tempfile.mkdtemp(prefix="medcycle-ingest-"))
    try:
        name = Path(item.member if item.member is not None else item.path).name
        if item.pair is not None:  # nibabel finds the image by the header's name: scan.hdr -> scan.img
            name = name[:-4] + ".hdr"
        target = tmp / name
        if item.member is None:  # a folder pair whose halves differ in case (scan.hdr, scan.IMG)
            os.symlink(os.path.abspath(item.path), target)
            os.symlink(os.path.abspath(str(item.pair)), target.with_suffix(".img"))
            yield target
            return
        with zipfile.ZipFile(item.path) as zf:
            info = zf.infolist()[item.index] if item.index >= 0 else zf.getinfo(item.member)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            if item.pair is not None:
                with zf.open(zf.getinfo(item.pair)) as src, target.with_suffix(".img").open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sha256(path: Path, data: bytes | None = None, more: Path | None = None) -> str:
    """SHA-256 of the file at ``path`` (``data``: its bytes, when already read), followed by the file ``more``
    (a NIfTI pair's image: the pair is one input, whose content is both files)."""
    h = hashlib.sha256()
    for part in (path, more):
        if part is None:
            continue
        if part is path and data is not None:
            h.update(data)
            continue
        with part.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _read_small(path: str | Path, size: int) -> bytes:
    """A small file's bytes with an ``open``, two ``read`` and a ``close`` (``Path.read_bytes`` makes several more
    system calls, which show at thousands of files); the whole file, should it have grown since it was listed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        data = os.read(fd, size + 1)
        rest: list[bytes] = []
        while data and (chunk := os.read(fd, CHUNK)):
            rest.append(chunk)
        return data + b"".join(rest) if rest else data
    finally:
        os.close(fd)


def _known(engine: Engine | None, keys: list[str]) -> set[str]:
    """Which of ``keys`` an earlier ingest recorded (one query)."""
    if engine is None or not keys:
        return set()
    with engine.connect() as conn:
        return set(conn.scalars(select(IngestFileRow.key).where(IngestFileRow.key.in_(keys))))


def _too_large(ctx: WorkerContext, item: InputFile) -> Outcome | None:
    if item.size + item.pair_size > ctx.max_bytes:
        return Outcome(
            REJECTED,
            item.display,
            reason=f"file is larger than the limit of {ctx.max_bytes} bytes (setting ingest_max_file_bytes)",
        )
    return None


def process(ctx: WorkerContext, item: InputFile) -> Outcome:
    """Everything that happens to one input file before its catalog rows are written."""
    return process_batch(ctx, [item])[0]


def process_batch(ctx: WorkerContext, items: list[InputFile]) -> list[Outcome]:
    """:func:`process` for several files: each file read once, one query for those ingested before."""
    done: dict[int, Outcome] = {}
    read: dict[int, tuple[str, bytes | None]] = {}  # plain files: content key, and the bytes when small
    for i, item in enumerate(items):
        if item.problem is not None:
            done[i] = Outcome(REJECTED, item.display, reason=item.problem)
        elif item.skip is not None:
            done[i] = Outcome(SKIPPED, item.display, reason=item.skip)
        elif (big := _too_large(ctx, item)) is not None:
            done[i] = big
        elif item.member is None:  # zip members are keyed once extracted (in _one)
            try:
                data = _read_small(item.path, item.size) if item.size <= IN_MEMORY else None
                if item.pair is not None:
                    digest = _sha256(Path(item.path), data, Path(item.pair))
                else:
                    digest = hashlib.sha256(data).hexdigest() if data is not None else _sha256(Path(item.path))
            except OSError as exc:
                done[i] = Outcome(REJECTED, item.display, reason=f"cannot read the file ({type(exc).__name__})")
                continue
            read[i] = (ctx.pseudo.content_key(digest), data)
    known = _known(ctx.engine, [key for key, _ in read.values()])
    out = []
    # Third-party warnings and pydicom's log records may quote patient data: silenced once for the files of the
    # batch (per file, entering and leaving the warnings filters cost as much as reading a file's header).
    with warnings.catch_warnings(), quiet_pydicom():
        warnings.simplefilter("ignore")
        for i, item in enumerate(items):
            if i in done:
                out.append(done[i])
            elif i in read and read[i][0] in known:
                out.append(Outcome(DUPLICATE, item.display, key=read[i][0], reason="already ingested"))
            else:
                key, data = read.get(i, (None, None))
                out.append(_one(ctx, item, key, data))
    ctx.store.sync()  # the objects are durable before any outcome that points at them leaves this function
    return out


def _one(ctx: WorkerContext, item: InputFile, key: str | None, data: bytes | None) -> Outcome:
    """One file whose content key is known (``key``; None for a zip member) and not recorded before; called with
    third-party warnings and pydicom's log records silenced (see :func:`process_batch`)."""
    try:
        with materialise(item) as path:
            if key is None:  # a zip member, just extracted: read once too when small
                data = path.read_bytes() if item.size <= IN_MEMORY else None
                if item.pair is not None:
                    digest = _sha256(path, data, path.with_suffix(".img"))
                else:
                    digest = hashlib.sha256(data).hexdigest() if data is not None else _sha256(path)
                key = ctx.pseudo.content_key(digest)
                if _known(ctx.engine, [key]):
                    return Outcome(DUPLICATE, item.display, key=key, reason="already ingested")
            fmt = sniff(path, data)
            if fmt == DICOM:
                return _dicom(ctx, path, item, key, data)
            if fmt == NIFTI:
                return _image(ctx, read_nifti(path, item.rel), item, key)
            if fmt in (PNG, JPEG):
                return _image(ctx, read_raster(path, item.rel, fmt), item, key)
            if item.member is None and path.suffix.lower() == ".img" and path.with_suffix(".hdr").is_file():
                return Outcome(SKIPPED, item.display, reason=PAIR_IMAGE)
            return Outcome(REJECTED, item.display, key=key, reason="not a DICOM, NIfTI, PNG or JPEG file")
    except Skipped as exc:
        return Outcome(SKIPPED, item.display, reason=exc.reason)
    except Rejected as exc:
        return Outcome(REJECTED, item.display, reason=exc.reason)
    except (OSError, zipfile.BadZipFile) as exc:
        return Outcome(REJECTED, item.display, reason=f"cannot read the file ({type(exc).__name__})")
    except Exception as exc:  # noqa: BLE001 - one bad file never stops an ingest; the text may quote PHI
        return Outcome(
            REJECTED,
            item.display,
            reason=f"unexpected failure while reading ({type(exc).__name__}); "
            "please report it with `medcycle doctor` output",
        )


def _read_dicom(path: Path, data: bytes | None = None) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    def source() -> Path | io.BytesIO:
        return io.BytesIO(data) if data is not None else path

    try:
        return pydicom.dcmread(source())
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(source(), force=True)
        except Exception:  # noqa: BLE001 - anything unreadable is simply not DICOM
            raise Rejected("not a DICOM, NIfTI, PNG or JPEG file") from None
        if "SOPClassUID" not in ds or "PixelData" not in ds:
            raise Rejected("not a DICOM, NIfTI, PNG or JPEG file") from None
        return ds
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files raise many kinds
        raise Rejected(f"corrupt or truncated DICOM ({type(exc).__name__})") from None


def _ts_name(ds: Any) -> str:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return f"{ts.name} ({ts})" if ts is not None else "unknown transfer syntax"


def _decode(ds: Any) -> Any:
    from pydicom.pixels.processing import apply_modality_lut

    try:
        arr = ds.pixel_array
    except NotImplementedError:
        raise Rejected(f"unsupported compression: no installed decoder for {_ts_name(ds)}") from None
    except Exception as exc:  # noqa: BLE001 - truncated or damaged pixel data
        raise Rejected(f"pixel data cannot be decoded ({type(exc).__name__}; {_ts_name(ds)})") from None
    try:
        if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
            arr = apply_modality_lut(arr, ds)
    except Exception:  # noqa: BLE001, S110 - a broken LUT leaves stored values, still useful for stats
        pass
    return arr


def _num(ds: Any, keyword: str, index: int | None = None) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return float(value[index] if index is not None else value)
    except (TypeError, ValueError, IndexError):
        return None


def _text(ds: Any, keyword: str, limit: int = 128) -> str | None:
    value = ds.get(keyword)
    if type(value) is str:  # the common case: what the lines below do to a str
        return value.strip()[:limit] or None
    if value is None:
        return None
    if not isinstance(value, str | bytes):
        value = "\\".join(str(v) for v in value) if hasattr(value, "__iter__") else str(value)
    value = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    value = value.strip()
    return value[:limit] or None


def _dicom(ctx: WorkerContext, path: Path, item: InputFile, key: str, data: bytes | None = None) -> Outcome:
    if data is not None:  # in memory: the byte-level path, unless the file needs pydicom (see deid_fast)
        try:
            fast = deidentify_bytes(data, ctx.pseudo, ctx.options, issuer=ctx.source, fallback_key=key)
        except (Fallback, ValidationFailed):  # the pydicom path below says why a file cannot be stored
            fast = None
        if fast is not None:
            return _dicom_fast(ctx, path, item, key, data, fast)
    ds = _read_dicom(path, data)
    sop_class = _sop_class(ds)
    arr = _decode(ds)
    try:
        result = deidentify(ds, ctx.pseudo, ctx.options, issuer=ctx.source, fallback_key=key)
    except ValidationFailed as exc:  # its message names an attribute, never a value
        raise Rejected(exc.message) from None
    clean = result.dataset
    if not (result.sop_uid and result.series_uid and result.study_uid):
        raise Rejected("missing Study, Series or SOP Instance UID")
    buf = io.BytesIO()
    try:
        clean.save_as(buf, enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 - a dataset pydicom cannot write back is rejected, not stored
        raise Rejected(f"cannot write the de-identified DICOM ({type(exc).__name__})") from None
    info = ctx.store.put(buf.getbuffer())
    return _record(ctx, item, key, result, info, arr, sop_class)


def _sop_class(ds: Any) -> str:
    """The SOP class; a DICOMDIR is skipped and a file without pixel data rejected."""
    sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
    if sop_class == DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise Skipped("DICOMDIR index (the files it references are ingested)")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise Rejected(f"no image pixel data (SOP class {sop_class or 'unknown'})")
    return sop_class


def _dicom_fast(ctx: WorkerContext, path: Path, item: InputFile, key: str, data: bytes, fast: FastResult) -> Outcome:
    """The byte-level path: the same checks, in the same order, as the pydicom path above."""
    sop_class = _sop_class(fast.source)
    native = _native_pixels(fast, data)
    # compressed, or anything pydicom's decoder should judge:
    arr, rescale = native if native is not None else (_decode(_read_dicom(path, data)), None)
    result = fast.result
    if not (result.sop_uid and result.series_uid and result.study_uid):
        raise Rejected("missing Study, Series or SOP Instance UID")
    info = ctx.store.put(fast.data)
    return _record(ctx, item, key, result, info, arr, sop_class, rescale)


_NATIVE_PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"})


def _int(ds: Any, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _compressed(transfer_syntax: str) -> bool:
    return bool(UID(transfer_syntax).is_compressed)


def _native_pixels(fast: FastResult, data: bytes) -> tuple[Any, tuple[float, float] | None] | None:
    """The stored pixel values read from the bytes (subsampled) and the rescale still to apply: what ``_decode``
    gives for uncompressed pixel data, without decoding; None where pydicom should decode (compressed, unusual
    layouts, a Modality LUT)."""
    src, px = fast.source, fast.pixels
    if px is None or px.encapsulated or _compressed(fast.transfer_syntax):
        return None
    if any(k in src for k in ("FloatPixelData", "DoubleFloatPixelData", "ModalityLUTSequence")):
        return None
    photometric = _text(src, "PhotometricInterpretation", 16)
    rows, columns = _int(src, "Rows"), _int(src, "Columns")
    samples, allocated = _int(src, "SamplesPerPixel"), _int(src, "BitsAllocated")
    stored, representation = _int(src, "BitsStored"), _int(src, "PixelRepresentation")
    frames = _int(src, "NumberOfFrames", 1)
    if photometric not in _NATIVE_PHOTOMETRIC or None in (rows, columns, samples, allocated, stored, frames):
        return None
    assert rows is not None and columns is not None and samples is not None and allocated is not None
    assert stored is not None and frames is not None
    if representation not in (0, 1) or not 1 <= stored <= allocated or samples != (3 if photometric == "RGB" else 1):
        return None
    if samples > 1 and _int(src, "PlanarConfiguration", 0) != 0:
        return None  # planes, not pixels, in the bytes: a strided sample would differ
    if allocated == 8 and not px.little:
        return None  # big endian OW holds byte pairs swapped
    sample = stored_sample(data, px.offset, px.length, rows=rows, columns=columns, samples=samples, frames=frames,
                           bits_allocated=allocated, signed=representation == 1, little=px.little)
    if sample is None or "RescaleSlope" not in src or "RescaleIntercept" not in src:
        return (sample, None) if sample is not None else None
    slope, intercept = src.get("RescaleSlope"), src.get("RescaleIntercept")
    try:
        return sample, (float(slope), float(intercept))
    except (TypeError, ValueError):
        return None


_ABSENT: Any = object()  # ``get``'s default: an attribute that is not there (present may still be None)


def _record(
    ctx: WorkerContext, item: InputFile, key: str, result: DeidResult, info: ObjectInfo, arr: Any, sop_class: str,
    rescale: tuple[float, float] | None = None,
) -> Outcome:
    """The outcome of a stored DICOM file: the catalog fields, read from the de-identified dataset."""
    clean = result.dataset
    modality = _text(clean, "Modality", 16)
    photometric = _text(clean, "PhotometricInterpretation", 16)
    get = clean.get
    bits = int(v) if (v := get("BitsStored", _ABSENT)) is not _ABSENT else None
    stats = pixel_stats(arr, bits_stored=bits, monochrome1=photometric == "MONOCHROME1", hounsfield=modality == "CT",
                        rescale=rescale)
    spacing_kw = "PixelSpacing" if "PixelSpacing" in clean else "ImagerPixelSpacing"
    raw_part = _text(clean, "BodyPartExamined")
    record = {
        "format": DICOM,
        "patient_id": result.patient,
        "study_uid": result.study_uid,
        "series_uid": result.series_uid,
        "uid": result.sop_uid,
        "digest": info.digest,
        "bytes": info.size,
        "sex": result.sex,
        "age_band": result.age_band,
        "study_date": result.study_date,
        "modality": modality or ctx.modality,
        "body_part": normalise_body_part(raw_part) or ctx.body_part,
        "body_part_raw": raw_part,
        "laterality": normalise_laterality(_text(clean, "ImageLaterality") or _text(clean, "Laterality")),
        "view_position": normalise_view(_text(clean, "ViewPosition")),
        "manufacturer": _text(clean, "Manufacturer"),
        "model": _text(clean, "ManufacturerModelName"),
        "slice_thickness": _num(clean, "SliceThickness"),
        "pixel_spacing_row": _num(clean, spacing_kw, 0),
        "pixel_spacing_col": _num(clean, spacing_kw, 1),
        "kvp": _num(clean, "KVP"),
        "convolution_kernel": _text(clean, "ConvolutionKernel", 64),
        "field_strength": _num(clean, "MagneticFieldStrength"),
        "image_type": _text(clean, "ImageType"),
        "sop_class": sop_class[:64] or None,
        "transfer_syntax": str(clean.file_meta.TransferSyntaxUID)[:64],
        "photometric": photometric,
        "bits_stored": bits,
        "rows": int(v) if (v := get("Rows", _ABSENT)) is not _ABSENT else None,
        "columns": int(v) if (v := get("Columns", _ABSENT)) is not _ABSENT else None,
        "frames": int(_num(clean, "NumberOfFrames") or 1),
        "instance_number": int(n) if (n := _num(clean, "InstanceNumber")) is not None else None,
        "stats": stats.to_dict() if stats else {},
        "deid_counts": result.counts.to_dict(),
    }
    if result.quarantine_reason:
        return Outcome(QUARANTINED, item.display, key=key, reason=result.quarantine_reason, record=record)
    return Outcome(INGESTED, item.display, key=key, record=record)


def _image(ctx: WorkerContext, parsed: Parsed, item: InputFile, key: str) -> Outcome:
    """NIfTI/PNG/JPEG: no header identifiers; hierarchy from BIDS-style names, else one patient per file."""
    src = ctx.source
    patient_label = parsed.patient_label or f"file:{key}"
    session_label = parsed.session_label or (patient_label if parsed.patient_label else f"file:{key}")
    patient = ctx.pseudo.patient(f"{parsed.format}:{src}", patient_label)
    study = ctx.pseudo.uid(f"{parsed.format}:{src}:{patient_label}:{session_label}")
    series = ctx.pseudo.uid(f"{parsed.format}:{src}:{patient_label}:{session_label}:{parsed.series_label}")
    info = ctx.store.put(parsed.data)
    stats = pixel_stats(
        parsed.values, bits_stored=parsed.bits if parsed.format == PNG else None, hounsfield=ctx.modality == "CT"
    )
    record = {
        "format": parsed.format,
        "patient_id": patient,
        "study_uid": study,
        "series_uid": series,
        "uid": ctx.pseudo.uid(f"{parsed.format}:{src}:{key}"),
        "digest": info.digest,
        "bytes": info.size,
        "modality": ctx.modality,
        "body_part": ctx.body_part,
        "pixel_spacing_row": parsed.spacing[0] if parsed.spacing else None,
        "pixel_spacing_col": parsed.spacing[1] if parsed.spacing else None,
        "slice_thickness": parsed.thickness,
        "photometric": parsed.photometric,
        "bits_stored": parsed.bits,
        "rows": parsed.rows,
        "columns": parsed.columns,
        "frames": parsed.frames,
        "stats": stats.to_dict() if stats else {},
    }
    return Outcome(INGESTED, item.display, key=key, record=record)
