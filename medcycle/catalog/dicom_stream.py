"""DICOM files read as bytes: the element stream, values converted as pydicom converts them, and a dataset view.

The reading half of :mod:`medcycle.catalog.deid_fast` (which decides and writes): :func:`read_meta` reads the
file meta, :func:`parse` the elements of a data set (explicit or implicit VR, little or big endian, native or
encapsulated pixel data) as :class:`El` records that say where each header and value lies, :func:`items_of`
the items of a sequence, and :class:`RawView` gives dataset-like access to top-level elements whose values are
converted on demand the way pydicom converts them. Anything this reader does not handle raises
:class:`Fallback` (its reason names a construct, never a value), and the caller uses pydicom instead.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.values import convert_value

from medcycle.catalog import deid_tables as tables

UNDEFINED: Final = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA: Final = 0x7FE00010
CHARSET: Final = 0x00080005
LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
VALID_VRS: Final = LONG_VRS | frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "SV",
     "TM", "UI", "UL", "US", "UV"}
)
VALID_VR_BYTES: Final = frozenset(v.encode() for v in VALID_VRS)
VR_NAMES: Final = {v.encode(): v for v in VALID_VRS}  # a VR as encoded -> its name
STRING_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
CHARSET_VRS: Final = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})  # decoded with SpecificCharacterSet
NUMBER_FORMATS: Final = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
NUMBER_SIZES: Final = {vr: struct.calcsize("<" + fmt) for vr, fmt in NUMBER_FORMATS.items()}  # standard sizes


class Fallback(Exception):
    """This file needs the pydicom path; ``reason`` names a construct, never a value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Enc:
    implicit: bool
    little: bool

    @property
    def prefix(self) -> str:
        return "<" if self.little else ">"


@dataclass(slots=True)
class El:
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




_STRUCTS: dict[str, struct.Struct] = {}


def packer(fmt: str) -> struct.Struct:
    s = _STRUCTS.get(fmt)
    if s is None:
        s = _STRUCTS[fmt] = struct.Struct(fmt)
    return s


def implicit_vr(tag: int) -> str:
    vr = _VR_CACHE.get(tag)
    if vr is None:
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            vr = "UL" if tag & 0xFFFF == 0 and not (tag >> 16) & 1 else "UN"
        _VR_CACHE[tag] = vr
    return vr


_VR_CACHE: dict[int, str] = {}


def parse(buf: bytes, pos: int, end: int | None, enc: Enc) -> tuple[list[El], int]:
    """The elements from ``pos`` to ``end``, or (``end`` None) up to and past an item delimiter."""
    out: list[El] = []
    limit = len(buf) if end is None else end
    implicit = enc.implicit
    head = packer(enc.prefix + ("HHL" if implicit else "HH2sH"))  # one read of the 8-byte header
    long_length = packer(enc.prefix + "L")
    vr_names = VR_NAMES
    last = -1
    while pos < limit:
        if pos + 8 > limit:
            raise Fallback("truncated element header")
        if implicit:
            g, e, length = head.unpack_from(buf, pos)
            vrb = b""
        else:
            g, e, vrb, length = head.unpack_from(buf, pos)
        tag = (g << 16) | e
        if tag == ITEM_END:
            if end is not None:
                raise Fallback("item delimiter in a defined-length item")
            return out, pos + 8
        if g == 0xFFFE:
            raise Fallback("item tag outside a sequence")
        if implicit:
            vr = ""
            val = pos + 8
        else:
            found = vr_names.get(vrb)
            if found is None:
                raise Fallback("invalid VR")
            vr = found
            if vr in LONG_VRS:
                if pos + 12 > limit:
                    raise Fallback("truncated element header")
                length = long_length.unpack_from(buf, pos + 8)[0]
                val = pos + 12
            else:
                val = pos + 8
        if tag <= last:
            raise Fallback("unsorted or duplicate tags")
        last = tag
        if length == UNDEFINED:
            if not implicit and vr not in ("SQ", "OB", "OW"):
                raise Fallback("undefined length on a VR that cannot have one")
            stop = _delimited_end(buf, val, enc)
        else:
            stop = val + length
            if stop > limit:
                raise Fallback("value runs past its container")
        out.append(El(tag, vr, pos, val, stop, length == UNDEFINED))
        pos = stop
    if end is None:
        raise Fallback("item without its delimiter")
    return out, pos


