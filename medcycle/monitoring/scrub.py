"""Scrubbing patient data out of text and structures that leave the platform (error messages, Sentry events).

Two rules, applied together:

* **Keys** — any mapping entry whose key names a patient attribute (DICOM keywords such as
  ``PatientName``, ``PatientID``, ``PatientBirthDate``, ``AccessionNumber``, ``StudyInstanceUID``, their
  snake_case forms, and generic ``name``/``mrn``/``dob``/``email``/``address``/``phone``…) or a credential
  (``authorization``, ``cookie``, ``token``, ``password``, ``secret``, ``dsn``…) has its value replaced.
* **Patterns** — in every string: DICOM person names (``DOE^JOHN``), DICOM UIDs, dates written as
  ``YYYYMMDD`` or ``YYYY-MM-DD``, e-mail addresses, runs of 6+ digits (record numbers, phone numbers) and
  ``Keyword=value`` / ``Keyword: value`` pairs for the patient keywords are replaced.

What is replaced becomes ``[scrubbed]``. It errs on the side of removing too much: a stack trace with a
scrubbed number is still useful; a leaked name is not recoverable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REPLACEMENT = "[scrubbed]"
PATIENT_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientNames", "PatientComments",
    "IssuerOfPatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "MediaStorageSOPInstanceUID", "StudyID", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
    "StudyTime", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "RequestingPhysician", "StationName", "DeviceSerialNumber", "MilitaryRank", "EthnicGroup",
    "Occupation", "AdmissionID", "PatientWeight", "PatientSize",
)
_GENERIC_KEYS = ("name", "first_name", "last_name", "mrn", "dob", "birth", "email", "address", "phone", "ssn",
                 "accession", "patient", "authorization", "cookie", "set-cookie", "token", "password", "passwd",
                 "secret", "api_key", "apikey", "dsn", "session", "x-api-key", "proxy-authorization")


def _snake(keyword: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", keyword).lower()


_SENSITIVE = frozenset({k.lower() for k in PATIENT_KEYWORDS} | {_snake(k) for k in PATIENT_KEYWORDS}
                       | set(_GENERIC_KEYS))
_PAIR = re.compile(r"\b(" + "|".join(sorted(PATIENT_KEYWORDS, key=len, reverse=True))
                   + r")\b(\s*[=:]\s*|\s+)(\"[^\"]*\"|'[^']*'|[^\s,;)\]}]+)", re.IGNORECASE)
_PATTERNS = (
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # e-mail
    re.compile(r"\b[0-9]+(?:\.[0-9]+){3,}\b"),  # DICOM UIDs (and other dotted ids)
    re.compile(r"\b[A-Za-z][A-Za-z'-]*\^[A-Za-z'^ -]*"),  # DICOM person names: FAMILY^GIVEN^MIDDLE
    re.compile(r"\b(?:19|20)\d{2}-?(?:0[1-9]|1[0-2])-?(?:0[1-9]|[12]\d|3[01])\b"),  # dates
    re.compile(r"(?<![\w.])\d{6,}(?![\w.])"),  # record and phone numbers
)


def is_sensitive_key(key: str) -> bool:
    lowered = key.strip().lower()
    return lowered in _SENSITIVE or any(lowered.endswith(s) for s in ("_name", "_id_number", "_token", "_secret",
                                                                       "password"))


def scrub_text(text: str) -> str:
    """``text`` with patient identifiers replaced (see the module docstring)."""
    out = _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REPLACEMENT}", text)
    for pattern in _PATTERNS:
        out = pattern.sub(REPLACEMENT, out)
    return out


def scrub(value: Any, *, depth: int = 0) -> Any:
    """A copy of ``value`` (mappings, lists, tuples, strings) with sensitive keys and patterns scrubbed."""
    if depth > 32:
        return REPLACEMENT
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {k: (REPLACEMENT if isinstance(k, str) and is_sensitive_key(k) and v not in (None, "", [], {})
                    else scrub(v, depth=depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [scrub(v, depth=depth + 1) for v in value]
        if len(items) == 2 and isinstance(items[0], str) and is_sensitive_key(items[0]):
            items[1] = REPLACEMENT  # header lists as [name, value] pairs (Sentry's request headers)
        return items if isinstance(value, list) else tuple(items)
    return value
