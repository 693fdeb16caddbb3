"""What a hospital integrator tries that the other serving tests did not: real DICOMweb clients' ``Accept``
headers, and a store that cannot be written (read-only, full) behind REST, STOW-RS and C-STORE."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from medcycle.platform import Platform
from medcycle.serving.config import ServingSettings
from medcycle.serving.deploy import DeploymentSpec, write_spec
from medcycle.serving.studies import DicomIntake
from medcycle.serving.worker import ServingWorker
from medcycle.testing.dicom import FakePatient, write_ct_series
from tests.serving.core_fixtures import CLS, SrvTemplate, srv_copy
from tests.serving.helpers import (
    DicomwebEnv,
    dicomweb_env,
    related_body,
    serve_app,
    serve_handler,
)

RELATED = 'multipart/related; type="application/dicom"'


Env = DicomwebEnv


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A live API with DICOMweb (uvicorn on loopback) and a small segmentation model, ``ctseg``."""
    with dicomweb_env(tmp_path_factory.mktemp("integrator")) as live:
        yield live


body = related_body


def run_jobs(platform: Platform, job_ids: list[str], timeout: float = 120) -> None:
    worker = ServingWorker(platform, prediction_log=None)
    deadline = time.monotonic() + timeout
    while not all(platform.jobs.get(j).state.finished for j in job_ids):
        assert time.monotonic() < deadline, "jobs did not finish"
        worker.run_once()


@pytest.fixture(scope="module")
def finished_study(env: Env) -> str:
    """A study sent with STOW-RS whose job has run: its SEG and secondary capture can be retrieved."""
    write_spec(env.platform.settings, DeploymentSpec(model="ctseg"))
    study_uid = generate_uid()
    paths = write_ct_series(env.tmp / "accept", FakePatient(patient_id="MRN-ACCEPT-1"), slices=3, study_uid=study_uid)
    with env.client() as http:
        r = http.post("/dicomweb/studies", content=body(*[("application/dicom", p.read_bytes()) for p in paths]),
                      headers={"Content-Type": f"{RELATED}; boundary=XyZ"})
    assert r.status_code == 200, r.text
    run_jobs(env.platform, [row.job_id for row in DicomIntake(env.platform).submissions(study_uid)])
    return study_uid


