"""The forward pass size measured once per machine and model version, shared by the workers that load it.

:meth:`medcycle.serving.predictor.Predictor.tune` times passes of several sizes on the CPU. Workers started
together (``medcycle deploy`` starts one per core) used to tune at the same moment, each timing its passes while
the others timed theirs: every worker measured a machine made busy by the others' measurements, and they chose
different sizes from one start to the next (passes of 2, 8 or 16 for DenseNet121 on a 2-core VM, where the
network alone runs fastest in passes of 16). Now the first worker to warm a version measures it while the others
wait on a file lock, and writes what it found to this machine's cache folder; the others, and every worker
started later (a restart after a crash included), read it.

What was measured holds for one machine, one network and one way of running it, so the file is named by a digest
of all of them: the version's weights, its input size, the largest batch, the device, torch's version and
threads, the host name, the CPU model and the cores this process may use. A measurement older than
:data:`MAX_AGE_S`, or a file that cannot be read, is measured again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: A measurement older than this (seconds) is taken again: a machine's software and neighbours change.
MAX_AGE_S = 7 * 86_400


@dataclass(frozen=True)
class Measured:
    """A pass size and the milliseconds an image it cost by pass size; ``shared``: read from another worker's
    measurement (with when it was taken)."""

    chunk: int
    tuning: dict[int, float]
    shared: bool = False
    measured_at: str | None = None


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), or the machine type where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.machine()


def identity(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` (the network and how it is run) with this machine's and process's identity added."""
    import torch

    from medcycle.serving.cpu import usable_cores

    return {**fields, "torch": torch.__version__, "threads": torch.get_num_threads(), "host": socket.gethostname(),
            "cpu": cpu_model(), "cores": usable_cores()}


def key_of(ident: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read(path: Path, max_batch: int) -> Measured | None:
    """The measurement in ``path``, or None when there is none, it is too old or it cannot be used."""
    try:
        if time.time() - path.stat().st_mtime > MAX_AGE_S:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        chunk = int(data["chunk"])
        tuning = {int(n): float(ms) for n, ms in dict(data["tuning"]).items()}
        at = str(data.get("measured_at") or "")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not 1 <= chunk <= max_batch or chunk not in tuning:
        return None
    return Measured(chunk, tuning, shared=True, measured_at=at or None)


def _write(path: Path, measured: Measured, ident: Mapping[str, Any]) -> None:
    """Written whole or not at all (a temporary file renamed over the old one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = {"chunk": measured.chunk, "tuning": {str(n): ms for n, ms in measured.tuning.items()},
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "pid": os.getpid(), "for": dict(ident)}
    try:
        tmp.write_text(json.dumps(body, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # the next worker measures again; this one goes on with what it measured
        log.warning("could not keep the measured pass size in %s: %s", path.parent, exc)
        tmp.unlink(missing_ok=True)


def shared(folder: Path, fields: Mapping[str, Any], max_batch: int, measure: Callable[[], Measured]) -> Measured:
    """This machine's measurement for ``fields``: read from ``folder``, or taken with ``measure`` (one process at
    a time: the others wait on a lock, then read it) and kept there. Where the folder or its lock cannot be used,
    ``measure`` runs unshared."""
    ident = identity(fields)
    key = key_of(ident)
    path = folder / f"passes-{key}.json"
    found = _read(path, max_batch)
    if found is not None:
        return found
    try:
        import fcntl

        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f"passes-{key}.lock", "a+b")  # noqa: SIM115 - held across the measurement below
    except (ImportError, OSError) as exc:
        log.warning("measuring the pass size without sharing it (%s)", exc)
        return measure()
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed, or the process ends
        found = _read(path, max_batch)  # measured by the worker that held the lock before this one
        if found is not None:
            return found
        measured = measure()
        _write(path, measured, ident)
        return measured
