"""Walk what the user gave to ``medcycle data ingest``: files, folders, zip archives and DICOMDIR trees.

Each candidate becomes an :class:`InputFile` — a picklable reference (a path, or a zip archive and a
member) that a worker process can open. What cannot be opened at all (a broken link, a pipe, a folder that
cannot be listed) becomes one with a ``problem``, rejected with that reason while the rest goes on. Paths are
shown to the user who gave them, but never stored in the catalog or written to logs: folder names often carry
patient names.
"""

from __future__ import annotations

import itertools
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from medcycle.errors import NotFound, UsageError

SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def folder_problem(exc: OSError) -> str:
    """The reason a folder that cannot be listed is rejected with (its files are not ingested)."""
    return (f"cannot read the folder ({type(exc).__name__}): none of its files was ingested; give this user "
            "read access to it (e.g. chmod u+rx) and ingest it again")


@dataclass(frozen=True, slots=True)
class InputFile:
    """One file to ingest: ``path`` on disk, or ``member`` inside the zip archive at ``path``."""

    path: str
    member: str | None
    size: int
    display: str  # what the user sees in the summary (their own path)
    rel: str  # path relative to the argument it came from, with '/' separators (for BIDS-style names)
    problem: str | None = None  # why it cannot be read at all (a broken link, a pipe): rejected without opening it
    index: int = -1  # a zip member's place in the archive's directory (two members may share a name)
    pair: str | None = None  # a NIfTI pair's .hdr: its .img (a path, or a member of the same archive), read with it
    pair_size: int = 0  # the .img's size
    skip: str | None = None  # why it is not read on its own (the .img of a pair, read with its .hdr)


#: Why the image half of a NIfTI pair is skipped: it is read with its header.
PAIR_IMAGE = "the image file of a NIfTI pair (read with its .hdr)"


def _pair_image(name: str, names: dict[str, str]) -> str | None:
    """The .img that completes the .hdr ``name`` (its actual name, looked up in ``names``: lower case -> actual),
    or None."""
    lower = name.lower()
    return names.get(lower[:-4] + ".img") if lower.endswith(".hdr") else None


def _pair_header(name: str, names: dict[str, str]) -> bool:
    """Whether ``name`` is the .img of a pair whose .hdr is in ``names``."""
    lower = name.lower()
    return lower.endswith(".img") and lower[:-4] + ".hdr" in names


def _zip_members(archive: Path, display_root: str) -> Iterator[InputFile]:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        reason = f"corrupt or truncated zip archive ({type(exc).__name__})"
        yield InputFile(str(archive), None, 0, display_root, archive.name, reason)
        return
    names = {info.filename.lower(): info.filename for info in infos}
    sizes = {info.filename: info.file_size for info in infos}
    for index, info in enumerate(infos):
        if info.is_dir() or Path(info.filename).name in SKIP_NAMES or info.filename.startswith("__MACOSX/"):
            continue
        problem = skip = pair = None
        if info.flag_bits & 0x1:
            problem = "encrypted zip member: medcycle cannot read it; extract the archive and ingest the folder"
        elif info.filename.lower().endswith(".zip"):
            problem = "a zip archive inside a zip archive is not opened: extract the outer one and ingest the folder"
        elif _pair_header(info.filename, names):
            skip = PAIR_IMAGE
        else:
            pair = _pair_image(info.filename, names)
        yield InputFile(
            str(archive),
            info.filename,
            info.file_size,
            f"{display_root}!{info.filename}",
            info.filename,
            problem,
            index,
            pair=pair,
            pair_size=sizes[pair] if pair is not None else 0,
            skip=skip,
        )


