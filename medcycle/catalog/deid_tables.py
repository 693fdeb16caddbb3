"""Tables and value rules of de-identification: the option rows, screening rules and small transforms.

The Basic Profile itself (DICOM PS3.15 Table E.1-1, one action per attribute) is *not* copied here:
:func:`basic_profile` loads it at run time from dicom-anonymizer, which ships the standard's table as
Python lists. What that package does not ship are the table's option columns, so this module holds
only the rows an option changes, each cited to its column / section of PS3.15 Annex E, plus the
value-level rules :mod:`medcycle.catalog.deid` applies (date shifts, age bands, descriptor cleaning,
burned-in screening). Tags are written as ``0xGGGGEEEE`` with the attribute keyword alongside.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Final

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

TABLE_MODULE: Final = "dicomfields_2026c"
"""dicom-anonymizer's copy of Table E.1-1 that the Basic Profile actions come from."""

# CID 7050 codes of the options (DeidentificationMethodCodeSequence), keyed by DeidOptions field.
OPTION_CODES: Final = (
    ("retain_longitudinal_dates_modified", "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("retain_patient_characteristics", "113108", "Retain Patient Characteristics Option"),
    ("retain_device_identity", "113109", "Retain Device Identity Option"),
    ("retain_safe_private", "113111", "Retain Safe Private Option"),
    ("clean_descriptors", "113105", "Clean Descriptors Option"),
)

# Combined actions resolved towards removal (Z/D → Z; X/Z, X/D, X/Z/D → X); X/Z/U* keeps the sequence
# to clean its items.
_CATEGORIES: Final = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z",
    "X_Z_TAGS": "X",
    "X_D_TAGS": "X",
    "X_Z_D_TAGS": "X",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


@functools.cache
def basic_profile() -> tuple[Mapping[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """Table E.1-1 as (tag → action, masked rows), actions as resolved codes (D, Z, X, U, X/Z/U*)."""
    table = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.{TABLE_MODULE}")

    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, action in _CATEGORIES.items():
        for row in getattr(table, category):
            if len(row) == 2:
                exact[(row[0] << 16) | row[1]] = action
            else:
                masked.append((row[0], row[1], row[2], row[3], action))
    return exact, tuple(masked)


# PS3.15 E.3.7 "Retain Patient Characteristics Option": the rows whose "Rtn. Pat. Chars. Opt." column
# in Table E.1-1 reads K. Rows where that column reads C (Allergies, Pre-Medication, Special Needs,
# Patient State, Medical Alerts) are free text; we cannot clean free text safely, so they keep their
# Basic Profile action (removal), which is stricter than the option requires.
PATIENT_CHARACTERISTICS_KEEP: Final[frozenset[int]] = frozenset(
    {
        0x00100040,  # PatientSex
        0x00101010,  # PatientAge (ages over 89 are coarsened to 090Y, see deid.py)
        0x00101020,  # PatientSize
        0x00101030,  # PatientWeight
        0x00102160,  # EthnicGroup
        0x00102203,  # PatientSexNeutered
        0x001021A0,  # SmokingStatus
        0x001021C0,  # PregnancyStatus
    }
)

# PS3.15 E.3.8 "Retain Device Identity Option": the rows whose "Rtn. Dev. Id. Opt." column reads K.
# We deliberately leave out the *location* rows that column also keeps (Scheduled/Performed Station
# Geographic Location Code Sequence, Scheduled Procedure Step Location, Scheduled Study Location and
# its AE title): they place the device, and with it the institution, which the catalog never needs.
DEVICE_IDENTITY_KEEP: Final[frozenset[int]] = frozenset(
    {
        0x00081010,  # StationName
        0x00181000,  # DeviceSerialNumber
        0x00181002,  # DeviceUID
        0x00181004,  # PlateID
        0x00181005,  # GeneratorID
        0x00181007,  # CassetteID
        0x00181008,  # GantryID
        0x0018700A,  # DetectorID
        0x00189367,  # XRaySourceID
        0x00189371,  # XRayDetectorID
        0x00400001,  # ScheduledStationAETitle
        0x00400010,  # ScheduledStationName
        0x00400241,  # PerformedStationAETitle
        0x00400242,  # PerformedStationName
        0x30080105,  # SourceSerialNumber
        0x300A00B2,  # TreatmentMachineName
    }
)

# PS3.15 E.3.5 "Clean Descriptors Option": the text rows whose "Clean Desc. Opt." column reads C.
# Sequence rows of that column (Request Attributes, Admitting Diagnoses Code) keep their Basic action.
CLEAN_DESCRIPTORS: Final[frozenset[int]] = frozenset(
    {
        0x00081030,  # StudyDescription
        0x0008103E,  # SeriesDescription
        0x00081080,  # AdmittingDiagnosesDescription
        0x00082111,  # DerivationDescription
        0x00084000,  # IdentifyingComments
        0x00102180,  # Occupation
        0x001021B0,  # AdditionalPatientHistory
        0x00104000,  # PatientComments
        0x00180010,  # ContrastBolusAgent
        0x00181030,  # ProtocolName
        0x00181400,  # AcquisitionDeviceProcessingDescription
        0x00184000,  # AcquisitionComments
        0x00189424,  # AcquisitionProtocolDescription
        0x0018A003,  # ContributionDescription
        0x00204000,  # ImageComments
        0x00209158,  # FrameComments
        0x00321030,  # ReasonForStudy
        0x00321060,  # RequestedProcedureDescription
        0x00321070,  # RequestedContrastAgent
        0x00324000,  # StudyComments
        0x00380040,  # DischargeDiagnosisDescription
        0x00380062,  # ServiceEpisodeDescription
        0x00384000,  # VisitComments
        0x00400007,  # ScheduledProcedureStepDescription
        0x00400254,  # PerformedProcedureStepDescription
        0x00400280,  # CommentsOnThePerformedProcedureStep
        0x00401400,  # RequestedProcedureComments
        0x00402001,  # ReasonForTheImagingServiceRequest
        0x00402400,  # ImagingServiceRequestComments
        0x40080115,  # InterpretationDiagnosisDescription
        0x4008010B,  # InterpretationText
        0x40080300,  # Impressions
        0x40084000,  # ResultsComments
    }
)

# PS3.15 E.3.6 "Retain Longitudinal Temporal Information With Modified Dates Option": every date and
# time row of Table E.1-1 reads C in that column except these, which keep their Basic action (a
# shifted birth date plus a shifted study date would give the exact age back).
NEVER_SHIFTED: Final[frozenset[int]] = frozenset(
    {
        0x00100030,  # PatientBirthDate
        0x00100032,  # PatientBirthTime
    }
)

# PS3.15 E.3.10 "Retain Safe Private Option" lists private attributes known to be safe (Table
# E.3.10-1). We keep only this small subset of it (diffusion-encoding parameters that MR research
# needs); grow it only from the standard's table. Key: (private creator, group, element low byte).
SAFE_PRIVATE: Final[frozenset[tuple[str, int, int]]] = frozenset(
    {
        ("SIEMENS MR HEADER", 0x0019, 0x0A),  # NumberOfImagesInMosaic
        ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value
        ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality
        ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection
        ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix
        ("GEMS_ACQU_01", 0x0019, 0xBB),  # diffusion gradient direction x
        ("GEMS_ACQU_01", 0x0019, 0xBC),  # diffusion gradient direction y
        ("GEMS_ACQU_01", 0x0019, 0xBD),  # diffusion gradient direction z
        ("GEMS_PARM_01", 0x0043, 0x39),  # b-value (slop_int_6..9)
        ("Philips Imaging DD 001", 0x2001, 0x03),  # DiffusionBFactor
        ("Philips Imaging DD 001", 0x2001, 0x04),  # DiffusionDirection
    }
)

# Unlisted UI attributes are instance UIDs unless they name a class, syntax, scheme or context:
# those identify no one and must keep their registered values.
UID_KEYWORD_KEEP_PARTS: Final = ("SOPClass", "TransferSyntax")
UID_KEYWORDS_KEPT: Final[frozenset[str]] = frozenset(
    {"ImplementationClassUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID", "SegmentationTemplateUID"}
)

# File meta information (PS3.10 7.1) that survives; everything else in group 0002 (AE titles,
# presentation addresses, private information) is removed.
FILE_META_KEPT: Final[frozenset[int]] = frozenset(
    {
        0x00020000,  # FileMetaInformationGroupLength (recomputed on write)
        0x00020001,  # FileMetaInformationVersion
        0x00020002,  # MediaStorageSOPClassUID
        0x00020003,  # MediaStorageSOPInstanceUID (set to the new SOPInstanceUID)
        0x00020010,  # TransferSyntaxUID
        0x00020012,  # ImplementationClassUID
        0x00020013,  # ImplementationVersionName
    }
)

# Burned-in annotation screening (see the rule list in deid.py's docstring).
SECONDARY_CAPTURE_SOP_CLASSES: Final[frozenset[str]] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
    }
)
BURNED_IN_MODALITIES: Final[frozenset[str]] = frozenset(
    {
        "US",  # ultrasound: patient and institution text in the image
        "IVUS",  # intravascular ultrasound
        "SC",  # secondary capture
        "OT",  # other (often screen grabs)
        "XC",  # external-camera photography: faces and labels
        "ES",  # endoscopy: captions on the video frame
        "GM",  # general microscopy: slide labels
        "OP",  # ophthalmic photography
        "DOC",  # scanned documents
    }
)

TEXT_VRS: Final = frozenset({"AE", "LO", "LT", "SH", "ST", "UC", "UT", "UR"})
_AGE = re.compile(r"^(\d{3})([DWMY])$")
_DATE_PARTS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")
_DIGIT_RUNS = re.compile(r"\b\d{4}[./-]\d{1,2}[./-]\d{1,2}\b|\b\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b|\d{4,}")


def clean(value: object) -> str:
    if value is None:
        return ""
    return (value.decode("latin-1") if isinstance(value, bytes) else str(value)).strip(" \x00\t\r\n")


def text_of(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if type(value) is str:  # the common case, as strings_of below would give it
        return value.strip(" \x00\t\r\n")
    return "" if isinstance(value, Sequence) else "\\".join(strings_of(value))


def strings_of(value: object) -> list[str]:
    if type(value) is str:  # the common case first (what clean does to a str)
        return [value.strip(" \x00\t\r\n")] if value else []
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [clean(v) for v in items]


@functools.lru_cache(maxsize=1024)  # a study's dates repeat file after file (in memory only)
def shift_date(value: str, days: int) -> str | None:
    """Shift a DA value (also ACR-NEMA ``YYYY.MM.DD``, ranges, year or month precision) by ``days``."""
    if "-" in value:
        parts = [(shift_date(p, days) if p else "") for p in value.split("-")]
        return None if len(parts) != 2 or None in parts else "-".join(p or "" for p in parts)
    digits = value.replace(".", "") if len(value) == 10 and value[4::3] == ".." else value
    shifted = shift_datetime(digits, days) if len(digits) in (4, 6, 8) else None
    return shifted if shifted is not None and len(shifted) == len(digits) else None


@functools.lru_cache(maxsize=1024)
def shift_datetime(value: str, days: int) -> str | None:
    """Shift the date part of a DT value, keeping its precision, time of day and UTC offset."""
    match = _DATE_PARTS.match(value)
    if not match or not value[: len(value) - len(match[4])].isdigit():
        return None
    year, month, day, rest = match[1], match[2], match[3], match[4]
    if month is None and rest[:1].isdigit():
        return None
    try:
        d = date(int(year), int(month or 7), int(day or (15 if month else 1))) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    out = f"{d.year:04d}" + (f"{d.month:02d}" if month else "") + (f"{d.day:02d}" if day else "")
    return out + rest


def age_years(age: str, birth: str, on: str) -> float | None:
    match = _AGE.match(age)
    if match:
        return int(match[1]) / {"Y": 1, "M": 12, "W": 52.1775, "D": 365.25}[match[2]]
    born, seen = parse_da(birth), parse_da(on)
    if born is None or seen is None or seen < born:
        return None
    return (seen - born).days / 365.25


def parse_da(value: str) -> date | None:
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def age_band(years: float | None) -> str | None:
    if years is None:
        return None
    if years >= 90:
        return "90+"
    low = int(years) // 10 * 10
    return f"{low}-{low + 9}"


def coarse_age(age: str) -> str:
    """PatientAge as kept: ages over 89 are pooled (HIPAA Safe Harbor); malformed ages are emptied."""
    match = _AGE.match(age)
    if not match:
        return ""
    return "090Y" if match[2] == "Y" and int(match[1]) >= 90 else age


def screen_burned_in(ds: Dataset) -> str | None:
    get = functools.partial(text_of, ds)
    burned = get("BurnedInAnnotation").upper()
    if burned == "YES":
        return "BurnedInAnnotation is YES"
    if get("RecognizableVisualFeatures").upper() == "YES":
        return "RecognizableVisualFeatures is YES"
    if burned == "NO":
        return None
    if get("SOPClassUID") in SECONDARY_CAPTURE_SOP_CLASSES:
        return "Secondary Capture SOP class: pixels may carry burned-in text"
    modality = get("Modality").upper()
    if modality in BURNED_IN_MODALITIES:
        return f"modality {modality} often carries burned-in text or faces"
    image_type = [v.upper() for v in strings_of(ds.get("ImageType"))]
    if "SCREEN SAVE" in image_type:
        return "ImageType SCREEN SAVE: a screen capture"
    colour = get("PhotometricInterpretation").upper().startswith(("RGB", "YBR", "PALETTE"))
    if image_type[:1] == ["DERIVED"] and "SECONDARY" in image_type and colour:
        return "derived secondary colour image: a rendering or capture"
    for tag in list(ds.keys()):
        if (tag.group & 0xFF00) == 0x6000 and tag.element == 0x0102 and Tag(tag.group, 0x3000) not in ds:
            position = ds[tag].value
            if isinstance(position, int) and position > 0:
                return "overlay stored in unused pixel data bits"
    return None


def clean_text(value: str, terms: Iterable[str]) -> str:
    """E.3.5 cleaning: cut known identifiers, dates and long digit runs out of a description."""
    out = value
    for term in sorted(terms, key=len, reverse=True):
        out = re.sub(re.escape(term), " ", out, flags=re.IGNORECASE)
    out = _DIGIT_RUNS.sub(" ", out)
    return re.sub(r"\s+", " ", out).strip(" -_,;:/")


def identifiers_of(ds: Dataset) -> tuple[str, ...]:
    """Lower-cased identifiers that must not survive in any kept text value."""
    found: set[str] = set()
    for keyword in ("PatientName", "PatientBirthName", "PatientMotherBirthName"):
        name = text_of(ds, keyword)
        if name:  # an empty name adds nothing that is kept below
            found |= {name, name.replace("^", " ").strip(), *_NAME_PARTS.split(name)}
    for keyword in ("PatientID", "AccessionNumber", "PatientBirthDate", "OtherPatientIDs"):
        found.update(strings_of(ds.get(keyword)))  # get: the value, None when absent
    return tuple(sorted(s.lower() for s in found if len(s) >= 4 and (len(s) >= 6 or _LETTER.search(s))))


_NAME_PARTS: Final = re.compile(r"[\^=]")
_LETTER: Final = re.compile("[A-Za-z]")


def listed_strings(ds: Dataset, exact: Mapping[int, str]) -> tuple[str, ...]:
    """Text values of attributes Table E.1-1 protects (for cleaning descriptors), at any depth."""
    found: set[str] = set()

    def visit(item: Dataset, elem: DataElement) -> None:
        if int(elem.tag) in exact and int(elem.tag) not in CLEAN_DESCRIPTORS and elem.VR in TEXT_VRS | {"PN"}:
            for value in strings_of(elem.value):
                found.update({value, *re.split(r"[\^=\s]+", value)})

    ds.walk(visit)
    return tuple(sorted(s.lower() for s in found if len(s) >= 3))


def uid_kept(keyword: str) -> bool:
    """Whether an attribute the table does not list holds a class, syntax or scheme UID (kept)."""
    return keyword in UID_KEYWORDS_KEPT or any(part in keyword for part in UID_KEYWORD_KEEP_PARTS)


def code_item(value: str, meaning: str) -> Dataset:
    """One DCM code sequence item (CID 7050 for DeidentificationMethodCodeSequence)."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def dummy_value(vr: str) -> object:
    """The D (dummy) value for a VR: non-empty, valid, and meaning nothing."""
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "UN"):
        return b"\x00\x00"
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"):
        return 0
    return {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000D", "DS": "0", "IS": "0"}.get(
        vr, "ANONYMIZED"
    )
