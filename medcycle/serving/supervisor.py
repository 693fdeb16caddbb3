"""The deployment supervisor: keeps this machine's API, workers and SCP matching the deployment spec.

``medcycle deploy`` starts it (``python -m medcycle.serving.supervisor``, detached) or signals it (SIGHUP) after
writing a new spec generation; it also polls the spec. Its loop:

* **A new generation** starts its workers beside the running ones. Once each reports ``ready`` (versions
  loaded and warmed, see :mod:`medcycle.serving.routing`) the status flips to the new generation and the old
  workers get SIGTERM — they finish their batch and exit, so jobs in flight end on the version they started
  with. If a new worker exits or fails before it is ready (or takes longer than ``READY_TIMEOUT_S``), the
  generation is marked failed, its workers are stopped and the old generation goes on serving.
* **Crashed processes** of the current generation are restarted: the first time after ``RESTART_BACKOFF_S``,
  then, while a role keeps dying within ``STABLE_S`` of its start (a crash loop), after twice as long each time,
  at most ``MAX_BACKOFF_S``. The status names the role, the restarts in a row, the last exit and, for a worker,
  the reason it reported; ``/readyz`` says so when no worker is ready.
* **The API** (``medcycle serve``) and **the SCP** (``medcycle serve-scp``) restart when their options change.
* **SIGTERM/SIGINT** stop everything (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``) and remove the pid file.

It reports in ``status.json`` (generation, state, processes); logs of every process go to ``supervisor.log``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Final

from medcycle.errors import MedcycleError
from medcycle.serving.deploy import LOG_FILE, PID_FILE, STATUS_FILE, DeploymentSpec, deploy_dir, read_json, read_spec
from medcycle.settings import Settings, load_settings
from medcycle.store.base import utcnow

log = logging.getLogger("medcycle.serving.supervisor")
TICK_S: Final = 0.2
READY_TIMEOUT_S: Final = 300.0
STOP_TIMEOUT_S: Final = 30.0
RESTART_BACKOFF_S: Final = 2.0
MAX_BACKOFF_S: Final = 60.0
STABLE_S: Final = 30.0  # a process that ran this long before it died is not crash-looping


@dataclass
class Child:
    role: str  # api | worker | scp
    name: str
    generation: int
    argv: list[str]
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    key: str = ""  # what the process was started with (a change restarts it)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class Supervisor:
    def __init__(self, settings: Settings, out: IO[bytes]) -> None:
        self.settings = settings
        self.folder = deploy_dir(settings)
        self.out = out
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.children: list[Child] = []
        self.generation = 0  # the generation serving now
        self.pending: int | None = None  # a generation starting
        self.failed: dict[str, Any] = {}
        self._restarts: dict[str, float] = {}
        self._backoff: dict[str, float] = {}  # role → the wait before its next restart
        self.crashes: dict[str, dict[str, Any]] = {}  # role → its crash loop (see the module docstring)
        self.serving: DeploymentSpec | None = None  # the spec of the generation serving now
        self._seq = 0
        self._noted: set[str] = set()  # children whose exit was already counted

    # -- processes --------------------------------------------------------------------------------------
    def _start(self, role: str, generation: int, argv: list[str], key: str = "") -> Child:
        self._seq += 1
        name = f"{role}-{generation}-{self._seq}"
        if role == "worker":
            argv = [*argv, "--name", name]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
                                env=os.environ.copy(), close_fds=True)
        child = Child(role, name, generation, argv, proc, key=key)
        self.children.append(child)
        log.info("started %s (pid %d)", name, proc.pid)
        return child

    @staticmethod
    def _worker_argv(generation: int, workers: int) -> list[str]:
        # ``--local-workers``: these workers share this machine's cores (each takes its share as torch threads)
        return [sys.executable, "-m", "medcycle.serving.routing", "--generation", str(generation),
                "--local-workers", str(workers)]

    @staticmethod
    def _api_argv(spec: DeploymentSpec) -> list[str]:
        return [sys.executable, "-m", "medcycle", "serve", "--host", spec.host, "--port", str(spec.port)]

    @staticmethod
    def _scp_argv(spec: DeploymentSpec) -> list[str]:
        assert spec.scp_port is not None
        return [sys.executable, "-m", "medcycle", "serve-scp", "--host", spec.host, "--port", str(spec.scp_port),
                "--ae-title", spec.scp_ae_title, "--model", spec.model]

    def _terminate(self, children: list[Child], *, wait: bool = False) -> None:
        for child in children:
            if child.alive:
                child.proc.send_signal(signal.SIGTERM)
        if wait:
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for child in children:
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()

    def _reap(self) -> None:
        """Forget children that exited after being told to stop (or that belong to no generation now)."""
        keep = []
        for child in self.children:
            if child.alive or child.generation in (self.generation, self.pending) or child.role != "worker":
                keep.append(child)
            else:
                log.info("%s exited with %s", child.name, child.proc.returncode)
        self.children = keep

    def _worker_state(self, child: Child) -> str:
        if not child.alive:
            return "exited"
        try:
            data = read_json(self.folder / "workers" / f"{child.name}.json") or {}
        except MedcycleError:
            return "starting"
        if data.get("pid") != child.proc.pid:  # a file left by an earlier process of that name
            return "starting"
        return str(data.get("state", "starting"))

    # -- the loop ---------------------------------------------------------------------------------------
    def step(self) -> None:
        try:
            spec = read_spec(self.settings)
        except MedcycleError as exc:
            log.warning("spec not readable: %s", exc.message)
            return
        if spec is None:
            return
        if spec.generation != self.generation and self.pending != spec.generation and \
                self.failed.get("generation") != spec.generation:
            self._begin(spec)
        if self.pending is not None:
            self._advance(spec)
        self._keep_running(spec)
        self._reap()
        self._write_status(spec)

    def _begin(self, spec: DeploymentSpec) -> None:
        if self.pending is not None:  # a newer spec replaces a generation still starting
            self._terminate([c for c in self.children if c.generation == self.pending])
        self.pending = spec.generation
        for _ in range(spec.workers):
            self._start("worker", spec.generation, self._worker_argv(spec.generation, spec.workers))
        log.info("generation %d starting: %s", spec.generation, spec.model)

    def _advance(self, spec: DeploymentSpec) -> None:
        new = [c for c in self.children if c.generation == self.pending and c.role == "worker"]
        states = [self._worker_state(c) for c in new]
        waited = max((time.monotonic() - c.started for c in new), default=0.0)
        if any(s in ("exited", "failed") for s in states) or waited > READY_TIMEOUT_S:
            reason = "a worker could not load its models" if "failed" in states else (
                "a worker exited before it was ready" if "exited" in states else "workers were not ready in time")
            details = [read_json(self.folder / "workers" / f"{c.name}.json") or {} for c in new]
            why = next((d.get("reason") for d in details if d.get("reason")), None)
            self.failed = {"generation": self.pending, "reason": f"{reason}{': ' + why if why else ''}",
                           "at": utcnow().isoformat()}
            log.error("generation %s failed: %s", self.pending, self.failed["reason"])
            self._terminate(new)
            self.pending = None
            return
        if new and all(s == "ready" for s in states):
            old = [c for c in self.children if c.role == "worker" and c.generation != self.pending]
            self.generation, self.pending = spec.generation, None
            self.serving = spec
            self.failed = {}
            self.crashes.pop("worker", None)
            self._backoff.pop("worker", None)
            self._terminate(old)  # they finish their batch, then exit
            log.info("generation %d serving; %d old workers stopping", self.generation, len(old))

    def _may_restart(self, role: str, now: float) -> bool:
        return now - self._restarts.get(role, 0.0) > self._backoff.get(role, RESTART_BACKOFF_S)

    def _crashed(self, child: Child, now: float) -> None:
        """Note a process that died by itself: a crash loop backs off (twice as long each time, at most
        ``MAX_BACKOFF_S``) and is reported in the status with the reason the worker gave."""
        lived = now - child.started
        loop = self.crashes.get(child.role)
        if lived >= STABLE_S or loop is None:
            loop = {"role": child.role, "restarts": 0}
            self._backoff[child.role] = RESTART_BACKOFF_S
        else:  # dying again soon after its restart: wait longer, counted from this exit
            self._backoff[child.role] = min(MAX_BACKOFF_S, self._backoff.get(child.role, RESTART_BACKOFF_S) * 2)
            self._restarts[child.role] = now
        reason = None
        if child.role == "worker":
            try:
                data = read_json(self.folder / "workers" / f"{child.name}.json") or {}
            except MedcycleError:
                data = {}
            if data.get("pid") == child.proc.pid:
                reason = data.get("reason")
            (self.folder / "workers" / f"{child.name}.json").unlink(missing_ok=True)
        loop.update(restarts=int(loop["restarts"]) + 1, exit_code=child.proc.returncode, reason=reason,
                    lived_s=round(lived, 1), retry_in_s=round(self._backoff[child.role], 1),
                    at=utcnow().isoformat())
        self.crashes[child.role] = loop
        log.warning("%s exited with %s after %.1f s%s: restarting in %.0f s (restart %d in a row)", child.name,
                    child.proc.returncode, lived, f" ({reason})" if reason else "", self._backoff[child.role],
                    loop["restarts"])

    def _keep_running(self, spec: DeploymentSpec) -> None:
        if self.generation == 0:
            return
        now = time.monotonic()
        # the API and SCP follow the generation that serves: a newer spec still starting (or failed) does not
        # stop them from being restarted
        serving = spec if spec.generation == self.generation else self.serving
        workers = [c for c in self.children if c.role == "worker" and c.generation == self.generation]
        for child in workers:
            if not child.alive and child.name not in self._noted:
                self._noted.add(child.name)
                self._crashed(child, now)
            if not child.alive and self._may_restart("worker", now):
                self.children.remove(child)
                self._restarts["worker"] = now
                self._start("worker", child.generation, self._worker_argv(child.generation, len(workers)))
        current = [c for c in self.children if c.role == "worker" and c.generation == self.generation]
        if "worker" in self.crashes and current and all(
                c.alive and now - c.started >= STABLE_S and self._worker_state(c) == "ready" for c in current):
            self.crashes.pop("worker", None)  # serving again for a while: the loop is over
            self._backoff.pop("worker", None)
        if serving is None:
            return
        wanted: dict[str, tuple[list[str], str]] = {}
        if serving.api:
            argv = self._api_argv(serving)
            wanted["api"] = (argv, " ".join(argv))
        if serving.scp_port is not None:
            argv = self._scp_argv(serving)
            wanted["scp"] = (argv, " ".join(argv))
        for role in ("api", "scp"):
            running = [c for c in self.children if c.role == role]
            target = wanted.get(role)
            for child in running:
                if target is None or child.key != target[1]:
                    self._terminate([child], wait=True)
                    self.children.remove(child)
                elif not child.alive:
                    if child.name not in self._noted:
                        self._noted.add(child.name)
                        self._crashed(child, now)
                    if self._may_restart(role, now):
                        self.children.remove(child)
                elif now - child.started >= STABLE_S and role in self.crashes:
                    self.crashes.pop(role, None)
                    self._backoff.pop(role, None)
            idle = not any(c.role == role for c in self.children)
            if target is not None and idle and self._may_restart(role, now):
                self._restarts[role] = now
                self._start(role, serving.generation, target[0], key=target[1])

    def _write_status(self, spec: DeploymentSpec) -> None:
        processes = []
        for child in self.children:
            state = self._worker_state(child) if child.role == "worker" else ("running" if child.alive else "exited")
            processes.append({"role": child.role, "name": child.name, "pid": child.proc.pid,
                              "generation": child.generation, "state": state})
        status = {"generation": self.generation, "target": spec.generation, "pending": self.pending,
                  "state": "ready" if self.generation == spec.generation else (
                      "failed" if self.failed.get("generation") == spec.generation else "updating"),
                  "model": spec.model, "serving_model": self.serving.model if self.serving else None,
                  "failed": self.failed or None, "crash_loops": list(self.crashes.values()),
                  "processes": processes, "pid": os.getpid(),
                  "at": utcnow().isoformat()}
        path = self.folder / STATUS_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(status, indent=2), encoding="utf-8")
        os.replace(tmp, path)

    def request_stop(self, *_: object) -> None:
        self.stop.set()
        self.wake.set()

    def run(self) -> None:
        while not self.stop.is_set():
            self.step()
            self.wake.wait(TICK_S)
            self.wake.clear()
        log.info("stopping %d processes", len(self.children))
        self._terminate(self.children, wait=True)
        self.children = []
        spec = read_spec(self.settings)
        if spec is not None:
            self._write_status(spec)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--detach" in args and os.fork() > 0:  # the launcher returns; the child carries on as the supervisor
        return 0
    if "--detach" in args:
        os.setsid()
    settings = load_settings()
    folder = deploy_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lock = (folder / ".supervisor.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another supervisor runs: it reads the same spec
        return 0
    pid_path = folder / PID_FILE
    pid_path.write_text(str(os.getpid()))
    for stale in (folder / "workers").glob("*.json"):  # left by workers of an earlier supervisor
        stale.unlink(missing_ok=True)
    with (folder / LOG_FILE).open("ab") as out:
        supervisor = Supervisor(settings, out)
        signal.signal(signal.SIGTERM, supervisor.request_stop)
        signal.signal(signal.SIGINT, supervisor.request_stop)
        signal.signal(signal.SIGHUP, lambda *_: supervisor.wake.set())
        try:
            supervisor.run()
        finally:
            if pid_path.read_text().strip() == str(os.getpid()):
                pid_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

