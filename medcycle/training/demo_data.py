"""Demo data for the whole cycle (``medcycle demo data``): synthetic chest studies as real DICOM files.

* **Radiographs** (DX): chest-like images — body, lungs, mediastinum, spine, ribs — half of them with a
  round lesion in a lung. Each has a class label (``lesion``/``normal``), a bounding box and a mask.
* **CT volumes**: chest-like HU volumes (body, lungs, spine), most with a spherical nodule in a lung,
  with a mask.
* **Sources and scanners** with different intensity profiles: gain, offset, noise, bits stored, gamma,
  a modality LUT (rescale slope/intercept), MONOCHROME1 storage; CT scanners with different noise,
  kernels, pixel spacing and slice thickness.

Everything follows from ``seed`` (UIDs included): the same call writes the same bytes. Layout::

    ROOT/dicom/<source>/<patient>/xr/image.dcm        radiograph (DX)
    ROOT/dicom/<source>/<patient>/xr/mask.dcm         its mask: Modality SEG, same study, own series
    ROOT/dicom/<source>/<patient>/ct/image/*.dcm      CT series, one file per slice
    ROOT/dicom/<source>/<patient>/ct/mask/*.dcm       mask series (Modality SEG) on the same slice positions
    ROOT/masks/<source>/<patient>/xr.png              the radiograph mask as PNG (0/255)
    ROOT/masks/<source>/<patient>/ct.nii.gz           the CT mask as NIfTI (axes i=column, j=row, k=slice)
    ROOT/labels.csv                                   one row per study: label, box, files (original uids)
    ROOT/manifest.csv                                 images with a patient-level split and a ``mask`` column,
                                                      so training can read ROOT directly (``data.path``)

:func:`load` takes it through the platform: ingest (de-identified) per source, datasets ``demo-xr``
(radiographs and their masks) and ``demo-ct`` (CT series and their masks), study labels with pseudonymous
uids, and a frozen, patient-level split version ``v1`` of each.

The masks are stored as Secondary Capture images with Modality ``SEG`` (a simple stand-in for a DICOM
Segmentation object) in the image's study, which is how a trainer pairs them (``data.mask_modality``).
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage, DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage
from pydicom.uid import generate_uid as _generate_uid

from medcycle.testing.dicom import FakePatient, base_dataset

F32 = NDArray[np.float32]
LABEL_FIELDS = ("kind", "source", "manufacturer", "model", "patient_id", "study_uid", "label",
                "x0", "y0", "z0", "x1", "y1", "z1", "image", "mask", "dicom_mask")
MANIFEST_FIELDS = ("path", "split", "labels", "uid", "patient", "study", "series", "source", "modality", "format",
                   "manufacturer", "model", "mask")


@dataclass(frozen=True, slots=True)
class Scanner:
    """A radiography detector's intensity profile: ``stored = (gain·4095·a^gamma + offset + noise − intercept) / slope``
    for attenuation-like brightness ``a`` in [0, 1], inverted when stored as MONOCHROME1."""

    source: str
    manufacturer: str
    model: str
    gain: float
    offset: float
    noise: float
    bits: int
    gamma: float = 1.0
    monochrome1: bool = False
    slope: float = 1.0
    intercept: float = 0.0


@dataclass(frozen=True, slots=True)
class CtScanner:
    source: str
    manufacturer: str
    model: str
    noise: float  # HU standard deviation
    kernel: str
    spacing: float  # mm per pixel at 64 pixels across (scaled with the size)
    thickness: float  # mm


SCANNERS: tuple[Scanner, ...] = (
    Scanner("clinic-a", "Medcycle Phantoms", "DR-Alpha", gain=0.85, offset=0, noise=30, bits=12),
    Scanner("clinic-a", "Medcycle Phantoms", "DR-Beta", gain=0.7, offset=300, noise=20, bits=12, gamma=1.1),
    Scanner("clinic-b", "Northwind Imaging", "FlatPanel-X", gain=3.2, offset=1200, noise=140, bits=14,
            monochrome1=True),
    Scanner("clinic-c", "Contoso Medical", "CR-7", gain=0.22, offset=40, noise=8, bits=10, gamma=0.8, slope=2.0,
            intercept=-50),
)
CT_SCANNERS: tuple[CtScanner, ...] = (
    CtScanner("clinic-a", "Medcycle Phantoms", "CT-Prime", noise=12, kernel="B30f", spacing=0.7, thickness=1.25),
    CtScanner("clinic-b", "Northwind Imaging", "Helix-64", noise=35, kernel="LUNG", spacing=0.8, thickness=2.5),
    CtScanner("clinic-c", "Contoso Medical", "Tomo-S", noise=20, kernel="STANDARD", spacing=0.6, thickness=2.0),
)


@dataclass(frozen=True, slots=True)
class Study:
    """One generated study (original, identifying uids — the platform only ever sees pseudonyms)."""

    kind: str  # xr or ct
    source: str
    manufacturer: str
    model: str
    patient_id: str
    study_uid: str
    series_uid: str
    label: str
    box: tuple[int, ...]  # (x0, y0, x1, y1) or (x0, y0, z0, x1, y1, z1); empty without a lesion
    image: tuple[str, ...]  # paths relative to ROOT: one file, or the slices
    mask: str  # PNG or NIfTI mask, relative to ROOT
    dicom_mask: tuple[str, ...]
    split: str


@dataclass
class DemoData:
    root: Path
    seed: int
    studies: list[Study] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        return sorted({s.source for s in self.studies})

    def count(self, kind: str, label: str | None = None) -> int:
        return sum(1 for s in self.studies if s.kind == kind and (label is None or s.label == label))

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "seed": self.seed, "sources": self.sources,
                "radiographs": self.count("xr"), "radiographs_with_lesion": self.count("xr", "lesion"),
                "volumes": self.count("ct"), "volumes_with_nodule": self.count("ct", "nodule"),
                "labels": str(self.root / "labels.csv"), "manifest": str(self.root / "manifest.csv")}


def _uid(seed: int, *parts: object) -> UID:
    return _generate_uid(entropy_srcs=["medcycle-demo", str(seed), *(str(p) for p in parts)])


def _disk(shape: tuple[int, ...], center: Sequence[float], radius: Sequence[float]) -> NDArray[np.bool_]:
    grids = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radius, strict=True))
    return np.asarray(dist <= 1.0)


def chest_radiograph(size: int, rng: np.random.Generator, lesion: bool
                     ) -> tuple[F32, NDArray[np.uint8], tuple[int, ...]]:
    """Brightness ``a`` in [0, 1] (as displayed: lungs dark, bone bright) of a PA chest radiograph, its lesion
    mask (rows × columns) and the lesion's box ``(x0, y0, x1, y1)`` (empty without a lesion)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    jitter = rng.uniform(-0.03, 0.03, 4)
    img = np.full((size, size), 0.03, np.float32)
    body = (((xx - 0.5) / (0.46 + jitter[0])) ** 2 + ((yy - 0.55) / 0.6) ** 2) <= 1
    img[body] = 0.55
    lungs = []
    for side, cx in ((0, 0.31), (1, 0.69)):
        lung = (((xx - cx - jitter[1] * (1 - 2 * side)) / (0.15 + jitter[2])) ** 2
                + ((yy - 0.48 - jitter[3]) / 0.3) ** 2) <= 1
        img[lung] = 0.2 + 0.08 * (yy[lung] - 0.2)  # a little denser towards the base
        lungs.append(lung)
    ribs = 0.05 * (np.sin((yy + 0.08 * np.abs(xx - 0.5)) * 38.0) > 0.6)
    img += np.where(lungs[0] | lungs[1], ribs, 0).astype(np.float32)
    img[(np.abs(xx - 0.5) < 0.045) & body] = 0.82  # spine
    heart = (((xx - 0.56) / 0.13) ** 2 + ((yy - 0.64) / 0.12) ** 2) <= 1
    img[heart] = np.maximum(img[heart], 0.72)
    mask = np.zeros((size, size), np.uint8)
    box: tuple[int, ...] = ()
    if lesion:
        lung = lungs[int(rng.integers(0, 2))]
        rows, cols = np.nonzero(lung & ~heart)
        radius = rng.uniform(0.06, 0.1) * size
        for _ in range(50):  # a centre well inside the lung
            k = int(rng.integers(0, len(rows)))
            r, c = float(rows[k]), float(cols[k])
            if _disk((size, size), (r, c), (radius, radius))[lung].sum() >= 0.8 * np.pi * radius**2:
                break
        disk = _disk((size, size), (r, c), (radius, radius))
        dist = np.sqrt((yy * size - r) ** 2 + (xx * size - c) ** 2) / radius
        img += np.where(disk, 0.35 * np.sqrt(np.clip(1 - dist**2, 0, 1)) + 0.15, 0).astype(np.float32)
        mask[disk] = 1
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    fy, fx, py, px = rng.uniform(0.5, 2.0, 2).tolist() + rng.uniform(0, 2 * np.pi, 2).tolist()
    shading = 0.03 * np.sin(2 * np.pi * fy * yy + py) * np.sin(2 * np.pi * fx * xx + px)  # uneven exposure
    return np.clip(img + shading.astype(np.float32), 0, 1), mask, box


