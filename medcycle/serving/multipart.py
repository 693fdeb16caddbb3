"""``multipart/related`` bodies (RFC 2387) as DICOMweb uses them: read STOW-RS requests, write WADO-RS answers.

Reading streams: each part goes to a spooled temporary file (in memory up to 8 MiB, then on disk), so a large
study never sits in memory whole, and the limits (bytes per part, parts per request) are enforced while the
bytes arrive. A body that ends before its closing boundary is a truncated upload and is refused. A preamble
(text before the first boundary line) and an epilogue (after the last) are ignored, as RFC 2046 §5.1.1 says.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Final

from medcycle.errors import PayloadTooLarge, UnsupportedMediaType, UsageError

SPOOL_IN_MEMORY: Final = 8 * 1024 * 1024


@dataclass
class Part:
    """One body part: its 1-based position, headers (lower-case names) and bytes."""

    index: int
    headers: dict[str, str] = field(default_factory=dict)
    body: IO[bytes] = field(default_factory=lambda: tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY))  # noqa: SIM115
    size: int = 0
    complete: bool = False

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";")[0].strip().lower() if value else None

    def read(self) -> bytes:
        self.body.seek(0)
        return self.body.read()

    def close(self) -> None:
        self.body.close()

    def describe(self) -> str:
        return f"part {self.index}" + (f" ({self.content_type})" if self.content_type else " (no Content-Type)")


def parse_content_type(header: str | None) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=X`` → (media type, parameters)."""
    from python_multipart.multipart import parse_options_header

    media, params = parse_options_header(header or "")
    return media.decode("latin-1").lower(), {k.decode("latin-1").lower(): v.decode("latin-1")
                                             for k, v in params.items()}


async def read_related(
    chunks: AsyncIterator[bytes], content_type: str | None, *, part_type: str, max_part_bytes: int, max_parts: int,
    max_total_bytes: int | None = None,
) -> list[Part]:
    """The parts of a ``multipart/related`` body whose root type is ``part_type``.

    Raises:
        UnsupportedMediaType: not multipart/related, or of another ``type``.
        UsageError: no boundary, malformed or truncated body, no parts.
        PayloadTooLarge: a part over ``max_part_bytes``, more than ``max_parts`` parts, or a body over
            ``max_total_bytes`` (checked as the bytes arrive: a body without Content-Length is bounded too).
    """
    from python_multipart.exceptions import FormParserError, MultipartParseError
    from python_multipart.multipart import MultipartParser

    media, params = parse_content_type(content_type)
    if media != "multipart/related":
        raise UnsupportedMediaType(
            f"STOW-RS takes multipart/related; type=\"{part_type}\", not {media or 'a body without Content-Type'}",
            hint=f'Send Content-Type: multipart/related; type="{part_type}"; boundary=…')
    root = params.get("type", "").lower()
    if root and root != part_type:
        raise UnsupportedMediaType(f"multipart/related of type {root!r} is not supported here",
                                   hint=f'Send type="{part_type}": one DICOM PS3.10 file per part.')
    boundary = params.get("boundary")
    if not boundary:
        raise UsageError("the multipart/related Content-Type has no boundary",
                         hint="Add boundary=… to the Content-Type header.")
    collector = _Collector(max_part_bytes, max_parts)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
    except FormParserError as exc:  # a boundary the parser cannot take (over 256 characters; RFC 2046 allows 70)
        raise UsageError(f"the multipart/related boundary cannot be used: {exc}",
                         hint="Use a boundary of 1 to 70 characters (RFC 2046), e.g. a UUID.") from None
    preamble = _Preamble(boundary.encode("latin-1"))
    received = 0
    try:
        async for chunk in chunks:
            if chunk and (data := preamble.feed(chunk)):
                parser.write(data)  # a part over its limit is named first
            received += len(chunk)
            if max_total_bytes is not None and received > max_total_bytes:
                raise PayloadTooLarge(f"the request is larger than {max_total_bytes} bytes",
                                      hint="Send the study in several requests, or raise the serving setting "
                                           "max_upload_bytes.")
        if not preamble.done:
            raise UsageError(f"the multipart body has no boundary line --{boundary}: it is empty, or not split with "
                             "the boundary its Content-Type names",
                             hint="Start each part with --BOUNDARY on a line of its own, the boundary being the one "
                                  "in the Content-Type header.")
        parser.finalize()
    except MultipartParseError as exc:
        collector.close()
        raise UsageError(f"the multipart body is malformed: {exc}",
                         hint="Check the boundary and each part: headers, a blank line, bytes.") from None
    except BaseException:  # our refusals, a client that hung up, a cancelled request: no spooled part is left open
        collector.close()
        raise
    parts = collector.parts
    if not collector.ended or (parts and not parts[-1].complete):
        collector.close()
        raise UsageError("the multipart body ended before its closing boundary (a truncated upload)",
                         hint="Send the whole request again.")
    if not parts:
        raise UsageError("the multipart body has no parts", hint="Send one DICOM file per part.")
    return parts


