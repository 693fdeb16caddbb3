"""The API server process's set-up (medcycle.api.server): switch interval, warm-up and the frozen heap.

Freezing happens in a child process: frozen objects in the test process would outlive the tests that made them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medcycle.api import server
from medcycle.errors import BackendUnavailable, ConfigError
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.testing.platform import TEST_SECRET, make_settings

CHILD = """
import gc, json, sys, time
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.api.app import create_app
from medcycle.api.server import prepare
platform = Platform(load_settings())
create_app(platform, migrate=False)
before = len(gc.get_objects())
done = prepare(platform)
from medcycle.catalog.deid_tables import basic_profile
print(json.dumps({"done": done, "interval": sys.getswitchinterval(), "frozen": gc.get_freeze_count(),
                  "tracked_before": before, "tracked_after": len(gc.get_objects()),
                  "profile_cached": basic_profile.cache_info().currsize,
                  "sqlite_loaded": "sqlite3" in sys.modules or "psycopg" in sys.modules}))
"""


def _child(home: Path, **env: str) -> dict[str, Any]:
    Platform(make_settings(home)).init()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MEDCYCLE_")}
    environ.update({"MEDCYCLE_HOME": str(home), "MEDCYCLE_ENVIRONMENT": "test", "MEDCYCLE_SECRET_KEY": TEST_SECRET,
                    **env})
    done = subprocess.run([sys.executable, "-c", CHILD], env=environ, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_prepare_warms_up_then_freezes_the_heap_and_shortens_the_switch_interval(tmp_path: Path) -> None:
    got = _child(tmp_path / "home")
    assert got["interval"] == pytest.approx(0.0005)  # the default, 0.5 ms
    assert got["profile_cached"] == 1 and got["sqlite_loaded"]  # what the first requests would have loaded
    assert got["frozen"] > 50_000 and got["done"]["frozen"] == got["frozen"]
    # what a full collection still walks is what requests make from now on: almost nothing of the start-up
    assert got["tracked_after"] < got["tracked_before"] / 20


def test_the_freeze_can_be_turned_off_and_the_interval_set(tmp_path: Path) -> None:
    got = _child(tmp_path / "home", MEDCYCLE_API_FREEZE_HEAP="false", MEDCYCLE_API_SWITCH_INTERVAL_MS="2")
    assert got["interval"] == pytest.approx(0.002)
    assert got["frozen"] == 0 and got["done"]["frozen"] == 0
    assert got["tracked_after"] > got["tracked_before"] / 2


@pytest.mark.parametrize("value", ["0", "-1", "101", "fast"])
def test_a_bad_switch_interval_is_refused_with_the_setting_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(home=tmp_path / "home", api_switch_interval_ms=value)
    assert "api_switch_interval_ms" in err.value.message


def test_warm_up_with_the_database_unreachable_logs_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    platform = Platform(make_settings(tmp_path / "home"))
    platform.init()

    def down() -> None:
        raise BackendUnavailable("the embedded job queue is unavailable: disk I/O error", hint="Check the disk.")

    monkeypatch.setattr(platform.jobs, "ping", down)
    with caplog.at_level(logging.WARNING, logger="medcycle.api.server"):
        server.warm(platform)  # does not raise: /readyz reports the database
    assert "the embedded job queue is unavailable" in caplog.text
    platform.close()


def test_medcycle_serve_prepares_the_process_before_uvicorn_takes_requests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from medcycle.cli.errors import run
    from medcycle.cli.main import app

    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDCYCLE_ENVIRONMENT", "test")
    monkeypatch.setenv("MEDCYCLE_SECRET_KEY", TEST_SECRET)
    Platform(make_settings(tmp_path / "home")).init()
    calls: list[str] = []
    monkeypatch.setattr(server, "prepare", lambda platform: calls.append(f"prepare {platform.settings.home.name}"))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(f"run {type(app).__name__} {kw['port']}"))
    assert run(app, ["serve", "--port", "8765"]) == 0
    assert calls == ["prepare home", "run FastAPI 8765"]


def test_the_server_parses_http_with_httptools() -> None:
    """uvicorn picks its C parser (a dependency) over the pure-Python h11 for `medcycle serve`'s default
    ``http="auto"``: h11 cost the API about 2 ms of CPU more for each 512 KiB upload."""
    import uvicorn
    from fastapi import FastAPI

    config = uvicorn.Config(FastAPI(), http="auto")
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"


# -- the bound on a request's head -----------------------------------------------------------------------------
def _bounded_server(limit: int) -> Any:
    """A tiny app served with :func:`server.http_protocol` (``limit`` bytes of head) on a free loopback port."""
    import socket
    import threading
    import time

    import uvicorn

    async def app(scope: Any, receive: Any, send: Any) -> None:  # /echo: the body's length; anything else: ok
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = json.dumps({"bytes": size} if scope["path"] == "/echo" else {"status": "ok"}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", access_log=False,
                            http=server.http_protocol(limit), timeout_graceful_shutdown=5)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    return srv, thread, sock


def _exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection (stopping quietly if the server closes it) and read until it closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        # refused before the whole request was sent: what the server answered is still to be read
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(data)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := conn.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def test_a_request_head_over_the_bound_is_a_431_and_the_server_goes_on() -> None:
    """uvicorn's httptools parser keeps a header's bytes until it is complete, without bound: one connection
    sending a header of many megabytes grew the API by hundreds of MB. Past ``api_max_header_kib`` the head is
    refused with 431 and the connection closed, before the rest of it is read; bodies do not count, nor a
    pipelined request after a large body."""
    srv, thread, sock = _bounded_server(16 * 1024)
    port = sock.getsockname()[1]
    try:
        huge = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n"
        answer = _exchange(port, huge)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"api_max_header_kib" in answer and b"connection: close" in answer.lower()

        many = b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100)
                                                               for i in range(400)) + b"\r\n"
        assert _exchange(port, many).startswith(b"HTTP/1.1 431 ")
        long_url = b"GET /livez?" + b"q" * (64 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        assert _exchange(port, long_url).startswith(b"HTTP/1.1 431 ")

        # a body of any size is not head; a request pipelined after a large body is answered too
        body = b"b" * (600 * 1024)
        post = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        last = b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = _exchange(port, post + last)
        assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:300]
        assert b'{"bytes": 614400}' in answer

        # a head just under the bound, sent in many small pieces, is a request like any other
        import socket
        import time
        fits = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Fits: " + b"f" * (12 * 1024) + b"\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            for i in range(0, len(fits), 1000):
                conn.sendall(fits[i:i + 1000])
                time.sleep(0.001)
            reply = conn.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
        sock.close()


def test_medcycle_serve_runs_the_bounded_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`medcycle serve` hands uvicorn the bounded protocol, sized by ``api_max_header_kib``."""
    import uvicorn

    from medcycle.cli.errors import run
    from medcycle.cli.main import app

    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDCYCLE_ENVIRONMENT", "test")
    monkeypatch.setenv("MEDCYCLE_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("MEDCYCLE_API_MAX_HEADER_KIB", "32")
    Platform(make_settings(tmp_path / "home")).init()
    seen: dict[str, Any] = {}
    monkeypatch.setattr(server, "prepare", lambda platform: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    assert run(app, ["serve", "--port", "8766"]) == 0
    assert seen["http"] is server.http_protocol(32 * 1024)
    assert seen["http"].__name__ == "BoundedHttpToolsProtocol"