def stored_values(a: F32, scanner: Scanner, rng: np.random.Generator) -> NDArray[np.uint16]:
    """Pixel values as ``scanner`` stores them (exposure varies ±8% per image)."""
    exposure = rng.uniform(0.92, 1.08)
    value = scanner.gain * 4095.0 * exposure * a**scanner.gamma + scanner.offset
    value = value + rng.normal(0, scanner.noise, a.shape)
    stored = (value - scanner.intercept) / scanner.slope
    top = 2**scanner.bits - 1
    stored = np.clip(np.rint(stored), 0, top)
    if scanner.monochrome1:
        stored = top - stored
    return stored.astype(np.uint16)


def chest_ct(size: int, slices: int, rng: np.random.Generator, nodule: bool
             ) -> tuple[F32, NDArray[np.uint8], tuple[int, ...]]:
    """A chest-like HU volume (slices × rows × columns), its nodule mask and box ``(x0, y0, z0, x1, y1, z1)``."""
    shape = (slices, size, size)
    zz, yy, xx = (g.astype(np.float32) for g in np.mgrid[0:slices, 0:size, 0:size])
    zz, yy, xx = zz / slices, yy / size, xx / size
    hu = np.full(shape, -1000.0, np.float32)
    body = (((xx - 0.5) / 0.44) ** 2 + ((yy - 0.52) / 0.33) ** 2) <= 1
    hu[body] = 40.0
    lungs = np.zeros(shape, bool)
    for cx in (0.3, 0.7):
        lungs |= (((xx - cx) / 0.15) ** 2 + ((yy - 0.48) / 0.22) ** 2 + ((zz - 0.5) / 0.62) ** 2) <= 1
    hu[lungs] = -850.0
    hu[(((xx - 0.5) / 0.06) ** 2 + ((yy - 0.75) / 0.06) ** 2) <= 1] = 450.0  # vertebra
    mask = np.zeros(shape, np.uint8)
    box: tuple[int, ...] = ()
    if nodule:
        radius = rng.uniform(0.07, 0.11) * size
        rz = radius * slices / size * 1.6  # slices are thicker than pixels are wide
        zs, ys, xs = np.nonzero(lungs)
        for _ in range(100):
            k = int(rng.integers(0, len(zs)))
            center = (float(zs[k]), float(ys[k]), float(xs[k]))
            sphere = _disk(shape, center, (max(rz, 1.5), radius, radius))
            if lungs[sphere].mean() > 0.95:
                break
        hu[sphere] = rng.uniform(20, 80)
        mask[sphere] = 1
        z, y, x = np.nonzero(mask)
        box = (int(x.min()), int(y.min()), int(z.min()), int(x.max()), int(y.max()), int(z.max()))
    return hu, mask, box