def _delimited_end(buf: bytes, pos: int, enc: Enc) -> int:
    """Past the sequence delimiter of an undefined-length value (items, or encapsulated fragments)."""
    head = packer(enc.prefix + "HHL")
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
            pos = parse(buf, pos + 8, None, enc)[1]
        else:
            pos += 8 + length
            if pos > n:
                raise Fallback("item runs past the file")


def items_of(buf: bytes, el: El, enc: Enc) -> Iterator[list[El]]:
    """The parsed items of a sequence element."""
    head = packer(enc.prefix + "HHL")
    pos, stop = el.val, (el.end - 8 if el.undefined else el.end)
    while pos < stop:
        g, e, length = head.unpack_from(buf, pos)
        if (g << 16) | e != ITEM:
            raise Fallback("unexpected tag in a sequence")
        if length == UNDEFINED:
            elems, pos = parse(buf, pos + 8, None, enc)
        else:
            elems, pos = parse(buf, pos + 8, pos + 8 + length, enc)[0], pos + 8 + length
        yield elems


# -- values ------------------------------------------------------------------------------------------------
_STRINGS: dict[tuple[str, bytes], str | tuple[str, ...]] = {}  # (VR, short ASCII value) -> its value
_STRINGS_MAX = 4096  # entries kept (in memory only), then the cache starts again


def strings_value(vr: str, raw: bytes, encodings: list[str] | None) -> Any:
    """A string VR's value as pydicom converts it (str, or a list for several values; a new list each call).

    Short ASCII values, which do not depend on the character set, are converted once per process: most of a file's
    header (modality, manufacturer, dates, study and series UIDs, spacing) repeats file after file."""
    if len(raw) > 64 or not raw.isascii():
        return _strings_value(vr, raw, encodings)
    key = (vr, raw)
    found = _STRINGS.get(key)
    if found is None:
        value = _strings_value(vr, raw, None)
        found = tuple(value) if isinstance(value, list) else value
        if len(_STRINGS) >= _STRINGS_MAX:
            _STRINGS.clear()
        _STRINGS[key] = found
    return list(found) if type(found) is tuple else found


def _strings_value(vr: str, raw: bytes, encodings: list[str] | None) -> Any:
    """:func:`strings_value`, converted."""
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


def value_of(vr: str, raw: bytes, little: bool, encodings: list[str] | None) -> Any:
    if vr == "SQ":
        return Sequence()
    if vr in STRING_VRS:
        return strings_value(vr, raw, encodings)
    fmt = NUMBER_FORMATS.get(vr)
    if fmt is not None:
        if not raw:
            return None
        count, rest = divmod(len(raw), NUMBER_SIZES[vr])
        if rest:
            raise Fallback("numeric value of a wrong length")
        prefix = "<" if little else ">"
        if count == 1:
            return packer(prefix + fmt).unpack(raw)[0]
        return list(struct.unpack(f"{prefix}{count}{fmt}", raw))
    return raw


def texts(vr: str, raw: bytes, encodings: list[str] | None) -> list[str]:
    """``deid_tables.strings_of`` of the converted value."""
    return tables.strings_of(strings_value(vr, raw, encodings))


class _ViewElement:
    __slots__ = ("VR", "tag", "value")

    def __init__(self, tag: int, vr: str, value: Any) -> None:
        self.tag, self.VR, self.value = BaseTag(tag), vr, value


