"""Checks of user input shared by the hypothesis operations: references (``H-7``), names and texts."""

from __future__ import annotations

import re

from medcycle.errors import UsageError

REF_RE = re.compile(r"^\s*(?:h-?)?(\d{1,12})\s*$", re.IGNORECASE)
REF_PREFIX = "H-"
NAME_MAX = 64
TITLE_MAX = 200
PROJECT_MAX = 128
TEXT_MAX = 20_000


def ref_of(hypothesis_id: int) -> str:
    """How people write a hypothesis: ``H-7``."""
    return f"{REF_PREFIX}{hypothesis_id}"


def parse_ref(ref: str | int) -> int:
    """The id in ``H-7``, ``h7`` or ``7``."""
    if isinstance(ref, int) and not isinstance(ref, bool) and ref > 0:
        return ref
    match = REF_RE.match(str(ref))
    if match is None or int(match.group(1)) == 0:
        raise UsageError(
            f"{ref!r} is not a hypothesis reference",
            hint="Write H-<number>, e.g. H-7; list them with `medcycle hypothesis list`.",
        )
    return int(match.group(1))


def _no_controls(value: str, what: str, *, allow_newlines: bool) -> None:
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()
    if any(ord(ch) < 0x20 and ch not in allowed for ch in value):
        raise UsageError(f"the {what} contains control characters", hint=f"Give the {what} as plain text.")


def line(value: str | None, what: str, *, max_len: int) -> str:
    """A required one-line value (title, project, user name), stripped and bounded."""
    text = (value or "").strip()
    if not text:
        raise UsageError(f"the {what} is empty", hint=f"Give a {what}.")
    if len(text) > max_len:
        raise UsageError(f"the {what} is {len(text)} characters long", hint=f"Keep the {what} to {max_len} characters.")
    _no_controls(text, what, allow_newlines=False)
    return text


def name(value: str | None, what: str) -> str:
    """A user or actor name as the audit log writes it (``alice``, ``local:alice``)."""
    text = line(value, what, max_len=NAME_MAX)
    if any(ch.isspace() for ch in text):
        raise UsageError(f"the {what} {text!r} contains spaces", hint="Give a user name, e.g. alice.")
    return text


def text(value: str | None, what: str) -> str | None:
    """Optional free text (description, note, comment): stripped; ``None`` when empty."""
    stripped = (value or "").strip()
    if not stripped:
        return None
    if len(stripped) > TEXT_MAX:
        raise UsageError(f"the {what} is {len(stripped)} characters long", hint=f"Keep it under {TEXT_MAX} characters.")
    _no_controls(stripped, what, allow_newlines=True)
    return stripped


def required_text(value: str | None, what: str) -> str:
    """Free text that must be given (a reason, an answer)."""
    checked = text(value, what)
    if checked is None:
        raise UsageError(f"a {what} is required", hint=f"Give the {what} in a few words.")
    return checked
