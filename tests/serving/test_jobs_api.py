"""``/v1/jobs`` end to end on a real model: REST submit → worker (thread) → stored result, and every rule around it:
idempotency keys and stored results, deadlines, the bounded queue (429), webhooks, cancel, bad input, OOD."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from medcycle.auth.tables import AuditEventRow
from medcycle.platform import Platform
from medcycle.serving import results
from medcycle.serving.config import ServingSettings
from medcycle.serving.webhooks import SIGNATURE_HEADER, WebhookSender
from medcycle.serving.worker import ServingWorker
from tests.serving.core_fixtures import CLS, SEG, SrvTemplate, srv_client, srv_copy, srv_worker_thread
from tests.serving.helpers import serve_handler


def _dicom(path: Path) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (path.name, path.read_bytes(), "application/dicom"))


def _rows(platform: Platform) -> int:
    with platform.session(write=False) as s:
        return results.count(s)


def test_submit_files_and_read_the_result(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    import nibabel as nib
    from PIL import Image

    client = srv_client(srv_platform)
    png = srv_template.test_pngs[0]
    pixels = np.asarray(Image.open(png), dtype=np.float32)  # the same image as NIfTI, axes (i, j) = (col, row)
    nii = gzip.compress(nib.Nifti1Image(np.ascontiguousarray(pixels.T), np.eye(4)).to_bytes())
    r = client.post("/v1/jobs", data={"model": CLS, "params": '{"threshold": 0.4}'},
                    files=[_dicom(srv_template.radiographs[0]), ("files", (png.name, png.read_bytes(), "image/png")),
                           ("files", ("same.nii.gz", nii, "application/gzip"))])
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/v1/jobs/{job['id']}" and job["status"] == "queued" and job["images"] == 3
    stored = srv_platform.jobs.get(job["id"]).payload
    assert set(stored) >= {"inputs", "cases", "model"} and len(stored["inputs"]) == 3
    assert all(len(d) == 64 for d in stored["inputs"]) and png.name not in json.dumps(stored)  # digests, no names
    with srv_worker_thread(srv_platform):
        r = client.get(f"/v1/jobs/{job['id']}", params={"wait": 60})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "done" and done["result"]["model"]["ref"] == f"{CLS}@v1"
    assert done["result"]["model"]["requested"] == CLS and not done["result"]["cached"]
    cases = done["result"]["cases"]
    assert [c["kind"] for c in cases] == ["dicom", "png", "nifti"] and all(c["status"] == "ok" for c in cases)
    for case in cases:
        assert case["finding"]["threshold"] == 0.4 and set(case["probabilities"][0]) == {"normal", "lesion"}
        assert case["ood"]["ok"] and "image" in case["ood"]["scores"]
    assert cases[1]["probabilities"] == cases[2]["probabilities"]  # PNG and NIfTI of one image: one answer
    kinds = [(o["kind"], o["media_type"]) for o in done["result"]["outputs"]]
    assert kinds == [("png", "image/png"), ("sc", "application/dicom"), ("png", "image/png"), ("png", "image/png")]
    r = client.get(f"/v1/jobs/{job['id']}/outputs/1")
    sc = pydicom.dcmread(io.BytesIO(r.content))
    assert r.headers["content-type"] == "application/dicom" and f"{CLS}@v1" in sc.SoftwareVersions
    assert client.get(f"/v1/jobs/{job['id']}/outputs/9").status_code == 404
    with srv_platform.session(write=False) as s:
        actions = set(s.scalars(select(AuditEventRow.action).where(AuditEventRow.target_id == job["id"])))
        from medcycle.monitoring.tables import PredictionRow

        logged = list(s.scalars(select(PredictionRow).where(PredictionRow.job_id == job["id"])))
    assert actions == {"serving.submit", "serving.output.read"}
    assert len(logged) == 1 and logged[0].model_version == f"{CLS}@v1" and logged[0].outcome == "ok"


def test_sync_facade_answers_200_once_done(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform)
    with srv_worker_thread(srv_platform):
        r = client.post("/v1/jobs", params={"wait": 60}, data={"model": f"{CLS}@v1"},
                        files=[_dicom(srv_template.radiographs[1])])
    assert r.status_code == 200 and r.json()["status"] == "done", r.text


def test_idempotency_keys_and_stored_results(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform)
    files = [_dicom(srv_template.radiographs[2])]
    first = client.post("/v1/jobs", data={"model": CLS}, files=files, headers={"Idempotency-Key": "req-1"}).json()
    again = client.post("/v1/jobs", data={"model": CLS}, files=files, headers={"Idempotency-Key": "req-1"}).json()
    assert first["id"] == again["id"] and srv_platform.jobs.stats("inference").counts == {"queued": 1}
    other = client.post("/v1/jobs", data={"model": CLS}, files=files).json()  # same input, no key: a new job
    assert other["id"] != first["id"]
    worker = ServingWorker(srv_platform, idle_wait_ms=50, max_delay_ms=0, max_batch_images=1)
    worker.run_once()
    worker.run_once()
    a = client.get(f"/v1/jobs/{first['id']}").json()["result"]
    b = client.get(f"/v1/jobs/{other['id']}").json()["result"]
    assert a["key"] == b["key"] and not a["cached"] and b["cached"]  # the second was answered without compute
    assert worker.stats.computed == 1 and worker.stats.cached == 1 and _rows(srv_platform) == 1
    twins = [client.post("/v1/jobs", data={"model": CLS, "params": '{"threshold": 0.2}'}, files=files).json()
             for _ in range(2)]
    batching = ServingWorker(srv_platform, idle_wait_ms=50, max_delay_ms=0, max_batch_images=4)
    assert batching.run_once() == 2  # one batch: the same key twice is computed once
    c, d = (client.get(f"/v1/jobs/{t['id']}").json()["result"] for t in twins)
    assert c["key"] == d["key"] != a["key"] and _rows(srv_platform) == 2  # other params, other result
    assert (batching.stats.computed, batching.stats.cached) == (1, 1) and [c["cached"], d["cached"]] == [False, True]


def test_expired_jobs_are_dropped_before_compute(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform)
    files = [_dicom(srv_template.radiographs[0])]
    stale = client.post("/v1/jobs", data={"model": CLS, "deadline_s": "0.2"}, files=files).json()
    time.sleep(0.4)
    worker = ServingWorker(srv_platform, idle_wait_ms=50, max_delay_ms=1500, max_batch_images=50)
    assert worker.run_once() == 0  # the queue never hands it out
    assert client.get(f"/v1/jobs/{stale['id']}").json()["status"] == "expired"
    late = client.post("/v1/jobs", data={"model": CLS, "deadline_s": "0.8"}, files=files).json()
    assert worker.run_once() == 1  # taken at once, then the batch waits 1.5 s for more: the deadline passes
    view = client.get(f"/v1/jobs/{late['id']}").json()
    assert view["status"] == "expired" and view["result"] is None and worker.stats.expired == 1
    assert _rows(srv_platform) == 0 and worker.stats.computed == 0


def test_a_full_queue_answers_429_with_retry_after(srv_template: SrvTemplate, tmp_path: Path) -> None:
    platform = srv_copy(srv_template, tmp_path, auth_enabled=False, job_queue_limit=1)
    try:
        client = srv_client(platform)
        files = [_dicom(srv_template.radiographs[0])]
        assert client.post("/v1/jobs", data={"model": CLS}, files=files).status_code == 202
        r = client.post("/v1/jobs", data={"model": CLS}, files=files)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "queue_full" and r.json()["error"]["hint"]
        # refused before the body is read: even a body it would refuse (415) gets the 429, and nothing is stored
        objects = sum(1 for _ in platform.objects.list())
        r = client.post("/v1/jobs", content=b"not a study", headers={"Content-Type": "text/plain"})
        assert r.status_code == 429 and sum(1 for _ in platform.objects.list()) == objects
    finally:
        platform.close()


class _Hook(BaseHTTPRequestHandler):
    calls: list[tuple[int, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        code = 500 if not _Hook.calls else 200  # the first delivery fails: the webhook must be retried
        _Hook.calls.append((code, dict(self.headers), body))
        self.send_response(code)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return None


@pytest.fixture
def hook_server() -> Iterator[str]:
    _Hook.calls = []
    with serve_handler(_Hook) as url:
        yield url


def test_webhooks_are_delivered_with_retries_and_signed(srv_platform: Platform, srv_template: SrvTemplate,
                                                        hook_server: str) -> None:
    cfg = ServingSettings(webhook_backoff_s=0.05)
    client = srv_client(srv_platform, cfg)
    job = client.post("/v1/jobs", data={"model": CLS, "webhook": hook_server},
                      files=[_dicom(srv_template.radiographs[0])]).json()
    sender = WebhookSender(srv_platform, cfg)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with srv_worker_thread(srv_platform, settings=cfg):
            until = time.monotonic() + 60
            while len(_Hook.calls) < 2 and time.monotonic() < until:
                time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
        sender.close()
    assert [c[0] for c in _Hook.calls] == [500, 200]
    _, headers, body = _Hook.calls[1]
    sent = json.loads(body)
    assert sent["id"] == job["id"] and sent["status"] == "done" and sent["result"]["model"]["ref"] == f"{CLS}@v1"
    secret = srv_platform.settings.secret_key.get_secret_value().encode()
    assert headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    hooks = srv_platform.jobs.list(cfg.webhook_queue)
    assert len(hooks) == 1 and hooks[0].state.value == "succeeded" and hooks[0].attempts == 2


def test_cancel_a_queued_job(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform)
    job = client.post("/v1/jobs", data={"model": CLS}, files=[_dicom(srv_template.radiographs[0])]).json()
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert ServingWorker(srv_platform, idle_wait_ms=50).run_once() == 0
    assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"  # again: a no-op
    assert client.delete("/v1/jobs/nope").status_code == 404
    done = client.post("/v1/jobs", data={"model": CLS}, files=[_dicom(srv_template.radiographs[1])]).json()
    assert ServingWorker(srv_platform, idle_wait_ms=50, max_delay_ms=0).run_once() == 1
    r = client.delete(f"/v1/jobs/{done['id']}")
    assert r.status_code == 409 and "already finished (done)" in r.json()["error"]["message"], r.text
    assert client.get(f"/v1/jobs/{done['id']}").json()["status"] == "done"  # the outcome stands


def test_objects_by_digest_are_de_identified_unless_a_clean_intake_stored_them(srv_platform: Platform,
                                                                            srv_template: SrvTemplate) -> None:
    from medcycle.catalog.tables import InstanceRow

    client = srv_client(srv_platform)
    raw = srv_template.radiographs[0].read_bytes()
    original = pydicom.dcmread(io.BytesIO(raw))
    identifiers = [str(original.PatientName), str(original.PatientID), str(original.StudyInstanceUID),
                   str(original.SOPInstanceUID)]
    assert all(len(v) > 3 and v.encode() in raw for v in identifiers)
    raw_digest = client.post("/v1/objects", content=raw).json()["digest"]  # stored as sent: raw
    r = client.post("/v1/jobs", json={"model": CLS, "inputs": [{"digest": raw_digest}]})
    assert r.status_code == 202, r.text
    [used] = srv_platform.jobs.get(r.json()["id"]).payload["inputs"]
    assert used != raw_digest  # the job references the cleaned bytes, never the raw object
    with srv_platform.objects.open(used) as fh:
        cleaned = fh.read()
    assert not any(v.encode() in cleaned for v in identifiers)
    assert pydicom.dcmread(io.BytesIO(cleaned)).PatientIdentityRemoved == "YES"
    again = client.post("/v1/jobs", json={"model": CLS, "inputs": [{"digest": used}]})  # an earlier job's input
    assert srv_platform.jobs.get(again.json()["id"]).payload["inputs"] == [used]
    with srv_platform.session(write=False) as s:
        instance = s.scalars(select(InstanceRow.digest).where(InstanceRow.format == "dicom")).first()
    assert instance is not None
    r = client.post("/v1/jobs", json={"model": CLS, "inputs": [{"digest": instance}]})  # ingested: taken as stored
    assert srv_platform.jobs.get(r.json()["id"]).payload["inputs"] == [instance]
    original.BurnedInAnnotation = "YES"
    burned = io.BytesIO()
    original.save_as(burned, enforce_file_format=True)
    burned_digest = client.post("/v1/objects", content=burned.getvalue()).json()["digest"]
    r = client.post("/v1/jobs", json={"model": CLS, "inputs": [{"digest": burned_digest}]})
    assert r.status_code == 422 and "patient data in its pixels" in r.json()["error"]["message"], r.text
    assert srv_platform.jobs.stats("inference").counts == {"queued": 3}


def test_non_image_dicom_classes_are_refused_at_the_door(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    """RT Dose and SEG carry pixel data but are no image a model takes: refused as STOW-RS and C-STORE do."""
    from pydicom.data import get_testdata_file

    client = srv_client(srv_platform)
    for name, cls in [("rtdose.dcm", "RT Dose Storage"), ("liver.dcm", "Segmentation Storage"),
                      ("rtplan.dcm", "RT Plan Storage")]:
        path = get_testdata_file(name)
        assert isinstance(path, str)
        r = client.post("/v1/jobs", data={"model": CLS}, files=[_dicom(Path(path))])
        assert r.status_code == 422, (name, r.status_code, r.text)
        error = r.json()["error"]
        assert f"{name} is of SOP class" in error["message"] and cls in error["message"], error
        assert "CT, MR, CR, DX" in error["hint"]
    assert srv_platform.jobs.stats("inference").counts == {}


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_bad_requests_get_clear_4xx(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    client = srv_client(srv_platform, ServingSettings(max_upload_bytes=200_000))
    dcm = srv_template.radiographs[0].read_bytes()
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415, "content type"),
        ({"data": {"model": CLS}, "files": [("files", ("a.dcm", dcm[:-300], "application/dicom"))]}, 422, "truncated"),
        ({"data": {"model": CLS}, "files": [("files", ("notes.txt", b"not an image", "text/plain"))]}, 422,
         "notes.txt is not DICOM"),
        ({"data": {"model": CLS}, "files": [("files", ("x.zip", _zip({"../../etc/passwd": dcm}), "application/zip"))]},
         422, "unsafe name"),
        ({"data": {"model": "nope"}, "files": [("files", ("a.dcm", dcm, "application/dicom"))]}, 404, "no model"),
        ({"data": {"model": f"{CLS}@v9"}, "files": [("files", ("a.dcm", dcm, "x"))]}, 404, "no version"),
        ({"data": {"model": CLS, "params": '{"threshold": 7}'}, "files": [("files", ("a.dcm", dcm, "x"))]}, 422,
         "params"),
        ({"data": {"model": CLS, "webhook": "ftp://x"}, "files": [("files", ("a.dcm", dcm, "x"))]}, 400, "webhook"),
        ({"data": {"model": CLS}, "files": [("files", ("big.dcm", b"\0" * 300_000, "x"))]}, 413, "bytes"),
        ({"data": {"model": CLS}}, 415, "content type"),  # a form without files is urlencoded, not multipart
        ({"json": {"model": CLS, "inputs": [{"digest": "0" * 64}]}}, 404, "not in the object store"),
        ({"json": {"model": CLS, "inputs": []}}, 422, "inputs"),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422, "invalid request"),
    ]
    for kwargs, status, words in cases:
        r = client.post("/v1/jobs", **kwargs)
        assert r.status_code == status, (kwargs.get("data"), r.status_code, r.text)
        error = r.json()["error"]
        assert words in error["message"] and error["hint"], (words, error)
    assert srv_platform.jobs.stats("inference").counts == {}  # nothing was enqueued
    assert client.get("/v1/jobs/nope").status_code == 404


def test_a_ct_sent_to_the_chest_model_is_refused_by_header_rules(srv_platform: Platform,
                                                                 srv_template: SrvTemplate) -> None:
    cfg = ServingSettings(header_rules={CLS: {"modality": ["DX", "CR"], "body_part": ["CHEST"]}})
    client = srv_client(srv_platform, cfg)
    study = _zip({f"ct/{p.name}": p.read_bytes() for p in srv_template.ct_series})
    job = client.post("/v1/jobs", data={"model": CLS},
                      files=[("files", ("study.zip", study, "application/zip"))]).json()
    assert job["images"] == len(srv_template.ct_series)  # one series, counted in slices
    with srv_worker_thread(srv_platform, settings=cfg):
        view = client.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
    assert view["status"] == "refused", view
    (case,) = view["result"]["cases"]
    assert case["status"] == "refused" and case["finding"] is None and "probabilities" not in case
    assert case["ood"]["layer"] == "header" and any("modality CT" in r for r in case["ood"]["reasons"])
    assert view["result"]["outputs"] == []


def test_segmentation_outputs_mask_and_dicom_seg_agree(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    import highdicom as hd
    import nibabel as nib

    client = srv_client(srv_platform)
    source = srv_template.radiographs[0]
    job = client.post("/v1/jobs", data={"model": SEG}, files=[_dicom(source)]).json()
    with srv_worker_thread(srv_platform):
        view = client.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
    assert view["status"] == "done", view
    (case,) = view["result"]["cases"]
    assert case["mask"]["classes"]["lesion"]["voxels"] >= 0 and "area_mm2" in case["mask"]["classes"]["lesion"]
    outputs = {o["kind"]: n for n, o in enumerate(view["result"]["outputs"])}
    assert set(outputs) == {"nifti", "png", "seg", "sc"}
    nii = client.get(f"/v1/jobs/{job['id']}/outputs/{outputs['nifti']}").content
    mask = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(nii)).dataobj).T  # (i, j) -> (rows, cols)
    seg_bytes = client.get(f"/v1/jobs/{job['id']}/outputs/{outputs['seg']}").content
    seg = hd.seg.segread(io.BytesIO(seg_bytes))
    stored_input = pydicom.dcmread(io.BytesIO(srv_platform.objects.get(
        srv_platform.jobs.get(job["id"]).payload["inputs"][0])), stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == stored_input.SeriesInstanceUID
    assert str(stored_input.PatientID) != str(pydicom.dcmread(source).PatientID)  # intake de-identified it
    pixels = seg.get_pixels_by_source_instance([str(stored_input.SOPInstanceUID)], segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)
    assert mask.shape == pixels.shape[1:3] and np.array_equal(pixels[0, ..., 0] != 0, mask == 1)
    assert int((mask == 1).sum()) == case["mask"]["classes"]["lesion"]["voxels"]
    assert f"{SEG}@v1" in seg.SoftwareVersions
