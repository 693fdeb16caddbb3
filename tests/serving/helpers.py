"""Shared by the serving tests: a registered model version to submit to, live servers (the API with DICOMweb, a
webhook receiver) and multipart/related bodies."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from medcycle.models import registry
from medcycle.platform import Platform


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> bool:
    """Whether ``predicate`` became true within ``timeout`` seconds (polled every ``step``; checked once more at
    the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def register_model(platform: Platform, name: str, weights: bytes | None = None) -> str:
    """Register a version of ``name`` from stored bytes (enough for intake, which only checks it exists)."""
    digest = platform.objects.put(weights or f"weights of {name}".encode()).digest
    with platform.session() as session:
        return registry.register(session, platform.objects, name, weights_digest=digest).ref


def serving_model(platform: Platform, name: str, tmp_path: Path, *, task: str = "classification-2d", seed: int = 0,
                  classes: tuple[str, ...] = ("normal", "lesion"), overrides: dict[str, Any] | None = None) -> str:
    """Register a version of ``name`` that serving can load: a real (untrained, seeded) network of ``task`` logged
    by a run with its training config and classes, as ``medcycle train`` logs them (``overrides`` replace config
    sections, e.g. a bigger ``model``). Returns ``NAME@vN``."""
    import torch

    from medcycle.experiments.sdk import start_run
    from medcycle.training.config import example, validate
    from medcycle.training.models import build_model, out_channels

    data = example(task)
    data["data"] = {**data["data"], "dataset": None, "path": str(tmp_path), "classes": list(classes)}
    data.update(overrides or {})
    config = validate(data)
    torch.manual_seed(seed)
    network = build_model(config, out_channels(config, list(classes)))
    with start_run(name, platform=platform, journal_dir=tmp_path / "journals", capture=False, capture_output=False,
                   resources=False, params={"samples": {"classes": list(classes)}}) as run:
        run.log_artifact(config.model_dump_json(indent=2).encode(), "config.json")
        run.log_model(network)
    with platform.session() as session:
        return registry.register(session, platform.objects, name, run_id=run.id, task=task).ref


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11",
                                           access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                try:
                    if client.get(f"{url}/livez").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
                time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def serve_handler(handler: type[BaseHTTPRequestHandler], path: str = "/hook") -> Iterator[str]:
    """``handler`` served on a free loopback port in a thread (a webhook receiver); yields the URL of ``path``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def token_for(platform: Platform, user: str = "admin", role: str | None = None) -> str:
    """An API token of ``user`` (created with ``role`` when given)."""
    from medcycle.auth import users
    from medcycle.auth.roles import Role

    with platform.session() as session:
        if role is not None:
            users.create_user(session, user, Role(role))
        return users.create_token(session, user, name="test").secret


@dataclass
class DicomwebEnv:
    """A live API with DICOMweb on loopback, its platform, an admin token and a scratch folder."""

    platform: Platform
    url: str
    token: str
    tmp: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.auth, timeout=60, trust_env=False)


@contextmanager
def dicomweb_env(tmp: Path) -> Iterator[DicomwebEnv]:
    """The API with the DICOMweb router (uvicorn on loopback) on a new home in ``tmp``, with a small segmentation
    model, ``ctseg``."""
    from medcycle.api.app import create_app
    from medcycle.serving import dicomweb
    from medcycle.testing.platform import make_settings

    platform = Platform(make_settings(tmp / "home"))
    platform.init()
    serving_model(platform, "ctseg", tmp, task="segmentation-2d", classes=("lesion",), seed=3)
    app = create_app(platform, web=False)
    app.include_router(dicomweb.router)
    try:
        with serve_app(app) as url:
            yield DicomwebEnv(platform, url, token_for(platform), tmp)
    finally:
        platform.close()


def related_body(*parts: tuple[str | None, bytes]) -> bytes:
    """A multipart/related body with the boundary ``XyZ``; a part's media type None sends it without one."""
    out = b""
    for media, data in parts:
        out += b"--XyZ\r\n" + (f"Content-Type: {media}\r\n".encode() if media else b"") + b"\r\n" + data + b"\r\n"
    return out + b"--XyZ--\r\n"
