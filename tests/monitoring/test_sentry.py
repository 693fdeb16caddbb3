"""Sentry: off by default; with a DSN, envelopes reach a (local, real) endpoint with patient data scrubbed."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from medcycle.monitoring import sentry
from medcycle.monitoring.scrub import REPLACEMENT, scrub, scrub_text
from medcycle.testing.platform import make_settings

SECRETS = ("Doe", "Jane", "MRN0012345", "1.2.840.113619.2.55.3", "19700102", "jane.doe@example.org",
           "ACC-20240105")


def test_scrub_text_and_structures() -> None:
    text = ("failed on PatientName=Doe^Jane PatientID: MRN0012345 study 1.2.840.113619.2.55.3 born 19700102, "
            "mail jane.doe@example.org, AccessionNumber 'ACC-20240105' at /in/DOE^JANE/IM1.dcm")
    out = scrub_text(text)
    for secret in SECRETS:
        assert secret.lower() not in out.lower(), (secret, out)
    assert "failed on PatientName=" in out and REPLACEMENT in out
    data = scrub({"headers": {"Authorization": "Bearer mct_x", "Cookie": "s=1", "Accept": "*/*"},
                  "patient_name": "Doe^Jane", "values": [["PatientID", "MRN0012345"]], "n": 3})
    assert data["headers"] == {"Authorization": REPLACEMENT, "Cookie": REPLACEMENT, "Accept": "*/*"}
    assert data["patient_name"] == REPLACEMENT and data["values"] == [["PatientID", REPLACEMENT]] and data["n"] == 3


def test_off_without_a_dsn(tmp_path: Path) -> None:
    assert sentry.init_sentry(make_settings(tmp_path / "home"), component="api") is False
    assert not sentry.enabled()


@pytest.fixture
def envelopes() -> Iterator[tuple[str, list[bytes]]]:
    """A local stand-in for Sentry's ingest endpoint: stores each envelope body (decompressed)."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            received.append(raw)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://publickey@127.0.0.1:{server.server_address[1]}/42", received
    finally:
        sentry.shutdown()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _events(received: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for body in received:
        lines = body.split(b"\n")
        for i, line in enumerate(lines[:-1]):
            try:
                header = json.loads(line)
            except ValueError:
                continue
            if isinstance(header, dict) and header.get("type") == "event":
                out.append(json.loads(lines[i + 1]))
    return out


def test_envelopes_reach_the_endpoint_without_patient_identifiers(tmp_path: Path,
                                                                  envelopes: tuple[str, list[bytes]]) -> None:
    dsn, received = envelopes
    settings = make_settings(tmp_path / "home")
    object.__setattr__(settings, "sentry_dsn", dsn)  # the setting is the lead's; read through getattr
    assert sentry.init_sentry(settings, component="worker") and sentry.enabled()
    import sentry_sdk

    patient_name = "Doe^Jane"  # a local variable Sentry must not ship
    sentry_sdk.add_breadcrumb(message=f"reading PatientID=MRN0012345 for {patient_name}")
    try:
        raise ValueError(f"cannot decode PatientName={patient_name} (StudyInstanceUID 1.2.840.113619.2.55.3, "
                         "born 19700102, jane.doe@example.org, AccessionNumber ACC-20240105)")
    except ValueError:
        sentry_sdk.capture_exception()
    sentry_sdk.set_extra("header", {"PatientName": "Doe^Jane", "Modality": "DX"})
    sentry_sdk.capture_message("second event for PatientID MRN0012345")

    class Row:
        id, key, kind, severity, title, count = "a" * 32, "drift:m@v1:intensity", "drift", "page", "Drift", 3
        model_version, links = "m@v1", {"dashboard": "/ui/monitoring"}

    assert sentry.capture_alert(Row(), "http://medcycle.local") is not None
    sentry_sdk.flush(timeout=10)
    deadline = time.monotonic() + 10
    while len(_events(received)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    events = _events(received)
    assert len(events) == 3, f"{len(received)} envelopes, {len(events)} events"
    raw = b"\n".join(received).decode("utf-8", "replace")
    for secret in SECRETS:
        assert secret not in raw, secret
    error = events[0]
    assert error["exception"]["values"][0]["type"] == "ValueError"
    assert "PatientName=" in error["exception"]["values"][0]["value"]
    assert error["tags"]["component"] == "worker"
    assert all("vars" not in f for f in error["exception"]["values"][0]["stacktrace"]["frames"])
    alert = events[2]
    assert alert["fingerprint"] == ["medcycle-alert", "drift:m@v1:intensity"]
    assert alert["contexts"]["alert"]["links"] == {"dashboard": "http://medcycle.local/ui/monitoring"}
