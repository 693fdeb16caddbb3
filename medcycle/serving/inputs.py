"""What a request may carry, checked at the door: files (DICOM, NIfTI, PNG), zips of them, or stored objects.

Every raw file is recognised by its bytes, checked (truncated DICOM pixel data, unreadable NIfTI/PNG, zip
bombs, path-traversal member names, nested archives) and cleaned before it is stored, so a bad upload is a
4xx at intake and never a failure in a worker:

* DICOM is de-identified with the catalog's PS3.15 Basic profile and key (the same pseudonyms as ingest and
  the DICOM intake); an image whose pixels may carry burnt-in text is refused.
* NIfTI loses its free-text header fields and extensions; PNG/JPEG are re-encoded as PNG without metadata
  (the catalog readers do both).
* Inputs given as object digests are taken as stored when a de-identifying intake stored them: a catalog
  instance (ingest), an input of an earlier inference job, or an instance DICOMweb or the C-STORE SCP
  accepted. Any other object (e.g. raw bytes sent to ``POST /v1/objects``) is fetched and checked and cleaned
  like an upload, and its cleaned bytes are what the job references.

Files become *cases*: the DICOM files of one series that stack — the same size and orientation — form one case
(a volume, or slices for a 2D model); images of a series that do not (a three-plane localizer, a derived image of
another size) form cases of their own, as does each multi-frame instance; each NIfTI or PNG file is its own case.
A case counts its images/slices, which is what the batcher counts.
File names are used in error messages only: they are never stored (folder names often carry patient names).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import math
import shutil
import warnings
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from medcycle.errors import PayloadTooLarge, UsageError, ValidationFailed
from medcycle.objects.base import DIGEST_RE

if TYPE_CHECKING:
    from medcycle.catalog.deid import Pseudonymizer
    from medcycle.objects.base import ObjectStore
    from medcycle.serving.config import ServingSettings

DICOM, NIFTI, PNG = "dicom", "nifti", "png"
SUFFIX = {DICOM: ".dcm", NIFTI: ".nii.gz", PNG: ".png"}
MiB = 1024 * 1024
IN_MEMORY = 32 * MiB  # an upload up to this size is held in memory: DICOM is checked and cleaned there, unwritten


#: Image storage SOP classes a model can take (pixel data of one frame or a volume), with their names. Every
#: intake refuses other classes (SR, presentation states, PDFs, RT objects, SEG, waveforms, ...): REST with 422,
#: STOW-RS and the C-STORE SCP with status 0x0122.
IMAGE_SOP_CLASSES: Final[dict[str, str]] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage",
}
IMAGE_CLASSES_HINT: Final = "Send image instances (CT, MR, CR, DX, MG, PET, NM)."


def not_an_image_class(sop_class: str) -> str | None:
    """Why an instance of ``sop_class`` cannot be a model's input (None: an image class it can take)."""
    if sop_class in IMAGE_SOP_CLASSES:
        return None
    if not sop_class:
        return "has no SOP Class UID"
    from pydicom.uid import UID

    uid = UID(sop_class)
    name = uid.name if uid.is_valid and uid.name != sop_class else "unknown"
    return f"is of SOP class {sop_class[:64]} ({name}), not an image class a model can take"


def _check_image_class(sop_class: str, label: str) -> None:
    problem = not_an_image_class(sop_class.strip())
    if problem is not None:
        raise ValidationFailed(f"{label} {problem}", hint=IMAGE_CLASSES_HINT)


@dataclass(frozen=True, slots=True)
class Upload:
    """A file given with a request: its bytes, a path or an open binary stream. ``name`` appears in errors only."""

    name: str
    data: bytes | Path | BinaryIO


InputLike = Upload | Path | bytes | str  # a str is the digest of a stored object


#: A single-frame DICOM image's rows, columns and ImageOrientationPatient (None where absent or not numbers).
Plane = tuple[int, int, tuple[float, ...] | None]
#: Direction cosines closer than this are one orientation (float noise in headers; a degree is about 0.017).
ORIENTATION_TOLERANCE: Final = 1e-3


