"""The folder a pull writes: where each item goes, how it gets there (hard link or copy), and the manifests.

Layout, readable by any training code (and by MONAI's ``load_decathlon_datalist``-style loaders via the CSV)::

    DIR/manifest.json                       the pulled version: ids, subset, every item with its path
    DIR/manifest.csv                        the same items, one row each (labels joined with "|")
    DIR/DATASET_CARD.md                     the version's dataset card
    DIR/.medcycle-pull.json                 the paths this pull wrote (so the next pull knows what it owns)
    DIR/<split>/<patient>/<study>/<series>/<instance>.<ext>

Files are hard links to read-only, content-addressed objects (so a pull costs no space and no copying when
the cache or store is on the same file system), or copies across file systems. A file already in place is
left alone; a file that differs is replaced atomically; files an earlier pull wrote and the new one does
not list are removed. Files medcycle did not write are never touched.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import hashlib
import io
import json
import mmap
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from medcycle.datasets.manifest import ManifestItem
from medcycle.datasets.splits import UNSPLIT
from medcycle.errors import IntegrityError, NotFound, UsageError
from medcycle.objects.base import CHUNK, MAP_FROM, read_buffer

PULL_FORMAT = "medcycle.pull/1"
MANIFEST_JSON = "manifest.json"
MANIFEST_CSV = "manifest.csv"
CARD_FILE = "DATASET_CARD.md"
STATE_FILE = ".medcycle-pull.json"  # the paths the last pull wrote (what the next one may remove)
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_LINK_ERRORS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES}


class Placed(StrEnum):
    LINKED = "linked"
    COPIED = "copied"
    UNCHANGED = "unchanged"


@functools.lru_cache(maxsize=1 << 16)  # split, patient, study and series names repeat over thousands of items
def _component(value: str) -> str:
    safe = _SAFE.sub("_", value)
    return "_" if safe in {"", ".", ".."} else safe


def relative_path(item: ManifestItem) -> str:
    parts = [item.split or UNSPLIT, item.patient, item.study, item.series]
    return "/".join(_component(p) for p in parts) + f"/{_component(item.uid)}.{item.extension}"


BUFFER = CHUNK  # bytes per read (measured: 1 MiB beats 128 KiB-4 MiB on a 2-core VM)
buffer = read_buffer  # this thread's reusable read buffer (shared with the object store's reads)


def hash_file(path: Path | str) -> str:
    """SHA-256 of a file (the hash runs outside the GIL, so threads hash on every core)."""
    with open(path, "rb", buffering=0) as fh:
        return hash_fd(fh.fileno())


def hash_fd(fd: int) -> str:
    """SHA-256 of the whole file open (for reading) as ``fd``, from its start whatever the offset.

    Large files are hashed from a read-only memory map in one call: no copy into a buffer first (~10% less
    CPU for 8 MiB objects); small ones are read into this thread's buffer.
    """
    size = os.fstat(fd).st_size
    if size >= MAP_FROM:
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
            return hashlib.sha256(mm).hexdigest()
    h = hashlib.sha256()
    buf = read_buffer()
    offset = 0
    while n := os.preadv(fd, [buf], offset):
        h.update(buf[:n])
        offset += n
    return h.hexdigest()


def missing(digest: str, where: str) -> NotFound:
    return NotFound(
        f"object {digest} is missing from {where}",
        hint="Restore it from a replica or backup (`medcycle store fsck` lists every missing object), or push it "
        "from a machine that pulled this version (`medcycle dataset push`).",
        digest=digest,
    )


def corrupt(digest: str, where: str) -> IntegrityError:
    return IntegrityError(
        f"object {digest} is corrupt in {where}: its bytes do not hash to its digest",
        hint="Restore the object from a replica or backup (`medcycle store fsck` lists every damaged object), "
        "or delete the cached copy and pull again.",
        digest=digest,
    )


def in_place(src: Path | str, target: Path | str, src_stat: os.stat_result | None = None) -> bool:
    """Whether ``target`` already is a hard link to ``src`` (one or two ``stat`` calls: the cheap common case)."""
    try:
        st = os.lstat(target)
        sst = src_stat or os.stat(src)
    except FileNotFoundError:
        return False
    return (st.st_ino, st.st_dev) == (sst.st_ino, sst.st_dev)


def place(
    src: Path | str, target: Path | str, item: ManifestItem, *, verify_source: bool, recheck: bool = False,
    absent: bool = False,
) -> Placed:
    """Make ``target`` hold the object at ``src`` (hard link, else copy); nothing is done when it already does.

    ``verify_source`` re-hashes ``src`` before a new link or copy (used when linking straight from a store
    whose objects were not just fetched and verified); ``recheck`` re-hashes files already in place too.
    ``absent`` says the caller knows ``target`` does not exist (a fresh folder): it is linked without a look.
    A new file is linked straight to its name (a link appears whole); a copy is written to a temp file and
    renamed, so a partial copy is never seen.
    """
    st = None
    if not absent:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
    if st is not None:
        try:
            sst = os.stat(src)
        except FileNotFoundError:
            sst = None
        if sst is not None and (st.st_ino, st.st_dev) == (sst.st_ino, sst.st_dev):
            if recheck and hash_file(target) != item.digest:
                raise corrupt(item.digest, f"the object store and {target} (hard-linked)")
            return Placed.UNCHANGED
        if st.st_size == item.bytes and os.path.isfile(target) and hash_file(target) == item.digest:
            return Placed.UNCHANGED
    if verify_source and hash_file(src) != item.digest:
        raise corrupt(item.digest, f"the object store ({src})")
    if st is None:  # nothing there: link straight to the name
        try:
            os.link(src, target)
            return Placed.LINKED
        except FileExistsError:  # it appeared meanwhile: look again (the source is verified by now)
            return place(src, target, item, verify_source=False, recheck=recheck)
        except OSError as exc:
            if exc.errno not in _LINK_ERRORS:
                raise
            return _copy(src, target)
    tmp = _temp_name(target)  # replace what is there, atomically
    try:
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in _LINK_ERRORS:
                raise
            return _copy(src, target)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Placed.LINKED


def _temp_name(target: Path | str) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")


def _copy(src: Path | str, target: Path | str) -> Placed:
    """Copy ``src`` to ``target`` (read-only) through a temp file and a rename (for other file systems)."""
    tmp = _temp_name(target)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Placed.COPIED


def previous_paths(dest: Path) -> set[str]:
    """Paths the last pull into ``dest`` wrote (from its state file), if it was ours."""
    try:
        data = json.loads((dest / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, OSError):
        return set()
    if not isinstance(data, dict) or data.get("format") != PULL_FORMAT:
        return set()
    return {p for p in data.get("paths", []) if isinstance(p, str)}


def remove_stale(dest: Path, stale: Iterable[str]) -> int:
    """Delete files an earlier pull wrote that are no longer wanted, then their empty folders."""
    removed = 0
    parents: set[Path] = set()
    root = dest.resolve()
    for rel in stale:
        path = (dest / rel).resolve()
        if root not in path.parents:
            continue  # never outside dest
        try:
            path.unlink()
            removed += 1
            parents.add(path.parent)
        except FileNotFoundError:
            continue
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent
    return removed


def make_folders(dest: Path, paths: Iterable[str]) -> list[str]:
    """Create every folder the items go in: one ``mkdir`` per missing folder, parents first, none twice.

    Returns the folders it created, parents first (what :func:`remove_folders` takes to undo it).
    """
    root = str(dest)
    done: set[str] = {""}
    made: list[str] = []
    for folder in sorted({rel.rpartition("/")[0] for rel in paths}):
        if folder in done:
            continue
        parts = folder.split("/")
        for k in range(1, len(parts) + 1):
            sub = "/".join(parts[:k])
            if sub in done:
                continue
            path = f"{root}/{sub}"
            try:
                os.mkdir(path)
                made.append(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise
            done.add(sub)
    return made


def remove_folders(made: Sequence[str]) -> None:
    """Remove the folders :func:`make_folders` made that are still empty, children first."""
    for path in reversed(made):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def check_dest(dest: Path) -> list[str]:
    """Make ``dest`` (and its missing parents) to pull into; returns the folders it made, outermost first.

    Nothing is made unless the folder can be used: ``dest`` (or the nearest folder above it that exists)
    must be a folder this process can write into.

    Raises:
        UsageError: ``dest`` or a parent is a file, or the folder cannot be written into or made.
    """
    missing: list[Path] = []
    here = dest.absolute()
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    if not here.is_dir():
        raise UsageError(f"{dest} exists and is not a folder" if not missing else
                         f"cannot make the folder {dest} ({here} is not a folder)",
                         hint="Pull into a new or existing folder (--to), not a file or a path through one.")
    if not os.access(here, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write into {here}", hint="Pull into a folder you can write to (check its owner "
                         "and mode, or choose another --to).")
    made: list[str] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, not ours to remove
        except OSError as exc:
            remove_folders(made)
            raise UsageError(f"cannot make the folder {folder} ({exc.strerror or type(exc).__name__})",
                             hint="Pull into a folder you can write to.") from None
        made.append(str(folder))
    return made


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


ITEM_COLUMNS = ("path", "split", "labels", "uid", "digest", "bytes", "format", "patient", "study", "series", "source")


def render_outputs(
    header: Mapping[str, Any], rows: Sequence[tuple[str, ManifestItem]],
    catalog: Mapping[str, Mapping[str, Any]], catalog_fields: Sequence[str], card_md: str,
) -> dict[str, bytes]:
    """The bytes of manifest.json, manifest.csv, DATASET_CARD.md and the state file, by file name.

    Pure (no file is touched), so a pull renders them while its objects are still moving.
    """
    items = []
    extra_fields = [f for f in catalog_fields if f not in ITEM_COLUMNS and f != "modality"]
    for path, item in rows:
        entry: dict[str, Any] = {"path": path, **item.to_dict()}
        extra = catalog.get(item.uid, {})
        for f in extra_fields:
            entry[f] = extra.get(f)
        items.append(entry)
    # One item per line: readable, diffable, and written by the C encoder (``indent`` would disable it).
    encode = json.JSONEncoder(default=str).encode
    head = encode({"format": PULL_FORMAT, **header})[:-1]
    lines = ",\n".join(encode(e) for e in items)
    out = {MANIFEST_JSON: f'{head}, "items": [\n{lines}\n]}}\n'.encode()}
    buf = io.StringIO()
    columns = [*ITEM_COLUMNS, "modality", *extra_fields]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for entry in items:
        entry["labels"] = "|".join(entry["labels"])
    writer.writerows([entry[c] for c in columns] for entry in items)  # None is written as an empty field
    out[MANIFEST_CSV] = buf.getvalue().encode()
    out[CARD_FILE] = card_md.encode()
    out[STATE_FILE] = encode({"format": PULL_FORMAT, "paths": [p for p, _ in rows]}).encode()
    return out


def write_rendered(dest: Path, rendered: Mapping[str, bytes]) -> None:
    """Write what :func:`render_outputs` made, each file atomically, the state file last."""
    for name in sorted(rendered, key=lambda n: n == STATE_FILE):
        _write_atomic(dest / name, rendered[name])


def write_outputs(
    dest: Path, header: Mapping[str, Any], rows: Sequence[tuple[str, ManifestItem]],
    catalog: Mapping[str, Mapping[str, Any]], catalog_fields: Sequence[str], card_md: str,
) -> None:
    """Write manifest.json, manifest.csv and DATASET_CARD.md (each atomically)."""
    write_rendered(dest, render_outputs(header, rows, catalog, catalog_fields, card_md))
