"""Recognise and read one input file: DICOM (any transfer syntax a decoder is installed for), NIfTI, PNG/JPEG.

Each reader returns what the catalog needs plus the bytes to store — already stripped of identifying
metadata. DICOM de-identification itself lives in :mod:`medcycle.catalog.deid`; NIfTI headers lose
their free-text fields and extensions, PNG/JPEG are re-encoded as PNG without any metadata chunks.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

DICOM, NIFTI, PNG, JPEG, UNKNOWN = "dicom", "nifti", "png", "jpeg", "unknown"
PNG_MODES = {"1", "L", "LA", "I", "I;16", "RGB", "RGBA"}  # kept as opened; any other mode becomes RGB
BIDS_SUB = re.compile(r"(?:^|/)sub-([A-Za-z0-9]+)")
BIDS_SES = re.compile(r"(?:^|/)ses-([A-Za-z0-9]+)")


class Rejected(Exception):
    """The file cannot go into the catalog; ``reason`` never names patient data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Skipped(Rejected):
    """Not an image and not an error (e.g. a DICOMDIR index)."""


def sniff(path: Path, data: bytes | None = None) -> str:
    """The file's format from its magic bytes (and name for NIfTI); ``data``: the file's bytes, when already read."""
    if data is not None:
        head = data[:352]
    else:
        with path.open("rb") as fh:
            head = fh.read(352)
    name = path.name.lower()
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if name.endswith((".nii", ".nii.gz")) or _nifti_magic(head):
        return NIFTI
    if head.startswith(b"\x1f\x8b"):  # a gzip file: a NIfTI inside, whatever its name says?
        if name.endswith(".nii.gz"):
            return NIFTI
        try:
            with (io.BytesIO(data) if data is not None else path.open("rb")) as raw, gzip.GzipFile(fileobj=raw) as gz:
                inner = gz.read(352)  # GzipFile does not close a file object it is given: the outer `with` does
        except (OSError, EOFError):
            return UNKNOWN
        return NIFTI if _nifti_magic(inner) else UNKNOWN
    if name.endswith((".dcm", ".dicom", ".ima")) or "." not in name:
        return DICOM  # DICOM without preamble (legacy): checked strictly by the DICOM reader
    return UNKNOWN


#: Why a NIfTI pair header whose image is not beside it is rejected.
MISSING_PAIR_IMAGE = ("a NIfTI pair header (.hdr) without its image (.img): put the .img beside it, with the same "
                      "name, and ingest both again")


def _nifti_magic(head: bytes) -> bool:
    """NIfTI-1 (single file or pair header, magic at byte 344) or NIfTI-2 (magic at byte 4)."""
    return head[344:348] in {b"n+1\x00", b"ni1\x00"} or head[4:8] in {b"n+2\x00", b"ni2\x00"}


