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

The element stream is read by :mod:`medcycle.catalog.dicom_stream` (``Fallback``, ``PixelInfo`` and
``RawView`` live there and are re-exported here); this module holds the walk that applies the rules and the
writer.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Final

import pydicom
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from medcycle.catalog import deid_tables as tables
from medcycle.catalog.deid import DeidOptions, DeidResult, FallbackKey, Pseudonymizer, _Act, _Run, quiet_pydicom
from medcycle.catalog.dicom_stream import (
    CHARSET,
    LONG_VRS,
    NUMBER_FORMATS,
    PIXEL_DATA,
    STRING_VRS,
    UNDEFINED,
    VALID_VR_BYTES,
    El,
    Enc,
    Fallback,
    FileMeta,
    PixelInfo,
    RawView,
    encodings_of,
    implicit_vr,
    items_of,
    keyword_tag,
    meta_text,
    packer,
    parse,
    read_meta,
    strings_value,
    texts,
)
from medcycle.errors import MedcycleError

__all__ = ["Fallback", "FastResult", "PixelInfo", "RawView", "deidentify_bytes"]

IMPLEMENTATION_VERSION: Final = "PYDICOM " + ".".join(pydicom.__version_info__)  # what save_as writes when absent


@dataclass(frozen=True, slots=True)
class FastResult:
    data: bytes  # the de-identified file
    result: DeidResult  # ``result.dataset`` is a :class:`RawView` of the written top-level elements
    source: RawView  # the original top-level elements (screening, pixel attributes); never stored
    pixels: PixelInfo | None
    transfer_syntax: str


# -- writing ---------------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, enc: Enc) -> None:
        p = enc.prefix
        self.enc = enc
        self.implicit = packer(p + "HHL")
        self.short = packer(p + "HH2sH")
        self.long = packer(p + "HH2s2xL")

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
                return self.element(tag, vr, packer(self.enc.prefix + "HH").pack(0, 0))
            return self.element(tag, vr, packer(self.enc.prefix + NUMBER_FORMATS[vr]).pack(0))
        return self.strings(tag, vr, [str(value)])


# -- the walk ----------------------------------------------------------------------------------------------------
def _element_vr(tag: int, vr: str) -> str:
    if vr and vr != "UN":
        return vr
    if vr == "UN":  # pydicom reads a public UN it knows with the dictionary's VR
        try:
            dictionary_VR(tag)
        except KeyError:
            return "UN"
        raise Fallback("public attribute encoded as UN")
    return implicit_vr(tag)


_VRS: dict[tuple[int, str], str] = {}  # (tag, VR as encoded, "" for implicit) -> the VR pydicom reads

# What the walk does with a public element: skip it (group lengths, command or misplaced meta elements), drop
# it as part of an overlay, keep it as it is (a kept value that is no text and no sequence), or apply an action.
_SKIP, _OVERLAY, _PLAIN, _ACT = "skip", "overlay", "plain", "act"
_Plan = tuple[str, str, str, _Act]  # (what, VR read, VR acted on, action)
_PLANS: dict[DeidOptions, dict[tuple[int, str], _Plan]] = {}  # per options: (tag, VR as encoded) -> plan


