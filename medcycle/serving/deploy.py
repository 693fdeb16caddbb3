"""``medcycle deploy MODEL[@ALIAS]``: run the inference service on this machine, update it, roll it out safely.

What a deployment is: a *spec* (``HOME/serving/deploy/deployment.json``) — the model reference the service
serves by default (DICOM intake without ``?model=``, the SCP), how many worker processes, an optional canary
(a percentage of new jobs for that model goes to a candidate version) and an optional shadow (a version that
runs on a copy of each job and only logs) — and a supervisor process (:mod:`medcycle.serving.supervisor`)
that makes the machine match it: the API (``medcycle serve``), the workers
(:mod:`medcycle.serving.routing`) and, if asked, the DICOM SCP.

Rules it keeps:

* **Warm before ready.** Every change of the spec is a new *generation*: its workers start, load the
  versions they will serve, run one warm-up pass and report ready; only then are the previous generation's
  workers asked to stop. They finish the batch in hand first, so jobs in flight end on the version they
  started with. A generation whose workers fail to start is abandoned and the previous one keeps serving.
* **Rollback in under a second.** ``medcycle model rollback NAME`` moves the alias (one row); workers
  re-resolve the alias for every batch (one indexed read), so the next job runs on the previous version —
  kept loaded in the worker's version cache — while a batch in flight finishes on the one it started with.
* **Configuration, not code.** Worker count, canary share and shadow change with ``medcycle deploy`` again;
  batching and limits are serving settings (``docs/serving.md``). On Kubernetes the same spec file is
  mounted from a ConfigMap (``deploy/helm/medcycle``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from medcycle.errors import BackendUnavailable, Conflict, MedcycleError, UsageError, ValidationFailed
from medcycle.store.base import utcnow

if TYPE_CHECKING:
    from medcycle.platform import BackendHealth, Platform
    from medcycle.settings import Settings

SPEC_FILE: Final = "deployment.json"
STATUS_FILE: Final = "status.json"
PID_FILE: Final = "supervisor.pid"
LOG_FILE: Final = "supervisor.log"
MAX_WORKERS: Final = 64
MAX_DEFAULT_CPU_WORKERS: Final = 4  # a worker holds its own copy of the model and of a batch's activations


def default_workers(settings: Settings) -> int:
    """Workers of a first deployment that names none: on a CPU-only machine one per usable core (each then runs
    one torch thread), at most :data:`MAX_DEFAULT_CPU_WORKERS`; with CUDA, one.

    Single-thread processes side by side get more from a CPU than one process spreading each pass over every
    core (the network alone on the 2-core development VM: 17.4–21.9 images/s against 13.2–20.7, and through
    REST 56–68 % against 49 % of the better; docs/serving.md).
    """
    from medcycle.serving.config import load_serving_settings
    from medcycle.serving.cpu import usable_cores
    from medcycle.serving.predictor import resolve_device

    try:
        device = resolve_device(load_serving_settings(settings).device)
    except MedcycleError:  # a device this machine lacks: the workers will say so when they start
        return 1
    if device.type != "cpu":
        return 1
    return max(1, min(usable_cores(), MAX_DEFAULT_CPU_WORKERS))


def deploy_dir(settings: Settings) -> Path:
    return settings.home / "serving" / "deploy"


@dataclass(frozen=True)
class DeploymentSpec:
    """What should run (see the module docstring). ``generation`` grows with every change."""

    model: str
    workers: int = 1
    canary_percent: float = 0.0
    candidate: str | None = None
    shadow: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    api: bool = True
    scp_port: int | None = None
    scp_ae_title: str = "MEDCYCLE"
    generation: int = 0
    updated_at: str = ""
    updated_by: str = "system"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise UsageError("a deployment needs a model", hint="medcycle deploy NAME@ALIAS, e.g. chest@production.")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise UsageError(f"--workers {self.workers} is not in 1-{MAX_WORKERS}", hint="E.g. --workers 2.")
        if not 0 <= self.canary_percent <= 100:
            raise UsageError(f"--canary {self.canary_percent} is not a percentage", hint="E.g. --canary 10.")
        if self.canary_percent and not self.candidate:
            raise UsageError("a canary needs a candidate version", hint="Add --candidate NAME@vN.")
        if self.candidate and not self.canary_percent:
            raise UsageError("a candidate needs a canary share", hint="Add --canary PCT (e.g. 10).")
        if self.candidate and self.candidate.partition("@")[0] != self.name:
            raise UsageError("the candidate must be a version of the deployed model",
                             hint=f"E.g. --candidate {self.name}@v3.")
        if not 0 < self.port < 65536 or (self.scp_port is not None and not 0 < self.scp_port < 65536):
            raise UsageError("ports must be in 1-65535", hint="E.g. --port 8080 --scp-port 11112.")

    @property
    def name(self) -> str:
        return self.model.partition("@")[0].strip()

    def refs(self) -> list[str]:
        """Every model reference the workers load and warm."""
        return [r for r in (self.model, self.candidate, self.shadow) if r]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically (readers see the old or the new file, never a part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationFailed(f"{path} is not readable JSON ({type(exc).__name__})",
                               hint="Deploy again to rewrite it: medcycle deploy NAME@ALIAS.") from None
    return data if isinstance(data, dict) else None


def read_spec(settings: Settings, path: Path | None = None) -> DeploymentSpec | None:
    """The current deployment spec, or None when nothing was deployed."""
    data = read_json(path or deploy_dir(settings) / SPEC_FILE)
    return DeploymentSpec.from_dict(data) if data else None


def write_spec(settings: Settings, spec: DeploymentSpec) -> None:
    """Replace the deployment spec (``deploy`` does this; on Kubernetes a ConfigMap provides the file)."""
    _write_json(deploy_dir(settings) / SPEC_FILE, spec.to_dict())


def default_model(platform: Platform, model: str | None = None) -> str:
    """``model`` if given, else the deployed model (what DICOM intake runs when a request names none)."""
    if model is not None and model.strip():
        return model.strip()
    spec = read_spec(platform.settings)
    if spec is None:
        raise UsageError("no model named and none deployed",
                         hint="Add ?model=NAME@ALIAS to the request, or deploy one: medcycle deploy NAME@ALIAS.")
    return spec.model


def check_refs(platform: Platform, spec: DeploymentSpec) -> dict[str, str]:
    """Resolve every reference of ``spec`` now (NotFound with a hint if one does not exist): ref → NAME@vN."""
    from medcycle.models.registry import resolve

    out = {}
    with platform.session(write=False) as session:
        for ref in spec.refs():
            row = resolve(session, ref)
            out[ref] = f"{row.model}@v{row.version}"
    if spec.shadow and out.get(spec.shadow) == out[spec.model]:
        raise UsageError(f"the shadow {spec.shadow} is the version already served",
                         hint="Shadow another version, e.g. the next candidate.")
    if spec.candidate and out.get(spec.candidate) == out[spec.model]:
        raise UsageError(f"the canary candidate {spec.candidate} is {out[spec.model]}, the version already served: "
                         "the canary would compare a version with itself",
                         hint=f"Name another version of {spec.name} (medcycle model list {spec.name}), or end the "
                              "canary with --canary 0.")
    if spec.shadow:
        from medcycle.evaluation.predict import describe

        # a shadow run is compared with the served one finding by finding: another task has no findings to compare
        served, shadow = describe(platform, out[spec.model])[1], describe(platform, out[spec.shadow])[1]
        if served.task != shadow.task:
            raise UsageError(
                f"the shadow {out[spec.shadow]} is a {shadow.task.value} model and {out[spec.model]} a "
                f"{served.task.value} one: their findings cannot be compared",
                hint="Shadow a version trained for the same task on the same kind of images.")
    return out


# -- the supervisor, from the outside ----------------------------------------------------------------------
def supervisor_pid(settings: Settings) -> int | None:
    """The running supervisor's pid (None when none runs; a stale pid file is ignored)."""
    path = deploy_dir(settings) / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid
    return pid if b"medcycle.serving.supervisor" in cmdline else None


