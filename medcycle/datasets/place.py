"""Objects on this machine into a pull's folder: what is in place already, and linking (or copying) the rest."""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path

from medcycle.datasets import layout
from medcycle.datasets.fetch import parallel
from medcycle.datasets.manifest import ManifestItem
from medcycle.datasets.report import Progress, PullReport, Tally, TransferEvent

Wanted = list[tuple[str, ManifestItem]]  # (path under the folder, item)


def sort_out(
    dest: Path, wanted: Wanted, files: dict[str, str], known: dict[str, os.stat_result], *, look: bool,
) -> tuple[Wanted, Wanted]:
    """Split ``wanted`` into the files to place and those already in place (hard links to their object: one or
    two ``stat`` calls each). ``look`` False (an empty folder, or ``verify``): every file is to be placed."""
    if not look:
        return wanted, []
    root = str(dest)
    placing, unchanged = [], []
    for pair in wanted:
        rel, item = pair
        if layout.in_place(files[item.digest], f"{root}/{rel}", known.get(item.digest)):
            unchanged.append(pair)
        else:
            placing.append(pair)
    return placing, unchanged


def place_all(
    dest: Path, placing: Wanted, unchanged: Wanted, files: dict[str, str], report: PullReport, *, workers: int,
    verify_source: bool, recheck: bool, emit: Progress, fresh: bool = False, folders: Future[list[str]] | None = None,
) -> None:
    """Link (or copy) the objects of ``placing`` (their files in ``files``) into their places under ``dest``;
    ``unchanged`` are already there.

    Args:
        verify_source: re-hash each object before it is first linked (straight from a local store). All are
            hashed, in parallel, before anything is linked, so a damaged object leaves no file in the folder.
        recheck: re-hash files already in place too (``verify``).
        fresh: ``dest`` was empty when the pull began, so no file is looked at before it is linked.
        folders: the folders of ``placing``, being made on a side thread; None: made here.
    """
    emit(TransferEvent("link", len(placing) + len(unchanged), report.bytes_total, start=True))
    root = str(dest)
    tally = Tally("link", emit)

    def placed(pair: tuple[str, ManifestItem], how: layout.Placed) -> None:
        if how is layout.Placed.LINKED:
            report.linked += 1
        elif how is layout.Placed.COPIED:
            report.copied += 1
        else:
            report.unchanged += 1
        tally.add(pair[1].bytes)

    def place(pair: tuple[str, ManifestItem]) -> layout.Placed:
        rel, item = pair
        src = files[item.digest]
        try:
            return layout.place(src, f"{root}/{rel}", item, verify_source=verify_source and recheck,
                                recheck=recheck, absent=fresh)
        except FileNotFoundError as exc:
            if exc.filename != src:
                raise
            raise layout.missing(item.digest, f"the object store ({src})") from None

    def check(digest: str) -> None:
        try:
            intact = layout.hash_file(files[digest]) == digest
        except FileNotFoundError:
            raise layout.missing(digest, f"the object store ({files[digest]})") from None
        if not intact:
            raise layout.corrupt(digest, f"the object store ({files[digest]})")

    try:
        for pair in unchanged:
            placed(pair, layout.Placed.UNCHANGED)
        if verify_source and not recheck:
            parallel(check, sorted({item.digest for _, item in placing}), workers, lambda _d, _r: None)
        if folders is None:
            layout.make_folders(dest, (rel for rel, _ in placing))
        else:
            folders.result()
        parallel(place, placing, workers, placed)
    finally:
        tally.flush()
