"""DICOM intake shared by STOW-RS and the C-STORE SCP: accept instances, submit a study, find it again.

The decision on de-identification (see ``docs/serving.md``): a hospital sends *identified* studies, so every
instance is de-identified with the catalog's PS3.15 Basic profile (:func:`medcycle.catalog.deid.deidentify`,
the same key as ingest, so pseudonyms agree) **before** it is stored; only the de-identified bytes become
objects and only object references reach the queue. What a result needs to go back to the PACS (original
UIDs, the Patient and General Study modules) is captured first and kept only sealed
(:mod:`medcycle.serving.reid`); it is opened in memory when a result is retrieved. Instances whose pixels may
carry burned-in text (the catalog's screening rules) are refused: they would put patient data in the store.

Errors here never quote a value from a file: messages name an attribute, a part or a status only, and logs
name studies by their pseudonymous UID.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from medcycle.catalog.deid import DeidOptions, Pseudonymizer, deidentify, quiet_pydicom
from medcycle.catalog.keys import load_or_create_key
from medcycle.errors import MedcycleError, UsageError, ValidationFailed
from medcycle.objects.refs import add_ref
from medcycle.serving.dicom_tables import DicomStudyRow
from medcycle.serving.inputs import IMAGE_CLASSES_HINT, IMAGE_SOP_CLASSES, not_an_image_class
from medcycle.serving.reid import ReturnAddress, Sealer, capture, merge

if TYPE_CHECKING:
    from medcycle.jobs.base import Job
    from medcycle.platform import Platform

log = logging.getLogger(__name__)

REF_KIND: Final = "serving_dicom_study"
VIA_STOW: Final = "stow-rs"
VIA_CSTORE: Final = "c-store"

# DICOM status codes (PS3.4 Annex B / PS3.7 C), also the FailureReason values of STOW-RS (PS3.18 10.5.3).
STATUS_SUCCESS: Final = 0x0000
STATUS_PROCESSING_FAILURE: Final = 0x0110
STATUS_SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
STATUS_OUT_OF_RESOURCES: Final = 0xA700
STATUS_DATASET_MISMATCH: Final = 0xA900
STATUS_CANNOT_UNDERSTAND: Final = 0xC000

SUPPORTED_SOP_CLASSES: Final = IMAGE_SOP_CLASSES  # what every intake takes (medcycle.serving.inputs)


class InstanceRefused(ValidationFailed):
    """One instance was not accepted; ``status`` is the DICOM status (C-STORE) / FailureReason (STOW-RS)."""

    code = "instance_refused"

    def __init__(self, message: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, status=f"0x{status:04X}")
        self.status = status


@dataclass(frozen=True, slots=True)
class AcceptedInstance:
    """A de-identified instance in the object store and what it takes to submit and return its study.

    ``address`` is the instance's original identity: keep it in memory or sealed, never in a log.
    """

    digest: str
    size: int
    sop_class: str
    study_key: str  # pseudonymous StudyInstanceUID
    series_key: str
    sop_key: str
    modality: str
    address: ReturnAddress


@dataclass(frozen=True, slots=True)
class SubmittedStudy:
    """One submitted study: its index row's id, the job that computes its results, and whether it was new."""

    id: str
    study_key: str
    job_id: str
    model: str
    instances: int
    created: bool


