"""Controlled vocabularies: body parts (raw DICOM values → a small set of regions), laterality, views.

The raw value is always kept beside the normalised one (``SeriesRow.body_part_raw``). Regions follow
the coarse anatomic regions of DICOM CID 4031, in lowercase words.
"""

from __future__ import annotations

import re

BODY_PARTS: dict[str, tuple[str, ...]] = {
    "head": ("HEAD", "BRAIN", "SKULL", "CRANIUM", "FACE", "ORBIT", "SINUS", "IAC", "EAR", "TMJ", "JAW", "MANDIBLE"),
    "neck": ("NECK", "THYROID", "LARYNX", "PHARYNX", "CAROTID"),
    "chest": ("CHEST", "THORAX", "LUNG", "LUNGS", "RIB", "RIBS", "STERNUM", "MEDIASTINUM", "TORAX"),
    "heart": ("HEART", "CARDIAC", "CORONARY", "AORTA"),
    "breast": ("BREAST", "MAMMA", "MAMMO"),
    "abdomen": ("ABDOMEN", "ABD", "LIVER", "KIDNEY", "PANCREAS", "SPLEEN", "STOMACH", "BOWEL", "COLON"),
    "pelvis": ("PELVIS", "HIP", "HIPS", "PROSTATE", "BLADDER", "UTERUS", "SACRUM"),
    "spine": ("SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "VERTEBRA", "COCCYX"),
    "upper-limb": (
        "SHOULDER",
        "ARM",
        "ELBOW",
        "FOREARM",
        "WRIST",
        "HAND",
        "FINGER",
        "HUMERUS",
        "CLAVICLE",
        "SCAPULA",
        "UPPER EXTREMITY",
    ),
    "lower-limb": (
        "LEG",
        "KNEE",
        "ANKLE",
        "FOOT",
        "TOE",
        "FEMUR",
        "TIBIA",
        "FIBULA",
        "THIGH",
        "CALF",
        "LOWER EXTREMITY",
        "EXTREMITY",
    ),
    "whole-body": ("WHOLEBODY", "WHOLE BODY", "WB", "BODY", "TORSO", "CHEST_ABDOMEN_PELVIS", "CAP"),
}
_LOOKUP: list[tuple[str, str]] = sorted(
    ((alias, region) for region, aliases in BODY_PARTS.items() for alias in aliases), key=lambda p: -len(p[0])
)


def normalise_body_part(raw: str | None) -> str | None:
    """``"L-SPINE"`` → ``"spine"``; ``"CHEST_ABDOMEN_PELVIS"`` → ``"whole-body"``; unknown → ``"other"``."""
    if raw is None:
        return None
    value = re.sub(r"[^A-Z ]+", " ", raw.upper()).strip()
    if not value:
        return None
    compact = value.replace(" ", "")
    for alias, region in _LOOKUP:
        a = alias.replace(" ", "")
        if compact == a or compact.endswith(a) or compact.startswith(a) or re.search(rf"\b{alias}\b", value):
            return region
    return "other"


def normalise_laterality(raw: str | None) -> str | None:
    value = (raw or "").strip().upper()
    return {"R": "R", "L": "L", "B": "B", "U": None, "": None}.get(value, value[:8] or None)


def normalise_view(raw: str | None) -> str | None:
    value = (raw or "").strip().upper()
    return value[:16] or None