def child_env(settings: Settings, config_file: Path | None = None) -> dict[str, str]:
    """The environment of the supervisor and its children: the same settings as this process."""
    env = dict(os.environ)
    env["MEDCYCLE_HOME"] = str(settings.home)
    env["MEDCYCLE_DATABASE_URL"] = settings.resolved_database_url
    env["MEDCYCLE_OBJECT_STORE_URL"] = settings.resolved_object_store_url
    env["MEDCYCLE_QUEUE_URL"] = settings.queue_url
    env["MEDCYCLE_ENVIRONMENT"] = settings.environment.value
    env["MEDCYCLE_SECRET_KEY"] = settings.secret_key.get_secret_value()
    env["MEDCYCLE_AUTH_ENABLED"] = "true" if settings.auth_enabled else "false"
    if config_file is not None:
        env["MEDCYCLE_CONFIG"] = str(config_file)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _spawn_supervisor(settings: Settings, config_file: Path | None) -> None:
    folder = deploy_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOG_FILE).open("ab") as log:
        # --detach forks once more and returns at once: the supervisor is nobody's child (no zombie, and it
        # outlives this command), while this call still sees a start failure in the exit code.
        launcher = subprocess.run([sys.executable, "-m", "medcycle.serving.supervisor", "--detach"],
                                  env=child_env(settings, config_file), stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, check=False,
                                  timeout=60)
    if launcher.returncode != 0:
        raise BackendUnavailable("the deployment supervisor did not start",
                                 hint=f"See {folder / LOG_FILE}.")


