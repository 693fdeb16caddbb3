"""The tracking SDK: ``start_run(...)`` and the :class:`Run` it returns.

::

    from medcycle.experiments import start_run

    with start_run(project="chest-xr", dataset="chest-xr@v1.0", hypothesis="H-3") as run:
        run.seed(42)
        run.log_params({"lr": 1e-3, "model": {"name": "densenet121", "dropout": 0.2}})
        for step in range(1000):
            run.log_metric("train/loss", loss, step=step)
        run.log_metrics({"val/dice": 0.83, "val/auc": 0.91}, step=1000)
        run.log_image("val/case-7", volume, mask=prediction, step=1000)
        run.log_model(model)                          # a torch module, or a path

Writes cost about a microsecond: they are buffered in memory, journaled to disk in fsync'd groups and
sent to the store by a background thread (:mod:`medcycle.experiments.journal`). ``run.flush()`` makes
everything logged so far durable. Without a reachable store the run continues offline and
``medcycle run sync`` delivers it later. Against a remote server pass ``server=URL, token=TOKEN``.
"""

from __future__ import annotations

import atexit
import getpass
import logging
import operator
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from medcycle.errors import MedcycleError, UsageError
from medcycle.experiments.ingest import NAME_RE, STATUSES, check_key
from medcycle.experiments.journal import Journal, RunWriter, Sink
from medcycle.experiments.records import Kind, Record
from medcycle.experiments.values import params_record, tags_record
from medcycle.objects.base import DIGEST_RE, digest_file
from medcycle.store.base import new_id

