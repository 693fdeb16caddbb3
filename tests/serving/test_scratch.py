"""The process-wide scratch folder: each request removes exactly its own files."""

from __future__ import annotations

import os
from pathlib import Path

from medcycle.serving.scratch import new_tag, remove_tagged, scratch_dir


def test_a_tag_removes_its_own_files_and_folders_only(tmp_path: Path) -> None:
    mine, other = new_tag(), new_tag()
    (tmp_path / f"{mine}-0.dcm").write_bytes(b"a")
    (tmp_path / f"{mine}-zip").mkdir()
    (tmp_path / f"{mine}-zip" / "inner.dcm").write_bytes(b"b")
    (tmp_path / f"{other}-0.dcm").write_bytes(b"c")
    outside = tmp_path.parent / f"outside-{mine}"
    outside.mkdir()
    (outside / "keep").write_bytes(b"d")
    os.symlink(outside, tmp_path / f"{mine}-link")  # a link is removed, never followed
    remove_tagged(tmp_path, mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{other}-0.dcm"]
    assert (outside / "keep").read_bytes() == b"d"


def test_a_tag_is_a_plain_prefix_not_a_pattern(tmp_path: Path) -> None:
    (tmp_path / "r[ab]-x").write_bytes(b"1")
    (tmp_path / "ra-x").write_bytes(b"2")
    (tmp_path / "r-star").write_bytes(b"3")
    remove_tagged(tmp_path, "r[ab]")
    remove_tagged(tmp_path, "r*")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r-star", "ra-x"]


def test_a_missing_folder_is_nothing_to_remove(tmp_path: Path) -> None:
    remove_tagged(tmp_path / "gone", new_tag())
    folder = scratch_dir()
    assert folder.is_dir() and oct(folder.stat().st_mode & 0o777) == "0o700"
