"""Cache keys: what a step's result depends on, reduced to one SHA-256.

A step's key is the SHA-256 of the canonical JSON of::

    {"v": 1, "command": [...], "params": {...}, "env": {...}, "environment": ...,
     "code": <digest of the step's code files>, "datasets": {NAME: version id},
     "inputs": {"STEP.KEY": object digest}, "outputs": {KEY: path}}

so the same command on the same bytes with the same parameters has the same key wherever it runs. Datasets
count by their immutable version id (a new version behind ``NAME@latest`` changes the key; a fixed tag
never does), other steps' outputs by their content digest (a step that re-ran but wrote the same bytes does
not re-run its dependants), code by the content of exactly the files the step declares plus any file its
argv names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medcycle.datasets.manifest import digest_of
from medcycle.errors import UsageError
from medcycle.objects.base import digest_file
from medcycle.pipelines.spec import check_relative

KEY_VERSION = 1
IGNORED_PARTS = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
IGNORED_SUFFIXES = (".pyc", ".pyo")


def _ignored(rel: Path) -> bool:
    return any(part in IGNORED_PARTS for part in rel.parts) or rel.name.endswith(IGNORED_SUFFIXES)


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def code_files(root: Path, patterns: Iterable[str], command: Iterable[str] = ()) -> list[str]:
    """The files a step's code digest covers, as sorted relative POSIX paths.

    ``patterns`` are paths or globs (``**`` spans folders) relative to ``root``; a folder means every file
    under it. A pattern matching nothing is an error (a typo would silently leave code out of the key).
    Arguments of ``command`` that name a file under ``root`` (``python train.py``) are included too.
    Caches (``__pycache__``, ``*.pyc``, ``.git``) are left out.
    """
    root = root.resolve()
    found: set[str] = set()
    for pattern in patterns:
        matches = [root / pattern] if (root / pattern).exists() else sorted(root.glob(pattern))
        hits = 0
        for match in matches:
            if not _inside(root, match):
                raise UsageError(f"files pattern {pattern!r} reaches outside the code folder {root}",
                                 hint="Keep a step's files under the pipeline's code folder.")
            candidates = [p for p in match.rglob("*") if p.is_file()] if match.is_dir() else [match]
            for path in candidates:
                rel = path.relative_to(root)
                if path.is_file() and not _ignored(rel):
                    found.add(rel.as_posix())
                    hits += 1
        if hits == 0:
            raise UsageError(f"files pattern {pattern!r} matches no file under {root}",
                             hint="Fix the path or glob (relative to the pipeline's code folder), or remove it.")
    for arg in command:
        if "${" in arg or arg.startswith("-") or "\0" in arg or len(arg) > 1024:
            continue
        norm = check_relative(arg)
        try:
            named = norm is not None and (root / norm).is_file() and _inside(root, root / norm)
        except OSError:  # e.g. an inline script longer than a file name may be
            named = False
        if named and norm is not None and not _ignored(Path(norm)):
            found.add(Path(norm).as_posix())
    return sorted(found)


def code_digests(root: Path, files: Iterable[str]) -> dict[str, str]:
    """``{relative path: SHA-256 of its bytes}``."""
    return {rel: digest_file(root / rel)[0] for rel in files}


def code_digest(digests: Mapping[str, str]) -> str:
    return digest_of(dict(sorted(digests.items())))


def cache_key(
    *, command: Iterable[str], params: Mapping[str, Any], env: Mapping[str, str], environment: str | None,
    code: str, datasets: Mapping[str, str], inputs: Mapping[str, str], outputs: Mapping[str, str],
) -> str:
    """The step's cache key (see the module docstring)."""
    return digest_of({
        "v": KEY_VERSION,
        "command": list(command),
        "params": dict(params),
        "env": dict(env),
        "environment": environment,
        "code": code,
        "datasets": dict(datasets),
        "inputs": dict(inputs),
        "outputs": dict(outputs),
    })
