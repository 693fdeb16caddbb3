"""Result files of one case, as bytes: NIfTI mask, PNG overlay, DICOM SEG, DICOM secondary capture.

Every file names the model version that made it (SEG: algorithm identification and software versions; SC:
the burnt-in caption, series description and software versions; PNG: the caption). DICOM outputs reference
the source series (SEG: every source instance; SC: the source image) and copy its patient and study modules
— which, for inputs that came through intake, are the de-identified ones (DICOMweb re-identifies at egress).
UIDs derive from the result key, so a recomputed result names the same instances.
"""

from __future__ import annotations

import gzip
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medcycle.errors import ValidationFailed
from medcycle.serving.schemas import OutputKind

U8 = NDArray[np.uint8]
MEDIA = {OutputKind.NIFTI: "application/gzip", OutputKind.PNG: "image/png", OutputKind.SEG: "application/dicom",
         OutputKind.SC: "application/dicom"}
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
PATIENT_STUDY = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                 "PatientAge", "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
                 "AccessionNumber")
FILL = (255, 64, 64)


@dataclass(frozen=True, slots=True)
class Output:
    kind: OutputKind
    data: bytes

    @property
    def media_type(self) -> str:
        return MEDIA[self.kind]


def uid_for(*parts: object) -> str:
    """A UID that depends only on ``parts`` (the same result names the same instances)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["medcycle-serving", *(str(p) for p in parts)]))


# -- images ---------------------------------------------------------------------------------------------------
def slice_of_interest(pixels: NDArray[Any], mask: NDArray[Any] | None, image: int | None) -> int:
    if pixels.ndim == 2:
        return 0
    if mask is not None and mask.ndim == 3 and mask.any():
        return int(np.argmax((mask != 0).reshape(mask.shape[0], -1).sum(axis=1)))
    if image is not None and 0 <= image < pixels.shape[0]:
        return int(image)
    return int(pixels.shape[0]) // 2


def overlay_rgb(pixels: NDArray[Any], mask: NDArray[Any] | None, caption: str, *, image: int | None = None) -> U8:
    """RGB of the image (the slice with most mask, or ``image``, or the middle one) with the mask filled at 35 %
    and outlined, and ``caption`` on a bar under it."""
    from PIL import Image, ImageDraw, ImageFont

    from medcycle.experiments.images import overlay, to_uint8

    k = slice_of_interest(pixels, mask, image)
    plane = pixels if pixels.ndim == 2 else pixels[k]
    m = None if mask is None else (mask if mask.ndim == 2 else mask[k])
    rgb = overlay(to_uint8(np.asarray(plane, dtype=np.float32)), m)
    if m is not None and m.any():
        fill = np.asarray(FILL, dtype=np.float32)
        hit = m != 0
        rgb[hit] = (0.65 * rgb[hit] + 0.35 * fill).astype(np.uint8)
    font = ImageFont.load_default()
    bar = max(14, rgb.shape[0] // 16)
    canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + bar), (0, 0, 0))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    ImageDraw.Draw(canvas).text((2, rgb.shape[0] + max(1, (bar - 11) // 2)), caption, fill=(255, 255, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def png(rgb: U8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def nifti_mask(mask: NDArray[Any], affine: NDArray[np.float64] | None,
               spacing: tuple[float, float, float] | None = None) -> bytes:
    """The mask ``(slices, rows, cols)`` or ``(rows, cols)`` as gzipped NIfTI, axes ``(i, j, k)`` = (col, row,
    slice) like a DICOM conversion, on ``affine`` (voxel → RAS) or a diagonal of ``spacing``."""
    import nibabel as nib

    arr = np.asarray(mask, dtype=np.uint8)
    data = np.ascontiguousarray(arr.transpose(tuple(reversed(range(arr.ndim)))))
    matrix = None if affine is None else np.asarray(affine, dtype=np.float64)
    if matrix is None or matrix.shape != (4, 4) or not np.isfinite(matrix).all() \
            or abs(float(np.linalg.det(matrix[:3, :3]))) < 1e-12:
        # No usable grid: a diagonal of the spacing, 1 mm for an axis whose spacing is unknown, zero or not a
        # number (a CR's PixelSpacing of 0\0, as uncalibrated devices write it, made nibabel refuse the affine:
        # "Could not decompose affine", the job retried and dead-lettered)
        dz, dy, dx = (s if math.isfinite(s) and s > 0 else 1.0 for s in (spacing or (1.0, 1.0, 1.0)))
        matrix = np.diag([dx, dy, dz, 1.0])
    img: Any = nib.Nifti1Image(data, matrix)  # type: ignore[no-untyped-call]
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"medcycle serving mask"
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


# -- DICOM ----------------------------------------------------------------------------------------------------
def dicom_seg(datasets: Sequence[Any], mask: NDArray[Any], classes: Sequence[str], *, model: str, version: str,
              key: str) -> bytes:
    """A binary DICOM SEG of ``mask`` (``(slices, rows, cols)``, values 1…K) on the source ``datasets`` (slice
    order), one segment per class, made by the algorithm ``model`` ``version``."""
    import highdicom as hd
    from pydicom.sr.coding import Code

    arr = np.asarray(mask)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[0] != len(datasets):
        raise ValidationFailed(f"a mask of {arr.shape[0]} slices does not fit {len(datasets)} source images",
                               hint="Pass the source series in slice order.")
    tissue = Code("85756007", "SCT", "Tissue")
    algorithm = hd.AlgorithmIdentificationSequence(name=model[:64], version=version[:64],
                                                   family=Code("123109", "DCM", "Artificial Intelligence"))
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i, segment_label=name[:64], segmented_property_category=tissue,
        segmented_property_type=tissue, algorithm_type="AUTOMATIC", algorithm_identification=algorithm)
        for i, name in enumerate(classes, start=1)]
    pixels = np.stack([arr == i for i in range(1, len(classes) + 1)], axis=-1)
    try:
        with warnings.catch_warnings():
            # highdicom warns about names copied from the source (a pseudonym is one component): not ours to fix
            warnings.simplefilter("ignore", UserWarning)
            seg = hd.seg.Segmentation(
                source_images=list(datasets), pixel_array=pixels, segmentation_type="BINARY",
                segment_descriptions=descriptions, series_instance_uid=uid_for(key, "seg-series"), series_number=900,
                sop_instance_uid=uid_for(key, "seg"), instance_number=1, manufacturer="medcycle",
                manufacturer_model_name=model[:64], software_versions=f"{model}@{version}"[:64],
                device_serial_number="0", content_label="MEDCYCLE_AI", content_description=f"{model}@{version}"[:64],
                omit_empty_frames=bool(pixels.any()), specific_character_set=_character_set(datasets[0]))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ValidationFailed(f"a DICOM SEG cannot be made on this series: {exc}",
                               hint="The source series needs complete headers (UIDs, geometry).") from None
    seg.SeriesDescription = f"AI segmentation {model}@{version}"[:64]
    buf = io.BytesIO()
    seg.save_as(buf)
    return buf.getvalue()


def _character_set(ds: Any) -> str | list[str] | None:
    """The source's SpecificCharacterSet as highdicom takes it: an empty first value (the default repertoire
    before ISO 2022 extensions, e.g. ``\\ISO 2022 IR 87`` of Japanese studies) is written ``ISO 2022 IR 6``, which
    means the same (PS3.3 C.12.1.1.2); highdicom refuses the empty one."""
    value = ds.get("SpecificCharacterSet")
    if value is None or isinstance(value, str):
        return value or None
    terms = [str(v).strip() for v in value]
    if len(terms) > 1 and not terms[0]:
        terms[0] = "ISO 2022 IR 6"
    return [t for t in terms if t] or None


def dicom_sc(ref: Any, rgb: U8, *, model: str, version: str, key: str, description: str) -> bytes:
    """A secondary capture (RGB, burnt-in caption) in the study and patient of ``ref``, referencing it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    from medcycle.store.base import utcnow

    sop_uid = uid_for(key, "sc")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SC_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in PATIENT_STUDY:
        if keyword in ref:
            setattr(ds, keyword, ref.data_element(keyword).value)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    if "StudyInstanceUID" not in ds:
        raise ValidationFailed("the source image has no StudyInstanceUID", hint="Send complete DICOM images.")
    now = utcnow()
    ds.SOPClassUID, ds.SOPInstanceUID = SC_STORAGE, sop_uid
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = uid_for(key, "sc-series"), 901, 1
    ds.SeriesDescription = f"AI {description} {model}@{version}"[:64]
    ds.Manufacturer, ds.ManufacturerModelName = "medcycle", model[:64]
    ds.SoftwareVersions = f"{model}@{version}"[:64]
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ref.get("PatientOrientation", "") or ""
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = f"AI result overlay by {model}@{version}"[:1024]
    source = Dataset()
    source.ReferencedSOPClassUID = ref.SOPClassUID
    source.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    ds.SourceImageSequence = [source]
    series = Dataset()
    series.SeriesInstanceUID = ref.SeriesInstanceUID
    instance = Dataset()
    instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID = ref.SOPClassUID, ref.SOPInstanceUID
    series.ReferencedInstanceSequence = [instance]
    ds.ReferencedSeriesSequence = [series]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