log = logging.getLogger("medcycle.experiments")
SNAPSHOT_MAX = 256 * 1024 * 1024  # files up to this size are copied into the journal when logged
_ACTIVE: weakref.WeakSet[Run] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (e.g. a DataLoader worker) inherits the runs but not their writer threads: stop its copy
    of the stdout tee and give it fresh locks, so it can neither deadlock nor duplicate the parent's output."""
    for run in list(_ACTIVE):
        run._forked_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Run:
    """A run being tracked. Made by :func:`start_run`; ends on ``end()``, at the end of a ``with`` block,
    or when the process exits. Every ``log_*`` method is thread-safe."""

    def __init__(self, *, project: str, sink: Sink, journal_root: Path, name: str | None = None,
                 hypothesis: str | None = None, dataset: str | None = None, dataset_digest: str | None = None,
                 tags: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
                 capture: bool = True, capture_output: bool = True, resources: bool = True,
                 resource_interval: float = 10.0, flush_interval: float = 0.5, deliver_interval: float = 2.0,
                 code_path: Path | None = None,
                 env_allowlist: tuple[str, ...] = (), owned: Any = None) -> None:
        # Everything the store would refuse is refused here, before anything is journaled: a record the store
        # cannot apply would hold up every record after it.
        if not isinstance(project, str) or not NAME_RE.match(project):
            raise UsageError(f"project name {project!r} is not valid",
                             hint="Use letters, digits, '.', '_', '-', '/' and spaces; start with a letter or digit.")
        for what, value, limit in (("name", name, 256), ("hypothesis", hypothesis, 128), ("dataset", dataset, 256)):
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= limit):
                raise UsageError(f"{what} {value!r} is not valid", hint=f"Give text of 1 to {limit} characters.")
        first = [r for r in (tags_record(tags or {}), params_record(params or {})) if r is not None]
        self.id = new_id()
        self.project = project
        self.name = name or f"run-{self.id[:8]}"
        self._sink = sink
        self._owned = owned
        self._ended = False
        self._in_child = False
        self._pid = os.getpid()
        self._end_lock = threading.Lock()
        self._next_step: dict[str, int] = {}
        self._keys: set[str] = set()
        self.journal = Journal.create(journal_root, self.id, sink.target)
        self._writer = RunWriter(self.journal, sink, flush_interval=flush_interval, deliver_interval=deliver_interval)
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        self._writer.put(Record(Kind.START, {
            "project": project, "name": self.name, "started_at": time.time(), "hypothesis": hypothesis,
            "dataset": dataset, "dataset_digest": dataset_digest, "user": user, "host": socket.gethostname(),
        }))
        for record in first:
            self._writer.put(record)
        self._capture_thread: threading.Thread | None = None
        if capture:
            self._capture_thread = threading.Thread(target=self._capture, args=(code_path, env_allowlist),
                                                    name="medcycle-capture", daemon=True)
            self._capture_thread.start()
        self._tee = None
        if capture_output:
            from medcycle.experiments.monitor import OutputTee

            self._tee = OutputTee(self._writer.write_log)
            self._tee.install()
        self._sampler = None
        if resources:
            from medcycle.experiments.monitor import ResourceSampler

            self._sampler = ResourceSampler(lambda values, step: self.log_metrics(values, step=step),
                                            interval=resource_interval)
            self._sampler.start()
        atexit.register(self._at_exit)
        _ACTIVE.add(self)

    def _forked_child(self) -> None:
        if self._tee is not None:
            self._tee.disable()
        self._writer.lock = threading.Lock()
        self._end_lock = threading.Lock()
        self._ended = self._in_child = True  # the parent owns the run; a child's writes would never be delivered
        atexit.unregister(self._at_exit)

    # -- properties -----------------------------------------------------------------------------------
    @property
    def offline(self) -> bool:
        """True while the store cannot be reached (writes go on into the journal)."""
        return self._writer.offline

    @property
    def ended(self) -> bool:
        return self._ended

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, project={self.project!r}, name={self.name!r})"

    # -- params and tags ------------------------------------------------------------------------------
    def _closed(self) -> UsageError:
        if self._in_child:
            return UsageError(f"run {self.id} belongs to process {self._pid}; this is a forked child",
                              hint="Log from the process that started the run (send values back to it).")
        return UsageError(f"run {self.id} has ended", hint="Start a new run with medcycle.start_run(...).")

    def _check_open(self) -> None:
        if self._ended:
            raise self._closed()

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record hyperparameters; nested mappings are flattened with dots (``model.lr``)."""
        self._check_open()
        record = params_record(params)
        if record is not None:
            self._writer.put(record)

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._check_open()
        record = tags_record(tags)
        if record is not None:
            self._writer.put(record)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    # -- metrics (the hot path) -----------------------------------------------------------------------
    def log_metric(self, key: str, value: float, step: int | None = None, *, timestamp: float | None = None) -> None:
        """Record one point. ``step`` defaults to the key's previous step + 1 (from 0); ``timestamp`` to now.

        ``value`` may be a Python number or a NumPy/torch scalar; NaN and infinities are kept as they are.
        """
        v = float(value)
        t = time.time() if timestamp is None else float(timestamp)
        w = self._writer
        with w.lock:
            if self._ended:
                raise self._closed()
            series = w.series.get(key)
            if series is None:
                if key not in self._keys:
                    self._keys.add(check_key(key, "metric key"))
                series = w.new_series(key)
            s = self._next_step.get(key, 0) if step is None else operator.index(step)
            series[0].append(s)
            series[1].append(t)
            series[2].append(v)
            self._next_step[key] = s + 1
            w.points += 1
            if w.points >= 65_536:
                w.wake()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, *,
                    timestamp: float | None = None) -> None:
        """Record several metrics at the same step and time."""
        t = time.time() if timestamp is None else float(timestamp)
        values = [(k, float(v)) for k, v in metrics.items()]
        given = None if step is None else operator.index(step)
        w = self._writer
        with w.lock:
            if self._ended:
                raise self._closed()
            for key, v in values:
                series = w.series.get(key)
                if series is None:
                    if key not in self._keys:
                        self._keys.add(check_key(key, "metric key"))
                    series = w.new_series(key)
                s = self._next_step.get(key, 0) if given is None else given
                series[0].append(s)
                series[1].append(t)
                series[2].append(v)
                self._next_step[key] = s + 1
            w.points += len(values)
            if w.points >= 65_536:
                w.wake()

    # -- objects --------------------------------------------------------------------------------------
    def _artifact(self, name: str, kind: str, digest: str, size: int, path: Path | None, step: int | None,
                  meta: Mapping[str, Any] | None) -> None:
        if not isinstance(name, str) or not 0 < len(name) <= 512:
            raise UsageError(f"artifact name {name!r} is not valid", hint="Give text of 1 to 512 characters.")
        body: dict[str, Any] = {"name": name, "kind": kind, "digest": digest, "size": size, "at": time.time(),
                                "step": None if step is None else operator.index(step), "meta": dict(meta or {})}
        if path is not None:
            body["_objects"] = [{"digest": digest, "size": size, "path": str(path)}]
        self._writer.put(Record(Kind.ARTIFACT, body))

    def log_artifact(self, source: str | os.PathLike[str] | bytes, name: str | None = None, *, kind: str = "artifact",
                     step: int | None = None, meta: Mapping[str, Any] | None = None) -> str:
        """Store a file (streamed, never read into memory) or bytes by content digest; returns the digest.

        Files up to 256 MiB (and bytes) are copied into the journal as they are hashed, so the file may be
        overwritten at once (``best.pt``); larger ones are hashed now and uploaded from where they are by the
        background writer — keep them unchanged until then (``flush()`` waits for it), or they are recorded
        as missing.
        """
        self._check_open()
        if isinstance(source, bytes):
            if not name:
                raise UsageError("log_artifact(bytes) needs a name", hint="Pass name='predictions.json'.")
            digest, size, staged = self.journal.stage_blob(source)
            self._artifact(name, kind, digest, size, staged, step, meta)
            return digest
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f"{path} is not a file", hint="Pass the path of a file (log each file of a folder).")
        if path.stat().st_size <= SNAPSHOT_MAX:
            digest, size, staged = self.journal.stage_file(path)
        else:
            (digest, size), staged = digest_file(path), path
        self._artifact(name or path.name, kind, digest, size, staged, step, meta)
        return digest

    def log_model(self, model: Any, name: str = "model", *, step: int | None = None,
                  meta: Mapping[str, Any] | None = None) -> str:
        """Store a model: a file path, or a torch module (its ``state_dict``, saved with ``torch.save``)."""
        self._check_open()
        if isinstance(model, str | os.PathLike):
            return self.log_artifact(model, name, kind="model", step=step, meta=meta)
        if not hasattr(model, "state_dict"):
            raise UsageError(f"cannot store a {type(model).__name__} as a model",
                             hint="Pass a torch.nn.Module or the path of a saved checkpoint.")
        import torch

        # torch.save names the archive's top folder after the file, so the file is always "model.pt" (in a
        # private folder): the same weights then always have the same digest.
        folder = Path(tempfile.mkdtemp(prefix="model-", dir=self.journal.path / "blobs"))
        try:
            tmp = folder / "model.pt"
            torch.save(model.state_dict(), tmp)
            digest, size = digest_file(tmp)
            final = folder.parent / digest
            os.replace(tmp, final)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        info = {"format": "torch.state_dict", "class": type(model).__name__, **(meta or {})}
        self._artifact(name, "model", digest, size, final, step, info)
        return digest

    def log_input_model(self, model: str | os.PathLike[str], name: str | None = None) -> str:
        """Record a model this run starts from: an object digest, or a file (stored by digest); returns the digest."""
        self._check_open()
        if isinstance(model, str) and DIGEST_RE.match(model):
            self._artifact(name or "input-model", "input", model, 0, None, None, {"by": "digest"})
            return model
        return self.log_artifact(model, name, kind="input")

    def log_image(self, key: str, image: Any, step: int | None = None, *, mask: Any = None, slices: int = 3,
                  axis: int = 0, window: tuple[float, float] | None = None) -> str:
        """Store a 2D image, or a 3D volume as slices + MIP, with optional mask contours, as a PNG; returns its digest.

        See :mod:`medcycle.experiments.images` for the shapes accepted.
        """
        self._check_open()
        from medcycle.experiments.images import render

        png, meta = render(image, mask=mask, slices=slices, axis=axis, window=window)
        digest, size, staged = self.journal.stage_blob(png)
        self._artifact(check_key(key, "image key"), "image", digest, size, staged, step, meta)
        return digest

    # -- reproducibility ------------------------------------------------------------------------------
    def seed(self, seed: int = 42, *, deterministic: bool = True) -> int:
        """Seed ``random``, NumPy and torch (and deterministic algorithms) and record it; returns ``seed``."""
        self._check_open()
        from medcycle.experiments.capture import seed_everything

        done = seed_everything(seed, deterministic=deterministic)
        self._writer.put(Record(Kind.SEED, {"seeds": done}))
        return seed

    def _capture(self, code_path: Path | None, env_allowlist: tuple[str, ...]) -> None:
        from medcycle.experiments.capture import collect

        try:
            cap = collect(code_path, env_allowlist=env_allowlist)
            body: dict[str, Any] = {"capture": cap.data, "packages_hash": cap.packages_hash, "_objects": []}
            for column, blob in (("diff_digest", cap.diff), ("packages_digest", cap.freeze)):
                if blob:
                    digest, size, staged = self.journal.stage_blob(blob)
                    body[column] = digest
                    body["_objects"].append({"digest": digest, "size": size, "path": str(staged)})
            self._writer.put(Record(Kind.CAPTURE, body))
        except Exception as exc:  # noqa: BLE001 - a capture failure is recorded, never fatal to training
            log.warning("run %s: capture failed: %s", self.id, exc)
            self._writer.put(Record(Kind.CAPTURE, {"capture": {"error": f"{type(exc).__name__}: {exc}"}}))

    # -- lifecycle ------------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Make everything logged so far durable on disk and wait (up to ``timeout`` s) until the store has it.

        Returns True when the store has everything, False when offline (the journal keeps it).
        """
        if self._ended:
            return True
        return self._writer.flush(timeout)

    def end(self, status: str = "finished", *, timeout: float = 30.0) -> bool:
        """End the run with ``status`` (finished, failed, killed); returns whether the store has everything.

        When it does not (offline), the journal is kept and a line says how to sync it later.
        """
        if status not in STATUSES or status == "running":
            raise UsageError(f"{status!r} is not an end status", hint="Use finished, failed or killed.")
        with self._end_lock:
            if self._ended:
                return True
            if self._sampler is not None:
                self._sampler.stop()
            if self._capture_thread is not None:
                self._capture_thread.join(timeout)
            with self._writer.lock:
                self._ended = True
            if self._tee is not None:
                self._tee.uninstall()
            self._writer.put(Record(Kind.END, {"status": status, "ended_at": time.time()}))
        delivered = self._writer.close(timeout)
        atexit.unregister(self._at_exit)
        _ACTIVE.discard(self)
        if delivered:
            self.journal.remove()
        else:
            reason = self._writer.error or "the store did not answer in time"
            sys.stderr.write(f"medcycle: run {self.id} is kept in {self.journal.path} ({reason.splitlines()[0]}); "
                             "deliver it with `medcycle run sync`\n")
        self._sink.close()
        if self._owned is not None:
            self._owned.close()
        return delivered

    def _at_exit(self) -> None:
        failed = getattr(sys, "last_value", None) is not None
        try:
            self.end("failed" if failed else "finished")
        except MedcycleError as exc:
            sys.stderr.write(f"medcycle: could not end run {self.id}: {exc}\n")

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.end("finished")
        else:
            self.end("killed" if issubclass(exc_type, KeyboardInterrupt) else "failed")


