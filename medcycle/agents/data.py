"""Dataset versions on an agent: each pulled once into a shared folder, reused by every later task.

The folder is ``DATA_DIR/<dataset>/<version id prefix>`` — by default ``HOME/pulls``, the same place
``medcycle train run`` pulls to, so a training config run by an agent finds its data in place. A later
pull of a version already there looks at each file's link and moves, copies and hashes nothing (the pull
report says ``unchanged``). Agents sharing the folder take turns per version (a file lock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from medcycle.agents.workspace import file_lock
from medcycle.datasets import transfer, versions
from medcycle.datasets.tables import DatasetVersionRow
from medcycle.errors import NotFound, UsageError
from medcycle.objects.base import DIGEST_RE
from medcycle.platform import Platform

ENV_PREFIX = "MEDCYCLE_DATASET_"


def env_name(dataset: str) -> str:
    """``demo-xr`` → ``MEDCYCLE_DATASET_DEMO_XR``."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", dataset.upper())


@dataclass(frozen=True, slots=True)
class PulledDataset:
    ref: str
    dataset: str
    version: str
    path: str
    env: str
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "dataset": self.dataset, "version": self.version, "path": self.path,
                "env": self.env, "pull": self.report}


def resolve_ref(session: Session, ref: str) -> versions.VersionInfo:
    """The version ``NAME@TAG`` (any form :func:`medcycle.datasets.versions.resolve` takes) or a version digest."""
    if DIGEST_RE.match(ref):
        row = session.get(DatasetVersionRow, ref)
        if row is None:
            raise NotFound(f"no dataset version {ref[:16]}", hint="List versions with `medcycle dataset log NAME`.")
        return versions.version_info(session, row)
    if "@" not in ref:
        raise UsageError(f"dataset {ref!r} names no version",
                         hint="Name a version: NAME@TAG, NAME@vN or NAME@latest.")
    return versions.version_info(session, versions.resolve(session, ref))


def pull_dataset(platform: Platform, ref: str, root: Path, *, actor: str = "agent") -> PulledDataset:
    """Materialise version ``ref`` under ``root`` (once; later calls only look)."""
    with platform.session(write=False) as session:
        info = resolve_ref(session, ref)
    folder = root / info.dataset / info.id[:16]
    with file_lock(root / ".locks" / f"{info.id}.lock"):
        report = transfer.pull(platform, f"{info.dataset}@{info.id}", folder, actor=actor, via="agent")
    return PulledDataset(ref=ref, dataset=info.dataset, version=info.id, path=str(folder), env=env_name(info.dataset),
                         report=report.to_dict())


def pull_all(platform: Platform, refs: list[str], root: Path, *, actor: str = "agent") -> list[PulledDataset]:
    out: list[PulledDataset] = []
    for ref in refs:
        pulled = pull_dataset(platform, ref, root, actor=actor)
        clash = next((p for p in out if p.env == pulled.env and p.version != pulled.version), None)
        if clash is not None:
            raise UsageError(f"datasets {clash.ref} and {ref} would both be {pulled.env}",
                             hint="Give a task one version per dataset.")
        out.append(pulled)
    return out
