"""A process-wide scratch folder for request and job files.

Creating and removing a folder per request costs more on a journalling file system than the rest of a small
request's file work (both are journalled metadata updates), so each process makes one private folder (0700,
under the system temp folder) once, and every request or job names its files with a prefix of its own and
removes exactly those.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

_FOLDER: list[Path] = []
_LOCK = threading.Lock()


def scratch_dir() -> Path:
    """This process's scratch folder (made again if something removed it)."""
    with _LOCK:
        if not _FOLDER or not _FOLDER[0].is_dir():
            folder = Path(tempfile.mkdtemp(prefix="medcycle-scratch-"))
            _FOLDER[:] = [folder]
            atexit.register(shutil.rmtree, folder, True)
        return _FOLDER[0]


def new_tag() -> str:
    """A prefix no other request or job of any process uses."""
    return f"r{uuid.uuid4().hex}"


def remove_tagged(folder: Path, tag: str) -> None:
    """Remove every file and folder of ``folder`` whose name starts with ``tag`` (a plain prefix: no pattern, so
    nothing in a tag is read as a wildcard, and no pattern is compiled for each request's own tag)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.name.startswith(tag):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
