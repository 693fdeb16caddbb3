"""De-identification on the encoded bytes: the same profile as :mod:`medcycle.catalog.deid`, without pydicom.

:func:`deidentify_bytes` reads a DICOM file's element stream once (explicit or implicit VR, little or big
endian, native or encapsulated pixel data), decides every element's fate with the very rules of
:mod:`medcycle.catalog.deid` (the same ``_Run``: Table E.1-1 actions cached per options, private tags,
overlays, the identifier check on kept text, pseudonyms, date shifts, screening), and writes the result
by copying kept elements as byte slices and encoding only what changes. Sequences are cleaned item by
item at any depth; the file meta keeps ``deid_tables.FILE_META_KEPT`` with MediaStorageSOPInstanceUID set
to the new SOPInstanceUID, as ``save_as(enforce_file_format=True)`` writes it.

Reading the result back with ``pydicom.dcmread`` gives the same elements and values as de-identifying with
pydicom and writing with ``save_as`` (``tests/catalog/test_deid_fast.py`` checks that on every file of
pydicom's test files and pydicom-data). Whatever this path does not handle raises :class:`Fallback` (its
reason names a construct, never a value) and the caller uses the pydicom path: files without a preamble
and file meta, deflated or unknown transfer syntaxes, an encoding that contradicts the transfer syntax,
duplicate or unsorted tags, public attributes encoded as UN that the dictionary knows, kept private
sequences, a character set declared inside a sequence item, non-ASCII values in a character set other
than ISO 8859-1 / UTF-8 where a value must be read, the Clean Descriptors option, truncated or malformed
streams. Text values are read as pydicom reads them (ASCII values directly; other values through
pydicom's own converters), so every decision matches.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, private_dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID
from pydicom.values import convert_value

from medcycle.catalog import deid_tables as tables
from medcycle.catalog.deid import DeidOptions, DeidResult, Pseudonymizer, _Act, _Run, quiet_pydicom
from medcycle.errors import MedcycleError

UNDEFINED: Final = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA: Final = 0x7FE00010
CHARSET: Final = 0x00080005
LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
VALID_VRS: Final = LONG_VRS | frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "SV",
     "TM", "UI", "UL", "US", "UV"}
)
_VALID_VR_BYTES: Final = frozenset(v.encode() for v in VALID_VRS)
STRING_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
CHARSET_VRS: Final = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})  # decoded with SpecificCharacterSet
_NUMBERS: Final = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
IMPLEMENTATION_VERSION: Final = "PYDICOM " + ".".join(pydicom.__version_info__)  # what save_as writes when absent


class Fallback(Exception):
    """This file needs the pydicom path; ``reason`` names a construct, never a value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Enc:
    implicit: bool
    little: bool

    @property
    def prefix(self) -> str:
        return "<" if self.little else ">"


@dataclass(slots=True)
class _El:
    """One element as encoded: header at ``hdr``, value ``buf[val:end]`` (for an undefined length,
    ``end`` is past its sequence delimiter)."""

    tag: int
    vr: str
    hdr: int
    val: int
    end: int
    undefined: bool


@dataclass(frozen=True, slots=True)
class PixelInfo:
    """Where the pixel data lies in the *input* bytes, for statistics without decoding (native only)."""

    offset: int
    length: int
    encapsulated: bool
    little: bool


@dataclass(frozen=True, slots=True)
class FastResult:
    data: bytes  # the de-identified file
    result: DeidResult  # ``result.dataset`` is a :class:`RawView` of the written top-level elements
    source: RawView  # the original top-level elements (screening, pixel attributes); never stored
    pixels: PixelInfo | None
    transfer_syntax: str


_STRUCTS: dict[str, struct.Struct] = {}


def _st(fmt: str) -> struct.Struct:
    s = _STRUCTS.get(fmt)
    if s is None:
        s = _STRUCTS[fmt] = struct.Struct(fmt)
    return s


def _implicit_vr(tag: int) -> str:
    vr = _VR_CACHE.get(tag)
    if vr is None:
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            vr = "UL" if tag & 0xFFFF == 0 and not (tag >> 16) & 1 else "UN"
        _VR_CACHE[tag] = vr
    return vr


_VR_CACHE: dict[int, str] = {}


