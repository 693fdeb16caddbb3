"""Rebuilding a task's exact tree on an agent: commit (from the remote or the bundle), diff, untracked files.

Each agent keeps one bare repository per remote under ``WORKDIR/repos`` (fetched again only when a commit is
missing) and checks each task out into a fresh folder cloned with ``--shared`` from it (no object is copied).
The folder is a real git checkout on the task's branch with the original remote, so a run started inside it
captures the same commit, the same diff (as a dirty tree) and the same untracked files as the original.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from medcycle.agents.errors import TaskSetupFailed
from medcycle.agents.gitops import has_commit, run_git
from medcycle.agents.spec import CodeRef
from medcycle.errors import NotFound
from medcycle.objects.base import ObjectStore


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed): agents sharing a work folder take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass
class TreeReport:
    """How the tree was made (part of the task result)."""

    path: str
    commit: str | None = None
    source: str = "empty"  # cache, remote, bundle, remote+bundle, empty
    diff_applied: bool = False
    untracked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"commit": self.commit, "source": self.source, "diff_applied": self.diff_applied,
                "untracked": self.untracked}


def cache_repo(repos: Path, remote: str | None) -> Path:
    """The bare cache repository of ``remote`` (created empty on first use)."""
    key = hashlib.sha256((remote or "-").encode()).hexdigest()[:16]
    path = repos / f"{key}.git"
    if not (path / "HEAD").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        run_git(None, "init", "--quiet", "--bare", str(path), what="git init")
    return path


def _object(objects: ObjectStore, digest: str, what: str) -> bytes:
    try:
        return objects.get(digest)
    except NotFound as exc:
        raise TaskSetupFailed(f"the task's {what} (object {digest[:16]}) is not in the object store",
                              hint="Enqueue the task again from its repository.") from exc


def _fetch_remote(cache: Path, remote: str, commit: str) -> str | None:
    """Fetch the remote's branches and tags (then the commit itself); returns git's complaint or None."""
    proc = run_git(cache, "fetch", "--quiet", "--force", remote, "+refs/heads/*:refs/heads/*",
                   "+refs/tags/*:refs/tags/*", check=False)
    if proc.returncode == 0 and has_commit(cache, commit):
        return None
    said = proc.stderr.decode(errors="replace").strip().splitlines()
    # Servers that allow it (and local repositories) hand out a commit no branch holds any longer.
    if run_git(cache, "fetch", "--quiet", remote, commit, check=False).returncode == 0 and has_commit(cache, commit):
        return None
    return " / ".join(said[-2:]) or f"no branch of {remote} holds commit {commit[:12]}"


def _fetch_bundle(objects: ObjectStore, cache: Path, digest: str) -> str | None:
    """Fetch the bundle's commits into ``refs/medcycle/bundles/``; returns git's complaint or None."""
    data = _object(objects, digest, "bundle of unpushed commits")
    with tempfile.NamedTemporaryFile(prefix="medcycle-", suffix=".bundle") as fh:
        fh.write(data)
        fh.flush()
        proc = run_git(cache, "fetch", "--quiet", "--force", fh.name, f"+HEAD:refs/medcycle/bundles/{digest[:16]}",
                       check=False)
    if proc.returncode == 0:
        return None
    return " / ".join(proc.stderr.decode(errors="replace").strip().splitlines()[-2:]) or "git fetch failed"


def ensure_commit(objects: ObjectStore, repos: Path, code: CodeRef) -> tuple[Path, str]:
    """The cache repository holding ``code.commit`` and where the commit came from.

    The bundle is tried first (it is local); when it needs commits the cache lacks, the remote is fetched
    and the bundle tried again.
    """
    assert code.commit is not None
    cache = cache_repo(repos, code.remote)
    with file_lock(cache / "medcycle.lock"):
        if has_commit(cache, code.commit):
            return cache, "cache"
        bundle_error = remote_error = None
        if code.bundle_digest:
            bundle_error = _fetch_bundle(objects, cache, code.bundle_digest)
            if has_commit(cache, code.commit):
                return cache, "bundle"
        if code.remote:
            remote_error = _fetch_remote(cache, code.remote, code.commit)
            if remote_error is None:
                return cache, "remote"
        if code.bundle_digest and bundle_error is not None:
            bundle_error = _fetch_bundle(objects, cache, code.bundle_digest)
            if has_commit(cache, code.commit):
                return cache, "remote+bundle"
    problems = "; ".join(p for p in (f"remote {code.remote}: {remote_error}" if remote_error else None,
                                     f"bundle: {bundle_error}" if bundle_error else None) if p)
    raise TaskSetupFailed(
        f"commit {code.commit[:12]} cannot be found ({problems or 'no remote and no bundle'})",
        hint="Push the commit, or enqueue the task again from its repository (an unpushed commit then travels "
             "as a bundle); check that this machine can reach the remote.")


def _apply_diff(objects: ObjectStore, tree: Path, digest: str) -> None:
    data = _object(objects, digest, "uncommitted diff")
    with tempfile.NamedTemporaryFile(prefix="medcycle-", suffix=".diff") as fh:
        fh.write(data)
        fh.flush()
        run_git(tree, "apply", "--binary", "--whitespace=nowarn", fh.name, what="applying the uncommitted diff",
                hint="The diff no longer applies to its commit; commit the changes and enqueue again.")


def _extract(objects: ObjectStore, tree: Path, digest: str) -> list[str]:
    data = _object(objects, digest, "untracked files")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
            tar.extractall(tree, filter="data")  # refuses absolute paths, '..' and links out of the tree
    except (tarfile.TarError, OSError) as exc:
        raise TaskSetupFailed(f"the task's untracked files (object {digest[:16]}) cannot be unpacked: {exc}",
                              hint="Enqueue the task again from its repository.") from exc
    return sorted(names)


def materialize(objects: ObjectStore, code: CodeRef | None, dest: Path, repos: Path) -> TreeReport:
    """Make ``dest`` (which must not exist) the task's tree: checkout, diff, untracked files.

    Raises:
        TaskSetupFailed: the commit cannot be found, the diff does not apply, an object is missing.
    """
    report = TreeReport(path=str(dest))
    if code is None or code.commit is None:
        dest.mkdir(parents=True)
    else:
        cache, report.source = ensure_commit(objects, repos, code)
        dest.parent.mkdir(parents=True, exist_ok=True)
        run_git(None, "clone", "--quiet", "--shared", "--no-checkout", str(cache), str(dest), what="git clone")
        checkout = ["-B", code.branch] if code.branch else ["--detach"]
        run_git(dest, "checkout", "--quiet", *checkout, code.commit, what=f"checking out {code.commit[:12]}")
        if code.remote:
            run_git(dest, "remote", "set-url", "origin", code.remote, what="git remote set-url")
        report.commit = code.commit
        if code.diff_digest:
            _apply_diff(objects, dest, code.diff_digest)
            report.diff_applied = True
    if code is not None and code.untracked_digest:
        report.untracked = _extract(objects, dest, code.untracked_digest)
    return report


def command_dir(tree: Path, code: CodeRef | None) -> Path:
    """The folder the command runs in: ``code.workdir`` under the tree (which must stay inside it)."""
    rel = code.workdir if code is not None else "."
    path = (tree / rel).resolve()
    if path != tree.resolve() and tree.resolve() not in path.parents:
        raise TaskSetupFailed(f"the task's working directory {rel!r} leaves its tree",
                              hint="Enqueue from a folder inside the repository.")
    path.mkdir(parents=True, exist_ok=True)
    return path
