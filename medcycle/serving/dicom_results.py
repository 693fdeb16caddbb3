"""Results of DICOM studies for QIDO-RS and WADO-RS: find them by the original study, hand them back re-identified.

A study submitted through DICOM intake (:mod:`medcycle.serving.studies`) has one or more jobs; each finished
job names a stored result whose DICOM outputs (SEG, secondary capture) were made from de-identified inputs.
Here they are found from the *original* StudyInstanceUID a client knows (its pseudonym is recomputed, never
stored in clear), described at study and series level for QIDO-RS, and, for WADO-RS, re-identified in memory
with the study's sealed return address (:func:`medcycle.serving.reid.reidentify`) so a PACS files them with
the study they came from. Only studies with at least one DICOM result are listed.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Final

import pydicom
from pydicom import Dataset

from medcycle.catalog.deid import quiet_pydicom
from medcycle.errors import NotFound
from medcycle.serving.dicom_tables import DicomStudyRow
from medcycle.serving.reid import ReturnAddress, reidentify
from medcycle.serving.studies import DicomIntake

DICOM_MEDIA: Final = "application/dicom"
MAX_SUBMISSIONS: Final = 1000


@dataclass(frozen=True, slots=True)
class ResultInstance:
    """One DICOM output object and the header fields QIDO-RS answers with (none of them identifying)."""

    digest: str
    sop_class: str
    sop_instance: str
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    transfer_syntax: str


@dataclass
class ResultStudy:
    """A submitted study (one or more submissions) and the DICOM results its finished jobs made."""

    study_key: str
    rows: list[DicomStudyRow]
    address: ReturnAddress
    instances: list[ResultInstance] = field(default_factory=list)

    def series(self) -> dict[str, list[ResultInstance]]:
        out: dict[str, list[ResultInstance]] = {}
        for item in self.instances:
            out.setdefault(item.series_uid, []).append(item)
        return out


class DicomResults:
    """Lookups over the DICOM intake index and the stored results (one per request or per process)."""

    def __init__(self, intake: DicomIntake) -> None:
        self.intake = intake
        self.platform = intake.platform

    def _outputs(self, row: DicomStudyRow) -> list[ResultInstance]:
        from medcycle.serving.results import find

        try:
            job = self.platform.jobs.get(row.job_id)
        except NotFound:
            return []
        key = (job.result or {}).get("result")
        if not key:
            return []
        with self.platform.session(write=False) as session:
            result = find(session, str(key))
            outputs = [dict(o) for o in result.outputs] if result is not None else []
        out = []
        for output in outputs:
            if output.get("media_type") != DICOM_MEDIA:
                continue
            out.append(self._describe(str(output["digest"])))
        return out

    def _describe(self, digest: str) -> ResultInstance:
        with quiet_pydicom(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(self.platform.objects.get(digest)), stop_before_pixels=True)
        number = ds.get("SeriesNumber")
        return ResultInstance(digest, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID),
                              str(ds.get("Modality", "") or ""), int(number) if number not in (None, "") else None,
                              str(ds.get("SeriesDescription", "") or ""), str(ds.file_meta.TransferSyntaxUID))

    def _study(self, rows: list[DicomStudyRow]) -> ResultStudy:
        seen: set[str] = set()
        instances = []
        for row in rows:
            for item in self._outputs(row):
                if item.sop_instance not in seen:  # a study sent twice may name the same result
                    seen.add(item.sop_instance)
                    instances.append(item)
        return ResultStudy(rows[0].study_key, rows, self.intake.return_address(rows[0]), instances)

    def study(self, study_uid: str) -> ResultStudy:
        """The study with the original UID ``study_uid`` and its results.

        Raises:
            NotFound: no study with that UID was submitted.
        """
        rows = self.intake.submissions(study_uid, limit=MAX_SUBMISSIONS)
        if not rows:
            raise NotFound("no study with that StudyInstanceUID was submitted for inference",
                           hint="Send it with STOW-RS (POST /dicomweb/studies) or C-STORE first.")
        return self._study(rows)

    def studies(self, study_uids: list[str] | None = None, *, limit: int = 100, offset: int = 0) -> list[ResultStudy]:
        """Submitted studies that have DICOM results, newest first (``study_uids``: only these)."""
        groups: dict[str, list[DicomStudyRow]] = {}
        if study_uids:
            for uid in study_uids:
                for row in self.intake.submissions(uid, limit=MAX_SUBMISSIONS):
                    groups.setdefault(row.study_key, []).append(row)
        else:
            for row in self.intake.submissions(limit=MAX_SUBMISSIONS):
                groups.setdefault(row.study_key, []).append(row)
        found = [self._study(rows) for rows in groups.values()]
        with_results = [s for s in found if s.instances]
        return with_results[offset:offset + limit]

    def select(self, study_uid: str, series_uid: str | None = None,
               instance_uid: str | None = None) -> tuple[ResultStudy, list[ResultInstance]]:
        """The study's result instances (of one series, or the one instance, if given).

        Raises:
            NotFound: no such study, no result series with that UID in it, or no such instance in that series.
        """
        study = self.study(study_uid)
        chosen = [i for i in study.instances if (series_uid is None or i.series_uid == series_uid)
                  and (instance_uid is None or i.sop_instance == instance_uid)]
        if chosen:
            return study, chosen
        if instance_uid is not None and any(i.series_uid == series_uid for i in study.instances):
            raise NotFound("the result series has no instance with that SOPInstanceUID",
                           hint="List the series' instances: GET /dicomweb/studies/{study}/series/{series}/metadata.")
        if series_uid is not None:
            raise NotFound("the study has no result series with that UID",
                           hint="List its result series: GET /dicomweb/studies/{study}/series.")
        raise NotFound("the study has no DICOM results yet",
                       hint="A job still running has none yet (GET /v1/jobs/{id}).")

    def datasets(self, study: ResultStudy, chosen: list[ResultInstance], *, pixels: bool = True) -> list[Dataset]:
        """The chosen result objects, re-identified (``pixels=False``: read without the pixel data)."""
        out: list[Dataset] = []
        for item in chosen:
            with quiet_pydicom(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(self.platform.objects.get(item.digest)), stop_before_pixels=not pixels)
                reidentify(ds, study.address)
            out.append(ds)
        return out

    def retrieve(self, study_uid: str, series_uid: str | None = None,
                 instance_uid: str | None = None) -> tuple[ResultStudy, list[ResultInstance], list[bytes]]:
        """The study's result objects (of one series, or the one instance, if given), re-identified, as DICOM
        PS3.10 bytes, with the instances they are; raises as :meth:`select`."""
        study, chosen = self.select(study_uid, series_uid, instance_uid)
        return study, chosen, [_encode(ds) for ds in self.datasets(study, chosen)]

    def sizes(self, study_uid: str, series_uid: str | None = None,
              instance_uid: str | None = None) -> tuple[ResultStudy, list[ResultInstance], list[int]]:
        """What :meth:`retrieve` would answer, in bytes per object, without decoding or re-encoding pixel data (a
        WADO-RS ``HEAD``): each object's header is read up to its pixel data, re-identified and encoded, and the
        stored bytes from the pixel data on (written back unchanged by :meth:`retrieve`) are counted. The stored
        object is still read whole, so a corrupt one fails here as it would there; raises as :meth:`select`."""
        study, chosen = self.select(study_uid, series_uid, instance_uid)
        out = []
        for item in chosen:
            raw = self.platform.objects.get(item.digest)
            fp = io.BytesIO(raw)
            with quiet_pydicom(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(fp, stop_before_pixels=True)  # leaves fp at the pixel data's tag
                reidentify(ds, study.address)
            out.append(len(_encode(ds)) + len(raw) - fp.tell())
        return study, chosen, out


def _encode(ds: Dataset) -> bytes:
    """``ds`` as DICOM PS3.10 bytes."""
    buf = io.BytesIO()
    with quiet_pydicom(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def study_attributes(study: ResultStudy, base_url: str) -> Dataset:
    """QIDO-RS study-level attributes (PS3.18 Table 10.6.3-3), re-identified for the client."""
    ds = Dataset()
    address = study.address
    for keyword in ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        setattr(ds, keyword, address.study.get(keyword, ""))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, address.patient.get(keyword, ""))
    ds.StudyInstanceUID = address.study_uid
    ds.ModalitiesInStudy = sorted({i.modality for i in study.instances if i.modality})
    ds.NumberOfStudyRelatedSeries = len(study.series())
    ds.NumberOfStudyRelatedInstances = len(study.instances)
    ds.RetrieveURL = f"{base_url}/studies/{address.study_uid}"
    return ds


def series_attributes(study: ResultStudy, series_uid: str, items: list[ResultInstance], base_url: str) -> Dataset:
    """QIDO-RS series-level attributes (PS3.18 Table 10.6.3-4)."""
    first = items[0]
    ds = Dataset()
    ds.StudyInstanceUID = study.address.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = first.modality
    if first.series_number is not None:
        ds.SeriesNumber = first.series_number
    ds.SeriesDescription = first.series_description
    ds.NumberOfSeriesRelatedInstances = len(items)
    ds.RetrieveURL = f"{base_url}/studies/{study.address.study_uid}/series/{series_uid}"
    return ds


def instance_attributes(study: ResultStudy, item: ResultInstance, base_url: str) -> Dataset:
    """QIDO-RS instance-level attributes (PS3.18 Table 10.6.3-5), with the study and series the instance is in."""
    ds = Dataset()
    ds.StudyInstanceUID = study.address.study_uid
    ds.SeriesInstanceUID = item.series_uid
    ds.Modality = item.modality
    if item.series_number is not None:
        ds.SeriesNumber = item.series_number
    ds.SOPClassUID = item.sop_class
    ds.SOPInstanceUID = item.sop_instance
    ds.InstanceAvailability = "ONLINE"
    series_url = f"{base_url}/studies/{study.address.study_uid}/series/{item.series_uid}"
    ds.RetrieveURL = f"{series_url}/instances/{item.sop_instance}"
    return ds