@dataclass(frozen=True, slots=True)
class Prepared:
    """One checked input file: cleaned bytes to store (``data``) or an object already stored (``digest``)."""

    label: str
    format: str
    frames: int
    group: str  # DICOM: the (pseudonymous) SeriesInstanceUID; other formats: unique per file
    data: bytes | None = None
    digest: str | None = None
    instance: str | None = None  # DICOM: the (pseudonymous) SOPInstanceUID
    plane: Plane | None = None  # DICOM, one frame: what images of a series must share to be stacked (see cases())


@dataclass(frozen=True, slots=True)
class Case:
    """Files that are predicted together (the images of a series that stack, or one NIfTI/PNG file) and how many
    images they hold."""

    kind: str
    inputs: tuple[int, ...]  # indices into the job's input list
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "inputs": list(self.inputs), "images": self.images}


# -- materialising what was given -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Local:
    path: Path  # where the file is, or (``data`` set) where it is written should a reader need a file
    label: str
    digest: str | None  # set when the file is a stored object (taken as stored)
    data: bytes | None = None  # the file's bytes, when it was given in memory and never written to ``path``

    def on_disk(self) -> Path:
        """``path``, written from ``data`` first where it is not on disk yet (readers that take only files)."""
        if self.data is not None and not self.path.exists():
            self.path.write_bytes(self.data)
        return self.path

    def head(self, size: int) -> bytes:
        if self.data is not None:
            return self.data[:size]
        with self.path.open("rb") as fh:
            return fh.read(size)

    def read(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()


def _read_small(src: BinaryIO, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of ``src`` and whether that was all of it."""
    data = src.read(limit + 1)
    return (data, True) if len(data) <= limit else (data, False)


def _write_stream(src: BinaryIO, dest: Path, limit: int, label: str, head: bytes = b"") -> None:
    """``head`` (read from ``src`` already), then the rest of ``src``, into ``dest``; at most ``limit`` bytes."""
    written = 0
    with dest.open("wb") as out:
        while chunk := (head or src.read(MiB)):
            head = b""
            written += len(chunk)
            if written > limit:
                raise PayloadTooLarge(f"{label} is larger than {limit} bytes",
                                      hint="Send smaller files, or raise serving max_upload_bytes.")
            out.write(chunk)


def materialise(items: Sequence[InputLike], folder: Path, objects: ObjectStore, limits: ServingSettings,
                tag: str = "r", *, clean: Collection[str] = ()) -> list[_Local]:
    """Each given input as a local file in ``folder``, named ``TAG-…`` (a request's own prefix, so requests can
    share a folder); zips expanded (safely), stored objects fetched. A stored object whose digest is in
    ``clean`` (stored de-identified) is taken as stored; any other one is checked and cleaned as an upload."""
    if not items:
        raise UsageError("a request needs at least one input", hint="Send a DICOM, NIfTI or PNG file, or a zip.")
    out: list[_Local] = []
    for n, item in enumerate(items):
        dest = folder / f"{tag}-in-{n:05d}"
        if isinstance(item, str):
            if not DIGEST_RE.match(item):
                raise UsageError(f"input {n + 1} ({item[:20]!r}) is not an object digest",
                                 hint="Give 64 hex characters of a stored object, or pass the file itself.")
            objects.get_to_path(item, dest)
            label, digest = f"object {item[:12]}…", (item if item in clean else None)
        elif isinstance(item, Path):
            if not item.is_file():
                raise UsageError(f"{item.name} is not a file", hint="Pass existing files.")
            shutil.copyfile(item, dest)
            label, digest = item.name, None
        elif isinstance(item, bytes | bytearray) or (isinstance(item, Upload) and not isinstance(item.data, Path)):
            # in memory, or read into it when small: checked and cleaned there, never written to scratch
            if isinstance(item, bytes | bytearray):
                label, data = f"input {n + 1}", bytes(item)
            else:
                label = item.name or f"input {n + 1}"
                if isinstance(item.data, bytes | bytearray):
                    data = bytes(item.data)
                else:
                    stream = item.data
                    assert not isinstance(stream, Path)
                    head, whole = _read_small(stream, min(IN_MEMORY, limits.max_upload_bytes))
                    if not whole:
                        _write_stream(stream, dest, limits.max_upload_bytes, label, head)
                        out.extend(_local_or_zip(dest, label, folder, tag, n, limits))
                        _check_count(out, limits)
                        continue
                    data = head
            if zipfile.is_zipfile(io.BytesIO(data)):
                dest.write_bytes(data)
                out.extend(_local_or_zip(dest, label, folder, tag, n, limits))
            else:
                out.append(_Local(dest, label, None, data))
            _check_count(out, limits)
            continue
        elif isinstance(item, Upload):  # a path
            label, digest = item.name or f"input {n + 1}", None
            shutil.copyfile(item.data, dest)
        else:
            raise UsageError(f"input {n + 1} is a {type(item).__name__}",
                             hint="Pass files (Path, bytes, Upload) or object digests.")
        if digest is None:
            out.extend(_local_or_zip(dest, label, folder, tag, n, limits))
        else:
            out.append(_Local(dest, label, digest))
        _check_count(out, limits)
    return out


def _local_or_zip(dest: Path, label: str, folder: Path, tag: str, n: int, limits: ServingSettings) -> list[_Local]:
    """The raw file written at ``dest``, or the members of the zip it is (extracted; the archive removed)."""
    if not zipfile.is_zipfile(dest):
        return [_Local(dest, label, None)]
    members = list(_unzip(dest, folder / f"{tag}-zip-{n:05d}", label, limits))
    dest.unlink()
    return members


def _check_count(out: list[_Local], limits: ServingSettings) -> None:
    if len(out) > limits.max_files:
        raise PayloadTooLarge(f"the request holds more than {limits.max_files} files",
                              hint="Split it into several requests, or raise serving max_files.")


def _safe_member(name: str, label: str) -> str:
    """The member name if it stays inside the archive; absolute paths, '..', drive letters are refused."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if (not parts or posix.startswith("/") or any(p == ".." for p in parts) or (":" in parts[0])
            or any(ord(c) < 32 for c in name)):
        raise ValidationFailed(f"{label} holds a member with an unsafe name (absolute, '..' or a drive letter)",
                               hint="Zip the files with relative names inside one folder.")
    return posix


def _unzip(archive: Path, folder: Path, label: str, limits: ServingSettings) -> Iterator[_Local]:
    """Members of ``archive`` written to ``folder`` under generated names, with bounded sizes and ratios."""
    folder.mkdir()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValidationFailed(f"{label} is not a readable zip archive ({type(exc).__name__})",
                               hint="Send a complete zip file.") from None
    total = 0
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > limits.max_files:
            raise PayloadTooLarge(f"{label} holds {len(members)} files (at most {limits.max_files})",
                                  hint="Split the archive, or raise serving max_files.")
        for k, info in enumerate(members):
            name = _safe_member(info.filename, label)
            base = PurePosixPath(name).name
            if base.startswith("._") or name.startswith("__MACOSX/") or base in {".DS_Store", "Thumbs.db",
                                                                                 "desktop.ini", "DICOMDIR"}:
                continue
            if info.flag_bits & 0x1:
                raise ValidationFailed(f"{label}: {base} is encrypted", hint="Send an archive without a password.")
            dest = folder / f"m-{k:05d}"
            budget = limits.zip_max_bytes - total
            try:
                with zf.open(info) as src, dest.open("wb") as out:
                    size = 0
                    while chunk := src.read(MiB):
                        size += len(chunk)
                        if size > budget:
                            raise PayloadTooLarge(f"{label} expands to more than {limits.zip_max_bytes} bytes",
                                                  hint="Send smaller archives (a zip bomb is refused).")
                        if size > MiB and size > limits.zip_max_ratio * max(info.compress_size, 1):
                            raise PayloadTooLarge(f"{label}: {base} expands more than {limits.zip_max_ratio:g}×",
                                                  hint="Such compression ratios are refused (zip bomb).")
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, zlib.error, lzma.LZMAError) as exc:
                # a damaged compressed stream raises its codec's own error (zlib.error is no OSError)
                raise ValidationFailed(f"{label}: {base} cannot be extracted ({type(exc).__name__})",
                                       hint="Send a complete, unencrypted zip (deflate or stored).") from None
            total += size
            if zipfile.is_zipfile(dest):
                raise ValidationFailed(f"{label} holds another archive ({base})",
                                       hint="Send one level of zip: put the images in the archive directly.")
            yield _Local(dest, f"{label}!{base}", None)


