"""What a run watches while it runs: its stdout/stderr (tee'd into the run's log) and resource usage.

:class:`OutputTee` replaces ``sys.stdout``/``sys.stderr`` with writers that pass everything to the
terminal unchanged (``isatty``, ``fileno`` and ``encoding`` are the terminal's, so progress bars and
colours keep working) and copy it into the run. Output written straight to the file descriptors (C
extensions, child processes) is not seen.

:class:`ResourceSampler` is a thread that samples CPU and memory (psutil when installed, ``/proc``
otherwise) and GPU utilisation and memory (nvidia-ml-py when a GPU exists) every ``interval`` seconds,
and logs them as metric series under ``system/``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

Writer = Callable[[str, str], None]
SYSTEM_PREFIX = "system/"


class _TeeStream(io.TextIOBase):
    """A text stream that writes to ``original`` and copies each write to ``copy(stream, text)``."""

    def __init__(self, original: TextIO, stream: str, copy: Writer) -> None:
        super().__init__()
        self.original = original
        self.stream = stream
        self.copy: Writer | None = copy

    def write(self, text: str) -> int:
        n = self.original.write(text)
        copy = self.copy
        if copy is not None and text:
            copy(self.stream, text)
        return n

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.original, "errors", None)

    @property
    def buffer(self) -> Any:
        return self.original.buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


class OutputTee:
    """Copies ``sys.stdout`` and ``sys.stderr`` into a run while it is installed."""

    def __init__(self, copy: Writer) -> None:
        self._copy = copy
        self._streams: list[tuple[str, _TeeStream]] = []

    def install(self) -> None:
        for name in ("stdout", "stderr"):
            original = getattr(sys, name)
            if original is None:
                continue
            tee = _TeeStream(original, name, self._copy)
            setattr(sys, name, tee)
            self._streams.append((name, tee))

    def disable(self) -> None:
        """Stop copying (the streams stay in place, passing output through)."""
        for _, tee in self._streams:
            tee.copy = None

    def uninstall(self) -> None:
        for name, tee in reversed(self._streams):
            tee.copy = None  # stops copying even if someone wrapped our stream in the meantime
            if getattr(sys, name) is tee:
                setattr(sys, name, tee.original)
        self._streams.clear()


# -- resources --------------------------------------------------------------------------------------
class _ProcStats:
    """CPU and memory without psutil: ``getrusage`` deltas and ``/proc/self/statm``."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), self._cpu_seconds())

    @staticmethod
    def _cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def sample(self) -> dict[str, float]:
        now, cpu = time.monotonic(), self._cpu_seconds()
        wall = max(now - self._last[0], 1e-9)
        out = {"process_cpu_percent": 100.0 * (cpu - self._last[1]) / wall}
        self._last = (now, cpu)
        try:
            pages = int(open("/proc/self/statm", encoding="ascii").read().split()[1])  # noqa: SIM115
            out["process_rss_mb"] = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            pass
        return out


class _PsutilStats:
    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        psutil.cpu_percent(None)

    def sample(self) -> dict[str, float]:
        ps = self._psutil
        with self._proc.oneshot():
            rss = self._proc.memory_info().rss
            cpu = self._proc.cpu_percent(None)
        vm = ps.virtual_memory()
        return {"process_cpu_percent": cpu, "process_rss_mb": rss / 2**20, "cpu_percent": ps.cpu_percent(None),
                "memory_used_percent": vm.percent, "memory_used_mb": (vm.total - vm.available) / 2**20}


class _GpuStats:
    def __init__(self) -> None:
        pynvml: Any = importlib.import_module("pynvml")
        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

    def sample(self) -> dict[str, float]:
        nv, out = self._nvml, {}
        for i, handle in enumerate(self._handles):
            util = nv.nvmlDeviceGetUtilizationRates(handle)
            mem = nv.nvmlDeviceGetMemoryInfo(handle)
            out[f"gpu{i}_utilization_percent"] = float(util.gpu)
            out[f"gpu{i}_memory_used_mb"] = mem.used / 2**20
            out[f"gpu{i}_memory_used_percent"] = 100.0 * mem.used / max(mem.total, 1)
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


class ResourceSampler:
    """Samples resource usage every ``interval`` seconds on a daemon thread and hands it to ``log``."""

    def __init__(self, log: Callable[[dict[str, float], int], None], *, interval: float = 10.0) -> None:
        self._log = log
        self.interval = interval
        self._stop = threading.Event()
        self._step = 0
        try:
            self._cpu: _PsutilStats | _ProcStats = _PsutilStats()
        except ImportError:
            self._cpu = _ProcStats()
        self._gpu: _GpuStats | None = None
        with contextlib.suppress(Exception):  # no nvidia-ml-py or no driver: CPU only
            self._gpu = _GpuStats()
        self._thread = threading.Thread(target=self._loop, name="medcycle-resources", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sample(self) -> dict[str, float]:
        values = self._cpu.sample()
        if self._gpu is not None:
            try:
                values.update(self._gpu.sample())
            except Exception:  # noqa: BLE001 - a GPU that stops answering is dropped, not fatal
                self._gpu = None
        return {SYSTEM_PREFIX + k: float(v) for k, v in values.items()}

    def _emit(self) -> None:
        self._log(self.sample(), self._step)
        self._step += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit()

    def stop(self) -> None:
        """Stop the thread and take one last sample."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(5.0)
            self._emit()
        if self._gpu is not None:
            self._gpu.close()