def _patient(kind: str, source: str, i: int, seed: int) -> FakePatient:
    pid = f"{source[-1].upper()}-{kind.upper()}-{seed % 1000:03d}{i:04d}"
    return FakePatient(name=f"Demo^{kind.upper()}^{i}", patient_id=pid, sex="FM"[i % 2],
                       accession=f"ACC-{pid}", birth_date=f"19{50 + i % 40:02d}0{1 + i % 9}15")


def _pixels(ds: Dataset, arr: NDArray[Any], bits: int, photometric: str = "MONOCHROME2") -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = arr.shape
    allocated = 8 if arr.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, 0
    ds.PixelData = arr.tobytes()


def _mask_dataset(patient: FakePatient, study_uid: str, series_uid: str, sop_uid: UID, date: str) -> Dataset:
    ds = base_dataset(patient, "SEG", SecondaryCaptureImageStorage, study_uid, series_uid, date)
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.ImageType = ["DERIVED", "SECONDARY", "MASK"]
    ds.ConversionType = "SYN"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesDescription = "lesion mask"
    return ds


def _split_of(keys: list[tuple[str, str]], rng: np.random.Generator) -> dict[str, str]:
    """Patient-level split 60/20/20, stratified by label: ``(patient, label)`` pairs → split."""
    out: dict[str, str] = {}
    for label in sorted({lab for _, lab in keys}):
        group = sorted(p for p, lab in keys if lab == label)
        order = [group[i] for i in rng.permutation(len(group))]
        n_val = n_test = max(1, round(0.2 * len(order))) if len(order) >= 3 else 0
        for j, pid in enumerate(order):
            out[pid] = "val" if j < n_val else "test" if j < n_val + n_test else "train"
    return out