# -- checking and cleaning one file ---------------------------------------------------------------------------
def sniff(path: Path, label: str | None = None) -> str:
    """DICOM, NIfTI or PNG (JPEG counts as PNG: it is re-encoded); anything else is refused."""
    with path.open("rb") as fh:
        return sniff_head(fh.read(352), label or path.name)


def sniff_head(head: bytes, label: str) -> str:
    """:func:`sniff` of a file's first 352 bytes."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return PNG
    if len(head) >= 348 and head[344:348] in {b"n+1\x00", b"ni1\x00"}:
        return NIFTI
    if head.startswith(b"\x1f\x8b"):  # gzip: a .nii.gz (checked when read)
        return NIFTI
    raise ValidationFailed(f"{label} is not DICOM (with its 'DICM' preamble), NIfTI or PNG",
                           hint="Send DICOM PS3.10 files, NIfTI (.nii/.nii.gz), PNG or a zip of them.")


def _dicom_read(path: Path, label: str, *, pixels: bool) -> Any:
    import pydicom

    from medcycle.catalog.deid import quiet_pydicom

    with quiet_pydicom(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # third-party warnings may quote header values
        try:
            return pydicom.dcmread(path, defer_size=None if pixels else "4 KB")
        except Exception as exc:  # noqa: BLE001 - corrupt files raise many kinds; the text may quote PHI
            raise ValidationFailed(f"{label} is a corrupt or truncated DICOM file ({type(exc).__name__})",
                                   hint="Send the complete file again.") from None


def _dicom_frames(ds: Any, label: str, pixel_bytes: Callable[[], int], compressed: Callable[[], bool]) -> int:
    """Frames of an image instance; refuses instances without pixels and truncated native pixel data.

    ``ds`` is a pydicom dataset or the byte-level path's view of one; ``compressed`` says whether the transfer
    syntax is, and ``pixel_bytes`` gives the length of the pixel data (both asked only once the image
    attributes were found)."""
    if "PixelData" not in ds:
        raise ValidationFailed(f"{label} holds no pixel data (is it an image?)",
                               hint="Send image instances (CT, MR, CR, DX, …), not SR, SEG or presentation states.")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        raise ValidationFailed(f"{label} lacks Rows, Columns or BitsAllocated",
                               hint="Send a complete image instance.") from None
    if rows < 1 or cols < 1 or frames < 1:
        raise ValidationFailed(f"{label} declares an empty image", hint="Send a complete image instance.")
    if not compressed():
        expected = rows * cols * frames * samples * bits // 8
        have = pixel_bytes()
        if have < expected:
            raise ValidationFailed(f"{label} is truncated: {have} of {expected} pixel bytes",
                                   hint="Send the complete file again.")
    return frames


def _nifti_bytes(header: bytes) -> int:
    """The bytes of image data a NIfTI-1 header (its first 348 bytes) declares: the product of its dimensions
    times its bits per voxel, in the header's own byte order; 0 when the header makes no sense."""
    import struct

    order = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
    dim = struct.unpack(order + "8h", header[40:56])
    bitpix = int(struct.unpack(order + "h", header[72:74])[0])
    if not 1 <= dim[0] <= 7 or bitpix <= 0:
        return 0
    voxels = 1
    for size in dim[1:dim[0] + 1]:
        voxels *= max(int(size), 1)
    return voxels * bitpix // 8


