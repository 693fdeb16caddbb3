"""Synthetic DICOM studies with realistic (fake) identifiers, for tests, benchmarks and the demo.

The identifiers are deliberately distinctive strings so tests can prove none survives ingest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)


@dataclass
class FakePatient:
    name: str = "Sokolova^Anna^Petrovna"
    patient_id: str = "MRN-55501234"
    birth_date: str = "19630412"
    sex: str = "F"
    institution: str = "Gorodskaya Klinicheskaya Bolnitsa No 7"
    referring: str = "Ivanov^Sergei"
    accession: str = "ACC-2024-000917"
    identifiers: list[str] = field(default_factory=list)

    def all_identifiers(self) -> list[str]:
        return [self.name, self.patient_id, self.institution, self.referring, self.accession, *self.identifiers]


def _base(
    patient: FakePatient, modality: str, sop_class: str, study_uid: str, series_uid: str, study_date: str
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = "061Y"
    ds.InstitutionName = patient.institution
    ds.InstitutionAddress = "Ulitsa Lenina 1, Moskva"
    ds.ReferringPhysicianName = patient.referring
    ds.AccessionNumber = patient.accession
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.StudyTime = "101530"
    ds.StudyID = "S" + patient.patient_id[-4:]
    ds.StudyDescription = f"Study for {patient.name}"
    ds.Modality = modality
    ds.Manufacturer = "Medcycle Phantoms"
    ds.ManufacturerModelName = "Phantom-9000"
    ds.DeviceSerialNumber = "SN-PHANTOM-77"
    ds.StationName = "STATION-ROOM-12"
    ds.BurnedInAnnotation = "NO"
    return ds


def base_dataset(
    patient: FakePatient, modality: str, sop_class: str, study_uid: str, series_uid: str, study_date: str
) -> Dataset:
    """The patient, study and equipment attributes every synthetic file here carries (for other generators,
    e.g. :mod:`medcycle.training.demo_data`); set SOPInstanceUID and the image modules on the result."""
    return _base(patient, modality, sop_class, study_uid, series_uid, study_date)


def write_ct_series(
    folder: Path,
    patient: FakePatient | None = None,
    *,
    slices: int = 8,
    size: int = 64,
    study_uid: str | None = None,
    study_date: str = "20240315",
    seed: int = 0,
    lesion: bool = True,
) -> list[Path]:
    """A CT series (HU phantom: air, body ellipse, optional spherical nodule) as one file per slice."""
    patient = patient or FakePatient()
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    body = ((xx - size / 2) / (size * 0.42)) ** 2 + ((yy - size / 2) / (size * 0.32)) ** 2 <= 1
    paths = []
    for i in range(slices):
        hu = np.full((size, size), -1000.0)
        hu[body] = 40 + rng.normal(0, 12, body.sum())
        if lesion:
            r = size * 0.08 * max(0.0, 1 - abs(i - slices / 2) / (slices / 2))
            nod = (xx - size * 0.6) ** 2 + (yy - size * 0.45) ** 2 <= r**2
            hu[nod] = 120
        ds = _base(patient, "CT", CTImageStorage, study_uid, series_uid, study_date)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.FrameOfReferenceUID = frame_uid
        ds.InstanceNumber = i + 1
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = "1.25"
        ds.PixelSpacing = ["0.7", "0.7"]
        ds.ImagePositionPatient = [0, 0, i * 1.25]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.KVP = "120"
        ds.ConvolutionKernel = "B30f"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        stored = np.clip(hu + 1024, 0, 4095).astype(np.uint16)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = size, size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = stored.tobytes()
        path = folder / f"slice_{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_radiograph(
    path: Path,
    patient: FakePatient | None = None,
    *,
    size: int = 128,
    study_date: str = "20240316",
    monochrome1: bool = False,
    seed: int = 0,
    study_uid: str | None = None,
) -> Path:
    """A chest-like DX radiograph (lungs darker than mediastinum), optionally stored as MONOCHROME1."""
    patient = patient or FakePatient()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 2500 + 600 * np.exp(-((xx - 0.5) ** 2) / 0.01)  # mediastinum
    for cx in (0.3, 0.7):
        img -= 1200 * (((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.3) ** 2 <= 1)
    img += rng.normal(0, 40, img.shape)
    stored = np.clip(img, 0, 4095).astype(np.uint16)
    if monochrome1:
        stored = (4095 - stored).astype(np.uint16)
    ds = _base(
        patient, "DX", DigitalXRayImageStorageForPresentation, study_uid or generate_uid(), generate_uid(), study_date
    )
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImagerPixelSpacing = ["0.15", "0.15"]
    ds.KVP = "110"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = size, size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def today_minus(days: int) -> str:
    return (dt.date.today() - dt.timedelta(days=days)).strftime("%Y%m%d")