class _Fast:
    def __init__(self, run: _Run, buf: bytes, enc: Enc, encodings: list[str] | None) -> None:
        self.run, self.buf, self.enc, self.encodings = run, buf, enc, encodings
        self.plans = _PLANS.setdefault(run.options, {})
        self.view = memoryview(buf)  # kept elements are joined into the output from here, copied once
        self.out = _Writer(enc)
        self.private_kept = bool(run.options.private_allowlist) or run.options.retain_safe_private
        self.top: dict[int, tuple[str, bytes | El]] = {}  # written top-level elements: VR, value (or where)

    def _raw(self, el: El) -> bytes:
        return self.buf[el.val:el.end]

    @staticmethod
    def _vr(el: El) -> str:
        """The VR pydicom reads the element with (the dictionary's for implicit VR; may be "US or SS")."""
        key = (el.tag, el.vr)
        found = _VRS.get(key)
        if found is None:
            found = _VRS[key] = _element_vr(el.tag, el.vr)
        return found

    def _plan(self, el: El) -> _Plan:
        """What :meth:`dataset` does with a public element of this tag and encoded VR (cached per options)."""
        tag, group = el.tag, el.tag >> 16
        if tag & 0xFFFF == 0 or group in (0x0000, 0x0002):
            plan: _Plan = (_SKIP, "", "", _Act.REMOVE)
        elif (group & 0xFF00) == 0x6000:
            plan = (_OVERLAY, "", "", _Act.REMOVE)
        else:
            full = self._vr(el)
            vr = full.split(" or ")[0] if " " in full else full
            action = self.run.action(tag, vr)
            plain = action is _Act.KEEP and full != "SQ" and full not in tables.TEXT_VRS
            plan = (_PLAIN if plain else _ACT, full, vr, action)
        self.plans[(tag, el.vr)] = plan
        return plan

    def dataset(self, elems: list[El], depth: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        run = self.run
        plans = self.plans
        creators: dict[int, El] = {}
        kept_blocks: set[int] = set()
        buf, view, top = self.buf, self.view, self.top
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
            kind, full, vr, action = plans.get((tag, el.vr)) or self._plan(el)
            if kind is _PLAIN:  # kept as it is, nothing to read: :meth:`_keep` inlined
                out.append((tag, view[el.hdr:el.end]))  # type: ignore[arg-type]  # joined, never kept
                if not depth:
                    top[tag] = (full, el)
            elif kind is _ACT:
                self._do(action, el, full, vr, out, depth)
            elif kind is _OVERLAY:
                run.removed += 1
        for key, el in creators.items():
            if key in kept_blocks:
                out.append((el.tag, buf[el.hdr:el.end]))
            else:
                run.private_removed += 1
        return out

    def _private(self, el: El, creators: dict[int, El], kept_blocks: set[int], out: list[tuple[int, bytes]]) -> None:
        group, elem = el.tag >> 16, el.tag & 0xFFFF
        block = elem >> 8
        creator_el = creators.get((group << 8) | block)
        creator = ""
        if creator_el is not None:
            vr = creator_el.vr if creator_el.vr not in ("", "UN") else "LO"
            values = texts(vr, self._raw(creator_el), self.encodings)
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

    def _do(self, action: _Act, el: El, full: str, vr: str, out: list[tuple[int, bytes]], depth: int) -> None:
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
                values = texts(full, self._raw(el), self.encodings)
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

    def _keep(self, el: El, full: str, out: list[tuple[int, bytes]], depth: int) -> None:
        out.append((el.tag, self.view[el.hdr:el.end]))  # type: ignore[arg-type]  # joined, never kept
        if not depth:
            self.top[el.tag] = (full, el)

    def _new(self, out: list[tuple[int, bytes]], tag: int, full: str, encoded: bytes, depth: int) -> None:
        out.append((tag, encoded))
        if not depth:
            start = 8 if self.enc.implicit or full not in LONG_VRS else 12
            self.top[tag] = (full, encoded[start:])

    def _empty(self, el: El, full: str, vr: str, out: list[tuple[int, bytes]], depth: int) -> None:
        if full == "SQ":
            if el.end - el.val > (8 if el.undefined else 0):
                self._new(out, el.tag, "SQ", self.out.header(el.tag, "SQ", 0), depth)
                self.run.emptied += 1
            else:
                self._keep(el, full, out, depth)
            return
        raw = self._raw(el)
        if full in STRING_VRS:
            empty = tables.strings_of(strings_value(full, raw, self.encodings)) == []
        else:
            empty = len(raw) == 0
        if empty:
            self._keep(el, full, out, depth)
            return
        self._new(out, el.tag, full, self.out.header(el.tag, vr if self.enc.implicit else full, 0), depth)
        self.run.emptied += 1

    def _uid(self, el: El, out: list[tuple[int, bytes]], depth: int) -> None:
        full = self._vr(el)
        if full not in STRING_VRS:
            raise Fallback("a UID action on a non-text VR")
        values = texts(full, self._raw(el), self.encodings)
        if not values:
            self._keep(el, full, out, depth)
            return
        new = [self.run.pseudo.uid(v) for v in values]
        self._new(out, el.tag, full, self.out.strings(el.tag, full, new), depth)
        self.run.replaced += 1

    def _shift(self, el: El, full: str, out: list[tuple[int, bytes]], depth: int) -> None:
        if full not in STRING_VRS:
            raise Fallback("a date action on a non-text VR")
        values = texts(full, self._raw(el), self.encodings)
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

    def _clean_seq(self, el: El, out: list[tuple[int, bytes]], depth: int) -> None:
        items = [self.dataset(item, depth + 1) for item in items_of(self.buf, el, self.enc)]
        self._new(out, el.tag, "SQ", self.out.sequence(el.tag, items), depth)


# -- the file ----------------------------------------------------------------------------------------------------
_META_TAGS: Final = sorted(tables.FILE_META_KEPT - {0x00020000})  # written in this order after the group length


def _write_meta(buf: bytes, meta: dict[int, El], new_sop: str) -> bytes:
    w = _META_WRITER
    parts: list[bytes] = []
    for tag in _META_TAGS:
        el = meta.get(tag)
        if tag == 0x00020001 and (el is None or el.end == el.val):
            parts.append(w.element(tag, "OB", b"\x00\x01"))
        elif tag == 0x00020003:
            parts.append(w.strings(tag, el.vr if el is not None else "UI", [new_sop]))
        elif tag == 0x00020012 and (el is None or not meta_text(buf, el)):
            parts.append(w.strings(tag, "UI", [PYDICOM_IMPLEMENTATION_UID]))
        elif tag == 0x00020013 and el is None:
            parts.append(w.strings(tag, "SH", [IMPLEMENTATION_VERSION]))
        elif el is not None:
            parts.append(buf[el.hdr:el.end])
    body = b"".join(parts)
    return w.element(0x00020000, "UL", packer("<L").pack(len(body))) + body


_META_WRITER: Final = _Writer(Enc(False, True))  # the file meta is explicit VR little endian


def deidentify_bytes(
    data: bytes,
    pseudo: Pseudonymizer,
    options: DeidOptions | None = None,
    *,
    issuer: str | None = None,
    fallback_key: FallbackKey = None,
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


_first = operator.itemgetter(0)  # sorts written elements by tag
_CONSTANTS: dict[tuple[DeidOptions, Enc], list[tuple[str, object, bytes | None]]] = {}


def _constants(run: _Run, enc: Enc) -> list[tuple[str, object, bytes | None]]:
    """``run.constant()`` encoded once per options and encoding (keyword, value, encoded with the dictionary VR)."""
    key = (run.options, enc)
    found = _CONSTANTS.get(key)
    if found is None:
        writer = _Writer(enc)
        found = []
        for keyword, value in run.constant():
            tag = keyword_tag(keyword)
            assert tag is not None
            found.append((keyword, value, _encode_set(writer, tag, implicit_vr(tag), value)))
        _CONSTANTS[key] = found
    return found


def _encode_set(writer: _Writer, tag: int, vr: str, value: object) -> bytes:
    """An attribute the de-identification sets, encoded (strings, lists of strings, or code items)."""
    if isinstance(value, Sequence):
        items = [[(int(e.tag), writer.strings(int(e.tag), e.VR, [str(e.value)])) for e in item] for item in value]
        return writer.sequence(tag, items)
    values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return writer.strings(tag, vr, values)


@functools.lru_cache(maxsize=64)
def _encoding(transfer_syntax: str) -> Enc | None:
    """How a transfer syntax encodes the data set; None for a deflated or unknown one (asked once per syntax)."""
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax or uid.is_deflated:
        return None
    return Enc(bool(uid.is_implicit_VR), bool(uid.is_little_endian))


def _deidentify(data: bytes, run: _Run, issuer: str | None, fallback_key: FallbackKey) -> FastResult:
    meta, start = read_meta(data)
    ts = meta_text(data, meta.get(0x00020010))
    if not ts or not meta_text(data, meta.get(0x00020002)):
        raise Fallback("file meta without its transfer syntax or SOP class")
    enc = _encoding(ts)
    if enc is None:
        raise Fallback("a deflated or unknown transfer syntax")
    if start + 6 <= len(data) and (data[start + 4:start + 6] in VALID_VR_BYTES) == enc.implicit:
        raise Fallback("the encoding contradicts the transfer syntax")
    elems, _ = parse(data, start, len(data), enc)
    vrs, element_vr = _VRS, _element_vr
    source_elements: dict[int, tuple[str, bytes | El]] = {}
    charset: El | None = None
    pixel_el: El | None = None
    for el in elems:
        number = el.tag
        if not number >> 16 & 1:
            full = vrs.get((number, el.vr))
            if full is None:
                full = vrs[(number, el.vr)] = element_vr(number, el.vr)
            source_elements[number] = (full, el)
            if number == CHARSET:
                charset = el
            elif number == PIXEL_DATA:
                pixel_el = el
    encodings = encodings_of(data, charset)
    fast = _Fast(run, data, enc, encodings)
    meta_info = FileMeta(ts, meta_text(data, meta.get(0x00020002)))
    source = RawView(source_elements, enc.little, encodings, meta_info, data)
    head = run.prologue(source, issuer, fallback_key)
    run.where = "attributes"
    out = fast.dataset(elems, 0)
    run.where = "file meta"
    sop = meta_text(data, meta.get(0x00020003))
    new_sop = run.pseudo.uid(head.sop) if head.sop else None
    if not (new_sop or sop):
        raise Fallback("no SOP Instance UID for the file meta")
    meta_bytes = _write_meta(data, meta, new_sop or run.pseudo.uid(sop))
    run.removed += sum(1 for tag in meta if tag not in tables.FILE_META_KEPT)
    run.where = "de-identification attributes"
    written = RawView(fast.top, enc.little, encodings, buf=data, shared=source)
    varying = [(keyword, value, None) for keyword, value in run.varying(written, head)]
    replaced: set[int] = set()  # written elements that the attributes set last replace
    added: list[tuple[int, bytes]] = []
    for keyword, value, encoded in varying + _constants(run, enc):
        tag = keyword_tag(keyword)
        assert tag is not None
        existing = fast.top.get(tag)
        if existing is not None:
            replaced.add(tag)
        known = implicit_vr(tag)
        vr = existing[0] if existing is not None else known
        if encoded is None or vr != known:
            encoded = _encode_set(fast.out, tag, vr, value)
        fast._new(added, tag, vr, encoded, 0)
    out = [item for item in out if item[0] not in replaced] if replaced else out
    out += dict(added).items()  # a tag set twice keeps its last value
    out.sort(key=_first)
    pixels = None
    if pixel_el is not None:
        pixels = PixelInfo(pixel_el.val, pixel_el.end - pixel_el.val, pixel_el.undefined, enc.little)
    body = b"".join([b"\x00" * 128, b"DICM", meta_bytes, *(b for _, b in out)])
    written.file_meta = meta_info
    result = run.result(written, head, new_sop)
    return FastResult(body, result, source, pixels, ts)