def _write_radiograph(root: Path, scanner: Scanner, i: int, size: int, seed: int, lesion: bool,
                      rng: np.random.Generator) -> Study:
    from PIL import Image

    patient = _patient("xr", scanner.source, i, seed)
    a, mask, box = chest_radiograph(size, rng, lesion)
    study_uid, series_uid = _uid(seed, patient.patient_id, "xr-study"), _uid(seed, patient.patient_id, "xr-series")
    date = f"2024{1 + i % 12:02d}{1 + i % 27:02d}"
    ds = base_dataset(patient, "DX", DigitalXRayImageStorageForPresentation, study_uid, series_uid, date)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid(seed, patient.patient_id, "xr-image")
    ds.Manufacturer, ds.ManufacturerModelName = scanner.manufacturer, scanner.model
    ds.BodyPartExamined, ds.ViewPosition, ds.KVP = "CHEST", "PA", "110"
    ds.ImagerPixelSpacing = [f"{0.15 * 1024 / size:.3f}"] * 2
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    if scanner.slope != 1.0 or scanner.intercept != 0.0:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{scanner.slope:g}", f"{scanner.intercept:g}", "US"
    _pixels(ds, stored_values(a, scanner, rng), scanner.bits, "MONOCHROME1" if scanner.monochrome1 else "MONOCHROME2")
    folder = Path("dicom") / scanner.source / patient.patient_id / "xr"
    (root / folder).mkdir(parents=True, exist_ok=True)
    ds.save_as(root / folder / "image.dcm", enforce_file_format=True)
    mds = _mask_dataset(patient, study_uid, _uid(seed, patient.patient_id, "xr-mask-series"),
                        _uid(seed, patient.patient_id, "xr-mask"), date)
    mds.ImagerPixelSpacing = ds.ImagerPixelSpacing
    _pixels(mds, mask, 8)
    mds.save_as(root / folder / "mask.dcm", enforce_file_format=True)
    png = Path("masks") / scanner.source / patient.patient_id / "xr.png"
    (root / png).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask * 255).astype(np.uint8)).save(root / png)
    return Study("xr", scanner.source, scanner.manufacturer, scanner.model, patient.patient_id, study_uid,
                 series_uid, "lesion" if lesion else "normal", box, (str(folder / "image.dcm"),), str(png),
                 (str(folder / "mask.dcm"),), "")


