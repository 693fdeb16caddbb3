"""Located parsing: JSON and XML accessors whose every error names the file and the element or line.

A labeling-tool export that is wrong somewhere deep inside (``annotations[12].bbox`` with three numbers,
line 3 of one YOLO file) must say exactly where, or the person fixing it is left bisecting a 40 MB file.
Readers walk their input through :class:`Node` (JSON) and :class:`XNode` (XML); both carry a
:class:`Where` and raise :class:`~medcycle.errors.ValidationFailed` through it.

XML is parsed with :mod:`xml.etree.ElementTree` after refusing any DOCTYPE (and so any entity
declaration): no labeling-tool format needs one, and refusing them closes entity-expansion bombs and
external entities without a new dependency.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from medcycle.errors import ValidationFailed

_NEEDED = "Every element of this kind needs it; see the format's documentation."
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Where:
    """A place in an input: ``file`` (relative to the input), optional ``line`` and element ``path``."""

    file: str
    path: str = ""
    line: int | None = None

    def __str__(self) -> str:
        head = self.file if self.line is None else f"{self.file} line {self.line}"
        return f"{head}: {self.path}" if self.path else head

    def at(self, step: str | int) -> Where:
        """The place one step deeper: ``[3]`` for an index, ``.key`` (or ``key`` at the top) for a field."""
        if isinstance(step, int):
            return Where(self.file, f"{self.path}[{step}]", self.line)
        return Where(self.file, f"{self.path}.{step}" if self.path else step, self.line)

    def child(self, tag: str, index: int | None = None) -> Where:
        """An XML child element: ``object[2]`` (1-based, as XPath counts)."""
        step = tag if index is None else f"{tag}[{index}]"
        return Where(self.file, f"{self.path}/{step}" if self.path else step, self.line)

    def at_line(self, line: int) -> Where:
        return Where(self.file, self.path, line)

    def error(self, problem: str, hint: str) -> ValidationFailed:
        """``<file>: <path> <problem>`` or ``<file> line N: <problem>``, with the file and element in details."""
        message = f"{self} {problem}" if self.path else f"{self}: {problem}"
        return ValidationFailed(message, hint=hint, file=self.file, element=self.path or None, line=self.line)

    def fail(self, problem: str, hint: str) -> NoReturn:
        raise self.error(problem, hint)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Re-raise the model's own validation errors (a swapped box, a 2-point polygon) located here."""
        try:
            yield
        except ValidationFailed as exc:
            if "file" in exc.details:
                raise
            raise self.error(f"is invalid: {exc.message}", exc.hint or "Fix this element.") from exc


