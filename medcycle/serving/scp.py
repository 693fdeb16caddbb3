"""A DICOM C-STORE SCP (pynetdicom) so a PACS or a modality can send studies straight to inference.

``medcycle serve-scp --port 11112 --ae-title MEDCYCLE --model chest@production``

How a study travels:

1. **C-STORE, one instance at a time.** Each instance is checked (an image SOP class with pixel data and its
   UIDs, else a failure status: 0x0122 for an unsupported SOP class, 0xA900 for a data set that does not
   match its class, 0xC000 for one that cannot be read, 0x0110 for pixels that may carry burned-in text),
   de-identified and stored as an object by :class:`~medcycle.serving.studies.DicomIntake`, then appended to
   the study's spool file, fsynced. Only then is 0x0000 (success) returned: an acknowledged instance is
   never lost, also when the process dies right after.
2. **Grouping.** Instances are grouped by (pseudonymous) StudyInstanceUID, across associations: a PACS may
   send a study over several. A study is submitted (one inference job) once no new instance of it arrived
   for ``idle_seconds``.
3. **Aborts.** An association that ends in an A-ABORT (or a dropped connection) usually means the sender
   will retransmit. Instances it delivered are kept; its studies are held for up to ``abort_grace_seconds``
   — until an instance of the study arrives again — so the retransmission completes them instead of a
   partial study being submitted first (instances sent twice count once).
4. **Failures to submit** (queue full, database unreachable) keep the study spooled; it is retried with a
   backoff. At start, studies left in the spool by a previous process are recovered and submitted.

The spool (default ``HOME/serving/scp-spool``) holds, per pending study, one JSON line per instance: object
digest, pseudonymous UIDs and the instance's *sealed* return address — no patient data in clear. Logs name
studies by their pseudonymous UID only, and pynetdicom's identifier logging is switched off.
C-ECHO (verification) is answered.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydicom import Dataset
from sqlalchemy.exc import SQLAlchemyError

from medcycle.errors import MedcycleError, UsageError
from medcycle.serving.studies import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    VIA_CSTORE,
    AcceptedInstance,
    DicomIntake,
    InstanceRefused,
    SubmittedStudy,
)

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

    from medcycle.platform import Platform

log = logging.getLogger(__name__)

AE_TITLE_RE: Final = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars, no backslash or control
SPOOL_SUFFIX: Final = ".jsonl"
FLUSHING: Final = ".flushing-"
RECOVERING: Final = ".recovering-"
MAX_BACKOFF_S: Final = 60.0


def check_ae_title(value: str, what: str = "AE title") -> str:
    title = (value or "").strip()
    if not title or not AE_TITLE_RE.match(title):
        raise UsageError(f"{value!r} is not a valid {what}",
                         hint="Use 1-16 printable ASCII characters without a backslash, e.g. MEDCYCLE.")
    return title


@dataclass(frozen=True)
class ScpConfig:
    """How the SCP listens and what it does with a study."""

    model: str
    ae_title: str = "MEDCYCLE"
    host: str = "127.0.0.1"
    port: int = 11112
    idle_seconds: float = 10.0
    abort_grace_seconds: float = 60.0
    allowed_calling_aes: tuple[str, ...] = ()
    spool_dir: Path | None = None
    max_pdu: int = 0  # 0: unlimited

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        object.__setattr__(self, "allowed_calling_aes",
                           tuple(check_ae_title(a, "calling AE title") for a in self.allowed_calling_aes))
        if not self.model or not self.model.strip():
            raise UsageError("the SCP needs a model to run on received studies",
                             hint="Pass --model NAME@ALIAS, or deploy one first: medcycle deploy NAME@ALIAS.")
        if not 0 <= self.port < 65536:
            raise UsageError(f"port {self.port} is out of range", hint="Use 1-65535, e.g. 11112 (0: any free port).")
        if self.idle_seconds <= 0 or self.abort_grace_seconds < 0:
            raise UsageError("idle and abort-grace times must be positive",
                             hint="E.g. --idle-seconds 10 --abort-grace-seconds 60.")


@dataclass
class _Pending:
    study_key: str
    instances: dict[str, AcceptedInstance] = field(default_factory=dict)
    last_arrival: float = 0.0
    hold_until: float = 0.0
    retry_at: float = 0.0
    failures: int = 0
    calling_ae: str | None = None
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Spool:
    """Per-study append-only files of accepted instances (pseudonymous values and sealed addresses only)."""

    def __init__(self, folder: Path, intake: DicomIntake) -> None:
        self.folder = folder
        self.intake = intake
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)

    def path(self, study_key: str) -> Path:
        return self.folder / f"{study_key}{SPOOL_SUFFIX}"

    def append(self, item: AcceptedInstance) -> None:
        line = json.dumps({"digest": item.digest, "size": item.size, "sop_class": item.sop_class,
                           "study": item.study_key, "series": item.series_key, "sop": item.sop_key,
                           "modality": item.modality,
                           "sealed": base64.b64encode(self.intake.sealer.seal(item.address)).decode()}) + "\n"
        fd = os.open(self.path(item.study_key), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def detach(self, study_key: str) -> Path | None:
        """Move the study's live file aside while it is submitted (new arrivals start a new one)."""
        src = self.path(study_key)
        dest = self.folder / f"{study_key}{FLUSHING}{uuid.uuid4().hex[:8]}"
        try:
            src.rename(dest)
        except FileNotFoundError:
            return None
        return dest

    def read(self, path: Path) -> list[AcceptedInstance]:
        out = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out.append(AcceptedInstance(d["digest"], int(d["size"]), d["sop_class"], d["study"], d["series"],
                                            d["sop"], d["modality"],
                                            self.intake.sealer.open(base64.b64decode(d["sealed"]))))
            except (ValueError, KeyError, MedcycleError) as exc:  # a torn last line after a crash
                log.warning("spool %s line %d skipped: %s", path.name, number, type(exc).__name__)
        return out

    def leftovers(self) -> list[Path]:
        """Every spool file (live, being submitted or being recovered) a previous process left behind."""
        return sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))