def _write_volume(root: Path, scanner: CtScanner, i: int, size: int, slices: int, seed: int, nodule: bool,
                  rng: np.random.Generator) -> Study:
    import nibabel as nib

    patient = _patient("ct", scanner.source, i, seed)
    hu, mask, box = chest_ct(size, slices, rng, nodule)
    hu = hu + rng.normal(0, scanner.noise, hu.shape).astype(np.float32)
    pid = patient.patient_id
    study_uid, series_uid, frame_uid = _uid(seed, pid, "ct-study"), _uid(seed, pid, "ct-series"), _uid(seed, pid, "for")
    mask_series = _uid(seed, pid, "ct-mask-series")
    date = f"2023{1 + i % 12:02d}{1 + i % 27:02d}"
    spacing = scanner.spacing * 64 / size
    folder = Path("dicom") / scanner.source / pid / "ct"
    (root / folder / "image").mkdir(parents=True, exist_ok=True)
    (root / folder / "mask").mkdir(parents=True, exist_ok=True)
    images, masks = [], []
    for z in range(slices):
        geometry = {"ImagePositionPatient": [-size * spacing / 2, -size * spacing / 2, z * scanner.thickness],
                    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "PixelSpacing": [f"{spacing:.4f}"] * 2,
                    "SliceThickness": f"{scanner.thickness:g}", "FrameOfReferenceUID": frame_uid,
                    "InstanceNumber": z + 1}
        ds = base_dataset(patient, "CT", CTImageStorage, study_uid, series_uid, date)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid(seed, pid, "ct", z)
        for key, value in geometry.items():
            setattr(ds, key, value)
        ds.Manufacturer, ds.ManufacturerModelName = scanner.manufacturer, scanner.model
        ds.BodyPartExamined, ds.KVP, ds.ConvolutionKernel = "CHEST", "120", scanner.kernel
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        _pixels(ds, np.clip(np.rint(hu[z]) + 1024, 0, 4095).astype(np.uint16), 12)
        images.append(str(folder / "image" / f"slice_{z:04d}.dcm"))
        ds.save_as(root / images[-1], enforce_file_format=True)
        mds = _mask_dataset(patient, study_uid, mask_series, _uid(seed, pid, "ct-mask", z), date)
        for key, value in geometry.items():
            setattr(mds, key, value)
        _pixels(mds, mask[z], 8)
        masks.append(str(folder / "mask" / f"slice_{z:04d}.dcm"))
        mds.save_as(root / masks[-1], enforce_file_format=True)
    nii = Path("masks") / scanner.source / pid / "ct.nii.gz"
    (root / nii).parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing, spacing, scanner.thickness, 1.0])
    image: Any = nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)), affine)  # type: ignore[no-untyped-call]
    image.header.set_xyzt_units("mm")
    (root / nii).write_bytes(gzip.compress(image.to_bytes(), mtime=0))  # no timestamp: same seed, same bytes
    return Study("ct", scanner.source, scanner.manufacturer, scanner.model, pid, study_uid, series_uid,
                 "nodule" if nodule else "normal", box, tuple(images), str(nii), tuple(masks), "")


def generate(root: str | Path, *, seed: int = 0, radiographs: int = 96, volumes: int = 12, size: int = 128,
             volume_size: int = 48, slices: int = 24, lesion_fraction: float = 0.5,
             nodule_fraction: float = 0.75) -> DemoData:
    """Write the demo data under ``root`` (see the module docstring); the same arguments give the same files.

    Args:
        radiographs: number of radiograph studies (spread over the scanners of :data:`SCANNERS`).
        volumes: number of CT studies (spread over :data:`CT_SCANNERS`).
        size: radiograph rows and columns.
        volume_size, slices: CT rows/columns and slices.
        lesion_fraction, nodule_fraction: share of studies with a lesion / nodule.
    """
    if radiographs < 0 or volumes < 0 or size < 32 or volume_size < 16 or slices < 4:
        from medcycle.errors import UsageError

        raise UsageError("demo data needs radiographs, volumes ≥ 0, size ≥ 32, volume_size ≥ 16, slices ≥ 4",
                         hint="e.g. medcycle demo data --radiographs 96 --volumes 12")
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    data = DemoData(root, seed)
    rng = np.random.default_rng(seed)
    lesions = rng.permutation([k < round(lesion_fraction * radiographs) for k in range(radiographs)])
    for i in range(radiographs):
        scanner = SCANNERS[i % len(SCANNERS)]
        study_rng = np.random.default_rng([seed, 1, i])
        data.studies.append(_write_radiograph(root, scanner, i, size, seed, bool(lesions[i]), study_rng))
    nodules = rng.permutation([k < round(nodule_fraction * volumes) for k in range(volumes)])
    for i in range(volumes):
        study_rng = np.random.default_rng([seed, 2, i])
        data.studies.append(_write_volume(root, CT_SCANNERS[i % len(CT_SCANNERS)], i, volume_size, slices, seed,
                                          bool(nodules[i]), study_rng))
    splits: dict[str, str] = {}
    for kind in ("xr", "ct"):
        splits.update(_split_of([(s.patient_id, s.label) for s in data.studies if s.kind == kind],
                                np.random.default_rng([seed, 3])))
    data.studies = [_with_split(s, splits[s.patient_id]) for s in data.studies]
    _write_tables(data)
    return data