@pytest.mark.parametrize("accept", [
    # the syntax a viewer prefers first, then one it also takes: was 406 (only the first option was read)
    f"{RELATED}; transfer-syntax=1.2.840.10008.1.2.4.90; q=0.9, {RELATED}; transfer-syntax=*; q=0.5",
    f"{RELATED}; transfer-syntax=1.2.840.10008.1.2.4.50, {RELATED}; transfer-syntax=1.2.840.10008.1.2.1",
    f"{RELATED}; transfer-syntax=1.2.840.10008.1.2.4.70; q=0.2, {RELATED}; transfer-syntax=1.2.840.10008.1.2.1",
])
def test_wado_answers_when_any_option_of_the_accept_header_can_be_met(env: Env, finished_study: str,
                                                                       accept: str) -> None:
    with env.client() as http:
        r = http.get(f"/dicomweb/studies/{finished_study}", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(RELATED)


def test_wado_refuses_what_q_0_rules_out_and_names_what_to_ask(env: Env, finished_study: str) -> None:
    with env.client() as http:
        for accept in [f"{RELATED}; q=0", f"{RELATED}; transfer-syntax=1.2.840.10008.1.2.4.90, {RELATED}; q=0"]:
            r = http.get(f"/dicomweb/studies/{finished_study}", headers={"Accept": accept})
            assert r.status_code == 406, (accept, r.status_code, r.text[:200])
            assert "transfer-syntax=*" in r.json()["error"]["hint"], r.text
        r = http.get(f"/dicomweb/studies/{finished_study}/metadata", headers={"Accept": "application/dicom+json; q=0"})
        assert r.status_code == 406, r.text


# -- a store that cannot be written ----------------------------------------------------------------------------
def _unwritable(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Every object write fails as a read-only or full file system makes it fail (chmod does not stop root)."""
    from medcycle.objects.local import LocalObjectStore

    def put(self: Any, *_args: Any, **_kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code), "/srv/medcycle/objects/tmp/x")

    monkeypatch.setattr(LocalObjectStore, "put", put)


@pytest.fixture
def app_client(srv_platform: Platform) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from medcycle.api.app import create_app
    from medcycle.serving import dicomweb

    app = create_app(srv_platform, web=False)
    if not any(getattr(r, "path", "").startswith("/dicomweb") for r in app.routes):
        app.include_router(dicomweb.router)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_an_object_store_that_cannot_be_written_is_a_503_that_says_what_to_check(
        srv_platform: Platform, srv_template: SrvTemplate, app_client: Any, monkeypatch: pytest.MonkeyPatch,
        code: int) -> None:
    _unwritable(monkeypatch, code)
    data = srv_template.radiographs[0].read_bytes()
    r = app_client.post("/v1/jobs", data={"model": CLS}, files=[("files", ("a.dcm", data, "application/dicom"))])
    assert r.status_code == 503, r.text  # was 500 "an unexpected error occurred … please report it"
    error = r.json()["error"]
    assert error["code"] == "backend_unavailable" and errno.errorcode[code] in error["message"], error
    assert "writable" in error["hint"] and "free space" in error["hint"], error
    assert r.headers["retry-after"] == "5"  # a client backs off, then sends the study again
    r = app_client.post(f"/dicomweb/studies?model={CLS}", content=body(("application/dicom", data)),
                        headers={"Content-Type": f"{RELATED}; boundary=XyZ"})
    assert r.status_code == 503 and "free space" in r.json()["error"]["hint"], r.text
    assert srv_platform.jobs.stats("inference").counts == {}


def test_c_store_into_an_unwritable_store_is_0xa700_and_the_scp_stays_up(
        srv_platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE

    from medcycle.serving.scp import ScpConfig, StoreScp

    paths = write_ct_series(tmp_path / "ct", slices=2)
    scp = StoreScp(srv_platform, ScpConfig(model=CLS, port=0, idle_seconds=0.3, spool_dir=tmp_path / "spool"))
    scp.start()
    try:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        _unwritable(monkeypatch, errno.ENOSPC)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="MEDCYCLE")
        assert assoc.is_established
        status = assoc.send_c_store(pydicom.dcmread(paths[0]))
        assert int(status.Status) == 0xA700 and "retry later" in str(status.ErrorComment), status
        monkeypatch.undo()
        assert int(assoc.send_c_store(pydicom.dcmread(paths[1])).Status) == 0x0000  # the same association goes on
        assoc.release()
    finally:
        scp.stop()


# -- a webhook receiver that answers slowly --------------------------------------------------------------------
class _SlowReceiver(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(0.8)  # a RIS that takes its time; each answer is a success
        _SlowReceiver.calls.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return None


def test_two_senders_and_a_slow_receiver_deliver_each_webhook_once(srv_template: SrvTemplate,
                                                                   tmp_path: Path) -> None:
    from medcycle.serving.webhooks import WebhookSender

    # two workers (each runs a sender) and leases shorter than the sender's backlog takes to deliver: a sender took
    # 16 deliveries at once and posted them one by one, so the later ones' leases ran out meanwhile and the other
    # sender took and posted them too (each URL was called two or three times, and attempts were spent)
    platform = srv_copy(srv_template, tmp_path, auth_enabled=False, job_lease_seconds=2.0)
    try:
        cfg = ServingSettings(webhook_backoff_s=0.05, webhook_timeout_s=5)
        job = platform.jobs.enqueue(cfg.queue, {"model": CLS})
        platform.jobs.cancel(job.id)  # finished: its webhook may go out
        _SlowReceiver.calls = []
        with serve_handler(_SlowReceiver, path="/hook") as url:
            hooks = [platform.jobs.enqueue(cfg.webhook_queue, {"job": job.id, "url": f"{url}?n={k}"},
                                           idempotency_key=f"webhook:{k}", max_attempts=cfg.webhook_attempts).id
                     for k in range(6)]
            senders = [WebhookSender(platform, cfg, name=f"sender-{k}") for k in range(2)]
            stop = threading.Event()
            threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in senders]
            threads[0].start()
            time.sleep(0.3)  # the first takes what it takes; the second comes when the first is busy
            threads[1].start()
            try:
                deadline = time.monotonic() + 30
                while not all(platform.jobs.get(h).state.finished for h in hooks):
                    assert time.monotonic() < deadline, "the webhooks were not delivered"
                    time.sleep(0.1)
                time.sleep(1.0)  # a duplicate in flight would land now
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=20)
                for sender in senders:
                    sender.close()
        assert sorted(_SlowReceiver.calls) == sorted(f"/hook?n={k}" for k in range(6))  # each once
        assert [platform.jobs.get(h).state.value for h in hooks] == ["succeeded"] * 6
    finally:
        platform.close()


# -- REST through a live server: HEAD, nameless file parts -----------------------------------------------------
def test_head_of_a_job_and_of_an_output_answers_the_headers_only(srv_platform: Platform,
                                                                 srv_template: SrvTemplate) -> None:
    from medcycle.api.app import create_app
    from tests.serving.core_fixtures import srv_worker_thread

    app = create_app(srv_platform, web=False)
    data = srv_template.radiographs[0].read_bytes()
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=60, trust_env=False) as http:
        with srv_worker_thread(srv_platform):
            job = http.post("/v1/jobs", params={"wait": 60}, data={"model": CLS},
                            files=[("files", ("a.dcm", data, "application/dicom"))]).json()
        assert job["status"] == "done", job
        head = http.head(f"/v1/jobs/{job['id']}")  # was 405: GET only (curl -I, monitors and proxies use HEAD)
        assert head.status_code == 200 and head.content == b"", (head.status_code, head.text[:200])
        assert head.headers["content-type"] == "application/json"
        assert http.head("/v1/jobs/no-such-job").status_code == 404
        got = http.get(f"/v1/jobs/{job['id']}/outputs/0")
        head = http.head(f"/v1/jobs/{job['id']}/outputs/0")
        assert head.status_code == 200 and head.content == b"", head.status_code
        assert int(head.headers["content-length"]) == len(got.content) > 0
        assert [head.headers[h] for h in ("content-type", "etag")] == [got.headers[h] for h in ("content-type", "etag")]
        assert http.head(f"/v1/jobs/{job['id']}/outputs/99").status_code == 404


def test_file_parts_without_a_filename_are_named_as_such(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    from tests.serving.core_fixtures import srv_client

    client = srv_client(srv_platform)
    data = srv_template.radiographs[0].read_bytes()
    # a client that adds the file without a filename (e.g. .NET MultipartFormDataContent.Add(content, "files"))
    r = client.post("/v1/jobs", data={"model": CLS}, files=[("files", (None, data, "application/dicom"))])
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "have no filename" in error["message"] and "filename=" in error["hint"], error  # was "holds no files"
    assert srv_platform.jobs.stats("inference").counts == {}


# -- a radiograph whose PixelSpacing is 0\0 --------------------------------------------------------------------
def test_a_mask_without_a_usable_spacing_is_written_on_a_1_mm_grid() -> None:
    import gzip

    import nibabel as nib
    import numpy as np

    from medcycle.serving.outputs import nifti_mask

    for spacing in [(1.0, 0.0, 0.0), (float("nan"), 0.5, 0.5), (1.0, -0.2, 0.2)]:
        img: Any = nib.Nifti1Image.from_bytes(
            gzip.decompress(nifti_mask(np.ones((4, 5), np.uint8), None, spacing)))
        zooms = img.header.get_zooms()
        assert all(z > 0 and np.isfinite(z) for z in zooms[:3]), (spacing, zooms)
    singular = np.diag([0.0, 1.0, 1.0, 1.0])
    img = nib.Nifti1Image.from_bytes(gzip.decompress(nifti_mask(np.ones((4, 5), np.uint8), singular, None)))
    assert tuple(img.header.get_zooms()) == (1.0, 1.0)


def test_a_cr_with_a_pixel_spacing_of_zero_gets_its_mask(srv_platform: Platform) -> None:
    from pydicom.data import get_testdata_file

    from tests.serving.core_fixtures import SEG, srv_client, srv_worker_thread

    # pydicom's RG1_J2KI.dcm: a CR (JPEG 2000, MONOCHROME1) with PixelSpacing 0\0, as uncalibrated devices write
    # it; the NIfTI mask's affine could not be decomposed, so the job was retried and dead-lettered
    path = Path(str(get_testdata_file("RG1_J2KI.dcm")))
    client = srv_client(srv_platform)
    with srv_worker_thread(srv_platform):
        r = client.post("/v1/jobs", params={"wait": 60}, data={"model": SEG},
                        files=[("files", (path.name, path.read_bytes(), "application/dicom"))])
    job = r.json()
    assert job["status"] == "done" and job["attempts"] == 1, (job["status"], job["error"])
    kinds = [o["kind"] for o in job["result"]["outputs"]]
    assert kinds[0] == "nifti" and "area_mm2" not in job["result"]["cases"][0]["mask"]["classes"]["lesion"], job


def test_a_seg_that_cannot_be_made_does_not_take_the_secondary_capture_with_it(srv_platform: Platform) -> None:
    from pydicom.data import get_testdata_file

    from tests.serving.core_fixtures import SEG, srv_client, srv_worker_thread

    # pydicom's 693_J2KR.dcm: a CT slice (JPEG 2000) without a Frame of Reference UID, which a SEG requires
    path = Path(str(get_testdata_file("693_J2KR.dcm")))
    client = srv_client(srv_platform)
    with srv_worker_thread(srv_platform):
        job = client.post("/v1/jobs", params={"wait": 60}, data={"model": SEG},
                          files=[("files", (path.name, path.read_bytes(), "application/dicom"))]).json()
    assert job["status"] == "done", job
    (case,) = job["result"]["cases"]
    assert [p for p in case["output_problems"] if "Frame Of Reference" in p], case["output_problems"]
    assert [o["kind"] for o in job["result"]["outputs"]] == ["nifti", "png", "sc"]  # the SC was dropped too


def test_an_output_a_library_fails_to_make_does_not_dead_letter_the_batch(
        srv_platform: Platform, srv_template: SrvTemplate, monkeypatch: pytest.MonkeyPatch) -> None:

    # a library raising on one case's data (as nibabel did on a CR's zero pixel spacing) failed the whole batch:
    # every redelivery batched the same jobs again, and the healthy ones were dead-lettered with the bad one
    from pydicom.data import get_testdata_file

    import medcycle.serving.outputs as outputs
    from medcycle.serving import intake
    from medcycle.serving.worker import ServingWorker
    from tests.serving.core_fixtures import SEG

    real = outputs.nifti_mask
    ct = Path(str(get_testdata_file("CT_small.dcm")))
    poison = pydicom.dcmread(ct).pixel_array.shape
    assert pydicom.dcmread(srv_template.radiographs[0]).pixel_array.shape != poison

    def nifti_mask(mask: Any, affine: Any, spacing: Any = None) -> bytes:
        if tuple(mask.shape[-2:]) == tuple(poison[-2:]):
            raise RuntimeError("a library's bug")
        return real(mask, affine, spacing)

    monkeypatch.setattr(outputs, "nifti_mask", nifti_mask)
    bad = intake.submit(srv_platform, [ct], model=SEG)
    good = [intake.submit(srv_platform, [p], model=SEG) for p in srv_template.radiographs[:2]]
    worker = ServingWorker(srv_platform, prediction_log=None, max_batch_images=16, max_delay_ms=200)
    deadline = time.monotonic() + 60
    jobs = [bad, *good]
    while not all(srv_platform.jobs.get(j.id).state.finished for j in jobs):
        assert time.monotonic() < deadline, [srv_platform.jobs.get(j.id).state for j in jobs]
        worker.run_once()
    states = [(srv_platform.jobs.get(j.id).state.value, srv_platform.jobs.get(j.id).attempts) for j in jobs]
    assert states == [("succeeded", 1)] * 3, states
    from medcycle.serving.results import job_out

    view = job_out(srv_platform, srv_platform.jobs.get(bad.id)).model_dump(mode="json")
    (case,) = view["result"]["cases"]
    assert "the nifti output could not be made (RuntimeError)" in case["output_problems"], case
    for job in good:
        (case,) = job_out(srv_platform, srv_platform.jobs.get(job.id)).model_dump(mode="json")["result"]["cases"]
        assert not case.get("output_problems"), case  # the healthy jobs got every output