def _check_nifti_expansion(header: bytes, compressed: int, label: str, limits: ServingSettings) -> None:
    """A .nii.gz is decoded whole in memory: the zip rules bound what it may expand to (a NIfTI gzip bomb of
    1 MB declared 1.2 GB of zeros and took 2.4 GB of the API's memory before it was refused)."""
    declared = _nifti_bytes(header)
    if declared > limits.zip_max_bytes:
        raise PayloadTooLarge(f"{label} declares {declared} bytes of image data (at most {limits.zip_max_bytes})",
                              hint="Send smaller volumes, or raise serving zip_max_bytes.")
    if declared > MiB and declared > limits.zip_max_ratio * max(compressed, 1):
        raise PayloadTooLarge(f"{label} expands more than {limits.zip_max_ratio:g}× (its header declares "
                              f"{declared} bytes)", hint="Such compression ratios are refused (a gzip bomb).")


def prepare(local: _Local, pseudo: Pseudonymizer | None, limits: ServingSettings | None = None) -> Prepared:
    """Check (and, for raw files, clean) one input file (``limits``: the serving settings' archive bounds)."""
    fmt = sniff_head(local.head(352), local.label)
    if fmt == DICOM:
        return _prepare_dicom(local, pseudo)
    local.on_disk()  # the NIfTI and PNG readers take files
    from medcycle.catalog import readers

    unique = local.digest or f"file:{local.path.name}"
    if fmt == NIFTI:
        import gzip

        with local.path.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        named = local.path.with_name(local.path.name + (".nii.gz" if gz else ".nii"))
        local.path.rename(named)
        try:
            if gz:  # a gzip that is not a NIfTI is refused here, before nibabel guesses
                with gzip.open(named) as g:
                    head = g.read(348)
                if len(head) < 348 or head[344:348] not in {b"n+1\x00", b"ni1\x00"}:
                    raise ValidationFailed(f"{local.label} is gzip but not NIfTI",
                                           hint="Send .nii.gz files, or DICOM/PNG.")
                from medcycle.serving.config import ServingSettings

                _check_nifti_expansion(head, named.stat().st_size, local.label, limits or ServingSettings())
            parsed = readers.read_nifti(named, named.name)
        except readers.Rejected as exc:
            raise ValidationFailed(f"{local.label}: {exc.reason}", hint="Send a complete NIfTI file.") from None
        except (OSError, EOFError) as exc:
            raise ValidationFailed(f"{local.label} is a corrupt NIfTI file ({type(exc).__name__})",
                                   hint="Send a complete NIfTI file.") from None
        shape = parsed.values.shape
        frames = int(shape[2]) if len(shape) > 2 else 1
        if len(shape) > 3 and any(int(s) > 1 for s in shape[3:]):
            raise ValidationFailed(f"{local.label} is 4D ({'x'.join(str(s) for s in shape)})",
                                   hint="Send one 2D image or 3D volume per file.")
        _check_nifti_values(parsed.values, local.label)
        return Prepared(local.label, NIFTI, max(frames, 1), unique, None if local.digest else parsed.data,
                        local.digest)
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            parsed = readers.read_raster(local.path, local.path.name, "png")
    except readers.Rejected as exc:
        raise ValidationFailed(f"{local.label}: {exc.reason}", hint="Send a complete PNG file.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(f"{local.label} has too many pixels to be an image we can decode safely",
                              hint="Send images of at most a few tens of megapixels.") from None
    height, width = (int(n) for n in parsed.values.shape[:2])
    if min(height, width) < 2:
        raise ValidationFailed(f"{local.label} is {width}x{height} pixels: not an image a model can take",
                               hint="Send images of at least 2 pixels per side.")
    return Prepared(local.label, PNG, 1, unique, None if local.digest else parsed.data, local.digest)


