"""The files of one import or export: a folder, a zip archive, one file, or bytes.

Tools export one JSON or XML file (COCO, CVAT, Label Studio) or a tree of them (VOC, YOLO,
Supervisely, NIfTI, DICOM SEG), often zipped. Readers see every input the same way: a
:class:`Bundle` of relative POSIX names → bytes, read lazily. Writers return ``{relative name: bytes}``
and :func:`write_files` puts that into a folder, one file or a zip — refusing names that would escape
the destination (an image called ``../../etc/x.png`` must not become ``../../etc/x.xml``).
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

from medcycle.errors import ValidationFailed
from medcycle.labels.formats.parsing import Where

MAX_FILE_BYTES = 1 << 30  # one annotation file (or mask) larger than this is refused, not read into memory
_IGNORED = ("__MACOSX/", ".DS_Store", "Thumbs.db")


class Bundle:
    """Named files of one input; ``label`` says what it was (a path, or a name given with bytes)."""

    def __init__(self, loaders: Mapping[str, Callable[[], bytes]], label: str) -> None:
        self._loaders = dict(loaders)
        self.label = label
        self.names: tuple[str, ...] = tuple(sorted(self._loaders))

    def read(self, name: str) -> bytes:
        if name not in self._loaders:
            raise ValidationFailed(f"{self.label}: no file {name!r}", hint="Check the export is complete.")
        return self._loaders[name]()

    def text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            Where(name).fail(f"is not UTF-8 text (byte {exc.start})", "Save the file as UTF-8 text.")

    def with_suffix(self, *suffixes: str) -> list[str]:
        return [n for n in self.names if n.lower().endswith(suffixes)]

    def named(self, basename: str) -> list[str]:
        """Files called ``basename`` anywhere in the bundle, shallowest first."""
        found = [n for n in self.names if PurePosixPath(n).name == basename]
        return sorted(found, key=lambda n: (n.count("/"), n))

    def one(self, suffix: str, what: str, file: str | None = None) -> str:
        """The single annotation file of a one-file format: ``file`` if given, the only ``suffix`` file,
        or the only file at all (bytes given without a name)."""
        if file is not None:
            return file
        names = self.with_suffix(suffix) or (list(self.names) if len(self.names) == 1 else [])
        if len(names) != 1:
            Where(self.label).fail(f"holds {len(names)} {suffix} files; a {what} export is one",
                                   f"Pass file='name{suffix}' (its path inside the export) to choose one.")
        return names[0]

    @classmethod
    def single(cls, name: str, data: bytes) -> Bundle:
        return cls({name: lambda: data}, name)


def _check_size(size: int, name: str) -> None:
    if size > MAX_FILE_BYTES:
        Where(name).fail(f"is {size} bytes, over the {MAX_FILE_BYTES} byte limit for one annotation file",
                         "Split the export into smaller parts.")


def _folder(root: Path) -> Bundle:
    loaders: dict[str, Callable[[], bytes]] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        if rel.startswith(_IGNORED) or rel.endswith(_IGNORED):
            continue

        def load(p: Path = path, r: str = rel) -> bytes:
            _check_size(p.stat().st_size, r)
            return p.read_bytes()

        loaders[rel] = load
    return Bundle(loaders, str(root))


def _zip(data: bytes | Path, label: str) -> Bundle:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError) as exc:
        Where(label).fail(f"is not a readable zip archive: {exc}", "Export the archive again.")
    loaders: dict[str, Callable[[], bytes]] = {}
    for info in archive.infolist():
        name = info.filename.replace("\\", "/").lstrip("/")
        if info.is_dir() or not name or ".." in name.split("/") or name.startswith(_IGNORED) or name.endswith(_IGNORED):
            continue

        def load(i: zipfile.ZipInfo = info, n: str = name) -> bytes:
            _check_size(i.file_size, n)
            try:
                return archive.read(i)  # zipfile checks the real size against file_size and the CRC
            except (zipfile.BadZipFile, zlib.error, OSError) as exc:
                Where(n).fail(f"cannot be read from the archive: {exc}", "Export the archive again.")

        loaders[name] = load
    return Bundle(loaders, label)


def open_bundle(source: str | Path | bytes, name: str | None = None) -> Bundle:
    """A bundle over a folder, a zip (path or bytes), one file, or bytes (called ``name`` in errors)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if data.startswith(b"PK\x03\x04"):
            return _zip(data, name or "upload.zip")
        _check_size(len(data), name or "upload")
        return Bundle.single(name or "upload", data)
    path = Path(source)
    if path.is_dir():
        return _folder(path)
    if not path.is_file():
        raise ValidationFailed(f"{path}: no such file or folder", hint="Check the path of the export.")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"PK\x03\x04":
        return _zip(path, path.name)
    _check_size(path.stat().st_size, path.name)
    return Bundle({path.name: path.read_bytes}, str(path))


def safe_relative(name: str, what: str) -> str:
    """``name`` as a relative POSIX path that stays inside an export folder, or a clear error."""
    parts = name.replace("\\", "/").split("/")
    if (not name or name.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts)
            or "\x00" in name or (len(parts[0]) > 1 and parts[0][1] == ":")):
        raise ValidationFailed(f"{what} {name!r} is not a safe relative file name for an export",
                               hint="Give the image a plain relative file name (no '..', no leading '/').")
    return "/".join(parts)


def write_files(files: Mapping[str, bytes], dest: str | Path, *, single: bool) -> list[Path]:
    """Write an export: to ``dest`` itself when it is one file of a single-file format (``single``), into a
    zip when ``dest`` ends in ``.zip``, else into the folder ``dest``. Each file is replaced atomically."""
    dest = Path(dest)
    names = [safe_relative(n, "export file") for n in files]
    if dest.suffix.lower() == ".zip":
        dest.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in zip(names, files.values(), strict=True):
                archive.writestr(name, data)
        _atomic_write(dest, buffer.getvalue())
        return [dest]
    if single and len(files) == 1 and not dest.is_dir() and dest.suffix:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(dest, next(iter(files.values())))
        return [dest]
    written = []
    for name, data in zip(names, files.values(), strict=True):
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data)
        written.append(path)
    return written


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unique(names: Iterable[str], what: str) -> None:
    """Refuse an export where two images would write the same file."""
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    dupes = sorted(n for n, c in seen.items() if c > 1)
    if dupes:
        raise ValidationFailed(f"two images would be written to the same {what}: {', '.join(dupes[:5])}",
                               hint="Give the images distinct file names (ImageRef.file_name).")