class _Preamble:
    """Drops what comes before the first delimiter line (``--boundary`` at the start of the body or after a CRLF).

    Only a tail as long as the delimiter is held back while looking for it, so a long preamble costs no memory
    (its size still counts towards the request's limit).
    """

    def __init__(self, boundary: bytes) -> None:
        self.first = b"--" + boundary
        self.done = False
        self._held = b""
        self._at_start = True

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` from the first delimiter on (all of them once it was found)."""
        if self.done:
            return chunk
        held = self._held + chunk
        if self._at_start:
            if held.startswith(self.first):
                return self._found(held)
            if self.first.startswith(held):  # the body so far may still begin with the delimiter
                self._held = held
                return b""
        at = held.find(b"\r\n" + self.first)
        if at >= 0:
            return self._found(held[at + 2:])
        keep = len(self.first) + 1  # a CRLF and the delimiter cut by the chunk's end
        self._held, self._at_start = held[-keep:], False
        return b""

    def _found(self, data: bytes) -> bytes:
        self.done, self._held = True, b""
        return data


class _Collector:
    """python-multipart callbacks that spool each part and enforce the limits as bytes arrive."""

    def __init__(self, max_part_bytes: int, max_parts: int) -> None:
        self.max_part_bytes, self.max_parts = max_part_bytes, max_parts
        self.parts: list[Part] = []
        self.ended = False
        self._field = bytearray()
        self._value = bytearray()

    def callbacks(self) -> Any:
        return {"on_part_begin": self.begin, "on_part_data": self.data, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_part_end": self.part_end, "on_end": self.end}

    def begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise PayloadTooLarge(f"the request has more than {self.max_parts} parts",
                                  hint="Send the study in several requests.")
        self.parts.append(Part(len(self.parts) + 1))

    def data(self, buf: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        part.size += end - start
        if part.size > self.max_part_bytes:
            raise PayloadTooLarge(f"{part.describe()} is larger than {self.max_part_bytes} bytes",
                                  hint="Raise the serving setting max_upload_bytes, or send smaller instances.")
        part.body.write(buf[start:end])

    def header_field(self, buf: bytes, start: int, end: int) -> None:
        self._field += buf[start:end]

    def header_value(self, buf: bytes, start: int, end: int) -> None:
        self._value += buf[start:end]

    def header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self.parts[-1].headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def part_end(self) -> None:
        self.parts[-1].complete = True

    def end(self) -> None:
        self.ended = True

    def close(self) -> None:
        for part in self.parts:
            part.close()


def new_boundary() -> str:
    return "medcycle-" + secrets.token_hex(16)


def _part_head(boundary: str, part_type: str, size: int) -> bytes:
    return f"--{boundary}\r\nContent-Type: {part_type}\r\nContent-Length: {size}\r\n\r\n".encode()


def write_related(items: Iterable[bytes], boundary: str, part_type: str) -> bytes:
    """A ``multipart/related`` body with one ``part_type`` part per item."""
    out = bytearray()
    for item in items:
        out += _part_head(boundary, part_type, len(item))
        out += item
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def related_length(sizes: Iterable[int], boundary: str, part_type: str) -> int:
    """The length of :func:`write_related`'s body for items of these sizes, without the items."""
    return sum(len(_part_head(boundary, part_type, n)) + n + 2 for n in sizes) + len(f"--{boundary}--\r\n")
