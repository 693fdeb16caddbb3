"""De-identification at the ingest boundary (DICOM PS3.15 Annex E), run on every dataset before storage.

:func:`deidentify` applies the **Basic Application Level Confidentiality Profile** (PS3.15 E.2) in
place. The per-attribute actions come from Table E.1-1 as shipped by dicom-anonymizer (loaded at run
time, see ``deid_tables.TABLE_MODULE``); combined actions are resolved towards removal: Z/D → Z,
X/Z, X/D, X/Z/D → X, and X/Z/U* keeps the sequence only to clean its items (their instance UIDs are
replaced, everything else in them goes through the same table). Attributes the table does not list
are kept, except person names (PN) and public tags unknown to the data dictionary, which are removed,
and instance UIDs, which are replaced. D (dummy) on a sequence empties it. Private attributes are
removed unless their private creator is allow-listed (or, with the Retain Safe Private option, the
element is in ``deid_tables.SAFE_PRIVATE``). Curves (50xx) and whole overlay groups (60xx) are removed;
in the file meta only ``deid_tables.FILE_META_KEPT`` survive and the 128-byte preamble is zeroed.
Kept text values that still contain the patient's name, id, accession number or birth date are
removed too (a last check against identifiers echoed into unexpected attributes).

Options (:class:`DeidOptions`, recorded per source by ``to_dict()``) change actions per the option
columns of Table E.1-1, see ``deid_tables``: retain longitudinal temporal information with modified
dates (E.3.6: dates shift by a per-patient whole number of days, times of day are kept, the birth
date is still emptied), retain patient characteristics (E.3.7: ages over 89 become 090Y), retain
device identity (E.3.8), retain safe private (E.3.10, a subset), clean descriptors (E.3.5: the
patient's and staff names, ids, dates and digit runs are cut out of descriptions).

Pseudonyms (:class:`Pseudonymizer`, in :mod:`medcycle.catalog.pseudonyms`) are keyed HMAC-SHA256 values, so
the same key gives the same ids in every run and process and later studies re-link:

- patient: HMAC(issuer, PatientID), 32 hex characters. The issuer is the caller's ``issuer`` (a
  patient-id namespace per source, e.g. its name), else the file's IssuerOfPatientID (which many
  devices leave empty, so a namespace keeps re-linking stable). With an empty PatientID the rule is
  HMAC(StudyInstanceUID), else the Series, else the SOP Instance UID, else the caller's
  ``fallback_key``: such patients stay apart instead of all becoming one, at the price that two
  id-less studies of one person are two patients.
- UID: ``2.25.<decimal of a 128-bit HMAC>`` (a UUID-derived UID, at most 44 characters). Well-known
  DICOM UIDs (``1.2.840.10008.*``) and class/syntax/scheme UIDs are never replaced.
- date shift: HMAC(patient pseudonym) → -365 … -1 days, never 0.

Burned-in annotation screening sets :attr:`DeidResult.quarantine_reason` (the reason names a rule,
never a value from the file). Rules, first match wins:

1. BurnedInAnnotation is YES.
2. RecognizableVisualFeatures is YES.
3. BurnedInAnnotation is NO: nothing below applies (the producer vouches for the pixels).
4. A Secondary Capture SOP class (``deid_tables.SECONDARY_CAPTURE_SOP_CLASSES``).
5. A modality that usually carries text or faces in the pixels: US, IVUS, SC, OT, XC, ES, GM, OP, DOC.
6. ImageType contains SCREEN SAVE.
7. ImageType is DERIVED and SECONDARY with colour pixels (renderings and captures; grayscale
   reformats such as MPR/MIP pass).
8. An overlay kept in unused bits of the pixel data (OverlayBitPosition > 0, no OverlayData).

Failures never carry identifiers: anything unexpected becomes ``ValidationFailed("de-identification
failed: <attribute keyword and tag>")`` with no chained exception, and pydicom's warnings and log
records (which quote raw values) are silenced while it runs, see :func:`quiet_pydicom`.

Ingest applies these same rules (this module's ``_Run``) to a file's encoded bytes, without building a
pydicom dataset: :mod:`medcycle.catalog.deid_fast`, which falls back to :func:`deidentify` where it must.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import date
from enum import StrEnum
from typing import Any, Final

from pydicom import Dataset
from pydicom.datadict import dictionary_has_tag, keyword_for_tag
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from medcycle.catalog import deid_tables as tables
from medcycle.catalog.pseudonyms import WELL_KNOWN_UID_ROOT as WELL_KNOWN_UID_ROOT  # re-exported
from medcycle.catalog.pseudonyms import Pseudonymizer as Pseudonymizer  # re-exported
from medcycle.errors import MedcycleError, ValidationFailed

PROFILE: Final = "dicom-ps3.15-basic"
#: ``fallback_key`` of :func:`deidentify`: the key itself, a function that computes it when it is needed, or None.
FallbackKey = str | Callable[[], str] | None


@dataclass(frozen=True)
class DeidOptions:
    """The PS3.15 profile options in force for a source; ``to_dict()`` is what the source records."""

    retain_longitudinal_dates_modified: bool = True
    retain_patient_characteristics: bool = True
    retain_device_identity: bool = True
    retain_safe_private: bool = False
    clean_descriptors: bool = False
    private_allowlist: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self)[:-1]:
            if not isinstance(getattr(self, f.name), bool):
                raise ValidationFailed(f"de-identification option {f.name} must be true or false")
        if isinstance(self.private_allowlist, str) or not all(isinstance(c, str) for c in self.private_allowlist):
            raise ValidationFailed("private_allowlist must be a list of private creator strings")
        object.__setattr__(self, "private_allowlist", tuple(sorted({c.strip() for c in self.private_allowlist})))

    @property
    def profile(self) -> str:
        return PROFILE

    def codes(self) -> tuple[tuple[str, str], ...]:
        """CID 7050 (code value, meaning) pairs for DeidentificationMethodCodeSequence."""
        chosen = [(code, meaning) for name, code, meaning in tables.OPTION_CODES if getattr(self, name)]
        return (("113100", "Basic Application Confidentiality Profile"), *chosen)

    def retained_tags(self) -> frozenset[int]:
        """Tags the Basic Profile would protect but these options keep as they are."""
        kept: set[int] = set()
        if self.retain_patient_characteristics:
            kept |= tables.PATIENT_CHARACTERISTICS_KEEP
        if self.retain_device_identity:
            kept |= tables.DEVICE_IDENTITY_KEEP
        return frozenset(kept)

    def method_description(self) -> list[str]:
        """DeidentificationMethod values (LO, at most 64 characters each)."""
        words = ["medcycle " + PROFILE + " (PS3.15 E.1-1 " + tables.TABLE_MODULE + ")"]
        words += [meaning.removesuffix(" Option")[:64] for _, meaning in self.codes()[1:]]
        words += [f"private kept: {creator}"[:64] for creator in self.private_allowlist]
        return words

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": PROFILE,
            "table": f"PS3.15 Table E.1-1 (dicom-anonymizer {tables.TABLE_MODULE})",
            "codes": [code for code, _ in self.codes()],
            **{f.name: getattr(self, f.name) for f in fields(self)[:-1]},
            "private_allowlist": list(self.private_allowlist),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeidOptions:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"profile", "table", "codes"})
        if unknown:
            raise ValidationFailed(f"unknown de-identification options: {', '.join(unknown)}")
        if data.get("profile", PROFILE) != PROFILE:
            raise ValidationFailed(f"unsupported de-identification profile (expected {PROFILE})")
        values = {k: v for k, v in data.items() if k in names}
        if "private_allowlist" in values and isinstance(values["private_allowlist"], list):
            values["private_allowlist"] = tuple(values["private_allowlist"])
        return cls(**values)


@dataclass(frozen=True)
class DeidCounts:
    removed: int = 0
    emptied: int = 0
    replaced: int = 0
    private_removed: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"removed": self.removed, "emptied": self.emptied, "replaced": self.replaced,
                "private_removed": self.private_removed}


@dataclass(frozen=True, eq=False)
class DeidResult:
    """What :func:`deidentify` made. ``dataset`` is the input dataset, changed in place."""

    dataset: Dataset
    patient: str
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    date_shift_days: int
    study_date: date | None  # shifted (StudyDate, else Series/Acquisition/Content date); None if not retained
    sex: str | None  # M, F or O; None when absent or not retained
    age_band: str | None  # "40-49", "90+"; None when unknown or not retained
    quarantine_reason: str | None
    counts: DeidCounts


class _Act(StrEnum):
    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"
    CLEAN_SEQ = "X/Z/U*"
    SHIFT = "C:date"
    CLEAN_TEXT = "C:text"


def deidentify(
    ds: Dataset,
    pseudo: Pseudonymizer,
    options: DeidOptions | None = None,
    *,
    issuer: str | None = None,
    fallback_key: FallbackKey = None,
) -> DeidResult:
    """De-identify ``ds`` in place and return it with its pseudonyms and screening result.

    Args:
        ds: a dataset as read by ``pydicom.dcmread`` (file meta and preamble are cleaned too).
        pseudo: the keyed pseudonymizer (``Pseudonymizer(load_or_create_key(path))``).
        options: the source's profile options (defaults: see :class:`DeidOptions`).
        issuer: the namespace of the source's patient ids (e.g. the source name), used instead of
            the file's IssuerOfPatientID: equal PatientIDs of different namespaces stay different
            patients. Keep it stable per source; None uses IssuerOfPatientID.
        fallback_key: keys the patient pseudonym when the file has no PatientID and no Study, Series
            or SOP Instance UID (pass the file's content digest: each such file is its own patient), or a
            function that computes it (called only for such a file).

    Raises:
        ValidationFailed: the dataset cannot be de-identified; the message names an attribute only.
    """
    run = _Run(pseudo, options or DeidOptions())
    with quiet_pydicom():
        try:
            return run.apply(ds, issuer, fallback_key)
        except MedcycleError:
            raise
        except Exception:  # noqa: BLE001 - the original error may quote identifiers; it is re-raised bare below
            where = run.where
    raise ValidationFailed(
        f"de-identification failed: {where}", hint="The file is malformed at that attribute; it was not stored."
    )


class _QuietFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "depth", 0)


_QUIET = _QuietFilter()


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records, which quote raw (identifying) values.

    Log records are dropped only for the calling thread; warnings filters are process-wide, so
    other threads' warnings are dropped meanwhile too. Wrap ``dcmread`` of not-yet-de-identified
    files in it as well.
    """
    logger = logging.getLogger("pydicom")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
    _QUIET.local.depth = getattr(_QUIET.local, "depth", 0) + 1
    try:
        if warnings.filters and warnings.filters[0] == _IGNORE_ALL:
            yield  # every warning is ignored already (an enclosing quiet_pydicom): nothing to add
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
    finally:
        _QUIET.local.depth -= 1


_IGNORE_ALL: Final = ("ignore", None, Warning, None, 0)  # the filter simplefilter("ignore") puts first


@dataclass(frozen=True)
class _Head:
    """What :meth:`_Run.prologue` read from the original dataset."""

    patient: str
    study: str
    series: str
    sop: str
    age: str
    shifted: str | None
    sex: str
    years: float | None
    reason: str | None


_ACTIONS: dict[DeidOptions, dict[tuple[int, str], _Act]] = {}
_RETAINED: dict[DeidOptions, frozenset[int]] = {}  # options.retained_tags(), asked once per options


class _Run:
    def __init__(self, pseudo: Pseudonymizer, options: DeidOptions) -> None:
        self.pseudo, self.options = pseudo, options
        self.exact, self.masked = tables.basic_profile()
        actions = _ACTIONS.get(options)  # (tag, VR) -> action, shared by every run
        if actions is None:
            _RETAINED[options] = options.retained_tags()  # first: a run that finds the actions finds this
            actions = _ACTIONS.setdefault(options, {})
        self.actions = actions
        self.retained = _RETAINED[options]
        self.where = "reading identifiers"
        self.shift = 0
        self.removed = self.emptied = self.replaced = self.private_removed = 0
        self.identifiers: tuple[str, ...] = ()
        self.clean_terms: tuple[str, ...] = ()

    def apply(self, ds: Dataset, issuer: str | None, fallback_key: FallbackKey) -> DeidResult:
        head = self.prologue(ds, issuer, fallback_key)
        self.dataset(ds)
        self.where = "file meta"
        new_sop = self.pseudo.uid(head.sop) if head.sop else None
        self._file_meta(ds, new_sop)
        self.where = "de-identification attributes"
        for keyword, value in self.added(ds, head):
            setattr(ds, keyword, value)
        return self.result(ds, head, new_sop)

    def prologue(self, ds: Any, issuer: str | None, fallback_key: FallbackKey) -> _Head:
        """What de-identifying ``ds`` needs before any attribute changes: pseudonyms, dates, screening.

        ``ds`` is a dataset, or anything that reads like one (``get``, ``in``, ``[keyword].value``, ``keys``),
        as :mod:`medcycle.catalog.deid_fast` passes."""
        get = functools.partial(tables.text_of, ds)
        study, series, sop = get("StudyInstanceUID"), get("SeriesInstanceUID"), get("SOPInstanceUID")
        issuer = tables.clean(issuer) if issuer is not None else get("IssuerOfPatientID")
        fallback = study or series or sop or (fallback_key() if callable(fallback_key) else fallback_key)
        patient = self.pseudo.patient(issuer, get("PatientID"), fallback=fallback)
        self.shift = self.pseudo.date_shift_days(patient)
        opts = self.options
        keep_chars, keep_dates = opts.retain_patient_characteristics, opts.retain_longitudinal_dates_modified
        dates = (get(k) for k in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"))
        first_date = next((d for d in dates if d), "")
        age = get("PatientAge")
        years = tables.age_years(age, get("PatientBirthDate"), first_date)
        sex = get("PatientSex").upper() if keep_chars else ""
        shifted = tables.shift_date(first_date, self.shift) if keep_dates else None
        self.where = "burned-in annotation screening"
        reason = tables.screen_burned_in(ds)
        self.identifiers = tables.identifiers_of(ds)
        if opts.clean_descriptors:
            self.clean_terms = tables.listed_strings(ds, self.exact)
        return _Head(patient, study, series, sop, age, shifted, sex, years, reason)

    def added(self, ds: Any, head: _Head) -> list[tuple[str, object]]:
        """The attributes set last (keyword, value), in this order: :meth:`varying`, then :meth:`constant`."""
        return self.varying(ds, head) + self.constant()

    def varying(self, ds: Any, head: _Head) -> list[tuple[str, object]]:
        """The patient pseudonym as PatientID and PatientName, and PatientAge coarsened where ``ds`` has it."""
        out: list[tuple[str, object]] = [("PatientID", head.patient), ("PatientName", head.patient)]
        if self.options.retain_patient_characteristics and "PatientAge" in ds:
            out.append(("PatientAge", tables.coarse_age(head.age)))
        return out

    def constant(self) -> list[tuple[str, object]]:
        """What records the de-identification itself; the same for every dataset under these options."""
        opts = self.options
        return [
            ("PatientIdentityRemoved", "YES"),
            ("DeidentificationMethod", opts.method_description()),
            ("DeidentificationMethodCodeSequence", Sequence([tables.code_item(v, m) for v, m in opts.codes()])),
            ("LongitudinalTemporalInformationModified",
             "MODIFIED" if opts.retain_longitudinal_dates_modified else "REMOVED"),
        ]

    def result(self, ds: Any, head: _Head, new_sop: str | None) -> DeidResult:
        keep_chars = self.options.retain_patient_characteristics
        return DeidResult(
            dataset=ds,
            patient=head.patient,
            study_uid=self.pseudo.uid(head.study) if head.study else None,
            series_uid=self.pseudo.uid(head.series) if head.series else None,
            sop_uid=new_sop,
            date_shift_days=self.shift,
            study_date=tables.parse_da(head.shifted or ""),
            sex=head.sex if head.sex in ("M", "F", "O") else None,
            age_band=tables.age_band(head.years) if keep_chars else None,
            quarantine_reason=head.reason,
            counts=DeidCounts(self.removed, self.emptied, self.replaced, self.private_removed),
        )

    def dataset(self, ds: Dataset) -> None:
        creators: list[BaseTag] = []
        kept_blocks: set[int] = set()
        for tag in list(ds.keys()):
            self.where = _describe(tag)
            if not tag.is_private:
                self._public(ds, tag)
            elif tag.is_private_creator:
                creators.append(tag)
            else:
                self._private(ds, tag, kept_blocks)
        for tag in creators:
            if ((tag.group << 8) | tag.element) not in kept_blocks:
                del ds[tag]
                self.private_removed += 1

    def _private(self, ds: Dataset, tag: BaseTag, kept_blocks: set[int]) -> None:
        block = tag.element >> 8
        creator_elem = ds.get(Tag(tag.group, block)) if block >= 0x10 else None
        creator = tables.clean(creator_elem.value) if creator_elem is not None else ""
        keep = bool(creator) and (
            creator in self.options.private_allowlist
            or (self.options.retain_safe_private and (creator, tag.group, tag.element & 0xFF) in tables.SAFE_PRIVATE)
        )
        if not keep:
            del ds[tag]
            self.private_removed += 1
            return
        kept_blocks.add((tag.group << 8) | block)
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                self.dataset(item)

    def _public(self, ds: Dataset, tag: BaseTag) -> None:
        if tag.element == 0 or tag.group in (0x0000, 0x0002):  # group lengths; command / misplaced meta
            del ds[tag]
            return
        if (tag.group & 0xFF00) == 0x6000:  # E.1-1 removes Overlay Data and Comments: drop the whole overlay
            del ds[tag]
            self.removed += 1
            return
        elem = ds[tag]
        action = self.action(int(tag), elem.VR.split(" or ")[0])
        getattr(self, "_do_" + action.name.lower())(ds, elem)

    def action(self, tag: int, vr: str) -> _Act:
        """The action for a public attribute with this VR (cached per options: it depends on nothing else)."""
        key = (tag, vr)
        found = self.actions.get(key)
        if found is None:
            found = self.actions[key] = self._action(tag, vr)
        return found

    def _action(self, tag: int, vr: str) -> _Act:
        opts = self.options
        if tag in self.retained:
            return _Act.KEEP
        if opts.clean_descriptors and tag in tables.CLEAN_DESCRIPTORS and vr in tables.TEXT_VRS:
            return _Act.CLEAN_TEXT
        basic = self.exact.get(tag) or next(
            (a for g, e, gm, em, a in self.masked if (tag >> 16) & gm == g & gm and tag & 0xFFFF & em == e & em), None
        )
        if vr in ("DA", "DT", "TM") and tag not in tables.NEVER_SHIFTED:
            if opts.retain_longitudinal_dates_modified and (basic is not None or vr != "TM"):
                return _Act.SHIFT
            if basic is None and vr != "TM":
                return _Act.REMOVE  # a date the table does not list is still a date
        if basic is not None:
            return _Act(basic)
        if vr == "SQ":
            return _Act.CLEAN_SEQ
        if vr == "PN" or not dictionary_has_tag(tag):
            return _Act.REMOVE
        if vr == "UI":
            return _Act.KEEP if tables.uid_kept(keyword_for_tag(tag)) else _Act.UID
        return _Act.KEEP

    def _do_keep(self, ds: Dataset, elem: DataElement) -> None:
        if elem.VR == "SQ":
            self._do_clean_seq(ds, elem)
            return
        if elem.VR in tables.TEXT_VRS and self.identifiers and elem.value:
            text = " ".join(tables.strings_of(elem.value)).lower()
            if any(ident in text for ident in self.identifiers):
                self._do_remove(ds, elem)

    def _do_clean_seq(self, ds: Dataset, elem: DataElement) -> None:
        if elem.VR == "SQ":
            for item in elem.value:
                self.dataset(item)
        elif elem.VR == "UI":
            self._do_uid(ds, elem)
        else:
            self._do_empty(ds, elem)

    def _do_remove(self, ds: Dataset, elem: DataElement) -> None:
        del ds[elem.tag]
        self.removed += 1

    def _do_empty(self, ds: Dataset, elem: DataElement) -> None:
        if elem.VR == "SQ" and elem.value:
            elem.value = Sequence()
        elif elem.VR != "SQ" and not elem.is_empty:
            elem.value = empty_value_for_VR(elem.VR.split(" or ")[0])
        else:
            return
        self.emptied += 1

    def _do_dummy(self, ds: Dataset, elem: DataElement) -> None:
        vr = elem.VR.split(" or ")[0]
        if vr == "UI":
            self._do_uid(ds, elem)
            return
        if vr == "SQ":  # a dummy sequence carries nothing: stricter than D, same as Z
            self._do_empty(ds, elem)
            return
        elem.value = tables.dummy_value(vr)
        self.replaced += 1

    def _do_uid(self, ds: Dataset, elem: DataElement) -> None:
        values = tables.strings_of(elem.value)
        if values:
            new = [self.pseudo.uid(v) for v in values]
            elem.value = new if len(new) > 1 else new[0]
            self.replaced += 1

    def _do_shift(self, ds: Dataset, elem: DataElement) -> None:
        values = tables.strings_of(elem.value)
        if not values or elem.VR == "TM":  # whole-day shifts leave the time of day as it was
            return
        shift = tables.shift_date if elem.VR == "DA" else tables.shift_datetime
        new = [shift(v, self.shift) for v in values]
        if any(v is None for v in new):
            self._do_remove(ds, elem)
            return
        elem.value = [v for v in new if v is not None] if len(new) > 1 else new[0]
        self.replaced += 1

    def _do_clean_text(self, ds: Dataset, elem: DataElement) -> None:
        values = tables.strings_of(elem.value)
        cleaned = [tables.clean_text(v, self.clean_terms + self.identifiers) for v in values]
        if not any(cleaned):
            self._do_remove(ds, elem)
        elif cleaned != values:
            elem.value = cleaned if len(cleaned) > 1 else cleaned[0]
            self.replaced += 1

    def _file_meta(self, ds: Dataset, new_sop: str | None) -> None:
        if getattr(ds, "preamble", None) is not None:
            ds.preamble = b"\x00" * 128
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return
        for tag in list(meta.keys()):
            if int(tag) not in tables.FILE_META_KEPT:
                del meta[tag]
                self.removed += 1
        old = tables.text_of(meta, "MediaStorageSOPInstanceUID")
        if new_sop or old:
            meta.MediaStorageSOPInstanceUID = new_sop or self.pseudo.uid(old)


def _describe(tag: BaseTag) -> str:
    keyword = "" if tag.is_private else keyword_for_tag(tag)
    return f"{keyword} {tag}".strip()
