"""STOW-RS as a library call: a request's parts → accepted instances → one job per study, and the PS3.18 answer.

Each part is judged on its own (PS3.18 10.5): a part that is not ``application/dicom`` or not a DICOM file is
an *other failure* naming the part; an instance that is read but refused (unsupported SOP class, no pixels,
burned-in text, another study than the URL names) is a *failed SOP* with its DICOM status as FailureReason;
the rest are stored and submitted, one job per study. The HTTP status follows PS3.18 Table 10.5.3-1: 200 when
every instance was stored, 202 when some were, 409 when none was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from medcycle.serving.studies import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    VIA_STOW,
    AcceptedInstance,
    DicomIntake,
    InstanceRefused,
    SubmittedStudy,
    group_by_study,
)

DICOM_MEDIA: Final = "application/dicom"


def header_text(text: str, limit: int = 500) -> str:
    """``text`` fit for a quoted HTTP header value: printable ASCII only (others become ``?``), no quotes."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)[:limit]


@dataclass(frozen=True, slots=True)
class StowPart:
    """One body part: its 1-based index, declared media type and a way to read its bytes."""

    index: int
    media_type: str | None
    read: Callable[[], bytes]

    def describe(self) -> str:
        return f"part {self.index}" + (f" ({self.media_type})" if self.media_type else "")


@dataclass(frozen=True, slots=True)
class StowFailure:
    part: int
    status: int
    message: str
    sop_class: str | None = None
    sop_instance: str | None = None  # the UID the client sent (echoed back to it, never logged)


@dataclass
class StowOutcome:
    stored: list[tuple[str, str]] = field(default_factory=list)  # (SOP class, SOP instance UID as sent)
    failures: list[StowFailure] = field(default_factory=list)
    studies: list[SubmittedStudy] = field(default_factory=list)
    study_uids: list[str] = field(default_factory=list)  # original StudyInstanceUIDs stored, in order

    @property
    def http_status(self) -> int:
        if not self.failures:
            return 200
        return 202 if self.stored else 409

    def warnings(self) -> list[str]:
        """One ``Warning`` header value (RFC 7234 code 299) per failure, naming the part."""
        return [f'299 medcycle "{header_text(f"part {f.part}: {f.message} (0x{f.status:04X})")}"'
                for f in self.failures]

    def response(self, base_url: str) -> Dataset:
        """The Store Instances Response Module (PS3.18 Table 10.5.3-3) as a dataset."""
        ds = Dataset()
        if len(set(self.study_uids)) == 1:
            ds.RetrieveURL = f"{base_url}/studies/{self.study_uids[0]}"
        referenced, failed, other = DicomSequence([]), DicomSequence([]), DicomSequence([])
        for sop_class, sop_instance in self.stored:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
            referenced.append(item)
        for failure in self.failures:
            item = Dataset()
            if failure.sop_instance:
                item.ReferencedSOPClassUID = failure.sop_class or ""
                item.ReferencedSOPInstanceUID = failure.sop_instance
                item.FailureReason = failure.status
                failed.append(item)
            else:
                item.FailureReason = failure.status
                item.ErrorComment = f"part {failure.part}: {failure.message}"[:64]
                other.append(item)
        if referenced:
            ds.ReferencedSOPSequence = referenced
        if failed:
            ds.FailedSOPSequence = failed
        if other:
            ds.OtherFailuresSequence = other
        return ds


def _uid(ds: Dataset, keyword: str) -> str | None:
    """The UID ``keyword`` as sent (its first value, where a damaged instance gives several: the list's text is
    no UID to echo back)."""
    try:
        value = ds.get(keyword, "") or ""
        if not isinstance(value, str) and len(value) > 0:
            value = value[0]
        value = str(value).strip()
    except Exception:  # noqa: BLE001 - a damaged element
        return None
    return value or None


def stow(
    intake: DicomIntake,
    parts: Sequence[StowPart],
    *,
    model: str,
    study_uid: str | None = None,
    deadline_s: float | None = None,
) -> StowOutcome:
    """Store the parts of one STOW-RS request and submit each study they hold (see the module docstring).

    Raises:
        QueueFull / BackendUnavailable: a study could not be submitted (its instances are stored; sending the
            request again finds them and submits the same job once).
    """
    out = StowOutcome()
    accepted: list[tuple[AcceptedInstance, str, str, str]] = []
    for part in parts:
        if part.media_type not in (None, DICOM_MEDIA):
            out.failures.append(StowFailure(part.index, STATUS_CANNOT_UNDERSTAND,
                                            f"Content-Type {part.media_type} is not {DICOM_MEDIA}"))
            continue
        try:
            ds = intake.read(part.read(), what=f"part {part.index}")
        except InstanceRefused as exc:
            out.failures.append(StowFailure(part.index, exc.status, exc.message))
            continue
        sop_class, sop_instance = _uid(ds, "SOPClassUID"), _uid(ds, "SOPInstanceUID")
        original_study = _uid(ds, "StudyInstanceUID")
        try:
            if study_uid is not None and original_study != study_uid:
                raise InstanceRefused("the instance belongs to another study than the URL names",
                                      status=STATUS_DATASET_MISMATCH)
            item = intake.accept(ds)
        except InstanceRefused as exc:
            out.failures.append(StowFailure(part.index, exc.status, exc.message, sop_class, sop_instance))
            continue
        assert sop_class and sop_instance and original_study  # accept() checked them
        accepted.append((item, sop_class, sop_instance, original_study))
    for group in group_by_study(a[0] for a in accepted).values():
        out.studies.append(intake.submit(group, model=model, via=VIA_STOW, deadline_s=deadline_s))
    for _, sop_class, sop_instance, original_study in accepted:
        out.stored.append((sop_class, sop_instance))
        if original_study not in out.study_uids:
            out.study_uids.append(original_study)
    return out
