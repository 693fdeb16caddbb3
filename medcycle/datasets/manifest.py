"""The canonical manifest of a dataset version, and its digest (the version id).

A manifest is UTF-8 JSON with sorted keys, no insignificant whitespace and items sorted by instance uid,
so the same content always gives the same bytes and therefore the same SHA-256::

    {"dataset": "chest-xr",
     "format": "medcycle.dataset-manifest/1",
     "items": [{"bytes": 524288, "digest": "<sha256 of the image object>", "format": "dicom",
                "labels": ["pneumonia"], "modality": "CR", "patient": "<pseudonym>",
                "series": "<pseudonymous uid>", "source": "clinic-a", "split": "train",
                "study": "<pseudonymous uid>", "uid": "<pseudonymous SOPInstanceUID>"}, …],
     "label_set": "<label set digest or null>",
     "split_policy": {"kind": "ratios", "seed": 0, "splits": {"train": 0.7, "val": 0.15, "test": 0.15},
                      "stratify": ["label"], "unit": "patient"}}

Nothing time- or user-dependent is in it (who froze it and when live in the database), so freezing the
same content twice yields the same version id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medcycle.errors import IntegrityError

MANIFEST_FORMAT = "medcycle.dataset-manifest/1"

#: Folder extension per catalog format, used by ``pull`` to name files.
EXTENSIONS = {"dicom": "dcm", "nifti": "nii.gz", "png": "png", "jpeg": "jpg"}


def canonical_json(data: Any) -> bytes:
    """The one byte form of ``data`` that digests are computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def digest_of(data: Any) -> str:
    return hashlib.sha256(canonical_json(data)).hexdigest()


@dataclass(frozen=True, slots=True)
class ManifestItem:
    """One image of a version, with everything training code needs to find and label it."""

    uid: str
    digest: str
    bytes: int
    format: str
    patient: str
    study: str
    series: str
    source: str
    modality: str | None
    labels: tuple[str, ...] = ()
    split: str | None = None

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.format, "bin")

    def with_split(self, split: str | None) -> ManifestItem:
        """This item in ``split`` (``dataclasses.replace`` costs five times as much, per item of a freeze)."""
        return ManifestItem(self.uid, self.digest, self.bytes, self.format, self.patient, self.study, self.series,
                            self.source, self.modality, self.labels, split)

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "digest": self.digest, "bytes": self.bytes, "format": self.format,
                "patient": self.patient, "study": self.study, "series": self.series, "source": self.source,
                "modality": self.modality, "labels": list(self.labels), "split": self.split}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ManifestItem:
        return cls(
            uid=str(data["uid"]), digest=str(data["digest"]), bytes=int(data["bytes"]), format=str(data["format"]),
            patient=str(data["patient"]), study=str(data["study"]), series=str(data["series"]),
            source=str(data["source"]), modality=data.get("modality"),
            labels=tuple(str(x) for x in data.get("labels") or ()), split=data.get("split"),
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    dataset: str
    items: tuple[ManifestItem, ...]
    label_set: str | None = None
    split_policy: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls, dataset: str, items: Iterable[ManifestItem], *, label_set: str | None, split_policy: dict[str, Any]
    ) -> Manifest:
        ordered = tuple(sorted(items, key=lambda i: i.uid))
        return cls(dataset, ordered, label_set, dict(split_policy))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "dataset": self.dataset,
            "label_set": self.label_set,
            "split_policy": self.split_policy,
            "items": [i.to_dict() for i in self.items],
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def digest(self) -> str:
        return self.encoded()[1]

    def encoded(self) -> tuple[bytes, str]:
        """The canonical bytes and their SHA-256 (the version id), from one serialisation: for a large
        manifest that is the costly part, so callers that need both ask for both at once."""
        body = self.to_bytes()
        return body, hashlib.sha256(body).hexdigest()

    @property
    def bytes_total(self) -> int:
        return sum(i.bytes for i in self.items)

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_digest: str | None = None) -> Manifest:
        """Parse a stored manifest; when ``expected_digest`` is given the bytes must hash to it."""
        if expected_digest is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected_digest:
                raise IntegrityError(
                    f"manifest {expected_digest} is corrupt: its bytes hash to {actual}",
                    hint="Restore the object from a replica or backup, then run `medcycle store fsck`.",
                    digest=expected_digest,
                )
        raw = json.loads(data)
        if raw.get("format") != MANIFEST_FORMAT:
            raise IntegrityError(
                f"unknown manifest format {raw.get('format')!r}",
                hint="Upgrade medcycle to read manifests written by a newer release.",
            )
        return cls(
            dataset=raw["dataset"],
            items=tuple(ManifestItem.from_dict(i) for i in raw["items"]),
            label_set=raw.get("label_set"),
            split_policy=dict(raw.get("split_policy") or {}),
        )
