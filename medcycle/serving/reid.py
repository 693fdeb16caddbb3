"""The return address of a DICOM study sent for inference, sealed: what maps a result back to the PACS.

Why it exists: DICOM intake (STOW-RS and the C-STORE SCP) de-identifies every instance with the catalog's
PS3.15 Basic profile (:func:`medcycle.catalog.deid.deidentify`) before anything is stored, so the object
store, the database, the queue and the logs never hold patient data. A SEG or SR sent back to a hospital,
though, must name the *original* patient, study, series and instances, or the PACS files it nowhere. The
return address is exactly that minimum, and nothing more:

* ``uids``: pseudonymous UID → original UID, for every UID the de-identification replaced (study, series,
  instances, frame of reference, references). The pseudonyms are keyed HMACs, so the map is one-way
  without this record; QIDO/WADO lookups by an original StudyInstanceUID recompute the pseudonym instead.
* ``patient`` and ``study``: the Patient and General Study module attributes a derived object must copy
  (:data:`PATIENT_KEYWORDS`, :data:`STUDY_KEYWORDS`).

It is stored only sealed: AES-256-GCM under a key derived from the de-identification key (HKDF-like HMAC
derivation, so the raw key is never used twice for different purposes), with a synthetic nonce (an HMAC of
the plaintext: the same study seals to the same bytes, so re-sending a study is idempotent and nonces never
repeat for different plaintexts). Whoever holds the object store but not the key reads nothing; tampering
or the wrong key is an :class:`~medcycle.errors.IntegrityError`. :func:`reidentify` runs only at the
egress (WADO-RS responses), in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from pydicom import Dataset

from medcycle.catalog.deid import WELL_KNOWN_UID_ROOT, Pseudonymizer
from medcycle.errors import ConfigError, IntegrityError, ValidationFailed

MAGIC: Final = b"MCRA1"
NONCE_BYTES: Final = 12
AAD: Final = b"medcycle/return-address/v1"
PATIENT_KEYWORDS: Final = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS: Final = ("StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
                         "AccessionNumber")


@dataclass(frozen=True)
class ReturnAddress:
    """The original identity of one study (see the module docstring). Never log or store it unsealed."""

    study_uid: str
    patient: dict[str, str] = field(default_factory=dict)
    study: dict[str, str] = field(default_factory=dict)
    uids: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print identifiers by accident
        return f"ReturnAddress(<sealed>, {len(self.uids)} uids)"

    def to_json(self) -> bytes:
        return json.dumps({"study_uid": self.study_uid, "patient": self.patient, "study": self.study,
                           "uids": dict(sorted(self.uids.items()))}, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ReturnAddress:
        data = json.loads(raw)
        return cls(str(data["study_uid"]), dict(data["patient"]), dict(data["study"]), dict(data["uids"]))

    def original(self, uid: str) -> str:
        """The original of a pseudonymous UID (a UID the de-identification did not replace comes back as is)."""
        return self.uids.get(uid, uid)


def _uid_values(ds: Dataset) -> Iterator[str]:
    """Every UID value in ``ds`` and its sequences (file meta included)."""
    meta = getattr(ds, "file_meta", None)
    for container in (meta, ds) if meta is not None else (ds,):
        for elem in container.iterall():
            if elem.VR != "UI" or elem.value in (None, ""):
                continue
            values = elem.value if elem.VM > 1 else [elem.value]
            for value in values:
                text = str(value).strip("\0 ")
                if text:
                    yield text


def capture(ds: Dataset, pseudo: Pseudonymizer) -> ReturnAddress:
    """The return address of one original (still identified) instance; call it before de-identifying ``ds``."""
    study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
    if not study_uid:
        raise ValidationFailed("the instance has no StudyInstanceUID", hint="Every DICOM instance must carry one.")
    uids: dict[str, str] = {}
    for value in _uid_values(ds):
        if value.startswith(WELL_KNOWN_UID_ROOT):
            continue
        replaced = pseudo.uid(value)
        if replaced != value:
            uids[replaced] = value
    return ReturnAddress(study_uid, _attributes(ds, PATIENT_KEYWORDS), _attributes(ds, STUDY_KEYWORDS), uids)


def _attributes(ds: Dataset, keywords: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for keyword in keywords:
        value = ds.get(keyword)
        if value is not None and str(value) != "":
            out[keyword] = str(value)
    return out


def merge(addresses: Iterable[ReturnAddress]) -> ReturnAddress:
    """One return address for the instances of one study (their UID maps united, the first one's headers)."""
    items = list(addresses)
    if not items:
        raise ValidationFailed("a study needs at least one instance", hint="Send the study's instances.")
    first = items[0]
    uids: dict[str, str] = {}
    for item in items:
        if item.study_uid != first.study_uid:
            raise ValidationFailed("instances of different studies cannot share a return address",
                                   hint="Group instances by StudyInstanceUID before submitting.")
        uids.update(item.uids)
    return ReturnAddress(first.study_uid, dict(first.patient), dict(first.study), uids)


class Sealer:
    """Seals and opens return addresses under keys derived from the de-identification key."""

    def __init__(self, deid_key: bytes) -> None:
        if not isinstance(deid_key, bytes) or len(deid_key) < 16:
            raise ConfigError("the de-identification key is shorter than 16 bytes",
                              hint="Use medcycle.catalog.keys.load_or_create_key().")
        self._enc = hmac.new(deid_key, b"medcycle/return-address/encrypt", hashlib.sha256).digest()
        self._siv = hmac.new(deid_key, b"medcycle/return-address/nonce", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "Sealer(<key>)"

    def seal(self, address: ReturnAddress) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        plain = address.to_json()
        nonce = hmac.new(self._siv, plain, hashlib.sha256).digest()[:NONCE_BYTES]
        return MAGIC + nonce + AESGCM(self._enc).encrypt(nonce, plain, AAD)

    def open(self, sealed: bytes) -> ReturnAddress:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not sealed.startswith(MAGIC) or len(sealed) < len(MAGIC) + NONCE_BYTES + 16:
            raise IntegrityError("a sealed return address is malformed",
                                 hint="The object is not a return address; check which object the study names.")
        nonce = sealed[len(MAGIC):len(MAGIC) + NONCE_BYTES]
        try:
            plain = AESGCM(self._enc).decrypt(nonce, sealed[len(MAGIC) + NONCE_BYTES:], AAD)
        except InvalidTag as exc:
            raise IntegrityError("a sealed return address does not open with this de-identification key",
                                 hint="The key file changed or the object was altered: restore the original "
                                      "key (deid_key_file) from its backup.") from exc
        return ReturnAddress.from_json(plain)


def _replace_uids(ds: Dataset, address: ReturnAddress) -> None:
    for elem in ds.iterall():
        if elem.VR != "UI" or elem.value in (None, ""):
            continue
        if elem.VM > 1:
            elem.value = [address.original(str(v)) for v in elem.value]
        else:
            elem.value = address.original(str(elem.value))


def reidentify(ds: Dataset, address: ReturnAddress) -> Dataset:
    """Point a result made from de-identified inputs (SEG, SR, secondary capture) back at the original study.

    Replaces in place every pseudonymous UID the return address knows by its original (the result's own new
    UIDs are unknown to it and stay) and restores the Patient and General Study modules, so a PACS files
    the result with the study it came from.
    """
    _replace_uids(ds, address)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _replace_uids(meta, address)
    for keyword in PATIENT_KEYWORDS + STUDY_KEYWORDS:
        value = address.patient.get(keyword, address.study.get(keyword))
        if value is not None:
            setattr(ds, keyword, value)
        elif keyword in ds and keyword not in ("PatientName", "PatientID", "StudyInstanceUID"):
            del ds[keyword]
    ds.StudyInstanceUID = address.study_uid
    for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if keyword in ds:
            del ds[keyword]
    if "PatientIdentityRemoved" in ds:
        ds.PatientIdentityRemoved = "NO"
    return ds