def _number_ok(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


class Node:
    """A JSON value and where it is; accessors check the type and fail naming the element."""

    __slots__ = ("value", "where")

    def __init__(self, value: Any, where: Where) -> None:
        self.value = value
        self.where = where

    def fail(self, problem: str, hint: str = "Fix this element and import again.") -> NoReturn:
        self.where.fail(problem, hint)

    def mapping(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            self.fail(f"should be an object, got {_kind(self.value)}")
        return self.value

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and self.value.get(key) is not None

    def key(self, key: str) -> Node:
        """A required field (present and not null)."""
        data = self.mapping()
        if data.get(key) is None:
            self.where.at(key).fail("is missing", "Every entry of this kind needs it; see the format's documentation.")
        return Node(data[key], self.where.at(key))

    def opt(self, key: str) -> Node | None:
        data = self.mapping()
        return None if data.get(key) is None else Node(data[key], self.where.at(key))

    def items(self) -> list[Node]:
        if not isinstance(self.value, list):
            self.fail(f"should be a list, got {_kind(self.value)}")
        return [Node(v, self.where.at(i)) for i, v in enumerate(self.value)]

    def text(self) -> str:
        if not isinstance(self.value, str) or not self.value:
            self.fail(f"should be a non-empty string, got {_kind(self.value)}")
        return self.value

    def opt_text(self, key: str) -> str | None:
        """An optional text field: None when missing, null or empty; a number is taken as its text."""
        node = self.opt(key)
        if node is None or node.value == "":
            return None
        if isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return str(node.value)
        return node.text()

    def number(self) -> float:
        if not _number_ok(self.value):
            self.fail(f"should be a finite number, got {_kind(self.value)}")
        return float(self.value)

    def integer(self) -> int:
        if not _number_ok(self.value) or float(self.value) != int(self.value):
            self.fail(f"should be a whole number, got {self.value!r}")
        return int(self.value)

    def ident(self) -> int | str:
        """An id: a whole number or a string."""
        if isinstance(self.value, str) and self.value:
            return self.value
        return self.integer()

    def numbers(self, count: int | None = None) -> list[float]:
        """A list of finite numbers (``count`` of them when given)."""
        if not isinstance(self.value, list):
            self.fail(f"should be a list of numbers, got {_kind(self.value)}")
        if count is not None and len(self.value) != count:
            self.fail(f"has {len(self.value)} numbers, expected {count}")
        for i, v in enumerate(self.value):
            if not _number_ok(v):
                self.where.at(i).fail(f"should be a finite number, got {_kind(v)}", "Fix this element.")
        return [float(v) for v in self.value]


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def load_json(data: bytes, file: str) -> Node:
    """Parse JSON (UTF-8, BOM tolerated; NaN and Infinity refused) into a located root :class:`Node`."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        Where(file).fail(f"is not UTF-8 text (byte {exc.start})", "Export the file again as UTF-8 JSON.")
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        Where(file, line=exc.lineno).fail(f"column {exc.colno}: invalid JSON: {exc.msg}",
                                          "Fix the JSON syntax (a validator names the same place).")
    except ValueError as exc:
        Where(file).fail(f"invalid JSON: {exc}", "Write numbers as finite decimals.")
    return Node(value, Where(file))


def dump_json(value: Any, where: str) -> bytes:
    """JSON bytes for an export; attributes that JSON cannot hold fail naming the export."""
    try:
        return json.dumps(value, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"{where}: a value cannot be written as JSON: {exc}",
                               hint="Keep attributes to strings, numbers, booleans, lists and dicts.") from exc


class XNode:
    """An XML element and where it is."""

    __slots__ = ("el", "where")

    def __init__(self, el: ET.Element, where: Where) -> None:
        self.el = el
        self.where = where

    @property
    def tag(self) -> str:
        return self.el.tag

    def fail(self, problem: str, hint: str = "Fix this element and import again.") -> NoReturn:
        self.where.fail(problem, hint)

    def opt_child(self, tag: str) -> XNode | None:
        found = self.el.find(tag)
        return None if found is None else XNode(found, self.where.child(tag))

    def child(self, tag: str) -> XNode:
        node = self.opt_child(tag)
        if node is None:
            self.where.child(tag).fail("is missing", _NEEDED)
        return node

    def children(self, tag: str | None = None) -> list[XNode]:
        """Child elements (all, or those named ``tag``), numbered 1-based per tag as XPath does."""
        counts: dict[str, int] = {}
        out = []
        for el in self.el:
            if not isinstance(el.tag, str) or (tag is not None and el.tag != tag):
                continue
            counts[el.tag] = counts.get(el.tag, 0) + 1
            out.append(XNode(el, self.where.child(el.tag, counts[el.tag])))
        return out

    def text(self) -> str:
        value = (self.el.text or "").strip()
        if not value:
            self.fail("is empty")
        return value

    def opt_text(self) -> str | None:
        value = (self.el.text or "").strip()
        return value or None

    def number(self) -> float:
        raw = self.text()
        try:
            value = float(raw)
        except ValueError:
            self.fail(f"is not a number: {raw!r}")
        if not math.isfinite(value):
            self.fail(f"is not a finite number: {raw!r}")
        return value

    def attr(self, name: str) -> str:
        value = self.el.get(name)
        if value is None or not value.strip():
            self.fail(f"has no attribute {name!r}", _NEEDED)
        return value.strip()

    def opt_attr(self, name: str) -> str | None:
        value = self.el.get(name)
        return value.strip() if value is not None and value.strip() else None

    def attr_number(self, name: str) -> float:
        raw = self.attr(name)
        try:
            value = float(raw)
        except ValueError:
            self.fail(f"attribute {name}={raw!r} is not a number")
        if not math.isfinite(value):
            self.fail(f"attribute {name}={raw!r} is not a finite number")
        return value

    def attr_int(self, name: str) -> int:
        value = self.attr_number(name)
        if value != int(value):
            self.fail(f"attribute {name}={self.el.get(name)!r} is not a whole number")
        return int(value)


def load_xml(data: bytes, file: str) -> XNode:
    """Parse XML, refusing DOCTYPE/ENTITY declarations; errors give the line and column."""
    if _DOCTYPE.search(data):
        Where(file).fail("declares a DOCTYPE or entities, which are refused (entity-expansion attacks)",
                         "Remove the <!DOCTYPE ...> block; labeling-tool exports never need one.")
    try:
        root = ET.fromstring(data)  # noqa: S314 - DOCTYPE/ENTITY refused above, so no entity expansion
    except ET.ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(": line ")[0]
        Where(file, line=line).fail(f"column {column}: not well-formed XML ({reason})",
                                    "Fix the XML syntax; an XML validator names the same place.")
    except (LookupError, ValueError) as exc:  # an unknown or unsupported encoding in the XML declaration
        Where(file).fail(f"declares an encoding Python does not know: {exc}", "Save the file as UTF-8.")
    return XNode(root, Where(file, root.tag))


def dump_xml(root: ET.Element) -> bytes:
    ET.indent(root, space="  ")
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def fmt_number(value: float) -> str:
    """The shortest text that reads back to exactly ``value`` (``12`` for 12.0)."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
