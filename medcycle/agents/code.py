"""What code a task runs, captured when it is submitted, so an agent on another machine rebuilds the exact tree.

* the commit, branch and remote of the repository the command is submitted from;
* the uncommitted diff against that commit (``git diff HEAD --binary``), stored as an object;
* when no remote branch contains the commit, a ``git bundle`` of the commits the remotes lack (the whole
  history when there is no remote), stored as an object: the agent fetches the commit from it, so a task
  whose commit was never pushed still runs (ClearML's agents cannot do this);
* untracked (or ignored) files the command names — a config file, a script — and any ``--include``, as a
  deterministic tar.gz stored by digest (size-capped).

Outside a git repository only the named files travel; the agent runs the command in a folder holding them.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medcycle.agents.gitops import run_git
from medcycle.agents.spec import CodeRef
from medcycle.errors import UsageError
from medcycle.experiments.capture import MAX_DIFF_BYTES, git_info
from medcycle.objects.base import ObjectStore

MiB = 1024 * 1024
MAX_BUNDLE_BYTES = 512 * MiB
MAX_UNTRACKED_BYTES = 64 * MiB
MAX_UNTRACKED_FILES = 1000


@dataclass(frozen=True, slots=True)
class CodeCapture:
    """The code reference of a task and what it took to make it (for the submitter's report)."""

    code: CodeRef | None
    root: str
    repository: bool
    pushed: bool = False
    dirty: bool = False
    diff_bytes: int = 0
    bundle_bytes: int = 0
    untracked: list[str] = field(default_factory=list)
    untracked_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["code"] = asdict(self.code) if self.code is not None else None
        return out


def _inside(path: Path, root: Path) -> str | None:
    """``path`` relative to ``root`` (POSIX form), or None when it lies outside."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def argv_files(command: Sequence[str], cwd: Path) -> list[Path]:
    """Existing files an argv names, as ``arg`` or ``--option=arg`` (the files a command probably needs)."""
    out: list[Path] = []
    for arg in command:
        for candidate in {arg, arg.partition("=")[2]} - {""}:
            if len(candidate) > 4096 or "\0" in candidate:
                continue
            path = Path(candidate) if os.path.isabs(candidate) else cwd / candidate
            try:
                if path.is_file():
                    out.append(path.resolve())
            except OSError:
                continue
    return out


def _tracked(root: Path, rels: Sequence[str]) -> set[str]:
    if not rels:
        return set()
    out = run_git(root, "--literal-pathspecs", "ls-files", "-z", "--cached", "--", *rels, what="git ls-files")
    return {p for p in out.stdout.decode(errors="replace").split("\0") if p}


def pack_files(root: Path, rels: Iterable[str], *, max_bytes: int = MAX_UNTRACKED_BYTES) -> tuple[bytes, int]:
    """A tar.gz of ``rels`` (paths under ``root``) that is the same bytes for the same files: sorted, no times,
    no owners, only the executable bit kept. Returns the archive and the files' total size."""
    names = sorted(set(rels))
    if len(names) > MAX_UNTRACKED_FILES:
        raise UsageError(f"{len(names)} untracked files would travel with the task (at most {MAX_UNTRACKED_FILES})",
                         hint="Commit them, or name fewer with --include.")
    total = 0
    for rel in names:
        total += (root / rel).stat().st_size
    if total > max_bytes:
        raise UsageError(f"the untracked files the task needs hold {total / MiB:.1f} MiB "
                         f"(at most {max_bytes / MiB:.0f} MiB travel with a task)",
                         hint="Commit them, or put data in a dataset version and pass --dataset NAME@TAG.")
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w",
                                                                            format=tarfile.PAX_FORMAT) as tar:
        for rel in names:
            path = root / rel
            info = tarfile.TarInfo(rel)
            st = path.stat()
            info.size = st.st_size
            info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    return raw.getvalue(), total


