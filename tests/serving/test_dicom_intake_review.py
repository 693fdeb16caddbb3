"""The DICOM network intakes as a hospital integrator drives them with real clients (httpx and dicomweb-client
against a live uvicorn, pynetdicom's association API against the live C-STORE SCP), for what the other tests did
not cover: instances with a damaged element or multi-valued UIDs, and QIDO-RS matching as a PACS or a viewer
asks (wildcards in IDs and modalities, person-name component groups, malformed dates)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from medcycle.serving.scp import ScpConfig, StoreScp
from medcycle.serving.studies import DicomIntake
from medcycle.serving.worker import ServingWorker
from medcycle.testing.dicom import FakePatient, write_ct_series
from tests.serving.helpers import DicomwebEnv, dicomweb_env, related_body

RELATED = 'multipart/related; type="application/dicom"; boundary=XyZ'
MARKER = b"MRN4711"  # what a damaged element holds: patient data, as far as any log is concerned
Env = DicomwebEnv


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with dicomweb_env(tmp_path_factory.mktemp("dicom-intake-review")) as live:
        yield live


@pytest.fixture
def scp(env: Env, tmp_path: Path) -> Iterator[StoreScp]:
    server = StoreScp(env.platform, ScpConfig(model="ctseg", port=0, idle_seconds=0.5, abort_grace_seconds=5,
                                              spool_dir=tmp_path / "spool"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _raw(ds: pydicom.Dataset, tag: int, vr: str, value: bytes) -> None:
    """Put ``value`` in ``ds`` as the undecoded bytes of element ``tag``, as a sender's file would carry them."""
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _encode(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _broken(folder: Path) -> dict[str, bytes]:
    """CT instances a modality may really send: a numeric element of an odd length (a damaged value pydicom can
    only decode lazily), and study, series and instance UIDs with two values."""
    out = {}
    src = write_ct_series(folder, slices=1)[0]
    damaged = pydicom.dcmread(src)
    _raw(damaged, 0x00280010, "US", MARKER)  # Rows, 7 bytes: not a multiple of 2
    out["damaged"] = _encode(damaged)
    for keyword, tag in (("StudyInstanceUID", 0x0020000D), ("SeriesInstanceUID", 0x0020000E),
                         ("SOPInstanceUID", 0x00080018)):
        ds = pydicom.dcmread(src)
        _raw(ds, tag, "UI", f"{generate_uid()}\\{generate_uid()}".encode())
        out[keyword] = _encode(ds)
    return out


def _stow(env: Env, *parts: bytes, study: str | None = None) -> Any:
    with env.client() as http:
        return http.post(f"/dicomweb/studies{'/' + study if study else ''}", params={"model": "ctseg"},
                         content=related_body(*[("application/dicom", p) for p in parts]),
                         headers={"Content-Type": RELATED})


def _failure_reasons(answer: dict[str, Any]) -> list[int]:
    return [item["00081197"]["Value"][0] for item in answer.get("00081198", {}).get("Value", [])]


def test_stow_refuses_a_damaged_element_per_part_and_logs_no_value(env: Env, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    broken = _broken(tmp_path / "ct")
    good = write_ct_series(tmp_path / "good", slices=1)[0].read_bytes()
    with caplog.at_level(logging.DEBUG):
        r = _stow(env, good, broken["damaged"])  # was a 500, with a traceback quoting the element's bytes
    assert r.status_code == 202, r.text
    assert _failure_reasons(r.json()) == [0xC000]
    assert "cannot be decoded" in r.headers["warning"] and "BytesLengthException" in r.headers["warning"]
    assert len(r.json()["00081199"]["Value"]) == 1  # the good part was stored
    assert MARKER.decode() not in caplog.text and "Traceback" not in caplog.text
    with env.client() as http:
        assert http.get("/livez").status_code == 200


def test_stow_refuses_multi_valued_study_series_and_instance_uids(env: Env, tmp_path: Path) -> None:
    broken = _broken(tmp_path / "ct")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        r = _stow(env, broken[keyword])  # was a 200: "['1.2…', '1.3…']" became the study's (or series') UID
        assert r.status_code == 409, (keyword, r.text)
        assert _failure_reasons(r.json()) == [0xA900], keyword
        assert f"more than one {keyword}" in r.headers["warning"], keyword
        assert "00081190" not in r.json()  # no RetrieveURL naming a list of UIDs


def _c_store(port: int, items: list[bytes]) -> list[tuple[int, str]]:
    ae = AE(ae_title="PACS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDCYCLE")
    assert assoc.is_established
    out = []
    try:
        for data in items:
            status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
            out.append((int(status.Status), str(status.get("ErrorComment", ""))))
    finally:
        assoc.release()
    return out


def test_c_store_refuses_damaged_and_multi_valued_instances_with_a_dicom_status(
        scp: StoreScp, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = _broken(tmp_path / "ct")
    with caplog.at_level(logging.DEBUG):
        # (an SCU cannot send two SOPInstanceUIDs: the C-STORE request names one)
        statuses = _c_store(scp.port, [broken["damaged"], broken["StudyInstanceUID"], broken["SeriesInstanceUID"]])
    # the damaged element was pynetdicom's 0xC211 with a logged traceback quoting its bytes; the others were stored
    assert [s for s, _ in statuses] == [0xC000, 0xA900, 0xA900], statuses
    assert "cannot be decoded" in statuses[0][1] and "more than one StudyInstanceUID" in statuses[1][1]
    assert MARKER.decode() not in caplog.text and "Traceback" not in caplog.text
    assert scp.refused == {0xC000: 1, 0xA900: 2}
    time.sleep(1.2)  # past idle_seconds: nothing was accepted, so nothing is pending or submitted
    assert scp.assembler.pending() == {} and scp.assembler.submitted == []
    good = write_ct_series(tmp_path / "good", slices=2)
    assert [s for s, _ in _c_store(scp.port, [p.read_bytes() for p in good])] == [0, 0]  # the SCP stays up


def test_an_unexpected_failure_behind_c_store_is_a_status_not_a_traceback(
        scp: StoreScp, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_add(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError(MARKER.decode())

    monkeypatch.setattr(scp.assembler, "add", broken_add)
    with caplog.at_level(logging.DEBUG):
        (status,) = _c_store(scp.port, [write_ct_series(tmp_path / "ct", slices=1)[0].read_bytes()])
    assert status[0] == 0xC000 and "RuntimeError" in status[1]  # was 0xC211 and pynetdicom's traceback
    assert MARKER.decode() not in caplog.text and "Traceback" not in caplog.text


# -- QIDO-RS as a PACS or a viewer searches -----------------------------------------------------------------
PATIENT = FakePatient(name="Yamada^Tarou=山田^太郎", patient_id="PID-WILD-0042", accession="ACC-77-0001")


@pytest.fixture(scope="module")
def searchable(env: Env, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A study (UTF-8 names with an ideographic group) sent with STOW-RS whose job has finished: it has results."""
    study_uid = generate_uid()
    parts = []
    ascii_patient = FakePatient(name="Yamada^Tarou", patient_id=PATIENT.patient_id, accession=PATIENT.accession)
    for path in write_ct_series(tmp_path_factory.mktemp("qido"), ascii_patient, slices=2, study_uid=study_uid):
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = PATIENT.name
        parts.append(_encode(ds))
    r = _stow(env, *parts)
    assert r.status_code == 200, r.text
    (row,) = DicomIntake(env.platform).submissions(study_uid)
    worker = ServingWorker(env.platform, prediction_log=None)
    deadline = time.monotonic() + 120
    while not env.platform.jobs.get(row.job_id).state.finished:
        assert time.monotonic() < deadline, "the job did not finish"
        worker.run_once()
    return study_uid


def _found(env: Env, path: str, **params: str) -> list[str]:
    with env.client() as http:
        r = http.get(path, params=params)
    assert r.status_code == 200, (params, r.text)
    return [item.get("0020000E", item.get("0020000D"))["Value"][0] for item in r.json()]


def test_qido_matches_wildcards_in_ids_and_modalities(env: Env, searchable: str) -> None:
    # PS3.4 C.2.2.2.4: * and ? are wildcards in every string VR (LO, SH, CS), not only in person names; these
    # found nothing before
    for params in ({"PatientID": "PID-WILD-*"}, {"PatientID": "PID-WILD-004?"}, {"00100020": "*WILD*"},
                   {"AccessionNumber": "ACC-77-*"}, {"ModalitiesInStudy": "SE*"}, {"ModalitiesInStudy": "O?"},
                   {"PatientID": "PID-WILD-0042"}, {"PatientID": "NOPE*,PID-WILD-*"}):
        assert searchable in _found(env, "/dicomweb/studies", **params), params
    for params in ({"PatientID": "pid-wild-*"}, {"PatientID": "PID-WILD-?"}, {"AccessionNumber": "ACC-77"},
                   {"PatientID": "PID-WILD-004"}, {"ModalitiesInStudy": "MR*"}):
        assert searchable not in _found(env, "/dicomweb/studies", **params), params  # IDs stay case-sensitive
    base = f"/dicomweb/studies/{searchable}"
    assert len(_found(env, f"{base}/series", Modality="S*")) == 1
    assert len(_found(env, f"{base}/series", Modality="*")) == 2
    assert len(_found(env, f"{base}/instances", Modality="?T")) == 1
    assert _found(env, f"{base}/instances", Modality="X*") == []


def test_qido_finds_a_person_name_by_one_of_its_component_groups(env: Env, searchable: str) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=f"{env.url}/dicomweb", headers=env.auth)
    for name in ("Yamada^Tarou", "山田^太郎", "yamada^*", PATIENT.name):  # the first two found nothing before
        found = client.search_for_studies(search_filters={"PatientName": name})
        assert searchable in [s["0020000D"]["Value"][0] for s in found], name
        (study,) = [s for s in found if s["0020000D"]["Value"][0] == searchable]
        assert study["00100010"]["Value"][0] == {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}
    assert searchable not in _found(env, "/dicomweb/studies", PatientName="Yamada")


def test_qido_refuses_a_date_that_is_not_a_dicom_date_or_range(env: Env, searchable: str) -> None:
    with env.client() as http:
        for value in ("2024-03-15", "2024", "15.03.2024", "-", "2024031520240316", "20240301--20240331"):
            r = http.get("/dicomweb/studies", params={"StudyDate": value})  # was a 200 with an empty list
            assert r.status_code == 400, (value, r.text)
            error = r.json()["error"]
            assert "StudyDate" in error["message"] and "YYYYMMDD" in error["hint"], error
        for value in ("20240315", "20240301-20240331", "20240301-", "-20240331", ""):
            r = http.get("/dicomweb/studies", params={"StudyDate": value})
            assert r.status_code == 200 and searchable in [s["0020000D"]["Value"][0] for s in r.json()], value
        assert http.get("/livez").status_code == 200