def _parse(buf: bytes, pos: int, end: int | None, enc: _Enc) -> tuple[list[_El], int]:
    """The elements from ``pos`` to ``end``, or (``end`` None) up to and past an item delimiter."""
    out: list[_El] = []
    n = len(buf)
    limit = n if end is None else end
    head = _st(enc.prefix + "HHL")
    short = _st(enc.prefix + "HH2sH")
    long_ = _st(enc.prefix + "HH2s2xL")
    last = -1
    while pos < limit:
        if pos + 8 > limit:
            raise Fallback("truncated element header")
        g, e, length = head.unpack_from(buf, pos)
        tag = (g << 16) | e
        if tag == ITEM_END:
            if end is not None:
                raise Fallback("item delimiter in a defined-length item")
            return out, pos + 8
        if g == 0xFFFE:
            raise Fallback("item tag outside a sequence")
        if enc.implicit:
            vr = ""
            val = pos + 8
        else:
            _, _, vrb, length = short.unpack_from(buf, pos)
            if vrb not in _VALID_VR_BYTES:
                raise Fallback("invalid VR")
            vr = vrb.decode()
            if vr in LONG_VRS:
                if pos + 12 > limit:
                    raise Fallback("truncated element header")
                length = long_.unpack_from(buf, pos)[3]
                val = pos + 12
            else:
                val = pos + 8
        if tag <= last:
            raise Fallback("unsorted or duplicate tags")
        last = tag
        if length == UNDEFINED:
            if not enc.implicit and vr not in ("SQ", "OB", "OW"):
                raise Fallback("undefined length on a VR that cannot have one")
            stop = _delimited_end(buf, val, enc)
        else:
            stop = val + length
            if stop > limit:
                raise Fallback("value runs past its container")
        out.append(_El(tag, vr, pos, val, stop, length == UNDEFINED))
        pos = stop
    if end is None:
        raise Fallback("item without its delimiter")
    return out, pos


def _delimited_end(buf: bytes, pos: int, enc: _Enc) -> int:
    """Past the sequence delimiter of an undefined-length value (items, or encapsulated fragments)."""
    head = _st(enc.prefix + "HHL")
    n = len(buf)
    while True:
        if pos + 8 > n:
            raise Fallback("sequence without its delimiter")
        g, e, length = head.unpack_from(buf, pos)
        tag = (g << 16) | e
        if tag == SEQ_END:
            return pos + 8
        if tag != ITEM:
            raise Fallback("unexpected tag in a sequence")
        if length == UNDEFINED:
            pos = _parse(buf, pos + 8, None, enc)[1]
        else:
            pos += 8 + length
            if pos > n:
                raise Fallback("item runs past the file")


def _items(buf: bytes, el: _El, enc: _Enc) -> Iterator[list[_El]]:
    """The parsed items of a sequence element."""
    head = _st(enc.prefix + "HHL")
    pos, stop = el.val, (el.end - 8 if el.undefined else el.end)
    while pos < stop:
        g, e, length = head.unpack_from(buf, pos)
        if (g << 16) | e != ITEM:
            raise Fallback("unexpected tag in a sequence")
        if length == UNDEFINED:
            elems, pos = _parse(buf, pos + 8, None, enc)
        else:
            elems, pos = _parse(buf, pos + 8, pos + 8 + length, enc)[0], pos + 8 + length
        yield elems


# -- values ------------------------------------------------------------------------------------------------
def _strings_value(vr: str, raw: bytes, encodings: list[str] | None) -> Any:
    """A string VR's value as pydicom converts it (str, or a list for several values)."""
    if not raw.isascii():
        value = convert_value(vr, RawDataElement(BaseTag(0), vr, len(raw), raw, 0, False, True), encodings)
        return list(value) if isinstance(value, MultiValue) else value
    text = raw.decode("ascii")
    if vr in ("LT", "ST", "UT"):
        return text.rstrip("\0 ")
    if vr == "UR":
        return text.rstrip()
    if vr == "AE":
        parts = [p.strip() for p in text.split("\\")]
    elif vr in ("LO", "SH", "UC"):
        parts = [p.rstrip("\0 ") for p in text.split("\\")]
    else:
        parts = text.rstrip(" \x00").split("\\")
    return parts[0] if len(parts) == 1 else parts