@dataclass(frozen=True)
class DeployResult:
    spec: DeploymentSpec
    versions: dict[str, str]
    status: dict[str, Any]
    started_supervisor: bool


def deploy(
    platform: Platform,
    model: str,
    *,
    workers: int | None = None,
    canary_percent: float | None = None,
    candidate: str | None = None,
    shadow: str | None = None,
    host: str | None = None,
    port: int | None = None,
    api: bool | None = None,
    scp_port: int | None = None,
    actor: str = "system",
    config_file: Path | None = None,
    wait_s: float | None = 300.0,
) -> DeployResult:
    """Write a new generation of the spec and have the supervisor (started if needed) roll it out.

    Options left None keep the current deployment's values (so ``--canary 0`` ends a canary and
    ``medcycle deploy chest@production`` alone keeps the worker count); a first deployment without ``workers``
    gets :func:`default_workers`. With ``wait_s`` it returns once the
    new generation serves, or raises when it failed (the previous generation keeps serving).

    Raises:
        NotFound: a model reference does not exist. UsageError: bad options.
        Conflict: the new generation failed to start (the message says why; the spec that serves is put back),
            or another ``deploy`` is rolling out on this machine.
        BackendUnavailable: the supervisor did not answer in time.
    """
    settings = platform.settings
    with _deploy_lock(settings):
        current = read_spec(settings)
        base = current.to_dict() if current is not None else {}
        name = model.strip().partition("@")[0].strip()
        if current is not None and name != current.name:
            # another model: the previous model's canary and shadow do not carry over unless named again
            if candidate is None:
                base.update(candidate=None, canary_percent=0.0)
            if shadow is None:
                base["shadow"] = None
        values = {"model": model.strip(), "workers": workers, "canary_percent": canary_percent,
                  "candidate": candidate, "shadow": shadow, "host": host, "port": port, "api": api,
                  "scp_port": scp_port}
        merged = {**base, **{k: v for k, v in values.items() if v is not None}}
        if canary_percent == 0:
            merged["candidate"] = None
        if shadow == "":
            merged["shadow"] = None
        merged.setdefault("workers", default_workers(settings))
        merged.setdefault("host", settings.host)
        merged.setdefault("port", settings.port)
        merged["generation"] = _next_generation(settings, current)
        merged["updated_at"] = utcnow().isoformat()
        merged["updated_by"] = actor
        spec = DeploymentSpec.from_dict(merged)
        versions = check_refs(platform, spec)
        write_spec(settings, spec)
        pid = supervisor_pid(settings)
        started = pid is None
        if pid is None:
            _spawn_supervisor(settings, config_file)
        else:
            os.kill(pid, signal.SIGHUP)
        if not wait_s:
            return DeployResult(spec, versions, read_status(settings), started)
        try:
            status = wait_for_generation(settings, spec.generation, wait_s)
        except Conflict:
            _restore(settings, spec, current, started)
            raise
    return DeployResult(spec, versions, status, started)


@contextmanager
def _deploy_lock(settings: Settings) -> Iterator[None]:
    """One ``medcycle deploy`` at a time per home: a second one fails at once instead of overwriting the spec
    the first is rolling out (both would otherwise write the same generation and both report success)."""
    import fcntl

    folder = deploy_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".deploy.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict("another `medcycle deploy` is rolling out a generation on this machine",
                           hint="Wait for it to finish (see `medcycle deploy --status`), then deploy again.") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _next_generation(settings: Settings, current: DeploymentSpec | None) -> int:
    """One more than any generation used so far: the spec's, and a failed one the spec was restored from (the
    supervisor remembers it as failed, so reusing its number would never start)."""
    try:
        status = read_json(deploy_dir(settings) / STATUS_FILE) or {}
    except MedcycleError:
        status = {}
    failed = status.get("failed") or {}
    used = [current.generation if current is not None else 0, status.get("target"), failed.get("generation")]
    return max(int(g) for g in used if isinstance(g, int)) + 1


