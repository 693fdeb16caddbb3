"""Bad input through REST, against a real ``medcycle serve`` process on loopback: pydicom's deliberately broken test
files, truncated uploads, zip bombs, path-traversal names in a zip, wrong content types and a 2 GB upload each get
a 4xx with a clear message, nothing is enqueued, and the server stays up (and serves a good request afterwards).

The 2 GB upload is streamed by the test from a generator (never held in memory); the server refuses it on its
declared size (setting ``max_upload_bytes``, 413 naming the limit) before reading the body, so its memory stays
flat and nothing is spooled to disk.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from medcycle.platform import Platform
from medcycle.serving.config import ServingSettings
from medcycle.testing.dicom import write_radiograph
from medcycle.testing.platform import TEST_SECRET, make_settings
from medcycle.testing.services import free_port
from tests.serving.helpers import register_model, token_for

ROOT = Path(__file__).resolve().parents[2]
MODEL = "chest"
GiB = 1024**3
MiB = 1024**2
#: pydicom's test files that are broken on purpose (truncated, bad VR, no preamble or meta, pixel data too short)
#: — and one that is fine but no image. Each must be refused at the door. (``bad_sequence.dcm`` is not here: its
#: malformed sequence is read leniently, de-identification rewrites it and its pixels decode, so it is served.)
BROKEN = ["MR_truncated.dcm", "rtplan_truncated.dcm", "badVR.dcm", "no_meta.dcm", "meta_missing_tsyntax.dcm",
          "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm",
          "rtplan.dcm"]


@dataclass
class Server:
    url: str
    headers: dict[str, str]
    platform: Platform
    proc: subprocess.Popen[bytes]
    tmp: Path  # the server's TMPDIR (where spooled uploads would go)
    good: bytes  # a radiograph the server accepts

    def post(self, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.post(f"{self.url}/v1/jobs", headers=headers, timeout=60, trust_env=False, **kwargs)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        return httpx.get(f"{self.url}/livez", timeout=5, trust_env=False).status_code == 200

    def queued(self) -> int:
        return sum(self.platform.jobs.stats(ServingSettings().queue).counts.values())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("bad-input")
    platform = Platform(make_settings(root / "home"))
    platform.init()
    register_model(platform, MODEL)
    token = token_for(platform)
    spool = root / "spool"
    spool.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCYCLE_")}
    env.update({"MEDCYCLE_HOME": str(platform.settings.home), "MEDCYCLE_ENVIRONMENT": "test",
                "MEDCYCLE_SECRET_KEY": TEST_SECRET, "MEDCYCLE_LOG_LEVEL": "WARNING", "TMPDIR": str(spool),
                "PYTHONPATH": str(ROOT)})
    log = (root / "server.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "medcycle", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/livez", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        good = write_radiograph(root / "good.dcm", seed=3).read_bytes()
        yield Server(url, {"Authorization": f"Bearer {token}"}, platform, proc, spool, good)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        platform.close()


def _refused(r: httpx.Response, status: int | tuple[int, ...], *words: str) -> dict[str, Any]:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    error: dict[str, Any] = r.json()["error"]
    assert all(w in error["message"] for w in words), (words, error)
    assert error["hint"], error  # what to do next
    return error


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def _files(name: str, data: bytes, media: str = "application/octet-stream") -> dict[str, Any]:
    return {"data": {"model": MODEL}, "files": [("files", (name, data, media))]}


def test_every_broken_pydicom_test_file_is_refused_with_its_name(server: Server) -> None:
    from pydicom.data import get_testdata_file

    before = server.queued()
    for name in BROKEN:
        path = get_testdata_file(name)
        assert path is not None, name
        error = _refused(server.post(**_files(name, Path(str(path)).read_bytes(), "application/dicom")), (400, 422))
        assert name in error["message"], error  # the message names the file
    assert server.alive() and server.queued() == before


def test_truncated_uploads_are_refused_and_the_server_stays_up(server: Server) -> None:
    before = server.queued()
    # a DICOM file cut short: its pixel data is incomplete
    _refused(server.post(**_files("cut.dcm", server.good[:-500], "application/dicom")), 422, "truncated")
    # a multipart body that ends before its closing boundary (Content-Length matches what is sent)
    whole = httpx.Request("POST", "http://x/", data={"model": MODEL},
                          files=[("files", ("a.dcm", server.good, "application/dicom"))])
    body = whole.read()
    cut = body[: len(body) // 2]
    r = server.post(content=cut, headers={"Content-Type": whole.headers["content-type"]})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["error"]["message"]
    # a client that declares more than it sends and hangs up: nothing to answer, nothing enqueued, still up
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: {server.headers['Authorization']}\r\n"
                f"Content-Type: {whole.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n")
        sock.sendall(head.encode() + cut)
    assert server.alive() and server.queued() == before


def test_zip_bombs_and_path_traversal_names_are_refused(server: Server) -> None:
    before = server.queued()
    bomb = _zip({"scan.dcm": b"\0" * (100 * MiB)})  # ~100 KB on the wire, 100 MiB inflated
    assert len(bomb) < MiB
    _refused(server.post(**_files("study.zip", bomb, "application/zip")), 413, "expands more than")
    for evil in ["../../etc/passwd", "/etc/passwd", "study/../../../x.dcm", "C:/Windows/x.dcm", "..\\..\\x.dcm"]:
        archive = _zip({"study/ok.dcm": server.good, evil: server.good})
        _refused(server.post(**_files("study.zip", archive, "application/zip")), 422, "unsafe name")
    nested = _zip({"inner.zip": _zip({"a.dcm": server.good})})
    _refused(server.post(**_files("outer.zip", nested, "application/zip")), 422, "another archive")
    assert server.alive() and server.queued() == before


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/plain", b"hello"),
    ("application/x-www-form-urlencoded", b"model=chest"),
    ("application/dicom", b"DICM"),
    ('multipart/related; type="application/dicom"; boundary=x', b"--x--\r\n"),
    ("", b"{}"),
])
def test_wrong_content_types_get_415(server: Server, content_type: str, body: bytes) -> None:
    before = server.queued()
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(f"{server.url}/v1/jobs", content=body, headers={**server.headers, **headers}, timeout=30,
                   trust_env=False)
    _refused(r, 415, "content type")
    assert server.alive() and server.queued() == before


def _disk(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_a_2gb_upload_is_refused_early_with_flat_memory(server: Server) -> None:
    limit = ServingSettings().max_upload_bytes
    size = 2 * GiB
    assert size > limit
    process = psutil.Process(server.proc.pid)
    assert server.alive()
    queued = server.queued()
    before = process.memory_info().rss
    sent = 0
    chunk = b"\0" * MiB

    def body() -> Iterator[bytes]:  # 2 GiB, one MiB at a time: never in memory, never on disk here
        nonlocal sent
        boundary = b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.dcm\"\r\n\r\n"
        yield boundary
        sent += len(boundary)
        while sent < size:
            piece = chunk[: size - sent]
            yield piece
            sent += len(piece)

    started = time.monotonic()
    r = server.post(content=body(), headers={"Content-Type": "multipart/form-data; boundary=x",
                                             "Content-Length": str(size)})
    took = time.monotonic() - started
    print(f"sent {sent / MiB:.0f} MiB in {took:.1f} s")
    error = _refused(r, 413, str(limit), str(size))
    assert "max_upload_bytes" in error["hint"] or "digests" in error["hint"]
    assert sent < size // 4, f"{sent} bytes went out before the answer"  # refused early, not after reading it all
    assert took < 30
    # STOW-RS refuses the same declared size before reading it
    sent = 0
    r = httpx.post(f"{server.url}/dicomweb/studies?model={MODEL}", content=body(), timeout=60, trust_env=False,
                   headers={**server.headers, "Content-Type": 'multipart/related; type="application/dicom"; '
                            "boundary=x", "Content-Length": str(size)})
    _refused(r, 413, str(limit))
    assert sent < size // 4
    # the same body without a declared length (chunked): an upload's size must be known first
    sent = 0
    r = server.post(content=body(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    _refused(r, 411, "Content-Length")
    assert sent < size // 4
    after = process.memory_info().rss
    assert after - before < 64 * MiB, f"the server grew by {(after - before) / MiB:.0f} MiB"
    assert _disk(server.tmp) < 16 * MiB  # nothing spooled
    assert server.alive() and server.queued() == queued
    ok = server.post(**_files("good.dcm", server.good, "application/dicom"))  # and it still serves
    assert ok.status_code == 202, ok.text[:300]
    assert server.queued() == queued + 1


def test_stow_bodies_without_a_length_are_bounded_as_they_arrive() -> None:
    import asyncio

    from medcycle.errors import PayloadTooLarge
    from medcycle.serving.multipart import read_related

    async def chunks() -> Any:  # an endless body in small parts, each under the part limit
        n = 0
        while True:
            n += 1
            yield b"--x\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 1000 + b"\r\n"
            assert n < 10_000, "the body was never refused"

    def read() -> None:  # its own thread and event loop: a browser test's Playwright may own this thread's loop
        asyncio.run(read_related(chunks(), 'multipart/related; type="application/dicom"; boundary=x',
                                 part_type="application/dicom", max_part_bytes=10_000, max_parts=1_000_000,
                                 max_total_bytes=50_000))

    with ThreadPoolExecutor(1) as pool, pytest.raises(PayloadTooLarge, match="larger than 50000 bytes") as refused:
        pool.submit(read).result(timeout=60)
    assert refused.value.hint
