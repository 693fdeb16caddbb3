"""``iter_inputs``: the string fast path for plain files gives what the general per-file path gives."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from medcycle.catalog.inputs import InputFile, _expand_file, folder_problem, iter_inputs


def _tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.dcm").write_bytes(b"x" * 3)
    (root / "a" / "one.dcm").write_bytes(b"y" * 5)
    (root / "a" / "b" / "two").write_bytes(b"z" * 7)
    (root / "a" / ".DS_Store").write_bytes(b"junk")
    (root / "a" / "._one.dcm").write_bytes(b"junk")
    with zipfile.ZipFile(root / "a" / "pack.ZIP", "w") as zf:
        zf.writestr("inner/three.dcm", b"w" * 4)
    (root / "a" / "b" / "link.dcm").symlink_to(root / "a" / "one.dcm")  # the same file twice: listed once


def _reference(root: Path) -> list[InputFile]:
    """Every file through ``_expand_file`` (Path objects throughout), as before the fast path."""
    seen: set[str] = set()
    out: list[InputFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        real_dir = os.path.realpath(dirpath)
        for name in sorted(filenames):
            if name in {".DS_Store", "Thumbs.db", "desktop.ini"} or name.startswith("._"):
                continue
            out += _expand_file(Path(dirpath) / name, root, seen, real_dir)
    return out


@pytest.mark.parametrize("form", ["absolute", "relative", "dot", "trailing slash"])
def test_plain_files_as_the_general_path_gives_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _tree(data)
    if form == "absolute":
        root = data
    else:
        monkeypatch.chdir(tmp_path if form == "relative" else data)
        root = Path("data") if form == "relative" else Path(".")
        if form == "trailing slash":
            monkeypatch.chdir(tmp_path)
            root = Path("data/")
    got = list(iter_inputs([root]))
    assert got == _reference(root)
    assert {f.rel for f in got} == {"top.dcm", "a/one.dcm", "a/b/two", "inner/three.dcm"}
    assert [f.size for f in got if f.member is None and f.rel == "a/b/two"] == [7]


@pytest.mark.timeout(30)
def test_linked_folders_are_walked_once_and_loops_end(tmp_path: Path) -> None:
    """A symbolic link to a folder inside the tree was skipped without a word (os.walk does not follow links),
    so its images were silently not ingested. Linked folders are walked; a link back up the tree ends there."""
    root = tmp_path / "data"
    (root / "by-date").mkdir(parents=True)
    elsewhere = tmp_path / "archive" / "p1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "one.dcm").write_bytes(b"x" * 3)
    (root / "by-date" / "2020").symlink_to(elsewhere, target_is_directory=True)
    (root / "by-date" / "again").symlink_to(elsewhere, target_is_directory=True)  # the same folder twice
    (root / "by-date" / "up").symlink_to(root, target_is_directory=True)  # a loop
    got = list(iter_inputs([root]))
    assert [f.rel for f in got] == ["by-date/2020/one.dcm"]


@pytest.mark.timeout(30)
def test_a_pipe_given_as_the_argument_is_reported(tmp_path: Path) -> None:
    """A named pipe given directly was neither a file nor a folder: the walk found nothing and said nothing."""
    pipe = tmp_path / "scan.dcm"
    os.mkfifo(pipe)
    got = list(iter_inputs([pipe]))
    assert [(f.rel, f.problem) for f in got] == [("scan.dcm", "not a regular file (a pipe, socket or device)")]


def unreadable(monkeypatch: pytest.MonkeyPatch, *folders: Path) -> None:
    """Make listing ``folders`` fail as a folder of mode 000 does for anyone but root (the tests run as root)."""
    real = os.scandir
    denied = {str(f) for f in folders}

    def scandir(path: str | os.PathLike[str] = ".") -> Iterator[os.DirEntry[str]]:
        if os.fspath(path) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)  # what inputs' os.walk lists folders with


def test_a_folder_that_cannot_be_read_is_reported_and_the_walk_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.walk drops a folder it cannot list without a word: its files were silently not ingested."""
    root = tmp_path / "data"
    for rel in ("a/one.dcm", "locked/two.dcm", "z/three.dcm"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    unreadable(monkeypatch, root / "locked")
    problem = folder_problem(PermissionError(13, "Permission denied"))
    assert problem.startswith("cannot read the folder (PermissionError)") and "ingest it again" in problem
    got = [(f.rel, f.display, f.problem) for f in iter_inputs([root])]
    assert got == [
        ("a/one.dcm", str(root / "a" / "one.dcm"), None),
        ("locked", str(root / "locked"), problem),
        ("z/three.dcm", str(root / "z" / "three.dcm"), None),
    ]
    unreadable(monkeypatch, root)  # the folder given itself
    assert [(f.rel, f.display, f.problem) for f in iter_inputs([root])] == [(".", str(root), problem)]