def _value(vr: str, raw: bytes, little: bool, encodings: list[str] | None) -> Any:
    if vr == "SQ":
        return Sequence()
    if vr in STRING_VRS:
        return _strings_value(vr, raw, encodings)
    fmt = _NUMBERS.get(vr)
    if fmt is not None:
        size = struct.calcsize(fmt)
        if not raw:
            return None
        if len(raw) % size:
            raise Fallback("numeric value of a wrong length")
        values = list(struct.unpack(("<" if little else ">") + fmt * (len(raw) // size), raw))
        return values[0] if len(values) == 1 else values
    return raw


def _texts(vr: str, raw: bytes, encodings: list[str] | None) -> list[str]:
    """``deid_tables.strings_of`` of the converted value."""
    return tables.strings_of(_strings_value(vr, raw, encodings))


class _ViewElement:
    __slots__ = ("VR", "tag", "value")

    def __init__(self, tag: int, vr: str, value: Any) -> None:
        self.tag, self.VR, self.value = BaseTag(tag), vr, value


class RawView:
    """Read-only, dataset-like access to top-level elements held as bytes, values converted on demand the way
    pydicom converts them: ``get``, ``in``, ``[keyword or tag]``, attribute access and ``keys()``. An element is
    (VR, value bytes), or (VR, where its value lies in ``buf``): sliced only when read."""

    def __init__(
        self, elements: dict[int, tuple[str, bytes | _El]], little: bool, encodings: list[str] | None,
        file_meta: Any = None, buf: bytes = b"",
    ) -> None:
        self._elements, self._little, self._encodings, self._buf = elements, little, encodings, buf
        self._cache: dict[int, Any] = {}
        self.file_meta = file_meta

    @staticmethod
    def _tag(key: object) -> int | None:
        if isinstance(key, str):
            return _keyword_tag(key)
        return int(key) if isinstance(key, int) else None

    def __contains__(self, key: object) -> bool:
        tag = self._tag(key)
        return tag is not None and tag in self._elements

    def _convert(self, tag: int) -> Any:
        if tag in self._cache:
            return self._cache[tag]
        vr, raw = self._elements[tag]
        if isinstance(raw, _El):  # pixel data and sequences: only their presence is read
            raw = b"" if vr == "SQ" or raw.undefined or tag >> 16 == 0x7FE0 else self._buf[raw.val:raw.end]
        value = self._cache[tag] = _value(vr, raw, self._little, self._encodings)
        return value

    def get(self, key: object, default: Any = None) -> Any:
        tag = self._tag(key)
        if tag is None or tag not in self._elements:
            return default
        return self._convert(tag)

    def __getitem__(self, key: object) -> _ViewElement:
        tag = self._tag(key)
        if tag is None or tag not in self._elements:
            raise KeyError(key)
        return _ViewElement(tag, self._elements[tag][0], self._convert(tag))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        tag = _keyword_tag(name)
        if tag is None or tag not in self._elements:
            raise AttributeError(name)
        return self._convert(tag)

    def keys(self) -> list[BaseTag]:
        return [BaseTag(t) for t in self._elements]


_KEYWORDS: dict[str, int | None] = {}


def _keyword_tag(keyword: str) -> int | None:
    if keyword not in _KEYWORDS:
        _KEYWORDS[keyword] = tag_for_keyword(keyword)
    return _KEYWORDS[keyword]


class _FileMeta:
    """The file meta as the worker reads it."""

    def __init__(self, transfer_syntax: str, sop_class: str) -> None:
        self.TransferSyntaxUID = UID(transfer_syntax)
        self.MediaStorageSOPClassUID = UID(sop_class)


# -- writing ---------------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, enc: _Enc) -> None:
        p = enc.prefix
        self.enc = enc
        self.implicit = _st(p + "HHL")
        self.short = _st(p + "HH2sH")
        self.long = _st(p + "HH2s2xL")

    def header(self, tag: int, vr: str, length: int) -> bytes:
        if self.enc.implicit:
            return self.implicit.pack(tag >> 16, tag & 0xFFFF, length)
        if vr in LONG_VRS:
            return self.long.pack(tag >> 16, tag & 0xFFFF, vr.encode(), length)
        if length > 0xFFFF:
            raise Fallback("value too long for its VR")
        return self.short.pack(tag >> 16, tag & 0xFFFF, vr.encode(), length)

    def element(self, tag: int, vr: str, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\x00" if vr in ("UI", "OB", "UN") else b" "
        return self.header(tag, vr, len(value)) + value

    def strings(self, tag: int, vr: str, values: list[str]) -> bytes:
        try:
            raw = "\\".join(values).encode("ascii")
        except UnicodeEncodeError:
            raise Fallback("a new value is not ASCII") from None
        return self.element(tag, vr, raw)

    def sequence(self, tag: int, items: list[list[tuple[int, bytes]]]) -> bytes:
        if not items:
            return self.header(tag, "SQ", 0)
        parts = [self.header(tag, "SQ", UNDEFINED)]
        for item in items:
            parts.append(self.implicit.pack(0xFFFE, 0xE000, UNDEFINED))
            parts += [b for _, b in sorted(item, key=lambda x: x[0])]
            parts.append(self.implicit.pack(0xFFFE, 0xE00D, 0))
        parts.append(self.implicit.pack(0xFFFE, 0xE0DD, 0))
        return b"".join(parts)

    def dummy(self, tag: int, vr: str) -> bytes:
        value = tables.dummy_value(vr)
        if isinstance(value, bytes):
            return self.element(tag, vr, value)
        if isinstance(value, int):
            if vr == "AT":
                return self.element(tag, vr, _st(self.enc.prefix + "HH").pack(0, 0))
            return self.element(tag, vr, _st(self.enc.prefix + _NUMBERS[vr]).pack(0))
        return self.strings(tag, vr, [str(value)])


# -- the walk ----------------------------------------------------------------------------------------------------
class _Fast:
    def __init__(self, run: _Run, buf: bytes, enc: _Enc, encodings: list[str] | None) -> None:
        self.run, self.buf, self.enc, self.encodings = run, buf, enc, encodings
        self.view = memoryview(buf)  # kept elements are joined into the output from here, copied once
        self.out = _Writer(enc)
        self.private_kept = bool(run.options.private_allowlist) or run.options.retain_safe_private
        self.top: dict[int, tuple[str, bytes | _El]] = {}  # written top-level elements: VR, value (or where)

    def _raw(self, el: _El) -> bytes:
        return self.buf[el.val:el.end]

    def _vr(self, el: _El) -> str:
        if el.vr and el.vr != "UN":
            return el.vr
        if el.vr == "UN":  # pydicom reads a public UN it knows with the dictionary's VR
            try:
                dictionary_VR(el.tag)
            except KeyError:
                return "UN"
            raise Fallback("public attribute encoded as UN")
        return _implicit_vr(el.tag)

    def dataset(self, elems: list[_El], depth: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        run = self.run
        creators: dict[int, _El] = {}
        kept_blocks: set[int] = set()
        buf = self.buf
        for el in elems:
            tag = el.tag
            group = tag >> 16
            if group & 1:
                elem = tag & 0xFFFF
                if 0x10 <= elem < 0x100:
                    creators[(group << 8) | elem] = el
                    continue
                if not self.private_kept or elem < 0x1000:
                    run.private_removed += 1
                    continue
                self._private(el, creators, kept_blocks, out)
                continue
            if depth and tag == CHARSET:
                raise Fallback("a character set inside a sequence item")
            if tag & 0xFFFF == 0 or group in (0x0000, 0x0002):
                continue
            if (group & 0xFF00) == 0x6000:
                run.removed += 1
                continue
            full = self._vr(el)
            vr = full.split(" or ")[0]
            action = run.action(tag, vr)
            self._do(action, el, full, vr, out, depth)
        for key, el in creators.items():
            if key in kept_blocks:
                out.append((el.tag, buf[el.hdr:el.end]))
            else:
                run.private_removed += 1
        return out

    def _private(self, el: _El, creators: dict[int, _El], kept_blocks: set[int], out: list[tuple[int, bytes]]) -> None:
        group, elem = el.tag >> 16, el.tag & 0xFFFF
        block = elem >> 8
        creator_el = creators.get((group << 8) | block)
        creator = ""
        if creator_el is not None:
            vr = creator_el.vr if creator_el.vr not in ("", "UN") else "LO"
            values = _texts(vr, self._raw(creator_el), self.encodings)
            creator = "\\".join(values) if len(values) != 1 else values[0]
        opts = self.run.options
        keep = bool(creator) and (
            creator in opts.private_allowlist
            or (opts.retain_safe_private and (creator, group, elem & 0xFF) in tables.SAFE_PRIVATE)
        )
        if not keep:
            self.run.private_removed += 1
            return
        vr = el.vr
        if not vr:  # implicit VR: pydicom takes it from its private dictionary
            try:
                vr = str(private_dictionary_VR(el.tag, creator))
            except KeyError:
                vr = "UN"
        if el.undefined or el.vr == "UN" or vr == "SQ":
            raise Fallback("a kept private attribute that is or may be a sequence")
        kept_blocks.add((group << 8) | block)
        out.append((el.tag, self.buf[el.hdr:el.end]))

    def _do(self, action: _Act, el: _El, full: str, vr: str, out: list[tuple[int, bytes]], depth: int) -> None:
        run, w, tag = self.run, self.out, el.tag
        if action is _Act.KEEP or action is _Act.CLEAN_SEQ:
            if full == "SQ":
                self._clean_seq(el, out, depth)
                return
            if action is _Act.CLEAN_SEQ:
                if full == "UI":
                    self._uid(el, out, depth)
                else:
                    self._empty(el, full, vr, out, depth)
                return
            if full in tables.TEXT_VRS and run.identifiers:
                values = _texts(full, self._raw(el), self.encodings)
                if values:
                    text = " ".join(values).lower()
                    if any(ident in text for ident in run.identifiers):
                        run.removed += 1
                        return
            self._keep(el, full, out, depth)
        elif action is _Act.REMOVE:
            run.removed += 1
        elif action is _Act.EMPTY:
            self._empty(el, full, vr, out, depth)
        elif action is _Act.DUMMY:
            if vr == "UI":
                self._uid(el, out, depth)
            elif vr == "SQ":
                self._empty(el, full, vr, out, depth)
            else:
                encoded = w.dummy(tag, vr)
                self._new(out, tag, full, encoded, depth)
                run.replaced += 1
        elif action is _Act.UID:
            self._uid(el, out, depth)
        elif action is _Act.SHIFT:
            self._shift(el, full, out, depth)
        else:
            raise Fallback("an action this path does not apply")

    def _keep(self, el: _El, full: str, out: list[tuple[int, bytes]], depth: int) -> None:
        out.append((el.tag, self.view[el.hdr:el.end]))  # type: ignore[arg-type]  # joined, never kept
        if not depth:
            self.top[el.tag] = (full, el)

    def _new(self, out: list[tuple[int, bytes]], tag: int, full: str, encoded: bytes, depth: int) -> None:
        out.append((tag, encoded))
        if not depth:
            start = 8 if self.enc.implicit or full not in LONG_VRS else 12
            self.top[tag] = (full, encoded[start:])

    def _empty(self, el: _El, full: str, vr: str, out: list[tuple[int, bytes]], depth: int) -> None:
        if full == "SQ":
            if el.end - el.val > (8 if el.undefined else 0):
                self._new(out, el.tag, "SQ", self.out.header(el.tag, "SQ", 0), depth)
                self.run.emptied += 1
            else:
                self._keep(el, full, out, depth)
            return
        raw = self._raw(el)
        if full in STRING_VRS:
            empty = tables.strings_of(_strings_value(full, raw, self.encodings)) == []
        else:
            empty = len(raw) == 0
        if empty:
            self._keep(el, full, out, depth)
            return
        self._new(out, el.tag, full, self.out.header(el.tag, vr if self.enc.implicit else full, 0), depth)
        self.run.emptied += 1

    def _uid(self, el: _El, out: list[tuple[int, bytes]], depth: int) -> None:
        full = self._vr(el)
        if full not in STRING_VRS:
            raise Fallback("a UID action on a non-text VR")
        values = _texts(full, self._raw(el), self.encodings)
        if not values:
            self._keep(el, full, out, depth)
            return
        new = [self.run.pseudo.uid(v) for v in values]
        self._new(out, el.tag, full, self.out.strings(el.tag, full, new), depth)
        self.run.replaced += 1

    def _shift(self, el: _El, full: str, out: list[tuple[int, bytes]], depth: int) -> None:
        if full not in STRING_VRS:
            raise Fallback("a date action on a non-text VR")
        values = _texts(full, self._raw(el), self.encodings)
        if not values or full == "TM":
            self._keep(el, full, out, depth)
            return
        shift = tables.shift_date if full == "DA" else tables.shift_datetime
        new = [shift(v, self.run.shift) for v in values]
        if any(v is None for v in new):
            self.run.removed += 1
            return
        self._new(out, el.tag, full, self.out.strings(el.tag, full, [v for v in new if v is not None]), depth)
        self.run.replaced += 1

    def _clean_seq(self, el: _El, out: list[tuple[int, bytes]], depth: int) -> None:
        items = [self.dataset(item, depth + 1) for item in _items(self.buf, el, self.enc)]
        self._new(out, el.tag, "SQ", self.out.sequence(el.tag, items), depth)


# -- the file ----------------------------------------------------------------------------------------------------
def _meta(buf: bytes) -> tuple[dict[int, _El], int]:
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise Fallback("no preamble and file meta")
    elems, pos = [], 132
    head = _st("<HH2sH")
    long_ = _st("<HH2s2xL")
    last = -1
    while pos + 8 <= len(buf):
        g, e, vrb, length = head.unpack_from(buf, pos)
        if g != 0x0002:
            break
        if vrb not in _VALID_VR_BYTES:
            raise Fallback("file meta not in explicit VR")
        vr = vrb.decode()
        if vr in LONG_VRS:
            length = long_.unpack_from(buf, pos)[3]
            val = pos + 12
        else:
            val = pos + 8
        tag = (g << 16) | e
        if length == UNDEFINED or val + length > len(buf) or tag <= last:
            raise Fallback("malformed file meta")
        last = tag
        elems.append(_El(tag, vr, pos, val, val + length, False))
        pos = val + length
    return {el.tag: el for el in elems}, pos


def _ascii(buf: bytes, el: _El | None) -> str:
    if el is None:
        return ""
    raw = buf[el.val:el.end]
    if not raw.isascii():
        raise Fallback("file meta value is not ASCII")
    return raw.decode().rstrip("\0 ").strip()


def _write_meta(buf: bytes, meta: dict[int, _El], new_sop: str) -> bytes:
    w = _Writer(_Enc(False, True))
    parts: list[bytes] = []
    for tag in sorted(tables.FILE_META_KEPT - {0x00020000}):
        el = meta.get(tag)
        if tag == 0x00020001 and (el is None or el.end == el.val):
            parts.append(w.element(tag, "OB", b"\x00\x01"))
        elif tag == 0x00020003:
            parts.append(w.strings(tag, el.vr if el is not None else "UI", [new_sop]))
        elif tag == 0x00020012 and (el is None or not _ascii(buf, el)):
            parts.append(w.strings(tag, "UI", [PYDICOM_IMPLEMENTATION_UID]))
        elif tag == 0x00020013 and el is None:
            parts.append(w.strings(tag, "SH", [IMPLEMENTATION_VERSION]))
        elif el is not None:
            parts.append(buf[el.hdr:el.end])
    body = b"".join(parts)
    return w.element(0x00020000, "UL", _st("<L").pack(len(body))) + body


def _encodings(buf: bytes, el: _El | None) -> list[str] | None:
    if el is None:
        return None
    raw = buf[el.val:el.end]
    if not raw.isascii():
        raise Fallback("SpecificCharacterSet is not ASCII")
    names = [v.strip() for v in raw.decode().rstrip("\0 ").split("\\")]
    return list(convert_encodings(names))


def deidentify_bytes(
    data: bytes,
    pseudo: Pseudonymizer,
    options: DeidOptions | None = None,
    *,
    issuer: str | None = None,
    fallback_key: str | None = None,
) -> FastResult:
    """De-identify an encoded DICOM file (see the module docstring); the arguments are those of
    :func:`medcycle.catalog.deid.deidentify`.

    Raises:
        Fallback: the file needs the pydicom path.
        ValidationFailed: the dataset cannot be de-identified (as the pydicom path would say).
    """
    options = options or DeidOptions()
    if options.clean_descriptors:
        raise Fallback("the Clean Descriptors option")
    run = _Run(pseudo, options)
    with quiet_pydicom():
        try:
            return _deidentify(data, run, issuer, fallback_key)
        except (Fallback, MedcycleError):
            raise
        except Exception:  # noqa: BLE001 - the text may quote identifiers; the pydicom path decides
            raise Fallback(f"unexpected failure at {run.where}") from None


_CONSTANTS: dict[tuple[DeidOptions, _Enc], list[tuple[str, object, bytes | None]]] = {}


def _constants(run: _Run, enc: _Enc) -> list[tuple[str, object, bytes | None]]:
    """``run.constant()`` encoded once per options and encoding (keyword, value, encoded with the dictionary VR)."""
    key = (run.options, enc)
    found = _CONSTANTS.get(key)
    if found is None:
        writer = _Writer(enc)
        found = []
        for keyword, value in run.constant():
            tag = _keyword_tag(keyword)
            assert tag is not None
            found.append((keyword, value, _encode_set(writer, tag, _implicit_vr(tag), value)))
        _CONSTANTS[key] = found
    return found


def _encode_set(writer: _Writer, tag: int, vr: str, value: object) -> bytes:
    """An attribute the de-identification sets, encoded (strings, lists of strings, or code items)."""
    if isinstance(value, Sequence):
        items = [[(int(e.tag), writer.strings(int(e.tag), e.VR, [str(e.value)])) for e in item] for item in value]
        return writer.sequence(tag, items)
    values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return writer.strings(tag, vr, values)


def _deidentify(data: bytes, run: _Run, issuer: str | None, fallback_key: str | None) -> FastResult:
    meta, start = _meta(data)
    ts = _ascii(data, meta.get(0x00020010))
    if not ts or not _ascii(data, meta.get(0x00020002)):
        raise Fallback("file meta without its transfer syntax or SOP class")
    uid = UID(ts)
    if not uid.is_transfer_syntax or uid.is_deflated:
        raise Fallback("a deflated or unknown transfer syntax")
    enc = _Enc(bool(uid.is_implicit_VR), bool(uid.is_little_endian))
    if start + 6 <= len(data) and (data[start + 4:start + 6] in _VALID_VR_BYTES) == enc.implicit:
        raise Fallback("the encoding contradicts the transfer syntax")
    elems, _ = _parse(data, start, len(data), enc)
    charset = next((el for el in elems if el.tag == CHARSET), None)
    encodings = _encodings(data, charset)
    fast = _Fast(run, data, enc, encodings)
    source_elements: dict[int, tuple[str, bytes | _El]] = {}
    for el in elems:
        if not el.tag >> 16 & 1:
            source_elements[el.tag] = (fast._vr(el), el)
    meta_info = _FileMeta(ts, _ascii(data, meta.get(0x00020002)))
    source = RawView(source_elements, enc.little, encodings, meta_info, data)
    head = run.prologue(source, issuer, fallback_key)
    run.where = "attributes"
    out = fast.dataset(elems, 0)
    run.where = "file meta"
    sop = _ascii(data, meta.get(0x00020003))
    new_sop = run.pseudo.uid(head.sop) if head.sop else None
    if not (new_sop or sop):
        raise Fallback("no SOP Instance UID for the file meta")
    meta_bytes = _write_meta(data, meta, new_sop or run.pseudo.uid(sop))
    run.removed += sum(1 for tag in meta if tag not in tables.FILE_META_KEPT)
    run.where = "de-identification attributes"
    written = RawView(fast.top, enc.little, encodings, buf=data)
    varying = [(keyword, value, None) for keyword, value in run.varying(written, head)]
    for keyword, value, encoded in varying + _constants(run, enc):
        tag = _keyword_tag(keyword)
        assert tag is not None
        existing = fast.top.get(tag)
        if existing is not None:
            out = [item for item in out if item[0] != tag]
        known = _implicit_vr(tag)
        vr = existing[0] if existing is not None else known
        if encoded is None or vr != known:
            encoded = _encode_set(fast.out, tag, vr, value)
        fast._new(out, tag, vr, encoded, 0)
    out.sort(key=lambda x: x[0])
    pixels = None
    pixel_el = next((el for el in elems if el.tag == PIXEL_DATA), None)
    if pixel_el is not None:
        pixels = PixelInfo(pixel_el.val, pixel_el.end - pixel_el.val, pixel_el.undefined, enc.little)
    body = b"".join([b"\x00" * 128, b"DICM", meta_bytes, *(b for _, b in out)])
    written.file_meta = meta_info
    result = run.result(written, head, new_sop)
    return FastResult(body, result, source, pixels, ts)