def start_run(project: str, *, name: str | None = None, hypothesis: str | None = None, dataset: str | None = None,
              tags: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
              platform: Any = None, server: str | None = None, token: str | None = None, sink: Sink | None = None,
              journal_dir: str | os.PathLike[str] | None = None, capture: bool = True, capture_output: bool = True,
              resources: bool = True, resource_interval: float = 10.0, flush_interval: float = 0.5,
              deliver_interval: float = 2.0, code_path: str | os.PathLike[str] | None = None,
              env_allowlist: tuple[str, ...] = ()) -> Run:
    """Start tracking a run and return it (use it as a context manager).

    Args:
        project: project name; created on first use.
        name: a label for people (default ``run-<id prefix>``).
        hypothesis: the hypothesis the run tests, e.g. ``"H-3"``.
        dataset: the dataset version it reads: ``NAME@TAG``, ``NAME@vN`` or a version digest. Resolved to the
            version digest at start (when the store answers) so the run names exact data.
        tags, params: recorded at start.
        platform: a :class:`~medcycle.platform.Platform` to write to (default: one from the usual settings).
        server, token: write to a remote medcycle server instead (``https://medcycle.example.org``).
        sink: any other drain target (see :class:`~medcycle.experiments.journal.Sink`); ``journal_dir`` is then
            required.
        journal_dir: where the crash-safe journal lives (default ``HOME/journals``).
        capture: record git state, diff, packages, platform and environment (in the background).
        capture_output: copy stdout and stderr into the run's log.
        resources: sample CPU/RAM/GPU every ``resource_interval`` seconds as ``system/*`` metrics.
        flush_interval: seconds between journal fsyncs (what a ``kill -9`` can lose without ``flush()``).
        deliver_interval: seconds between deliveries to the store (sooner on ``flush()`` or 4 MiB waiting).
        code_path: where the code is (default: the entry script's folder).
        env_allowlist: environment variables to record in addition to the built-in allow-list.

    Inside a task run by an agent (``MEDCYCLE_TASK_ID`` set) the run is tagged ``task_id`` with the task's id.
    """
    task_id = os.environ.get("MEDCYCLE_TASK_ID")
    if task_id:
        tags = {**(tags or {}), "task_id": task_id}
    owned = None
    target: Sink
    if sink is not None:
        if journal_dir is None:
            raise UsageError("start_run(sink=...) needs journal_dir", hint="Pass journal_dir='path/for/journals'.")
        target, root = sink, Path(journal_dir)
    elif server is not None:
        from medcycle.experiments.remote import HttpSink

        target = HttpSink(server, token)
        root = Path(journal_dir) if journal_dir else _default_home() / "journals"
    else:
        from medcycle.experiments.ingest import LocalSink

        if platform is None:
            from medcycle.platform import Platform
            from medcycle.settings import load_settings

            platform = owned = Platform(load_settings())
            try:
                platform.migrate()
            except MedcycleError as exc:
                log.warning("the metadata store is unavailable (%s); the run starts offline", exc.message)
        target = LocalSink(platform)
        root = Path(journal_dir) if journal_dir else platform.settings.home / "journals"
    digest = _resolve_dataset(target, dataset)
    return Run(project=project, sink=target, journal_root=root, name=name, hypothesis=hypothesis, dataset=dataset,
               dataset_digest=digest, tags=tags, params=params, capture=capture, capture_output=capture_output,
               resources=resources, resource_interval=resource_interval, flush_interval=flush_interval,
               deliver_interval=deliver_interval,
               code_path=Path(code_path) if code_path else None, env_allowlist=tuple(env_allowlist), owned=owned)


def _default_home() -> Path:
    try:
        from medcycle.settings import load_settings

        return load_settings().home
    except MedcycleError:
        return Path("~/.medcycle").expanduser()


def _resolve_dataset(sink: Any, dataset: str | None) -> str | None:
    if not dataset:
        return None
    resolve = getattr(sink, "resolve_dataset", None)
    if resolve is None:
        return None
    try:
        digest = resolve(dataset)
    except MedcycleError as exc:
        log.warning("dataset %s could not be resolved now (%s); the store resolves it on delivery", dataset, exc)
        return None
    return digest if isinstance(digest, str) else None