def _with_split(study: Study, split: str) -> Study:
    from dataclasses import replace

    return replace(study, split=split)


def _write_tables(data: DemoData) -> None:
    with (data.root / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(LABEL_FIELDS)
        for s in data.studies:
            box: list[int | str] = list(s.box) if s.box else [""] * 6
            if len(box) == 4:
                box = [box[0], box[1], "", box[2], box[3], ""]
            w.writerow([s.kind, s.source, s.manufacturer, s.model, s.patient_id, s.study_uid, s.label, *box,
                        s.image[0] if len(s.image) == 1 else str(Path(s.image[0]).parent),
                        s.mask, str(Path(s.dicom_mask[0]).parent) if len(s.dicom_mask) > 1 else s.dicom_mask[0]])
    with (data.root / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(MANIFEST_FIELDS)
        for s in data.studies:
            modality = "DX" if s.kind == "xr" else "CT"
            for k, path in enumerate(s.image):
                w.writerow([path, s.split, s.label, f"{s.series_uid}.{k + 1}", s.patient_id, s.study_uid,
                            s.series_uid, s.source, modality, "dicom", s.manufacturer, s.model, s.mask])


def read_studies(root: str | Path) -> list[dict[str, str]]:
    """The rows of ``ROOT/labels.csv``."""
    with (Path(root) / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def load(platform: Any, root: str | Path, *, tag: str = "v1", seed: int = 7, actor: str = "demo",
         jobs: int = 1, kinds: Sequence[str] = ("xr", "ct")) -> dict[str, str]:
    """Ingest the demo data at ``root`` into ``platform`` and freeze datasets ``demo-xr`` and ``demo-ct``
    (``kinds``: ``xr`` radiographs, ``ct`` volumes).

    Study labels are imported with the pseudonymous study uids the ingest gave (computed with the
    platform's de-identification key). Idempotent: data already ingested is recognised and a dataset that
    already has a version is left as it is. Returns ``{dataset: "NAME@TAG"}``.
    """
    from medcycle.catalog.deid import Pseudonymizer
    from medcycle.catalog.ingest import ingest
    from medcycle.catalog.keys import load_or_create_key
    from medcycle.datasets import items, labels, versions
    from medcycle.datasets.splits import parse_stratify, ratios_policy

    root = Path(root)
    rows = [r for r in read_studies(root) if r["kind"] in kinds]
    for source in sorted({r["source"] for r in rows}):
        folders = sorted({root / Path(r["image"]).parent for r in rows if r["source"] == source})  # …/xr, …/ct
        ingest(platform, folders, source=source, jobs=jobs, actor=actor)
    pseudo = Pseudonymizer(load_or_create_key(platform.settings.resolved_deid_key_file))
    refs: dict[str, str] = {}
    for kind, name, about in (("xr", "demo-xr", "Synthetic chest radiographs with and without a lesion, with masks"),
                              ("ct", "demo-ct", "Synthetic chest CT with and without a nodule, with masks")):
        studies = sorted((pseudo.uid(r["study_uid"]), r["label"]) for r in rows if r["kind"] == kind)
        if not studies:
            continue
        with platform.session() as session:
            if name not in {d.name for d in items.list_datasets(session)}:
                items.create_dataset(session, name, description=about, uids=[s for s, _ in studies], actor=actor)
            if not versions.log(session, name):
                text = "study,label\n" + "".join(f"{s},{label}\n" for s, label in studies)
                labels.import_labels(session, platform.objects, name, text, origin=f"{kind}-labels.csv", actor=actor)
                policy = ratios_policy("train=0.6,val=0.2,test=0.2", stratify=parse_stratify("label"), seed=seed)
                versions.freeze(session, platform.objects, name, tag=tag, policy=policy, actor=actor,
                                message="demo data")
                refs[name] = f"{name}@{tag}"
            else:
                refs[name] = f"{name}@latest"
    return refs
