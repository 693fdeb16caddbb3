"""DICOMweb on a live server: a real client's STOW → worker → QIDO → WADO round trip, and PS3.18 failure answers."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medcycle.auth import audit
from medcycle.jobs.base import JobState
from medcycle.platform import Platform
from medcycle.serving.deploy import DeploymentSpec, deploy_dir, write_spec
from medcycle.serving.multipart import write_related
from medcycle.serving.studies import DicomIntake
from medcycle.serving.worker import ServingWorker
from medcycle.testing.dicom import FakePatient, write_ct_series
from tests.serving.helpers import DicomwebEnv, dicomweb_env, related_body, token_for

DICOM = 'multipart/related; type="application/dicom"; boundary=XyZ'


Env = DicomwebEnv


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with dicomweb_env(tmp_path_factory.mktemp("dicomweb")) as live:
        yield live


def run_jobs(platform: Platform, job_ids: list[str], timeout: float = 120) -> None:
    worker = ServingWorker(platform, prediction_log=None)
    deadline = time.monotonic() + timeout
    while not all(platform.jobs.get(j).state.finished for j in job_ids):
        assert time.monotonic() < deadline, "jobs did not finish"
        worker.run_once()


body = related_body


def test_a_dicomweb_client_round_trip_gets_the_results_back_re_identified(env: Env) -> None:
    from dicomweb_client.api import DICOMwebClient
    from highdicom.seg import Segmentation

    patient = FakePatient(patient_id="MRN-ROUNDTRIP-1")
    study_uid = generate_uid()
    originals = [pydicom.dcmread(p) for p in write_ct_series(env.tmp / "rt", patient, slices=8, study_uid=study_uid)]
    client = DICOMwebClient(url=f"{env.url}/dicomweb", headers=env.auth)
    write_spec(env.platform.settings, DeploymentSpec(model="ctseg"))  # what STOW runs without ?model=

    stored = client.store_instances(datasets=originals)
    assert len(stored.ReferencedSOPSequence) == 8 and "FailedSOPSequence" not in stored
    assert stored.RetrieveURL.endswith(f"/dicomweb/studies/{study_uid}")
    (row,) = DicomIntake(env.platform).submissions(study_uid)
    job = env.platform.jobs.get(row.job_id)
    assert job.payload["source"] == "stow-rs" and job.payload["model"] == "ctseg"
    secrets = [s.encode() for s in patient.all_identifiers()] + [study_uid.encode()]
    for digest in job.payload["inputs"]:  # only de-identified instances were stored
        assert not [s for s in secrets if s in env.platform.objects.get(digest)]

    assert client.search_for_studies(search_filters={"StudyInstanceUID": study_uid}) == []  # no result yet
    run_jobs(env.platform, [row.job_id])
    assert env.platform.jobs.get(row.job_id).state == JobState.SUCCEEDED

    (study,) = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
    assert study["0020000D"]["Value"] == [study_uid]
    assert study["00100020"]["Value"] == [patient.patient_id]  # re-identified for the hospital
    assert sorted(study["00080061"]["Value"]) == ["OT", "SEG"] and study["00201206"]["Value"] == [2]
    series = client.search_for_series(study_uid)
    seg_series = next(s["0020000E"]["Value"][0] for s in series if s["00080060"]["Value"] == ["SEG"])

    (seg,) = client.retrieve_series(study_uid, seg_series)
    assert seg.StudyInstanceUID == study_uid and seg.PatientID == patient.patient_id
    assert str(seg.PatientName) == patient.name and seg.AccessionNumber == patient.accession
    referenced = {str(r.ReferencedSOPInstanceUID) for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(ds.SOPInstanceUID) for ds in originals}  # points at the PACS's own instances
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == originals[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == originals[0].FrameOfReferenceUID
    assert Segmentation.from_dataset(seg).number_of_segments == 1  # highdicom opens it
    everything = client.retrieve_study(study_uid)
    assert sorted(str(d.Modality) for d in everything) == ["OT", "SEG"]
    implicit = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2'
    with env.client() as http:  # no transcoding: a syntax the results are not stored in is refused
        r = http.get(f"/dicomweb/studies/{study_uid}", headers={"Accept": implicit})
        assert r.status_code == 406 and "transfer syntax" in r.json()["error"]["message"]
        explicit = implicit.replace("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
        assert http.get(f"/dicomweb/studies/{study_uid}", headers={"Accept": explicit}).status_code == 200
    with env.platform.session(write=False) as session:  # reads of results are audited
        actions = {e.action for e in audit.query(session, actor="admin", limit=500)}
    assert {"dicomweb.store", "dicomweb.search", "dicomweb.retrieve"} <= actions


def test_resending_a_study_finds_its_job(env: Env) -> None:
    paths = write_ct_series(env.tmp / "again", slices=3)
    payload = body(*[("application/dicom", p.read_bytes()) for p in paths])
    with env.client() as http:
        first = http.post("/dicomweb/studies", content=payload, headers={"Content-Type": DICOM}, params={
            "model": "ctseg"})
        second = http.post("/dicomweb/studies", content=payload, headers={"Content-Type": DICOM}, params={
            "model": "ctseg"})
    assert first.status_code == second.status_code == 200
    assert first.headers["x-medcycle-jobs"] == second.headers["x-medcycle-jobs"] != ""


def test_bad_parts_get_ps3_18_failures_that_name_the_part(env: Env) -> None:
    good = write_ct_series(env.tmp / "mixed", slices=1)[0].read_bytes()
    rtplan = get_testdata_file("rtplan.dcm")
    assert isinstance(rtplan, str)
    payload = body(("application/dicom", good), ("text/plain", b"hello"), ("application/dicom", b"not dicom at all"),
                   ("application/dicom", Path(rtplan).read_bytes()))
    with env.client() as http:
        r = http.post("/dicomweb/studies?model=ctseg", content=payload, headers={"Content-Type": DICOM})
        assert r.status_code == 202, r.text
        assert r.headers["content-type"].startswith("application/dicom+json")
        answer = pydicom.Dataset.from_json(r.json())
        assert len(answer.ReferencedSOPSequence) == 1
        (failed,) = answer.FailedSOPSequence
        assert failed.FailureReason == 0x0122 and failed.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.5"
        others = {int(o.FailureReason): o.ErrorComment for o in answer.OtherFailuresSequence}
        assert [o.ErrorComment[:6] for o in answer.OtherFailuresSequence] == ["part 2", "part 3"]
        assert set(others) == {0xC000}
        warnings = r.headers.get_list("warning")
        assert len(warnings) == 3 and all(w.startswith("299 ") for w in warnings)
        assert "part 2: Content-Type text/plain" in warnings[0] and "part 4" in warnings[2]

        r = http.post("/dicomweb/studies?model=ctseg", content=body(("text/plain", b"x")),
                      headers={"Content-Type": DICOM})
        assert r.status_code == 409 and "OtherFailuresSequence" in pydicom.Dataset.from_json(r.json())

        other_study = generate_uid()
        r = http.post(f"/dicomweb/studies/{other_study}?model=ctseg", content=body(("application/dicom", good)),
                      headers={"Content-Type": DICOM})
        assert r.status_code == 409
        assert pydicom.Dataset.from_json(r.json()).FailedSOPSequence[0].FailureReason == 0xA900


@pytest.mark.parametrize(("content_type", "payload", "status", "words"), [
    ("application/json", b"{}", 415, "multipart/related"),
    ('multipart/related; type="application/json"; boundary=XyZ', body(("application/json", b"{}")), 415, "type"),
    ('multipart/related; type="application/dicom"', b"--XyZ\r\n\r\nx\r\n--XyZ--\r\n", 400, "boundary"),
    (DICOM, b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 4000, 400, "truncated"),
    (DICOM, b"--XyZ--\r\n", 400, "no parts"),
])
def test_malformed_requests_get_a_clear_4xx(env: Env, content_type: str, payload: bytes, status: int,
                                            words: str) -> None:
    with env.client() as http:
        r = http.post("/dicomweb/studies?model=ctseg", content=payload, headers={"Content-Type": content_type})
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert words in error["message"] and error["hint"]
        assert http.get("/livez").status_code == 200  # the server stays up


def test_limits_models_and_permissions(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_ct_series(env.tmp / "limits", slices=1)[0].read_bytes()
    (deploy_dir(env.platform.settings) / "deployment.json").unlink(missing_ok=True)
    with env.client() as http:
        monkeypatch.setenv("MEDCYCLE_SERVING_MAX_UPLOAD_BYTES", "1000")
        r = http.post("/dicomweb/studies?model=ctseg", content=body(("application/dicom", good)),
                      headers={"Content-Type": DICOM})
        assert r.status_code == 413 and "at most 1000" in r.json()["error"]["message"]
        monkeypatch.delenv("MEDCYCLE_SERVING_MAX_UPLOAD_BYTES")
        r = http.post("/dicomweb/studies", content=body(("application/dicom", good)), headers={"Content-Type": DICOM})
        assert r.status_code == 400 and "deploy" in r.json()["error"]["hint"]
        r = http.post("/dicomweb/studies?model=nosuch", content=body(("application/dicom", good)),
                      headers={"Content-Type": DICOM})
        assert r.status_code == 404
    viewer = token_for(env.platform, "vera", role="viewer")
    with httpx.Client(base_url=env.url, timeout=30, trust_env=False) as anonymous:
        assert anonymous.post("/dicomweb/studies", content=b"", headers={"Content-Type": DICOM}).status_code == 401
        assert anonymous.get("/dicomweb/studies", headers={"Authorization": f"Bearer {viewer}"}).status_code == 403


def test_wado_negotiates_and_qido_warns_about_unsupported_keys(env: Env) -> None:
    with env.client() as http:
        r = http.get(f"/dicomweb/studies/{generate_uid()}/series/{generate_uid()}")
        assert r.status_code == 404 and r.json()["error"]["hint"]
        r = http.get(f"/dicomweb/studies/{generate_uid()}", headers={"Accept": "application/json"})
        assert r.status_code == 406 and "multipart/related" in r.json()["error"]["hint"]
        r = http.get("/dicomweb/studies", params={"PatientBirthDate": "19630412"})
        assert r.status_code == 200 and "PatientBirthDate" in r.headers["warning"]
        assert isinstance(r.json(), list)


def test_the_wado_answer_is_a_real_multipart_of_dicom_files() -> None:
    from medcycle.serving.multipart import new_boundary

    ct = get_testdata_file("CT_small.dcm")
    assert isinstance(ct, str)
    boundary = new_boundary()
    raw = write_related([Path(ct).read_bytes()] * 2, boundary, "application/dicom")
    parts = [p for p in raw.split(f"--{boundary}".encode()) if p.strip(b"\r\n-")]
    assert len(parts) == 2
    data = parts[0].split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")
    assert pydicom.dcmread(io.BytesIO(data)).Modality == "CT"


def test_a_return_address_is_sealed_and_opens_only_with_its_key(tmp_path: Path) -> None:
    from medcycle.catalog.deid import Pseudonymizer
    from medcycle.errors import IntegrityError
    from medcycle.serving.reid import Sealer, capture, reidentify

    patient = FakePatient(patient_id="MRN-SEALED-7")
    ds = pydicom.dcmread(write_ct_series(tmp_path / "s", patient, slices=1)[0])
    key = b"k" * 32
    address = capture(ds, Pseudonymizer(key))
    sealed = Sealer(key).seal(address)
    assert Sealer(key).seal(address) == sealed  # the same study seals to the same bytes (idempotent intake)
    assert patient.patient_id.encode() not in sealed and str(ds.StudyInstanceUID).encode() not in sealed
    assert patient.patient_id not in repr(address)
    opened = Sealer(key).open(sealed)
    assert opened == address and opened.patient["PatientID"] == patient.patient_id
    with pytest.raises(IntegrityError) as wrong:
        Sealer(b"x" * 32).open(sealed)
    assert wrong.value.hint
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(IntegrityError):
        Sealer(key).open(tampered)

    result = pydicom.Dataset()  # a result made from the de-identified instance, re-identified at egress
    pseudo = Pseudonymizer(key)
    result.StudyInstanceUID = pseudo.uid(str(ds.StudyInstanceUID))
    result.PatientID, result.PatientName, result.PatientIdentityRemoved = "pseudonym", "", "YES"
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = pseudo.uid(str(ds.SOPInstanceUID))
    result.ReferencedInstanceSequence = [item]
    result.SeriesInstanceUID = own = generate_uid()
    reidentify(result, opened)
    assert result.StudyInstanceUID == ds.StudyInstanceUID and result.PatientID == patient.patient_id
    assert result.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert result.SeriesInstanceUID == own and result.PatientIdentityRemoved == "NO"


def test_pynetdicom_storescu_sends_a_study_and_its_results_come_back_over_wado(env: Env) -> None:
    import subprocess
    import sys

    from dicomweb_client.api import DICOMwebClient

    from medcycle.serving.scp import ScpConfig, StoreScp

    patient = FakePatient(patient_id="MRN-STORESCU-3")
    study_uid = generate_uid()
    folder = env.tmp / "storescu"
    originals = [pydicom.dcmread(p) for p in write_ct_series(folder, patient, slices=6, study_uid=study_uid)]
    scp = StoreScp(env.platform, ScpConfig(model="ctseg", port=0, idle_seconds=0.3, spool_dir=env.tmp / "spool"))
    scp.start()
    try:
        sent = subprocess.run([sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(scp.port),
                               str(folder), "-r", "-cx", "-aet", "PACS", "-aec", "MEDCYCLE"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 10
        while not scp.assembler.submitted:
            assert time.monotonic() < deadline, "the SCP did not submit the study"
            time.sleep(0.05)
    finally:
        scp.stop()
    (submitted,) = scp.assembler.submitted
    assert submitted.instances == 6
    run_jobs(env.platform, [submitted.job_id])

    client = DICOMwebClient(url=f"{env.url}/dicomweb", headers=env.auth)
    series = client.search_for_series(study_uid)
    seg_series = next(s["0020000E"]["Value"][0] for s in series if s["00080060"]["Value"] == ["SEG"])
    (seg,) = client.retrieve_series(study_uid, seg_series)
    assert seg.StudyInstanceUID == study_uid and seg.PatientID == patient.patient_id
    referenced = {str(r.ReferencedSOPInstanceUID) for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(ds.SOPInstanceUID) for ds in originals}


def test_qido_matches_every_value_of_a_key_given_more_than_once(env: Env) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=f"{env.url}/dicomweb", headers=env.auth)
    write_spec(env.platform.settings, DeploymentSpec(model="ctseg"))  # what STOW runs without ?model=
    uids = [generate_uid(), generate_uid()]
    for n, uid in enumerate(uids):
        patient = FakePatient(patient_id=f"MRN-LIST-{n}")
        client.store_instances(datasets=[pydicom.dcmread(p) for p in write_ct_series(
            env.tmp / f"list-{n}", patient, slices=2, study_uid=uid)])
    rows = [r for uid in uids for r in DicomIntake(env.platform).submissions(uid)]
    run_jobs(env.platform, [r.job_id for r in rows])
    # dicomweb-client sends a list as the key repeated (StudyInstanceUID=a&StudyInstanceUID=b): only the last was
    # matched, so a PACS asking for two studies silently got one
    found = client.search_for_studies(search_filters={"StudyInstanceUID": uids})
    assert sorted(s["0020000D"]["Value"][0] for s in found) == sorted(uids)
    with env.client() as http:
        r = http.get("/dicomweb/studies", params={"StudyInstanceUID": ",".join(uids)})
        assert r.status_code == 200 and len(r.json()) == 2  # the comma list of PS3.18 still works
        r = http.get("/dicomweb/studies", params=[("0020000D", uids[0]), ("StudyInstanceUID", uids[1])])
        assert len(r.json()) == 2
    # a PACS asking for one patient's studies gets that patient's only (matched on the re-identified attributes)
    def studies(**keys: Any) -> list[str]:
        with env.client() as http:
            r = http.get("/dicomweb/studies", params={**keys, "limit": 1000})
        assert r.status_code == 200 and "warning" not in r.headers, (keys, r.headers.get("warning"))
        return sorted(s["0020000D"]["Value"][0] for s in r.json() if s["0020000D"]["Value"][0] in uids)

    assert studies(PatientID="MRN-LIST-1") == [uids[1]] and studies(PatientID="MRN-LIST") == []
    assert studies(**{"00100020": "MRN-LIST-0"}) == [uids[0]]
    assert studies(PatientID="MRN-LIST-0,MRN-LIST-1") == sorted(uids)
    assert studies(PatientName="sokolova*") == sorted(uids)  # wildcards, case-insensitive
    assert studies(PatientName="Sokolova^A?na*", PatientID="MRN-LIST-0") == [uids[0]]
    assert studies(PatientName="Ivanov*") == [] and studies(PatientID="") == sorted(uids)  # empty: universal
    assert studies(ModalitiesInStudy="SEG") == sorted(uids) and studies(ModalitiesInStudy="MR") == []
    date = client.search_for_studies(search_filters={"StudyInstanceUID": uids[0]})[0]["00080020"]["Value"][0]
    assert studies(StudyDate=date, PatientID="MRN-LIST-0") == [uids[0]]
    assert studies(StudyDate=f"{date}-", PatientID="MRN-LIST-0") == [uids[0]]
    assert studies(StudyDate=f"-{int(date) - 1}", PatientID="MRN-LIST-0") == []
    found = client.search_for_studies(search_filters={"PatientID": "MRN-LIST-1"})
    assert [s["0020000D"]["Value"][0] for s in found] == [uids[1]]
    series = client.search_for_series(uids[0], search_filters={"Modality": ["SEG", "OT"]})
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["OT", "SEG"]
    both = [s["0020000E"]["Value"][0] for s in series]
    again = client.search_for_series(uids[0], search_filters={"SeriesInstanceUID": both})
    assert sorted(s["0020000E"]["Value"][0] for s in again) == sorted(both)


def test_stow_ignores_a_preamble_and_an_epilogue(env: Env) -> None:
    # RFC 2046 5.1.1: text before the first boundary and after the last is to be ignored; a preamble was refused
    good = write_ct_series(env.tmp / "preamble", slices=1)[0].read_bytes()
    payload = b"This is a multi-part message in MIME format.\r\n" + body(("application/dicom", good)) + b"bye\r\n"
    with env.client() as http:
        r = http.post("/dicomweb/studies?model=ctseg", content=payload, headers={"Content-Type": DICOM})
        assert r.status_code == 200, r.text
        assert len(pydicom.Dataset.from_json(r.json()).ReferencedSOPSequence) == 1


def _related(payload: bytes, step: int) -> list[bytes]:
    from medcycle.serving.multipart import read_related
    from medcycle.testing.aio import run_coroutine

    async def chunks():  # type: ignore[no-untyped-def]
        for at in range(0, len(payload), step):
            yield payload[at:at + step]

    parts = run_coroutine(lambda: read_related(chunks(), DICOM, part_type="application/dicom", max_part_bytes=10_000,
                                               max_parts=10))
    return [p.read() for p in parts]


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_the_parser_skips_a_preamble_however_the_body_is_split(step: int) -> None:
    from medcycle.errors import UsageError

    two = body(("application/dicom", b"one"), ("application/dicom", b"two"))
    assert _related(b"preamble --XyZ not at a line start\r\n" + two + b"epilogue", step) == [b"one", b"two"]
    assert _related(b"\r\n" + two, step) == [b"one", b"two"]
    assert _related(two, step) == [b"one", b"two"]
    with pytest.raises(UsageError, match="no boundary") as none:  # never a delimiter: still refused
        _related(b"just some text, no --XyZ at a line start" * 50, step)
    assert none.value.hint
    with pytest.raises(UsageError, match="truncated"):  # a preamble does not excuse a truncated part
        _related(b"preamble\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\nxx", step)
    with pytest.raises(UsageError, match="no boundary"):
        _related(b"", step)


@pytest.fixture(scope="module")
def finished(env: Env) -> tuple[str, FakePatient]:
    """A study sent with STOW-RS whose job has finished: its results (a SEG and a secondary capture) are there."""
    from dicomweb_client.api import DICOMwebClient

    patient = FakePatient(patient_id="MRN-METADATA-5")
    study_uid = generate_uid()
    client = DICOMwebClient(url=f"{env.url}/dicomweb", headers=env.auth)
    write_spec(env.platform.settings, DeploymentSpec(model="ctseg"))  # what STOW runs without ?model=
    client.store_instances(datasets=[pydicom.dcmread(p) for p in write_ct_series(
        env.tmp / "metadata", patient, slices=4, study_uid=study_uid)])
    (row,) = DicomIntake(env.platform).submissions(study_uid)
    run_jobs(env.platform, [row.job_id])
    return study_uid, patient


def test_wado_rs_retrieves_one_instance_for_a_real_client(env: Env, finished: tuple[str, FakePatient]) -> None:
    from dicomweb_client.api import DICOMwebClient
    from requests import HTTPError

    study_uid, patient = finished
    client = DICOMwebClient(url=f"{env.url}/dicomweb", headers=env.auth)
    by_modality = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in client.search_for_series(study_uid)}
    (seg,) = client.retrieve_series(study_uid, by_modality["SEG"])
    instance = client.retrieve_instance(study_uid, by_modality["SEG"], seg.SOPInstanceUID)
    assert instance.SOPInstanceUID == seg.SOPInstanceUID and instance.Modality == "SEG"
    assert instance.StudyInstanceUID == study_uid and instance.PatientID == patient.patient_id  # re-identified
    (ot,) = client.retrieve_series(study_uid, by_modality["OT"])
    assert client.retrieve_instance(study_uid, by_modality["OT"], ot.SOPInstanceUID).SOPInstanceUID == ot.SOPInstanceUID
    with pytest.raises(HTTPError) as unknown:
        client.retrieve_instance(study_uid, by_modality["SEG"], generate_uid())
    assert unknown.value.response.status_code == 404
    url = f"/dicomweb/studies/{study_uid}/series/{by_modality['SEG']}/instances"
    with env.client() as http:
        r = http.get(f"{url}/{generate_uid()}")
        assert r.status_code == 404 and "instance" in r.json()["error"]["message"] and r.json()["error"]["hint"]
        r = http.get(f"{url}/{ot.SOPInstanceUID}")  # an instance of another series of the study
        assert r.status_code == 404
        r = http.get(f"{url}/{seg.SOPInstanceUID}", headers={"Accept": "application/json"})
        assert r.status_code == 406 and "multipart/related" in r.json()["error"]["hint"]
        implicit = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2'
        r = http.get(f"{url}/{seg.SOPInstanceUID}", headers={"Accept": implicit})
        assert r.status_code == 406 and "transfer syntax" in r.json()["error"]["message"]
        r = http.get(f"{url}/{seg.SOPInstanceUID}")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    viewer = token_for(env.platform, "vic", role="viewer")
    with httpx.Client(base_url=env.url, timeout=30, trust_env=False) as other:
        assert other.get(f"{url}/{seg.SOPInstanceUID}").status_code == 401
        assert other.get(f"{url}/{seg.SOPInstanceUID}/metadata",
                         headers={"Authorization": f"Bearer {viewer}"}).status_code == 403


def test_wado_rs_metadata_is_dicom_json_without_bulk_data(env: Env, finished: tuple[str, FakePatient]) -> None:
    import json
    import re

    from dicomweb_client.api import DICOMwebClient
    from requests import HTTPError

    study_uid, patient = finished
    client = DICOMwebClient(url=f"{env.url}/dicomweb", headers=env.auth)
    by_modality = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in client.search_for_series(study_uid)}
    (seg,) = client.retrieve_series(study_uid, by_modality["SEG"])

    meta = client.retrieve_instance_metadata(study_uid, by_modality["SEG"], seg.SOPInstanceUID)
    ds = pydicom.Dataset.from_json(meta)
    assert ds.SOPInstanceUID == seg.SOPInstanceUID and ds.SeriesInstanceUID == by_modality["SEG"]
    assert ds.StudyInstanceUID == study_uid and ds.PatientID == patient.patient_id and ds.Modality == "SEG"
    assert ds.SegmentSequence[0].SegmentLabel == seg.SegmentSequence[0].SegmentLabel  # sequences are there
    assert "PixelData" not in ds and ds.Rows == seg.Rows  # bulk data is left out, not inlined

    series = [pydicom.Dataset.from_json(d) for d in client.retrieve_series_metadata(study_uid, by_modality["OT"])]
    assert [(d.SeriesInstanceUID, d.Modality) for d in series] == [(by_modality["OT"], "OT")]
    study = [pydicom.Dataset.from_json(d) for d in client.retrieve_study_metadata(study_uid)]
    assert sorted(str(d.Modality) for d in study) == ["OT", "SEG"]
    assert {d.StudyInstanceUID for d in study} == {study_uid}
    assert seg.SOPInstanceUID in {d.SOPInstanceUID for d in study}
    everything = json.dumps(client.retrieve_study_metadata(study_uid))
    assert "7FE00010" not in everything  # no pixel data, and no binary value over 1 KiB inlined:
    assert all(len(value) <= 1368 for value in re.findall(r'"InlineBinary": "([^"]*)"', everything))

    with pytest.raises(HTTPError) as unknown:
        client.retrieve_instance_metadata(study_uid, by_modality["SEG"], generate_uid())
    assert unknown.value.response.status_code == 404
    base = f"/dicomweb/studies/{study_uid}"
    with env.client() as http:
        for url in (f"/dicomweb/studies/{generate_uid()}/metadata", f"{base}/series/{generate_uid()}/metadata",
                    f"{base}/series/{by_modality['SEG']}/instances/{generate_uid()}/metadata"):
            r = http.get(url)
            assert r.status_code == 404 and r.json()["error"]["message"] and r.json()["error"]["hint"], url
        r = http.get(f"{base}/metadata", headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert r.status_code == 406 and "application/dicom+json" in r.json()["error"]["hint"]
        r = http.get(f"{base}/metadata", headers={"Accept": "application/dicom+xml"})
        assert r.status_code == 406
        r = http.get(f"{base}/metadata")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")


def test_qido_rs_searches_a_study_s_result_instances_for_a_real_client(env: Env,
                                                                       finished: tuple[str, FakePatient]) -> None:
    from dicomweb_client.api import DICOMwebClient
    from requests import HTTPError

    study_uid, _ = finished
    client = DICOMwebClient(url=f"{env.url}/dicomweb", headers=env.auth)
    by_modality = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in client.search_for_series(study_uid)}
    found = client.search_for_instances(study_uid)
    assert {i["00080060"]["Value"][0] for i in found} == {"SEG", "OT"} and len(found) == 2

    def value(item: dict[str, Any], tag: str) -> str:
        return str(item[tag]["Value"][0])

    for item in found:
        assert value(item, "0020000D") == study_uid and value(item, "00080056") == "ONLINE"
        assert value(item, "0020000E") == by_modality[value(item, "00080060")]
        retrieved = client.retrieve_instance(study_uid, value(item, "0020000E"), value(item, "00080018"))
        assert retrieved.SOPClassUID == value(item, "00080016")  # what QIDO names, WADO hands back
        assert value(item, "00081190").endswith(f"/instances/{value(item, '00080018')}")
    (seg,) = client.search_for_instances(study_uid, by_modality["SEG"])
    assert value(seg, "00080060") == "SEG"
    assert client.search_for_instances(study_uid, search_filters={"Modality": "OT"})[0]["0020000E"]["Value"] == [
        by_modality["OT"]]
    chosen = client.search_for_instances(study_uid, search_filters={"SOPInstanceUID": value(seg, "00080018")})
    assert [value(i, "00080018") for i in chosen] == [value(seg, "00080018")]
    assert client.search_for_instances(study_uid, search_filters={"SOPClassUID": "1.2.3"}) == []
    assert client.search_for_instances(study_uid, generate_uid()) == []  # a search that matches nothing
    with env.client() as http:
        r = http.get(f"/dicomweb/studies/{study_uid}/instances", params={"PatientName": "x", "limit": 1})
        assert r.status_code == 200 and len(r.json()) == 1 and "PatientName" in r.headers["warning"]
    with pytest.raises(HTTPError) as unknown:
        client.search_for_instances(generate_uid())
    assert unknown.value.response.status_code == 404


def test_wado_rs_answers_head_with_the_get_s_status_type_and_length(env: Env,
                                                                   finished: tuple[str, FakePatient]) -> None:
    study_uid, _ = finished
    base = f"/dicomweb/studies/{study_uid}"
    with env.client() as http:
        by_modality = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0]
                       for s in http.get(f"{base}/series").json()}
        seg_series = by_modality["SEG"]
        (seg,) = http.get(f"{base}/series/{seg_series}/instances").json()
        instance = f"{base}/series/{seg_series}/instances/{seg['00080018']['Value'][0]}"
        for url in (base, f"{base}/series/{seg_series}", instance,
                    f"{base}/metadata", f"{base}/series/{seg_series}/metadata", f"{instance}/metadata"):
            got, head = http.get(url), http.head(url)
            assert got.status_code == head.status_code == 200, url
            assert head.content == b"", url
            assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content)), url
            # the same media type; a multipart answer's boundary is new each time (of the same length)
            assert head.headers["content-type"].split("boundary=")[0] == got.headers["content-type"].split(
                "boundary=")[0], url
        unknown = f"/dicomweb/studies/{generate_uid()}"
        for url in (unknown, f"{unknown}/metadata", f"{base}/series/{generate_uid()}",
                    f"{base}/series/{seg_series}/instances/{generate_uid()}"):
            head, got = http.head(url), http.get(url)
            assert head.status_code == got.status_code == 404 and head.content == b"", url
        r = http.head(instance, headers={"Accept": "application/json"})
        assert r.status_code == 406 and r.content == b""
        r = http.head(f"{base}/metadata", headers={"Accept": "application/dicom+xml"})
        assert r.status_code == 406
    with httpx.Client(base_url=env.url, timeout=30, trust_env=False) as anonymous:
        assert anonymous.head(instance).status_code == 401
    with env.platform.session() as session:
        heads = [e for e in audit.query(session, action="dicomweb.retrieve", limit=500) if e.details.get("head")]
    assert len(heads) >= 6  # a HEAD tells whether a patient's study is there: audited like the GET


def test_the_length_of_a_multipart_answer_is_counted_without_its_parts() -> None:
    from medcycle.serving.multipart import related_length

    items = [b"", b"x" * 7, b"DICM" * 300]
    assert related_length([len(i) for i in items], "b0", "application/dicom") == len(
        write_related(items, "b0", "application/dicom"))
    assert related_length([], "b0", "application/dicom") == len(write_related([], "b0", "application/dicom"))