def _nifti_name_fits(path: Path) -> bool:
    """Whether nibabel can open ``path`` by its name: .nii, .nii.gz or .hdr, gzip-compressed exactly when .gz."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz", ".hdr")):
        return False
    with path.open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return gzipped == name.endswith(".gz")


def _load_nifti(path: Path) -> Any:
    """nibabel's image of ``path``; a single-file NIfTI with another or a wrong extension (``scan.dat``, a
    gzip-compressed ``scan.nii``) is read from its bytes, since nibabel chooses its reader by the name."""
    import nibabel as nib

    if _nifti_name_fits(path):
        return nib.load(str(path))
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[4:8] == b"n+2\x00":
        return nib.Nifti2Image.from_bytes(raw)
    if raw[344:348] == b"n+1\x00":
        return nib.Nifti1Image.from_bytes(raw)
    return nib.load(str(path))  # a pair header under another name: nibabel says what is wrong


@dataclass
class Parsed:
    """A non-DICOM image read and cleaned; identifiers are still original here (hashed by the caller)."""

    format: str
    data: bytes  # what goes into the object store
    values: NDArray[Any]
    patient_label: str | None = None
    session_label: str | None = None
    series_label: str = ""
    rows: int | None = None
    columns: int | None = None
    frames: int | None = None
    spacing: tuple[float, float] | None = None
    thickness: float | None = None
    bits: int | None = None
    photometric: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _bids_labels(rel: str) -> tuple[str | None, str | None]:
    sub = BIDS_SUB.search(rel)
    ses = BIDS_SES.search(rel)
    return (sub.group(1) if sub else None), (ses.group(1) if ses else None)


def read_nifti(path: Path, rel: str) -> Parsed:
    import nibabel as nib

    try:
        loaded = _load_nifti(path)
    except FileNotFoundError:  # nibabel opens a pair's .img by the header's name
        if path.name.lower().endswith(".hdr"):
            raise Rejected(MISSING_PAIR_IMAGE) from None
        raise Rejected("corrupt or truncated NIfTI (FileNotFoundError)") from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds on damaged files
        raise Rejected(f"corrupt or truncated NIfTI ({type(exc).__name__})") from None
    if not isinstance(loaded, nib.Nifti1Pair):  # NIfTI-1/2, single file or pair; Nifti2Image is a Nifti1Pair too
        if isinstance(loaded, nib.Cifti2Image):
            raise Rejected("CIFTI-2 file: surface or connectivity data, not an image volume")
        raise Rejected(f"not a NIfTI image ({type(loaded).__name__})")
    img: Any = loaded  # nibabel's types are loose
    try:
        header: Any = img.header.copy()
        raw = np.asanyarray(img.dataobj)
    except FileNotFoundError:  # a pair's .img is opened only now
        raise Rejected(MISSING_PAIR_IMAGE) from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds on damaged files
        raise Rejected(f"corrupt or truncated NIfTI ({type(exc).__name__})") from None
    if raw.ndim < 2 or raw.size == 0:
        raise Rejected("NIfTI holds no image (fewer than two dimensions)")
    # Free-text header fields and extensions can carry identifiers (some converters put DICOM headers there).
    for key in ("descrip", "aux_file", "db_name", "intent_name"):
        if key in header:
            header[key] = b""
    cleaned: Any = nib.Nifti1Image(raw, img.affine, header=header)  # type: ignore[no-untyped-call]
    cleaned.header.extensions.clear()
    data = gzip.compress(cleaned.to_bytes(), compresslevel=6, mtime=0)
    zooms = tuple(float(z) for z in header.get_zooms()[:3])
    sub, ses = _bids_labels(rel)
    stem = Path(rel).name
    for suffix in (".nii.gz", ".nii"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return Parsed(
        format=NIFTI,
        data=data,
        values=raw,
        patient_label=sub,
        session_label=ses,
        series_label=stem,
        rows=int(raw.shape[0]),
        columns=int(raw.shape[1]),
        frames=int(np.prod(raw.shape[2:])) if raw.ndim > 2 else 1,
        spacing=(zooms[0], zooms[1]) if len(zooms) >= 2 else None,
        thickness=zooms[2] if len(zooms) >= 3 else None,
        bits=int(raw.dtype.itemsize * 8),
        photometric="MONOCHROME2",
    )


def read_raster(path: Path, rel: str, fmt: str) -> Parsed:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode, size = img.mode, img.size
            pixels = img.tobytes()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise Rejected(f"corrupt or truncated {fmt.upper()} ({type(exc).__name__})") from None
    if mode not in PNG_MODES:  # palettes, CMYK and YCbCr JPEGs...: as RGB, which PNG can hold
        with Image.open(path) as img:
            converted = img.convert("RGB")
            mode, pixels = converted.mode, converted.tobytes()
    clean = Image.frombytes(mode, size, pixels)  # a fresh image: no text, EXIF or other metadata
    buf = io.BytesIO()
    clean.save(buf, format="PNG", optimize=False)
    values = np.asarray(clean)
    if mode in ("LA", "RGBA"):  # the alpha channel is not image content: statistics of the others only
        values = values[..., 0] if mode == "LA" else values[..., :3]
    sub, ses = _bids_labels(rel)
    bits = 16 if mode.startswith("I;16") or mode == "I" else 1 if mode == "1" else 8
    if mode == "1":
        values = values.astype(np.uint8)  # 0 and 1, not booleans
    photometric = "RGB" if values.ndim == 3 else "MONOCHROME2"
    return Parsed(
        format=PNG,
        data=buf.getvalue(),
        values=values,
        patient_label=sub,
        session_label=ses,
        series_label=Path(rel).stem,
        rows=size[1],
        columns=size[0],
        frames=1,
        bits=bits,
        photometric=photometric,
        extra={"original_format": fmt},
    )