def _check_nifti_values(values: Any, label: str) -> None:
    """Refuse what a worker cannot read as one grey-level image: voxels that are not real numbers (RGB, complex:
    the training reader fails on them, or drops the imaginary part), NaN or infinite voxels (they turned the
    intensity scaling and so the whole image, or the network's output, into NaN — a NaN probability read as a
    negative finding), and an image with a side of one voxel below its slices (not an image either)."""
    import numpy as np

    values = np.asanyarray(values)
    dtype = values.dtype
    if dtype.fields is not None or dtype.kind not in "biuf":
        kind = "RGB" if dtype.fields is not None else {"c": "complex"}.get(dtype.kind, str(dtype))
        raise ValidationFailed(f"{label} holds {kind} voxels, not one grey value per voxel",
                               hint="Send a scalar (grey-level) image: one value per voxel.")
    if dtype.kind == "f":
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ValidationFailed(f"{label} holds {bad} voxels that are not finite numbers (NaN or infinite)",
                                   hint="Replace them (e.g. with the background value) and send the image again.")
    dims = [int(n) for n in values.shape[:3]]
    if len(dims) == 3 and dims[2] == 1:
        dims = dims[:2]
    if min(dims) < 2:
        raise ValidationFailed(f"{label} has a side of one voxel ({'x'.join(str(n) for n in values.shape)})",
                               hint="Send 2D images or 3D volumes of at least 2 voxels per side.")


