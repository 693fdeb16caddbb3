"""``/v1/jobs`` with what real clients send and the tests elsewhere did not: form fields that are not numbers,
webhook URLs that cannot be requested, an idempotency key sent again with another request, long keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from medcycle.platform import Platform
from medcycle.serving.config import ServingSettings
from medcycle.serving.webhooks import WebhookSender
from tests.serving.core_fixtures import CLS, SrvTemplate, srv_client, srv_worker_thread
from tests.serving.helpers import serve_handler


def _dicom(path: Path) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (path.name, path.read_bytes(), "application/dicom"))


def test_a_form_priority_that_is_not_an_integer_in_range_is_a_422(srv_platform: Platform,
                                                                     srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform)
    files = [_dicom(srv_template.radiographs[0])]
    for value in ["nan", "inf", "-inf", "2.5", "11", "1e300"]:  # nan and inf were a 500 (int() of them)
        r = client.post("/v1/jobs", data={"model": CLS, "priority": value}, files=files)
        assert r.status_code == 422, (value, r.status_code, r.text)
        error = r.json()["error"]
        assert "priority must be an integer from -10 to 10" in error["message"] and error["hint"], error
    assert srv_platform.jobs.stats("inference").counts == {}  # nothing was enqueued
    r = client.post("/v1/jobs", data={"model": CLS, "priority": "-3"}, files=files)
    assert r.status_code == 202 and r.json()["priority"] == -3, r.text


def test_webhook_urls_that_cannot_be_requested_are_refused_at_submit(srv_platform: Platform,
                                                                     srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform)
    files = [_dicom(srv_template.radiographs[0])]
    # "http://[::1" was a 500 (urlparse raised); the others were queued and broke the sender at delivery
    for url in ["http://[::1", "http://exa mple.org/hook", "http://127.0.0.1:99999/hook", "http://127.0.0.1:0/x",
                "http://h.example.org/a\r\nX-Injected: 1", "http://h.example.org/\tx"]:
        r = client.post("/v1/jobs", data={"model": CLS, "webhook": url}, files=files)
        assert r.status_code == 400, (url, r.status_code, r.text)
        error = r.json()["error"]
        assert "is not an http(s) URL" in error["message"] and "https://" in error["hint"], error
    assert srv_platform.jobs.stats("inference").counts == {}
    ok = client.post("/v1/jobs", data={"model": CLS, "webhook": "https://ris.example.org:8443/hooks/ai?x=1"},
                     files=files)
    assert ok.status_code == 202, ok.text


class _Receiver(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Receiver.calls.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.calls = []
    with serve_handler(_Receiver) as url:
        yield url


def test_a_webhook_url_that_cannot_be_requested_does_not_stop_the_sender(srv_platform: Platform,
                                                                         srv_template: SrvTemplate,
                                                                         receiver: str) -> None:
    cfg = ServingSettings(webhook_backoff_s=0.05)
    client = srv_client(srv_platform, cfg)
    with srv_worker_thread(srv_platform, settings=cfg):
        job = client.post("/v1/jobs", params={"wait": 60}, data={"model": CLS},
                          files=[_dicom(srv_template.radiographs[0])]).json()
    assert job["status"] == "done", job
    # a delivery queued with a URL httpx cannot build a request for (as intake let through before), then a good one
    jq = srv_platform.jobs
    bad = jq.enqueue(cfg.webhook_queue, {"job": job["id"], "url": "http://h.example.org/a\r\nX: y"},
                     idempotency_key="webhook:bad", max_attempts=cfg.webhook_attempts)
    good = jq.enqueue(cfg.webhook_queue, {"job": job["id"], "url": receiver}, idempotency_key="webhook:good",
                      max_attempts=cfg.webhook_attempts)
    sender = WebhookSender(srv_platform, cfg)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    try:
        until = time.monotonic() + 15
        while not _Receiver.calls and time.monotonic() < until:
            time.sleep(0.05)
        assert thread.is_alive()  # the bad URL raised httpx.InvalidURL out of the thread, ending every delivery
    finally:
        stop.set()
        thread.join(timeout=10)
        sender.close()
    assert _Receiver.calls == ["/hook"]
    assert jq.get(good.id).state.value == "succeeded"
    failed = jq.get(bad.id)
    assert failed.state.value == "failed" and "cannot be requested" in (failed.error or "")


def test_an_idempotency_key_sent_again_with_another_request_is_refused(srv_platform: Platform,
                                                                       srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform)
    one, two = (_dicom(p) for p in srv_template.radiographs[:2])
    key = {"Idempotency-Key": "study-0001"}
    first = client.post("/v1/jobs", data={"model": CLS}, files=[one], headers=key)
    assert first.status_code == 202, first.text
    again = client.post("/v1/jobs", data={"model": CLS}, files=[one], headers=key)
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]  # the same request: its job
    # another image with the same key was answered with the first job: another patient's result
    for data, files in [({"model": CLS}, [two]), ({"model": CLS}, [one, two]),
                        ({"model": CLS, "params": '{"threshold": 0.2}'}, [one]), ({"model": f"{CLS}@v1"}, [one])]:
        r = client.post("/v1/jobs", data=data, files=files, headers=key)
        assert r.status_code == 422, (data, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == "idempotency_key_reused" and "another request" in error["message"], error
        assert "new key" in error["hint"]
    assert srv_platform.jobs.stats("inference").counts == {"queued": 1}
    digest = srv_platform.jobs.get(first.json()["id"]).payload["inputs"][0]
    other = srv_platform.jobs.get(client.post("/v1/jobs", data={"model": CLS}, files=[two]).json()["id"])
    by_ref = {"model": CLS, "inputs": [{"digest": digest}]}
    assert client.post("/v1/jobs", json=by_ref, headers={"Idempotency-Key": "ref-1"}).status_code == 202
    assert client.post("/v1/jobs", json=by_ref, headers={"Idempotency-Key": "ref-1"}).status_code == 202
    by_ref["inputs"] = [{"digest": other.payload["inputs"][0]}]
    r = client.post("/v1/jobs", json=by_ref, headers={"Idempotency-Key": "ref-1"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "idempotency_key_reused", r.text


def test_an_idempotency_key_of_200_characters_is_a_key(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform)
    files = [_dicom(srv_template.radiographs[0])]
    key = {"Idempotency-Key": "k" * 200}  # refused with "must be 1-200 characters": the caller's name was counted
    first = client.post("/v1/jobs", data={"model": CLS}, files=files, headers=key)
    assert first.status_code == 202, first.text
    again = client.post("/v1/jobs", data={"model": CLS}, files=files, headers=key)
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", data={"model": CLS}, files=files, headers={"Idempotency-Key": "k" * 199 + "j"})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    r = client.post("/v1/jobs", data={"model": CLS}, files=files, headers={"Idempotency-Key": "k" * 201})
    assert r.status_code == 422 and "200 characters" in r.json()["error"]["message"], r.text


def test_a_client_that_hangs_up_mid_upload_is_not_a_500(srv_platform: Platform, srv_template: SrvTemplate,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import functools

    from medcycle.api.app import create_app
    from medcycle.testing.aio import run_coroutine

    app = create_app(srv_platform, web=False)  # /v1/jobs and /dicomweb included
    dcm = srv_template.radiographs[0].read_bytes()
    form = (b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\n' + CLS.encode() + b"\r\n--XyZ\r\n"
            b'Content-Disposition: form-data; name="files"; filename="a.dcm"\r\nContent-Type: application/dicom\r\n\r\n'
            + dcm + b"\r\n--XyZ--\r\n")
    related = b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + dcm + b"\r\n--XyZ--\r\n"

    async def send_half(path: str, query: bytes, ctype: bytes, body: bytes) -> list[dict[str, Any]]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
                 "headers": [(b"host", b"testserver"), (b"content-type", ctype),
                             (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
        incoming = [{"type": "http.request", "body": body[: len(body) // 2], "more_body": True},
                    {"type": "http.disconnect"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)  # ClientDisconnect escaped the app: a 500 and two tracebacks in the log
        return sent

    with caplog.at_level("INFO"):
        for path, query, ctype, body in [
            ("/v1/jobs", b"", b"multipart/form-data; boundary=XyZ", form),
            ("/dicomweb/studies", f"model={CLS}".encode(), b'multipart/related; type="application/dicom"; boundary=XyZ',
             related)]:
            sent = run_coroutine(functools.partial(send_half, path, query, ctype, body))
            starts = [m["status"] for m in sent if m["type"] == "http.response.start"]
            assert starts == [499], (path, starts)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING") or r.exc_info], caplog.text
    assert "hung up" in caplog.text
    assert srv_platform.jobs.stats("inference").counts == {}


def test_stow_with_a_boundary_the_parser_cannot_take_is_a_400(srv_platform: Platform,
                                                              srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform)
    boundary = "b" * 300  # was a 500: python-multipart refuses boundaries over 256 characters when it is made
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + srv_template.radiographs[0].read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    r = client.post("/dicomweb/studies", params={"model": CLS}, content=body,
                    headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "boundary" in error["message"] and "70 characters" in error["hint"], error
    assert srv_platform.jobs.stats("inference").counts == {}
    ok = body.replace(boundary.encode(), b"b" * 70)
    r = client.post("/dicomweb/studies", params={"model": CLS}, content=ok,
                    headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={"b" * 70}'})
    assert r.status_code == 200, r.text


def test_a_zip_member_with_a_damaged_compressed_stream_is_a_422(srv_platform: Platform,
                                                                srv_template: SrvTemplate) -> None:
    import io
    import zipfile

    client = srv_client(srv_platform)
    dcm = srv_template.radiographs[0].read_bytes()
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as zf:
            zf.writestr("study/image.dcm", dcm)
        damaged = bytearray(buf.getvalue())
        start = damaged.index(b"study/image.dcm") + len("study/image.dcm") + 64  # inside the member's data
        for k in range(start, start + 256):
            damaged[k] ^= 0x5A
        r = client.post("/v1/jobs", data={"model": CLS},
                        files=[("files", ("study.zip", bytes(damaged), "application/zip"))])
        assert r.status_code == 422, (method, r.status_code, r.text)  # deflate was a 500 (zlib.error)
        error = r.json()["error"]
        assert "study.zip: image.dcm cannot be extracted" in error["message"] and error["hint"], error
    assert srv_platform.jobs.stats("inference").counts == {}


def test_a_deployed_worker_delivers_webhooks(srv_platform: Platform, srv_template: SrvTemplate,
                                             receiver: str) -> None:
    from medcycle.serving import routing
    from medcycle.serving.deploy import DeploymentSpec

    cfg = ServingSettings(webhook_backoff_s=0.05)
    client = srv_client(srv_platform, cfg)
    job = client.post("/v1/jobs", data={"model": CLS, "webhook": receiver},
                      files=[_dicom(srv_template.radiographs[0])]).json()
    # what `python -m medcycle.serving.routing` (medcycle deploy, the worker image) runs: it had no webhook
    # sender, so every webhook of a deployed service stayed queued, never sent
    worker = routing.DeployedWorker(srv_platform, DeploymentSpec(model=f"{CLS}@production"), settings=cfg,
                                    idle_wait_ms=50)
    stop = threading.Event()
    thread = threading.Thread(target=routing.serve, args=(worker, stop), daemon=True)
    thread.start()
    try:
        until = time.monotonic() + 60
        while not _Receiver.calls and time.monotonic() < until:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
        worker.close()
    assert _Receiver.calls == ["/hook"], _Receiver.calls
    assert srv_platform.jobs.get(job["id"]).state.value == "succeeded"


def test_form_limits_are_answered_with_what_to_do(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform, ServingSettings(max_files=3))
    dcm = ("a.dcm", srv_template.radiographs[0].read_bytes(), "application/dicom")
    cases: list[tuple[dict[str, Any], int, str]] = [
        # were 400s with Starlette's words and no hint; too many files is a 413 as for a zip or STOW-RS
        ({"data": {"model": CLS}, "files": [("files", dcm)] * 4}, 413, "more than 3 files"),
        ({"data": {"model": CLS, **{f"x{i}": "1" for i in range(40)}}, "files": [("files", dcm)]}, 400,
         "more than 32 fields"),
        ({"data": {"model": CLS, "params": "x" * 70_000}, "files": [("files", dcm)]}, 400, "larger than 64 KiB"),
        ({"content": b"garbage", "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400, "malformed"),
    ]
    for kwargs, status, words in cases:
        r = client.post("/v1/jobs", **kwargs)
        assert r.status_code == status, (words, r.status_code, r.text)
        error = r.json()["error"]
        assert words in error["message"] and error["hint"], (words, error)
    assert srv_platform.jobs.stats("inference").counts == {}


def test_a_nifti_gzip_bomb_is_refused_before_it_is_decoded(srv_platform: Platform) -> None:
    import gzip
    import io

    import nibabel as nib
    import numpy as np

    client = srv_client(srv_platform)

    def nii_gz(shape: tuple[int, ...], dtype: Any, data: bytes | None = None) -> bytes:
        header = nib.Nifti1Header()
        header.set_data_shape(shape)
        header.set_data_dtype(dtype)
        header["vox_offset"] = 352
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            gz.write(header.binaryblock + b"\0" * 4)
            if data is None:
                zeros = b"\0" * (1 << 22)
                for _ in range(int(np.prod(shape)) * np.dtype(dtype).itemsize // len(zeros)):
                    gz.write(zeros)
            else:
                gz.write(data)
        return buf.getvalue()

    # 64 MiB of zeros in a 64 KB upload: decoded whole in the API before (a 1 MB one declaring 1.2 GB took 2.4 GB)
    bomb = nii_gz((2048, 2048, 16), np.uint8)
    assert len(bomb) < 200_000
    # a header that declares 1.2 GB and holds nothing: refused on the header alone, not read as "corrupt"
    claims = nii_gz((2000, 2000, 300), np.uint8, data=b"\0" * 1024)
    for name, blob in [("bomb.nii.gz", bomb), ("claims.nii.gz", claims)]:
        r = client.post("/v1/jobs", data={"model": CLS}, files=[("files", (name, blob, "application/gzip"))])
        assert r.status_code == 413, (name, r.status_code, r.text)
        error = r.json()["error"]
        assert f"{name} expands more than 200×" in error["message"] and "gzip bomb" in error["hint"], error
    assert srv_platform.jobs.stats("inference").counts == {}
    volume = np.random.default_rng(0).integers(0, 1000, (64, 64, 8), dtype=np.int16)
    real = nii_gz(volume.shape, np.int16, data=volume.tobytes(order="F"))
    r = client.post("/v1/jobs", data={"model": CLS}, files=[("files", ("ct.nii.gz", real, "application/gzip"))])
    assert r.status_code == 202, r.text