class StudyAssembler:
    """Groups accepted instances by study and submits each study once it has been idle (thread-safe)."""

    def __init__(
        self,
        intake: DicomIntake,
        spool: Spool,
        *,
        model: str,
        idle_seconds: float,
        abort_grace_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.intake, self.spool, self.model = intake, spool, model
        self.idle, self.grace, self.clock = idle_seconds, abort_grace_seconds, clock
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._by_assoc: dict[int, set[str]] = {}
        self.submitted: list[SubmittedStudy] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- arrivals ----------------------------------------------------------------------------------
    def add(self, item: AcceptedInstance, *, assoc: int | None = None, calling_ae: str | None = None) -> None:
        """Record an accepted instance durably (the spool is fsynced before this returns)."""
        while True:
            with self._lock:
                pending = self._pending.get(item.study_key)
                if pending is None:
                    pending = self._pending[item.study_key] = _Pending(item.study_key, calling_ae=calling_ae)
                if assoc is not None:
                    self._by_assoc.setdefault(assoc, set()).add(item.study_key)
            with pending.lock:
                if pending.closed:  # it was submitted meanwhile: this instance starts the next group
                    with self._lock:
                        if self._pending.get(item.study_key) is pending:
                            del self._pending[item.study_key]
                    continue
                self.spool.append(item)
                pending.instances[item.sop_key] = item
                pending.last_arrival = self.clock()
                pending.hold_until = 0.0  # the sender is back: the idle time decides again
                return

    def association_ended(self, assoc: int, *, aborted: bool) -> None:
        """Forget the association; after an abort hold its studies for the sender's retransmission."""
        with self._lock:
            keys = self._by_assoc.pop(assoc, set())
            if not aborted:
                return
            until = self.clock() + self.grace
            for key in keys:
                pending = self._pending.get(key)
                if pending is not None:
                    pending.hold_until = max(pending.hold_until, until)
        if keys:
            log.warning("an association aborted: %d studies held %.0f s for retransmission", len(keys), self.grace)

    def pending(self) -> dict[str, int]:
        """Study key → instances waiting."""
        with self._lock:
            return {k: len(p.instances) for k, p in self._pending.items()}

    # -- submission --------------------------------------------------------------------------------
    def due(self) -> list[str]:
        now = self.clock()
        with self._lock:
            return [k for k, p in self._pending.items() if p.instances and now - p.last_arrival >= self.idle
                    and now >= p.hold_until and now >= p.retry_at]

    def flush(self, study_key: str) -> SubmittedStudy | None:
        """Submit one pending study now; on failure it stays pending and is retried with a backoff."""
        with self._lock:
            pending = self._pending.get(study_key)
        if pending is None:
            return None
        with pending.lock:
            if pending.closed or not pending.instances:
                return None
            detached = self.spool.detach(study_key)
            try:
                result = self.intake.submit(list(pending.instances.values()), model=self.model, via=VIA_CSTORE,
                                            calling_ae=pending.calling_ae)
            except MedcycleError as exc:
                if detached is not None:
                    self._merge_back(detached, study_key)
                pending.failures += 1
                pending.retry_at = self.clock() + min(MAX_BACKOFF_S, 0.5 * 2 ** pending.failures)
                log.warning("study %s not submitted (%s: %s); retry %d in %.1f s", study_key, exc.code, exc.message,
                            pending.failures, pending.retry_at - self.clock())
                return None
            pending.closed = True
            if detached is not None:
                detached.unlink(missing_ok=True)
        with self._lock:
            if self._pending.get(study_key) is pending:
                del self._pending[study_key]
        self.submitted.append(result)
        return result

    def _merge_back(self, detached: Path, study_key: str) -> None:
        live = self.spool.path(study_key)
        with live.open("ab") as out:
            out.write(detached.read_bytes())
            out.flush()
            os.fsync(out.fileno())
        detached.unlink()

    def recover(self) -> int:
        """Take up studies a previous process left in the spool; returns how many instances came back."""
        count = 0
        # Set every old file aside first: re-adding an instance appends it to its study's live file, and a crash
        # at any point leaves files that the next start recovers again (instances sent twice count once).
        aside = []
        for path in self.spool.leftovers():
            moved = path.with_name(f"{path.name}{RECOVERING}{uuid.uuid4().hex[:8]}")
            path.rename(moved)
            aside.append(moved)
        for path in aside:
            for item in self.spool.read(path):
                self.add(item)
                count += 1
            path.unlink()
        if count:
            log.info("recovered %d spooled instances of %d studies", count, len(self.pending()))
        return count

    def run(self, tick: float | None = None) -> None:
        """Submit due studies until :meth:`stop` (the SCP runs this in a thread)."""
        interval = tick or max(0.02, min(0.25, self.idle / 4))
        while not self._stop.wait(interval):
            for key in self.due():
                self.flush(key)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="medcycle-scp-flush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


class StoreScp:
    """The SCP: a pynetdicom association server feeding a :class:`StudyAssembler`."""

    def __init__(self, platform: Platform, config: ScpConfig) -> None:
        self.platform, self.config = platform, config
        self.intake = DicomIntake(platform)
        spool_dir = config.spool_dir or platform.settings.home / "serving" / "scp-spool"
        self.assembler = StudyAssembler(self.intake, Spool(spool_dir, self.intake), model=config.model,
                                        idle_seconds=config.idle_seconds,
                                        abort_grace_seconds=config.abort_grace_seconds)
        self._server: ThreadedAssociationServer | None = None
        self.refused: dict[int, int] = {}

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0 in tests)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    def _ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
        from pynetdicom import _config as netconfig
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        netconfig.LOG_REQUEST_IDENTIFIERS = False  # identifiers are patient data: never in our logs
        netconfig.LOG_RESPONSE_IDENTIFIERS = False
        logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLogger("pynetdicom").level))
        ae = AE(ae_title=self.config.ae_title)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.maximum_pdu_size = self.config.max_pdu
        ae.maximum_associations = 32
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        ae.acse_timeout = 30
        ae.require_called_aet = True
        if self.config.allowed_calling_aes:
            ae.require_calling_aet = list(self.config.allowed_calling_aes)
        return ae

    def start(self) -> None:
        from pynetdicom import evt

        self.assembler.recover()
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_ABORTED, self._on_aborted), (evt.EVT_RELEASED, self._on_released),
                    (evt.EVT_CONN_CLOSE, self._on_closed)]
        self._server = self._ae().start_server((self.config.host, self.config.port), block=False,
                                               evt_handlers=handlers)
        self.assembler.start()
        log.info("DICOM SCP %s listening on %s:%d", self.config.ae_title, self.config.host, self.port)

    def stop(self) -> None:
        """Stop listening, then submit nothing more (pending studies stay spooled for the next start)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.assembler.stop()

    def serve_forever(self, stop: threading.Event) -> None:
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    # -- handlers (each association runs in its own thread) ------------------------------------------
    @staticmethod
    def _on_echo(event: Event) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event: Event) -> Dataset | int:
        calling = str(event.assoc.requestor.ae_title).strip() or None
        try:
            try:
                ds = event.dataset
                ds.file_meta = event.file_meta
            except Exception:  # noqa: BLE001 - undecodable data set; its text may quote patient data
                raise InstanceRefused("the data set cannot be decoded", status=STATUS_CANNOT_UNDERSTAND) from None
            item = self.intake.accept(ds)
            self.assembler.add(item, assoc=id(event.assoc), calling_ae=calling)
        except InstanceRefused as exc:
            self.refused[exc.status] = self.refused.get(exc.status, 0) + 1
            log.info("C-STORE from %s refused: 0x%04X %s", calling, exc.status, exc.message)
            return _status(exc.status, exc.message)
        except MedcycleError as exc:  # the store or the disk failed: the sender must retry later
            log.warning("C-STORE from %s failed: %s", calling, exc.message)
            return _status(STATUS_OUT_OF_RESOURCES, "cannot store the instance now; retry later")
        except OSError as exc:
            log.warning("C-STORE from %s failed: spool: %s", calling, exc.strerror)
            return _status(STATUS_OUT_OF_RESOURCES, "cannot store the instance now; retry later")
        except SQLAlchemyError as exc:  # the database is down or busy: the sender must retry later, not give up
            log.warning("C-STORE from %s failed: database: %s", calling, type(exc).__name__)
            return _status(STATUS_OUT_OF_RESOURCES, "cannot record the instance now; retry later")
        except Exception as exc:  # noqa: BLE001 - never pynetdicom's 0xC211 and traceback: its text may quote PHI
            log.error("C-STORE from %s failed unexpectedly (%s)", calling, type(exc).__name__)
            return _status(STATUS_CANNOT_UNDERSTAND, f"the instance cannot be processed ({type(exc).__name__})")
        return STATUS_SUCCESS

    def _on_aborted(self, event: Event) -> None:
        self.assembler.association_ended(id(event.assoc), aborted=True)

    def _on_released(self, event: Event) -> None:
        self.assembler.association_ended(id(event.assoc), aborted=False)

    def _on_closed(self, event: Event) -> None:
        # A connection dropped without release or abort (network failure, killed sender) counts as aborted.
        assoc = event.assoc
        aborted = not (getattr(assoc, "is_released", False))
        self.assembler.association_ended(id(assoc), aborted=aborted)


@contextlib.contextmanager
def running(platform: Platform, config: ScpConfig) -> Iterator[StoreScp]:
    """An SCP listening for the duration of the block (tests, embedding)."""
    scp = StoreScp(platform, config)
    scp.start()
    try:
        yield scp
    finally:
        scp.stop()