def _dicomdir_files(dicomdir: Path) -> list[Path] | None:
    """Files a DICOMDIR references (ReferencedFileID of its records), or None when it cannot be read."""
    import warnings

    import pydicom

    from medcycle.catalog.deid import quiet_pydicom

    try:
        with quiet_pydicom(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(dicomdir, stop_before_pixels=True)
            records = ds.get("DirectoryRecordSequence", [])
            files = []
            for record in records:
                ref = record.get("ReferencedFileID")
                if ref:
                    parts = [str(p) for p in (ref if isinstance(ref, list | pydicom.multival.MultiValue) else [ref])]
                    files.append(dicomdir.parent.joinpath(*parts))
    except Exception:  # noqa: BLE001 - an unreadable DICOMDIR is reported by the worker as skipped/rejected
        return None
    return files


def _resolve_nocase(path: Path, base: Path) -> Path | None:
    """``path`` (under ``base``) as it exists, matching each component without regard to case (a DICOMDIR names
    its files in upper case; a copy of the medium may have them in lower case); None when it does not exist."""
    if path.is_file():
        return path
    here = base
    for part in path.relative_to(base).parts:
        try:
            match = next((e for e in here.iterdir() if e.name.lower() == part.lower()), None)
        except OSError:
            return None
        if match is None:
            return None
        here = match
    return here if here.is_file() else None


def iter_inputs(paths: list[Path]) -> Iterator[InputFile]:
    """Expand the given paths (sorted, deterministic) into input files; missing paths raise NotFound."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise NotFound(f"no such file or folder: {', '.join(missing)}", hint="Check the paths given to ingest.")
    seen: set[str] = set()
    walked: set[str] = set()  # folders by real path: a linked folder is walked once, a link back up ends there
    for root in paths:
        if not root.is_dir():  # a file, or a pipe, socket or device (reported, never opened)
            yield from _expand_file(root, root.parent, seen)
            continue
        unlisted: list[OSError] = []  # folders os.walk could not list (it goes on without them)
        for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted.append, followlinks=True):
            yield from _unlisted(unlisted, root)
            real_dir = os.path.realpath(dirpath)  # once a folder, not once a file
            if real_dir in walked:
                dirnames.clear()
                continue
            walked.add(real_dir)
            dirnames.sort()
            folder = Path(dirpath)
            folder_s, rel_dir = str(folder), folder.relative_to(root).as_posix()
            names = {name.lower(): name for name in filenames} if any(
                name[-4:].lower() == ".hdr" for name in filenames) else {}
            for name in sorted(filenames):
                if name in SKIP_NAMES or name.startswith("._"):
                    continue
                # A plain file (most of them): what _expand_file gives, with strings rather than Path objects
                # (which cost more than the rest of the walk at thousands of files); anything else goes there.
                path_s = name if folder_s == "." else os.path.join(folder_s, name)
                try:
                    st = os.lstat(path_s)
                except OSError:
                    st = None
                lower = name.lower()
                if st is None or not stat.S_ISREG(st.st_mode) or lower.endswith(".zip") or lower == "dicomdir":
                    yield from _expand_file(folder / name, root, seen, real_dir)
                    continue
                real = f"{real_dir}/{name}"
                if real in seen:
                    continue
                seen.add(real)
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if names and (lower.endswith(".hdr") or lower.endswith(".img")):
                    yield _pair_file(path_s, st.st_size, path_s, rel, names)
                    continue
                yield InputFile(path_s, None, st.st_size, path_s, rel)
        yield from _unlisted(unlisted, root)


def _unlisted(errors: list[OSError], root: Path) -> Iterator[InputFile]:
    """A rejected input for each folder in ``errors`` (os.walk's, in order), which is emptied."""
    for exc in errors:
        folder = str(exc.filename) if exc.filename is not None else str(root)
        try:
            rel = Path(folder).relative_to(root).as_posix()
        except ValueError:
            rel = Path(folder).name
        yield InputFile(folder, None, 0, folder, rel, folder_problem(exc))
    errors.clear()


def _expand_file(path: Path, root: Path, seen: set[str], real_dir: str | None = None) -> Iterator[InputFile]:
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if real_dir is not None and st is not None and stat.S_ISREG(st.st_mode):
        real = f"{real_dir}/{path.name}"  # a plain file in a resolved folder: its real path without resolving it
    else:
        real = str(path.resolve())
        st = None
    if real in seen:
        return
    seen.add(real)
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.name
    if path.suffix.lower() == ".zip":
        if zipfile.is_zipfile(path):
            yield from _zip_members(path, str(path))
            return
        if path.is_file():
            yield InputFile(str(path), None, 0, str(path), rel, "corrupt or truncated zip archive (no directory)")
            return
    if path.name.upper() == "DICOMDIR":
        referenced = _dicomdir_files(path)
        if referenced:
            for ref in referenced:
                found = _resolve_nocase(ref, path.parent)
                if found is None:
                    rel_ref = ref.relative_to(path.parent).as_posix()
                    yield InputFile(str(ref), None, 0, str(ref), rel_ref, "a file the DICOMDIR references is missing: "
                                    "copy the whole DICOMDIR tree (or ingest the folder) and ingest again")
                    continue
                yield from _expand_file(found, path.parent, seen)
        # the index file itself is reported as skipped by the worker
    if st is None:
        # A link or anything else that is not a plain file: what it points at decides. Opening a named pipe or a
        # device would wait for a writer (or read for ever), so only plain files are read.
        try:
            st = path.stat()
        except OSError:
            yield InputFile(str(path), None, 0, str(path), rel, "a broken symbolic link (its target does not exist)")
            return
        if not stat.S_ISREG(st.st_mode):
            yield InputFile(str(path), None, 0, str(path), rel, "not a regular file (a pipe, socket or device)")
            return
    if path.suffix.lower() in (".hdr", ".img"):
        try:
            names = {entry.lower(): entry for entry in os.listdir(path.parent)}
        except OSError:
            names = {}
        yield _pair_file(str(path), st.st_size, str(path), rel, names)
        return
    yield InputFile(str(path), None, st.st_size, str(path), rel)


def _pair_file(path: str, size: int, display: str, rel: str, names: dict[str, str]) -> InputFile:
    """A plain .hdr or .img file, with its other half when it is one half of a NIfTI pair (``names``: the
    folder's file names, lower case -> actual)."""
    name = os.path.basename(path)
    if _pair_header(name, names):
        return InputFile(path, None, size, display, rel, skip=PAIR_IMAGE)
    image = _pair_image(name, names)
    if image is None:
        return InputFile(path, None, size, display, rel)
    image_path = os.path.join(os.path.dirname(path), image)
    try:
        st = os.stat(image_path)
    except OSError:
        return InputFile(path, None, size, display, rel)
    if not stat.S_ISREG(st.st_mode):
        return InputFile(path, None, size, display, rel)
    return InputFile(path, None, size, display, rel, pair=image_path, pair_size=st.st_size)


ACCEPTED = ("DICOM files (any name), NIfTI (.nii, .nii.gz, .hdr/.img pairs), PNG and JPEG images, given as files, "
            "folders (walked with their sub-folders), zip archives or DICOMDIR trees")


def _hidden(item: InputFile, named: set[str]) -> bool:
    """A file found in a folder or a zip archive under a name starting with '.', or inside a folder named so
    (``.gitkeep``, ``.git/…``): alone, it is no data to ingest. A file named on the command line never is, and
    neither is an input that cannot be read (its reason is reported)."""
    if item.problem is not None or (item.member is None and item.path in named):
        return False
    return any(part.startswith(".") for part in item.rel.split("/"))


def files_to_ingest(paths: list[Path]) -> Iterator[InputFile]:
    """The input files of ``paths`` (:func:`iter_inputs`), once it is known there is one to ingest.

    Raises:
        NotFound: a path does not exist.
        UsageError: the paths hold no file to ingest: empty folders or zip archives, sub-folders without files,
            or only hidden files and the system files the walk ignores (``.DS_Store``, ``Thumbs.db``, ``._*``).
            A folder whose files are all rejected later (a text file) is not empty: it is ingested and reported.
    """
    items = iter_inputs(paths)
    named = {str(p) for p in paths}
    hidden: list[InputFile] = []
    for item in items:
        if not _hidden(item, named):
            return itertools.chain(hidden, [item], items)
        hidden.append(item)
    shown = ", ".join(str(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    found = (f"only {len(hidden)} hidden file(s) (names starting with '.', e.g. {Path(hidden[0].rel).name})"
             if hidden else "no file (empty folders or archives, or sub-folders without files)")
    raise UsageError(
        f"nothing to ingest in {shown or 'the paths given (none)'}: {found}; nothing was created",
        hint=f"Give the files to ingest: {ACCEPTED}. Check the path (`ls -la`), or copy the images there first.",
        paths=[str(p) for p in paths[:100]], hidden_files=len(hidden),
    )