class RawView:
    """Read-only, dataset-like access to top-level elements held as bytes, values converted on demand the way
    pydicom converts them: ``get``, ``in``, ``[keyword or tag]``, attribute access and ``keys()``. An element is
    (VR, value bytes), or (VR, where its value lies in ``buf``): sliced only when read."""

    def __init__(
        self, elements: dict[int, tuple[str, bytes | El]], little: bool, encodings: list[str] | None,
        file_meta: Any = None, buf: bytes = b"", shared: RawView | None = None,
    ) -> None:
        self._elements, self._little, self._encodings, self._buf = elements, little, encodings, buf
        self._cache: dict[int, Any] = {}
        self._shared = shared  # a view of the same bytes: where both hold the very same element, read it there
        self.file_meta = file_meta

    @staticmethod
    def _tag(key: object) -> int | None:
        if isinstance(key, str):
            return keyword_tag(key)
        return int(key) if isinstance(key, int) else None

    def __contains__(self, key: object) -> bool:
        tag = self._tag(key)
        return tag is not None and tag in self._elements

    def _convert(self, tag: int) -> Any:
        cache = self._cache
        if tag in cache:
            return cache[tag]
        vr, raw = self._elements[tag]
        if isinstance(raw, El):  # pixel data and sequences: only their presence is read
            shared = self._shared
            if shared is not None and (theirs := shared._elements.get(tag)) is not None and theirs[1] is raw \
                    and theirs[0] == vr:  # the same bytes read the same way: converted once for both views
                value = cache[tag] = shared._cache[tag] if tag in shared._cache else shared._convert(tag)
                return value
            raw = b"" if vr == "SQ" or raw.undefined or tag >> 16 == 0x7FE0 else self._buf[raw.val:raw.end]
        value = cache[tag] = value_of(vr, raw, self._little, self._encodings)
        return value

    def get(self, key: object, default: Any = None) -> Any:
        tag = (_KEYWORDS[key] if key in _KEYWORDS else keyword_tag(key)) if type(key) is str else self._tag(key)
        if tag is None or tag not in self._elements:
            return default
        if tag in self._cache:
            return self._cache[tag]
        return self._convert(tag)

    def __getitem__(self, key: object) -> _ViewElement:
        tag = self._tag(key)
        if tag is None or tag not in self._elements:
            raise KeyError(key)
        return _ViewElement(tag, self._elements[tag][0], self._convert(tag))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        tag = keyword_tag(name)
        if tag is None or tag not in self._elements:
            raise AttributeError(name)
        return self._convert(tag)

    def keys(self) -> list[BaseTag]:
        return [BaseTag(t) for t in self._elements]


_KEYWORDS: dict[str, int | None] = {}


def keyword_tag(keyword: str) -> int | None:
    if keyword not in _KEYWORDS:
        _KEYWORDS[keyword] = tag_for_keyword(keyword)
    return _KEYWORDS[keyword]


class FileMeta:
    """The file meta as the worker reads it."""

    def __init__(self, transfer_syntax: str, sop_class: str) -> None:
        self.TransferSyntaxUID = _uid(transfer_syntax)
        self.MediaStorageSOPClassUID = _uid(sop_class)


@functools.lru_cache(maxsize=256)
def _uid(value: str) -> UID:
    """A class or syntax UID as pydicom's (immutable) UID; made once per value: it costs more than reading a file's
    header elements."""
    return UID(value)



# -- the file meta ------------------------------------------------------------------------------------------------
def read_meta(buf: bytes) -> tuple[dict[int, El], int]:
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise Fallback("no preamble and file meta")
    elems, pos = [], 132
    head = packer("<HH2sH")
    long_ = packer("<HH2s2xL")
    last = -1
    while pos + 8 <= len(buf):
        g, e, vrb, length = head.unpack_from(buf, pos)
        if g != 0x0002:
            break
        if vrb not in VALID_VR_BYTES:
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
        elems.append(El(tag, vr, pos, val, val + length, False))
        pos = val + length
    return {el.tag: el for el in elems}, pos


def meta_text(buf: bytes, el: El | None) -> str:
    if el is None:
        return ""
    raw = buf[el.val:el.end]
    if not raw.isascii():
        raise Fallback("file meta value is not ASCII")
    return raw.decode().rstrip("\0 ").strip()


def encodings_of(buf: bytes, el: El | None) -> list[str] | None:
    if el is None:
        return None
    raw = buf[el.val:el.end]
    if not raw.isascii():
        raise Fallback("SpecificCharacterSet is not ASCII")
    names = [v.strip() for v in raw.decode().rstrip("\0 ").split("\\")]
    return list(convert_encodings(names))
