"""Keyed pseudonyms for de-identification: patient ids, UIDs and per-patient date shifts (HMAC-SHA256).

The rules are documented with the profile in :mod:`medcycle.catalog.deid`; the same key gives the same values
in every run and process, so later studies of a patient re-link.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Final

from medcycle.catalog import deid_tables as tables
from medcycle.errors import ConfigError, ValidationFailed

WELL_KNOWN_UID_ROOT: Final = "1.2.840.10008."
MAX_SHIFT_DAYS: Final = 365
UID_CACHE: Final = 4096  # pseudonymous UIDs remembered per Pseudonymizer (in memory only)


class Pseudonymizer:
    """Keyed, deterministic pseudonyms: the same key gives the same values in every process."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ConfigError("the de-identification key is shorter than 16 bytes", hint="Use load_or_create_key().")
        self._key = key
        self._uids: dict[str, str] = {}  # the study, series and frame of reference UIDs repeat file after file
        self._shifts: dict[str, int] = {}  # and so do the patient: pseudonym -> date shift

    def __repr__(self) -> str:
        return f"Pseudonymizer(fingerprint={self.fingerprint})"

    def _mac(self, label: str, *parts: str) -> bytes:
        message = label.encode()
        for part in parts:
            raw = part.encode("utf-8", "surrogateescape")
            message += len(raw).to_bytes(4, "big") + raw
        return hmac.digest(self._key, message, hashlib.sha256)

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible id of the key: record it to notice a swapped key."""
        return self._mac("medcycle/key-fingerprint").hex()[:16]

    def patient(self, issuer: str | None, patient_id: str | None, *, fallback: str | None = None) -> str:
        """The patient pseudonym; ``fallback`` (the StudyInstanceUID) keys it when PatientID is empty."""
        pid = tables.clean(patient_id)
        if pid:
            return self._mac("medcycle/patient", tables.clean(issuer), pid).hex()[:32]
        other = tables.clean(fallback)
        if other:
            return self._mac("medcycle/patient-without-id", other).hex()[:32]
        raise ValidationFailed(
            "de-identification failed: no PatientID and no instance UID to key the patient pseudonym",
            hint="The file lacks the identifiers every DICOM instance must have; it cannot be catalogued.",
        )

    def uid(self, original: str) -> str:
        """``2.25.<decimal>`` for any UID (well-known ``1.2.840.10008.*`` UIDs come back unchanged)."""
        found = self._uids.get(original)
        if found is not None:
            return found
        value = tables.clean(original)
        if not value or value.startswith(WELL_KNOWN_UID_ROOT):
            new = value
        else:
            new = f"2.25.{uuid.UUID(bytes=self._mac('medcycle/uid', value)[:16], version=4).int}"
        if len(self._uids) >= UID_CACHE:
            self._uids.clear()
        self._uids[original] = new
        return new

    def date_shift_days(self, patient_pseudonym: str) -> int:
        """Days to add to every date of this patient: between -365 and -1, never 0."""
        found = self._shifts.get(patient_pseudonym)
        if found is None:
            n = int.from_bytes(self._mac("medcycle/date-shift", patient_pseudonym)[:8], "big")
            found = -(1 + n % MAX_SHIFT_DAYS)
            if len(self._shifts) >= UID_CACHE:
                self._shifts.clear()
            self._shifts[patient_pseudonym] = found
        return found

    def content_key(self, data_digest: str) -> str:
        """A keyed id for an original file's digest (64 hex): lets re-ingest be recognised without
        storing a plain hash of identifying bytes."""
        return self._mac("medcycle/content", data_digest).hex()