def _bundle(objects: ObjectStore, root: Path, max_bytes: int) -> tuple[str, int]:
    """Store a bundle of HEAD less everything the remote-tracking branches hold; returns (digest, size)."""
    with tempfile.TemporaryDirectory(prefix="medcycle-bundle-") as tmp:
        path = Path(tmp) / "code.bundle"
        run_git(root, "bundle", "create", str(path), "HEAD", "--not", "--remotes", what="git bundle create",
                hint="Push the commit (`git push`) and enqueue again.")
        size = path.stat().st_size
        if size > max_bytes:
            raise UsageError(f"the commits no remote has make a {size / MiB:.0f} MiB bundle "
                             f"(at most {max_bytes / MiB:.0f} MiB travel with a task)",
                             hint="Push the commit (`git push`) and enqueue again.")
        return objects.put(path).digest, size


def capture_code(objects: ObjectStore, cwd: Path, *, files: Sequence[Path] = (), required: Sequence[Path] = (),
                 max_untracked_bytes: int = MAX_UNTRACKED_BYTES,
                 max_bundle_bytes: int = MAX_BUNDLE_BYTES) -> CodeCapture:
    """Capture the code a command run from ``cwd`` needs, storing diff, bundle and untracked files in ``objects``.

    Args:
        cwd: where the command would run; its repository (if any) is captured, and the command runs in the
            same folder relative to the repository root on the agent.
        files: files the command may need (from its argv); those inside the tree and not tracked travel.
        required: files that must travel (a config, ``--include``); an error when outside the tree.

    Raises:
        UsageError: no commit yet, a diff too large to capture, a required file outside the tree, too many or
            too large untracked files.
    """
    cwd = cwd.resolve()
    info, diff = git_info(cwd)
    repository = bool(info.get("repository"))
    root = Path(info["root"]).resolve() if repository else cwd
    commit = info.get("commit") if repository else None
    if repository and not commit:
        raise UsageError(f"the repository {root} has no commit yet",
                         hint="Commit your code (`git commit`), then enqueue again.")
    if info.get("diff_truncated"):
        raise UsageError(f"the uncommitted changes in {root} are larger than {MAX_DIFF_BYTES // MiB} MiB",
                         hint="Commit them (an unpushed commit travels as a bundle) and enqueue again.")
    needed: set[str] = set()
    for path in required:
        resolved = path.resolve()
        rel = _inside(resolved, root)
        if rel is None:
            raise UsageError(f"{path} is outside {root}, so an agent could not see it",
                             hint="Move it into the repository (or the folder you enqueue from).")
        if not resolved.is_file():
            raise UsageError(f"{path} is not a file", hint="Name files (not folders) to include.")
        needed.add(rel)
    for path in files:
        rel = _inside(path.resolve(), root)
        if rel is not None and path.is_file():
            needed.add(rel)
    untracked = sorted(needed - _tracked(root, sorted(needed))) if repository else sorted(needed)
    result: dict[str, Any] = {"root": str(root), "repository": repository, "untracked": untracked}
    code: dict[str, Any] = {"workdir": _inside(cwd, root) or "."}
    if untracked:
        archive, result["untracked_bytes"] = pack_files(root, untracked, max_bytes=max_untracked_bytes)
        code["untracked_digest"] = objects.put(archive).digest
    if repository:
        pushed = bool(info.get("pushed"))
        code.update(commit=commit, branch=info.get("branch"), remote=info.get("remote") or str(root))
        result.update(pushed=pushed, dirty=bool(info.get("dirty")))
        if diff:
            code["diff_digest"] = objects.put(diff).digest
            result["diff_bytes"] = len(diff)
        if not pushed:
            code["bundle_digest"], result["bundle_bytes"] = _bundle(objects, root, max_bundle_bytes)
    elif not untracked:
        return CodeCapture(code=None, **result)
    return CodeCapture(code=CodeRef(**code), **result)