class DicomIntake:
    """Accepts identified DICOM instances for inference (de-identify, store) and submits studies (per process)."""

    def __init__(self, platform: Platform, *, options: DeidOptions | None = None) -> None:
        key = load_or_create_key(platform.settings.resolved_deid_key_file)
        self.platform = platform
        self.pseudo = Pseudonymizer(key)
        self.sealer = Sealer(key)
        self.options = options or DeidOptions()

    def __repr__(self) -> str:
        return f"DicomIntake(key={self.pseudo.fingerprint})"

    def study_key(self, study_uid: str) -> str:
        """The pseudonymous StudyInstanceUID intake gives the study ``study_uid`` (how lookups find it)."""
        return self.pseudo.uid(study_uid.strip())

    # -- one instance ------------------------------------------------------------------------------
    def read(self, data: bytes, *, what: str = "the instance") -> Dataset:
        """Parse a DICOM PS3.10 file (with its 128-byte preamble and ``DICM``); refuse anything else."""
        import pydicom
        from pydicom.errors import InvalidDicomError

        with quiet_pydicom():
            try:
                return pydicom.dcmread(io.BytesIO(data))
            except InvalidDicomError:
                raise InstanceRefused(f"{what} is not a DICOM PS3.10 file (no 'DICM' prefix after the preamble)",
                                      status=STATUS_CANNOT_UNDERSTAND,
                                      hint="Send each instance as a DICOM file (application/dicom).") from None
            except Exception as exc:  # noqa: BLE001 - truncated or corrupt files raise many kinds; may quote PHI
                raise InstanceRefused(f"{what} is a corrupt or truncated DICOM file ({type(exc).__name__})",
                                      status=STATUS_CANNOT_UNDERSTAND,
                                      hint="Send the complete file again.") from None

    def accept(self, ds: Dataset) -> AcceptedInstance:
        """Check, de-identify (``ds`` is changed in place) and store one instance.

        Raises:
            InstanceRefused: the instance is not accepted (its DICOM status says why); an element pydicom cannot
                decode (a damaged value) is 0xC000, named by the exception's type only (its text may quote PHI).
        """
        try:
            return self._accept(ds)
        except (InstanceRefused, MedcycleError, SQLAlchemyError):  # a database error is the server's, not the file's
            raise
        except Exception as exc:  # noqa: BLE001 - pydicom decodes values lazily: a damaged one raises anywhere
            raise InstanceRefused(f"the instance has an element that cannot be decoded ({type(exc).__name__})",
                                  status=STATUS_CANNOT_UNDERSTAND,
                                  hint="Check the file with dciodvfy; send a valid instance.") from None

    def _accept(self, ds: Dataset) -> AcceptedInstance:
        with quiet_pydicom(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # third-party warnings may quote patient data
            try:
                sop_class = str(ds.get("SOPClassUID", "") or "").strip()
                modality = str(ds.get("Modality", "") or "").strip().upper()[:16]
            except Exception:  # noqa: BLE001 - a damaged element; its text may quote PHI
                raise InstanceRefused("the instance's SOP Class UID cannot be read",
                                      status=STATUS_CANNOT_UNDERSTAND, hint="Send a valid DICOM instance.") from None
            self._check(ds, sop_class)
            try:
                address = capture(ds, self.pseudo)
            except ValidationFailed as exc:
                raise InstanceRefused(exc.message, status=STATUS_DATASET_MISMATCH, hint=exc.hint) from None
            try:
                result = deidentify(ds, self.pseudo, self.options)
            except ValidationFailed as exc:  # names an attribute, never a value
                raise InstanceRefused(exc.message, status=STATUS_CANNOT_UNDERSTAND, hint=exc.hint) from None
            if result.quarantine_reason:
                raise InstanceRefused(
                    f"the instance may show patient data in its pixels ({result.quarantine_reason}); it is not "
                    "accepted for inference", status=STATUS_PROCESSING_FAILURE,
                    hint="Send images whose BurnedInAnnotation is NO, or de-identify the pixels first.")
            buf = io.BytesIO()
            try:
                result.dataset.save_as(buf, enforce_file_format=True)
            except Exception as exc:  # noqa: BLE001 - a dataset pydicom cannot write back is refused
                raise InstanceRefused(f"the instance cannot be re-encoded after de-identification "
                                      f"({type(exc).__name__})", status=STATUS_CANNOT_UNDERSTAND,
                                      hint="Check the file with dciodvfy; send a valid instance.") from None
        data = buf.getvalue()
        try:
            stored = self.platform.objects.put(data)
        except OSError as exc:  # a read-only or full store: 503 (STOW-RS), 0xA700 (C-STORE), the sender retries
            from medcycle.serving.intake import store_failed

            raise store_failed(exc) from None
        assert result.study_uid and result.series_uid and result.sop_uid  # checked in _check
        return AcceptedInstance(stored.digest, stored.size, sop_class, result.study_uid, result.series_uid,
                                result.sop_uid, modality, address)

    @staticmethod
    def _check(ds: Dataset, sop_class: str) -> None:
        if not sop_class:
            raise InstanceRefused("the instance has no SOP Class UID", status=STATUS_DATASET_MISMATCH,
                                  hint="Every DICOM instance must carry (0008,0016).")
        if _multi_valued(ds, "SOPClassUID"):
            raise InstanceRefused("the instance has more than one SOPClassUID", status=STATUS_DATASET_MISMATCH,
                                  hint="SOPClassUID has one value (VM 1).")
        problem = not_an_image_class(sop_class)
        if problem is not None:
            raise InstanceRefused(f"the instance {problem}", status=STATUS_SOP_CLASS_NOT_SUPPORTED,
                                  hint=IMAGE_CLASSES_HINT)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if not str(ds.get(keyword, "") or "").strip():
                raise InstanceRefused(f"the instance has no {keyword}", status=STATUS_DATASET_MISMATCH,
                                      hint="Every DICOM instance must carry its study, series and instance UIDs.")
            if _multi_valued(ds, keyword):  # "['1.2', '1.3']" would become the study's UID, and its pseudonym
                raise InstanceRefused(f"the instance has more than one {keyword}", status=STATUS_DATASET_MISMATCH,
                                      hint="The study, series and instance UIDs have one value each (VM 1).")
        if "PixelData" not in ds:
            raise InstanceRefused(f"the {SUPPORTED_SOP_CLASSES[sop_class]} instance has no pixel data",
                                  status=STATUS_DATASET_MISMATCH, hint="Send complete image instances.")
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
            frames = int(ds.get("NumberOfFrames") or 1)
            samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.BitsAllocated)
            syntax = ds.file_meta.TransferSyntaxUID
        except (AttributeError, TypeError, ValueError):
            raise InstanceRefused("the instance lacks Rows, Columns, BitsAllocated or its transfer syntax",
                                  status=STATUS_DATASET_MISMATCH, hint="Send complete image instances.") from None
        if min(rows, cols, frames, samples, bits) < 1:
            raise InstanceRefused("the instance declares an empty image", status=STATUS_DATASET_MISMATCH,
                                  hint="Send complete image instances.")
        if not syntax.is_compressed and len(ds.PixelData) < rows * cols * frames * samples * bits // 8:
            raise InstanceRefused("the instance's pixel data is truncated", status=STATUS_DATASET_MISMATCH,
                                  hint="Send the complete instance again.")

    # -- one study ---------------------------------------------------------------------------------
    def submit(
        self,
        instances: Sequence[AcceptedInstance],
        *,
        model: str,
        via: str,
        calling_ae: str | None = None,
        deadline_s: float | None = None,
        webhook: str | None = None,
    ) -> SubmittedStudy:
        """Submit the accepted instances of one study as one inference job (idempotent per study, inputs, model).

        Raises:
            UsageError: no instances, or instances of several studies.
            QueueFull: the inference queue is at its bound (nothing is recorded; submit again later).
        """
        from medcycle.serving import intake

        unique = {i.sop_key: i for i in instances}  # a resent instance counts once
        ordered = sorted(unique.values(), key=lambda i: (i.series_key, i.sop_key))
        if not ordered:
            raise UsageError("a study needs at least one instance", hint="Send the study's image instances.")
        study_keys = {i.study_key for i in ordered}
        if len(study_keys) != 1:
            raise UsageError("instances of several studies cannot be submitted as one",
                             hint="Group instances by StudyInstanceUID.")
        study_key = study_keys.pop()
        inputs_digest = hashlib.sha256("\n".join(i.digest for i in ordered).encode()).hexdigest()
        existing = self._find(study_key, inputs_digest, model)
        if existing is not None:
            return existing
        sealed = self.sealer.seal(merge(i.address for i in ordered))
        try:
            return_digest = self.platform.objects.put(sealed).digest
        except OSError as exc:
            raise intake.store_failed(exc) from None
        job = intake.submit(
            self.platform, [i.digest for i in ordered], model=model, source=via,
            idempotency_key="dicom:" + hashlib.sha256(f"{study_key}\n{inputs_digest}\n{model}".encode()).hexdigest(),
            deadline_s=deadline_s,
            webhook=webhook, params=None, stored_clean=True,  # accept() stored each instance de-identified
        )
        row = DicomStudyRow(study_key=study_key, inputs_digest=inputs_digest, model=model, job_id=_job_id(job),
                            via=via, calling_ae=calling_ae, instances=len(ordered),
                            series=len({i.series_key for i in ordered}),
                            modalities="\\".join(sorted({i.modality for i in ordered if i.modality}))[:64],
                            return_digest=return_digest)
        try:
            with self.platform.session() as session:
                session.add(row)
                session.flush()
                add_ref(session, return_digest, REF_KIND, row.id, size=len(sealed))
        except SqlIntegrityError:  # a concurrent submit of the same study won the race: it is the same job
            found = self._find(study_key, inputs_digest, model)
            if found is None:
                raise
            return found
        log.info("study %s submitted via %s as job %s (%d instances)", study_key, via, row.job_id, len(ordered))
        return SubmittedStudy(row.id, study_key, row.job_id, model, len(ordered), True)

    def _find(self, study_key: str, inputs_digest: str, model: str) -> SubmittedStudy | None:
        with self.platform.session(write=False) as session:
            row = session.scalar(select(DicomStudyRow).where(DicomStudyRow.study_key == study_key,
                                                             DicomStudyRow.inputs_digest == inputs_digest,
                                                             DicomStudyRow.model == model))
            if row is None:
                return None
            return SubmittedStudy(row.id, row.study_key, row.job_id, row.model, row.instances, False)

    # -- lookups -----------------------------------------------------------------------------------
    def submissions(self, study_uid: str | None = None, *, limit: int = 100, offset: int = 0) -> list[DicomStudyRow]:
        """Submitted studies, newest first; ``study_uid`` (an original UID) narrows to one study."""
        query = select(DicomStudyRow)
        if study_uid is not None:
            query = query.where(DicomStudyRow.study_key == self.study_key(study_uid))
        with self.platform.session(write=False) as session:
            rows = list(session.scalars(query.order_by(DicomStudyRow.created_at.desc(), DicomStudyRow.id)
                                        .limit(limit).offset(offset)))
            session.expunge_all()
        return rows

    def return_address(self, row: DicomStudyRow) -> ReturnAddress:
        return self.sealer.open(self.platform.objects.get(row.return_digest))


def _multi_valued(ds: Dataset, keyword: str) -> bool:
    elem = ds.get(keyword)
    return elem is not None and not isinstance(elem, str) and len(elem) > 1


def _job_id(job: Job | Any) -> str:
    job_id = getattr(job, "id", None)
    if not isinstance(job_id, str):
        raise ValidationFailed("intake returned no job id", hint="Report it: serving.intake.submit returns a Job.")
    return job_id


def group_by_study(instances: Iterable[AcceptedInstance]) -> dict[str, list[AcceptedInstance]]:
    out: dict[str, list[AcceptedInstance]] = {}
    for item in instances:
        out.setdefault(item.study_key, []).append(item)
    return out