def _pydicom_frames(ds: Any, label: str) -> int:
    return _dicom_frames(ds, label, lambda: len(ds.PixelData),
                         lambda: bool(ds.file_meta.TransferSyntaxUID.is_compressed))


def _prepare_dicom(local: _Local, pseudo: Pseudonymizer | None) -> Prepared:
    if local.digest is not None:  # stored by an intake that de-identified it already
        ds = _dicom_read(local.path, local.label, pixels=False)
        _check_image_class(str(ds.get("SOPClassUID", "") or ""), local.label)
        frames = _pydicom_frames(ds, local.label)
        return Prepared(local.label, DICOM, frames, f"series:{ds.get('SeriesInstanceUID', local.digest)}",
                        digest=local.digest, instance=str(ds.get("SOPInstanceUID", "")) or None,
                        plane=_plane(ds, frames))
    if pseudo is None:
        raise UsageError("raw DICOM needs the de-identification key", hint="Pass the platform's pseudonymizer.")
    data = local.read()

    def fallback_key() -> str:  # keys the patient of a file without any id or UID (rare): its content digest
        return hashlib.sha256(data).hexdigest()

    fast = _prepare_dicom_fast(local, pseudo, data, fallback_key)
    if fast is not None:
        return fast
    from medcycle.catalog.deid import DeidOptions, deidentify, quiet_pydicom

    ds = _dicom_read(local.on_disk(), local.label, pixels=True)
    _check_image_class(str(ds.get("SOPClassUID", "") or ""), local.label)
    frames = _pydicom_frames(ds, local.label)
    result = deidentify(ds, pseudo, DeidOptions(), fallback_key=fallback_key)
    _refuse_burnt_in(local, result.quarantine_reason)
    buf = io.BytesIO()
    with quiet_pydicom(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result.dataset.save_as(buf, enforce_file_format=True)
        except Exception as exc:  # noqa: BLE001 - a dataset pydicom cannot write back is refused
            raise ValidationFailed(f"{local.label} cannot be re-encoded after de-identification "
                                   f"({type(exc).__name__})", hint="Send a valid DICOM instance.") from None
    return Prepared(local.label, DICOM, frames, f"series:{result.series_uid or result.sop_uid}", data=buf.getvalue(),
                    instance=result.sop_uid or None, plane=_plane(ds, frames))


def _prepare_dicom_fast(local: _Local, pseudo: Pseudonymizer, data: bytes,
                        fallback_key: Callable[[], str]) -> Prepared | None:
    """The byte-level path of ingest (:mod:`medcycle.catalog.deid_fast`): the same de-identified bytes as the
    pydicom path without building a dataset; None where a file needs pydicom, which then judges it (and says
    why a file is refused)."""
    from pydicom.uid import UID

    from medcycle.catalog.deid import DeidOptions
    from medcycle.catalog.deid_fast import Fallback, deidentify_bytes

    try:
        fast = deidentify_bytes(data, pseudo, DeidOptions(), fallback_key=fallback_key)
    except (Fallback, ValidationFailed):
        return None
    pixels = fast.pixels
    _check_image_class(str(fast.source.get("SOPClassUID", "") or ""), local.label)
    compressed = bool(UID(fast.transfer_syntax).is_compressed) or (pixels is not None and pixels.encapsulated)
    frames = _dicom_frames(fast.source, local.label, lambda: pixels.length if pixels is not None else 0,
                           lambda: compressed)
    result = fast.result
    _refuse_burnt_in(local, result.quarantine_reason)
    return Prepared(local.label, DICOM, frames, f"series:{result.series_uid or result.sop_uid}", data=fast.data,
                    instance=result.sop_uid or None, plane=_plane(fast.source, frames))


def _refuse_burnt_in(local: _Local, reason: str | None) -> None:
    if reason:
        raise ValidationFailed(f"{local.label} may show patient data in its pixels ({reason})",
                               hint="Send images whose BurnedInAnnotation is NO, or de-identify the pixels first.")


def _plane(ds: Any, frames: int) -> Plane | None:
    """The :data:`Plane` of a single-frame image (``ds``: a pydicom dataset or the byte-level path's view of one);
    None for a multi-frame instance (a volume or a sequence of its own)."""
    if frames > 1:
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        return None
    orientation: tuple[float, ...] | None = None
    try:
        raw = ds.get("ImageOrientationPatient")
        if raw is not None and not isinstance(raw, str | bytes) and len(raw) == 6:
            values = tuple(float(v) for v in raw)
            orientation = values if all(math.isfinite(v) for v in values) else None
    except (TypeError, ValueError):
        orientation = None
    return rows, cols, orientation


def _same_plane(a: Plane, b: Plane) -> bool:
    if a[:2] != b[:2]:
        return False
    if a[2] is None or b[2] is None:
        return a[2] is None and b[2] is None
    return all(abs(x - y) <= ORIENTATION_TOLERANCE for x, y in zip(a[2], b[2], strict=True))


def cases(files: Sequence[Prepared]) -> list[Case]:
    """Group prepared files into cases, in the order first seen.

    The single-frame images of a DICOM series that stack — the same rows and columns, the same orientation — are
    one case; images of the series that do not stack with them (a three-plane localizer's planes, a radial or
    derived image of another size) are cases of their own, one per size and orientation: stacked, they made no
    volume (a 3D model was given planes of three orientations as one) or failed the job in the worker. A
    multi-frame instance is a case of its own (two of one series cannot be stacked either).

    A DICOM instance given more than once (the same SOP Instance UID: a file sent twice, in a zip and beside it,
    or in another transfer syntax) is one image of its series: the first copy is used, the others are in no case
    (stacking them would give the volume the same slice twice)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    planes: dict[str, list[Plane]] = {}
    seen: set[tuple[str, str]] = set()
    for i, f in enumerate(files):
        if f.format == DICOM and f.instance is not None:
            if (f.group, f.instance) in seen:
                continue
            seen.add((f.group, f.instance))
        key: tuple[Any, ...]
        if f.format != DICOM:
            key = (i, f.group)
        elif f.frames > 1:
            key = (f.group, "frames", i)
        elif f.plane is None:
            key = (f.group,)
        else:
            known = planes.setdefault(f.group, [])
            stack = next((k for k, p in enumerate(known) if _same_plane(p, f.plane)), None)
            if stack is None:
                stack = len(known)
                known.append(f.plane)
            key = (f.group, "plane", stack)
        groups.setdefault(key, []).append(i)
    out = []
    for members in groups.values():
        fmt = files[members[0]].format
        out.append(Case(fmt, tuple(members), sum(files[i].frames for i in members)))
    return out