def _restore(settings: Settings, spec: DeploymentSpec, previous: DeploymentSpec | None, started: bool) -> None:
    """After ``spec`` failed to start, put back the spec that serves, so the spec file says what runs: the next
    ``deploy`` starts from it (not from the failed options), DICOM intake defaults to the model served, and a
    restarted supervisor does not retry the failed generation."""
    try:
        on_disk = read_spec(settings)
    except MedcycleError:
        on_disk = None
    if on_disk is not None and on_disk.generation != spec.generation:
        return  # someone changed the spec since (a ConfigMap, an edit): leave theirs
    if previous is not None:
        write_spec(settings, previous)
        return
    (deploy_dir(settings) / SPEC_FILE).unlink(missing_ok=True)  # a first deployment: nothing serves
    if started:
        stop(settings)


def read_status(settings: Settings) -> dict[str, Any]:
    """What the supervisor last reported, and whether it is alive."""
    status = read_json(deploy_dir(settings) / STATUS_FILE) or {}
    spec = read_spec(settings)
    status["supervisor_alive"] = supervisor_pid(settings) is not None
    status["spec"] = spec.to_dict() if spec is not None else None
    return status


def wait_for_generation(settings: Settings, generation: int, timeout_s: float) -> dict[str, Any]:
    """Block until the supervisor serves ``generation`` (or reports it failed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = read_status(settings)
        failed = status.get("failed") or {}
        if failed.get("generation") == generation:
            raise Conflict(f"generation {generation} did not start: {failed.get('reason')}",
                           hint=f"See {deploy_dir(settings) / LOG_FILE}; the previous generation keeps serving.")
        if status.get("generation") == generation and status.get("state") == "ready":
            return status
        if not status["supervisor_alive"] and status.get("generation") != generation and time.monotonic() > (
                deadline - timeout_s + 5):
            raise BackendUnavailable("the deployment supervisor is not running",
                                     hint=f"See {deploy_dir(settings) / LOG_FILE}.")
        time.sleep(0.1)
    raise BackendUnavailable(f"generation {generation} was not ready after {timeout_s:.0f} s",
                             hint=f"See `medcycle deploy --status` and {deploy_dir(settings) / LOG_FILE}.")


def stop(settings: Settings, *, timeout_s: float = 60.0) -> bool:
    """Stop the supervisor and everything it runs (workers finish their batch); False when none ran."""
    pid = supervisor_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if supervisor_pid(settings) is None:
            return True
        time.sleep(0.1)
    raise MedcycleError(f"the supervisor (pid {pid}) did not stop within {timeout_s:.0f} s",
                        hint=f"Check it: ps {pid}; kill it with kill {pid}.")


def describe(status: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows (role, pid, generation, state) for the CLI."""
    return [(p.get("role", "?"), str(p.get("pid", "?")), str(p.get("generation", "")), p.get("state", ""))
            for p in status.get("processes", [])]


def deployment_health(settings: Settings) -> BackendHealth | None:
    """For ``/readyz``: whether the deployment on this machine has a worker with its models loaded and warm.

    None when no supervisor runs for this home (nothing deployed here, or workers run elsewhere). Not ok while
    the first generation is still loading and warming, and when no worker of the serving generation is ready
    (a crash loop: the detail gives the reason the worker reported)."""
    from medcycle.platform import BackendHealth

    if supervisor_pid(settings) is None:
        return None
    try:
        status = read_json(deploy_dir(settings) / STATUS_FILE) or {}
    except MedcycleError as exc:
        return BackendHealth("workers", "deployment", False, exc.message)
    generation = status.get("generation") or 0
    model = status.get("serving_model") or status.get("model") or "?"
    workers = [p for p in status.get("processes") or [] if p.get("role") == "worker"
               and p.get("generation") == generation]
    ready = sum(p.get("state") == "ready" for p in workers)
    loops = [c for c in status.get("crash_loops") or [] if c.get("role") == "worker"]
    why = ""
    if loops:
        loop = loops[0]
        why = (f"; workers crash-looping ({loop.get('restarts')} restarts in a row, last exit "
               f"{loop.get('exit_code')}{': ' + str(loop['reason']) if loop.get('reason') else ''}; next try in "
               f"{loop.get('retry_in_s')} s)")
    if not generation:
        return BackendHealth("workers", "deployment", False,
                             f"generation {status.get('target', '?')} is loading and warming its models{why}")
    return BackendHealth("workers", "deployment", ready > 0,
                         f"{ready}/{len(workers)} workers ready on {model} (generation {generation}){why}")
