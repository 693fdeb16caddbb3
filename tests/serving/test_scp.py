"""The C-STORE SCP against a real pynetdicom SCU on loopback: grouping, statuses, aborts, the spool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RTPlanStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from medcycle.jobs.base import JobState
from medcycle.platform import Platform
from medcycle.serving.scp import ScpConfig, StoreScp
from medcycle.serving.studies import DicomIntake
from medcycle.testing.dicom import FakePatient, write_ct_series, write_radiograph
from tests.serving.helpers import register_model, wait_for

IDLE = 1.0  # long enough that a loaded machine's pauses between instances do not split a study



@pytest.fixture
def scp(sqlite_platform: Platform, tmp_path: Path) -> Iterator[StoreScp]:
    register_model(sqlite_platform, "ctseg")
    server = StoreScp(sqlite_platform, ScpConfig(model="ctseg", port=0, idle_seconds=IDLE, abort_grace_seconds=30,
                                                 spool_dir=tmp_path / "spool"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def scu(*contexts: str, title: str = "PACS") -> AE:
    ae = AE(ae_title=title)
    for context in contexts or (CTImageStorage,):
        ae.add_requested_context(context, [ExplicitVRLittleEndian, "1.2.840.10008.1.2"])
    return ae


def send(port: int, datasets: list[Dataset | Path], *, contexts: tuple[str, ...] = (CTImageStorage,),
         abort_after: int | None = None) -> list[int]:
    assoc = scu(*contexts).associate("127.0.0.1", port, ae_title="MEDCYCLE")
    assert assoc.is_established
    statuses = []
    for n, item in enumerate(datasets):
        if abort_after is not None and n == abort_after:
            assoc.abort()
            return statuses
        status = assoc.send_c_store(item)
        statuses.append(int(status.Status))
    assoc.release()
    return statuses


def test_c_echo_is_answered(scp: StoreScp) -> None:
    assoc = scu(Verification).associate("127.0.0.1", scp.port, ae_title="MEDCYCLE")
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == 0x0000
    assoc.release()


def test_a_ct_study_from_a_real_scu_becomes_one_job_of_de_identified_instances(
        scp: StoreScp, sqlite_platform: Platform, tmp_path: Path) -> None:
    patient = FakePatient()
    study_uid = generate_uid()
    paths = write_ct_series(tmp_path / "s1", patient, slices=8, study_uid=study_uid)
    paths += write_ct_series(tmp_path / "s2", patient, slices=3, study_uid=study_uid, seed=1)
    originals = [pydicom.dcmread(p) for p in paths]

    assert send(scp.port, list(paths)) == [0x0000] * 11
    assert wait_for(lambda: len(scp.assembler.submitted) == 1)
    submitted = scp.assembler.submitted[0]
    assert submitted.instances == 11 and submitted.created

    job = sqlite_platform.jobs.get(submitted.job_id)
    assert job.state == JobState.QUEUED and job.payload["source"] == "c-store" and job.payload["model"] == "ctseg"
    assert len(job.payload["inputs"]) == 11 and len(job.payload["cases"]) == 2  # two series, two cases
    secrets = [s.encode() for s in patient.all_identifiers()] + [study_uid.encode()]
    secrets += [str(ds.SOPInstanceUID).encode() for ds in originals]
    for digest in job.payload["inputs"]:
        stored = sqlite_platform.objects.get(digest)
        assert not [s for s in secrets if s in stored], "an identifier reached the object store"
        assert pydicom.dcmread(__import__("io").BytesIO(stored)).StudyInstanceUID == submitted.study_key
    assert list((tmp_path / "spool").iterdir()) == []  # the spool is emptied once the job exists

    intake = DicomIntake(sqlite_platform)
    (row,) = intake.submissions(study_uid)  # found by the original UID, stored under the pseudonym
    assert row.study_key == intake.study_key(study_uid) != study_uid and row.via == "c-store"
    assert row.calling_ae == "PACS" and row.series == 2 and row.modalities == "CT"
    address = intake.return_address(row)
    assert address.study_uid == study_uid and address.patient["PatientID"] == patient.patient_id
    assert address.original(submitted.study_key) == study_uid
    assert sqlite_platform.objects.get(row.return_digest).find(patient.patient_id.encode()) == -1  # sealed


def test_a_study_sent_over_two_associations_is_grouped_and_resent_instances_count_once(
        scp: StoreScp, tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "ct", slices=6)
    # The study's idle time runs on a clock the test holds still while it sends: however long a loaded machine
    # takes to open the second association, the study is not idle in between (what a real sender's pause of
    # less than idle_seconds looks like to the assembler).
    now = [time.monotonic()]
    scp.assembler.clock = lambda: now[0]
    assert send(scp.port, list(paths[:4])) == [0] * 4
    assert send(scp.port, list(paths[2:])) == [0] * 4  # two instances again
    time.sleep(IDLE / 2)  # several flush ticks: nothing is due while the clock stands
    assert scp.assembler.submitted == []
    now[0] += IDLE
    assert wait_for(lambda: len(scp.assembler.submitted) == 1)
    now[0] += IDLE * 2
    time.sleep(IDLE / 2)
    assert len(scp.assembler.submitted) == 1 and scp.assembler.submitted[0].instances == 6


def test_unsupported_and_broken_instances_get_proper_statuses(scp: StoreScp, tmp_path: Path) -> None:
    pdf = Dataset()
    pdf.SOPClassUID, pdf.SOPInstanceUID = EncapsulatedPDFStorage, generate_uid()
    pdf.StudyInstanceUID, pdf.SeriesInstanceUID, pdf.Modality = generate_uid(), generate_uid(), "DOC"
    pdf.MIMETypeOfEncapsulatedDocument, pdf.EncapsulatedDocument = "application/pdf", b"%PDF-1.4\n%%EOF\n"
    pdf.file_meta = FileMetaDataset()
    pdf.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    no_pixels = pydicom.dcmread(write_ct_series(tmp_path / "np", slices=1)[0])
    del no_pixels.PixelData
    truncated = pydicom.dcmread(write_ct_series(tmp_path / "tr", slices=1)[0])
    truncated.PixelData = truncated.PixelData[:100]
    burned = pydicom.dcmread(write_radiograph(tmp_path / "dx.dcm"))
    burned.BurnedInAnnotation = "YES"
    rtplan = get_testdata_file("rtplan.dcm")
    assert isinstance(rtplan, str)

    statuses = send(scp.port, [pdf, no_pixels, truncated, burned, Path(rtplan)],
                    contexts=(EncapsulatedPDFStorage, CTImageStorage, DigitalXRayImageStorageForPresentation,
                              RTPlanStorage))
    assert statuses == [0x0122, 0xA900, 0xA900, 0x0110, 0x0122]
    assert scp.refused == {0x0122: 2, 0xA900: 2, 0x0110: 1}
    time.sleep(IDLE * 2)
    assert scp.assembler.submitted == [] and scp.assembler.pending() == {}


def test_pydicom_test_files_are_accepted_or_refused_by_class(scp: StoreScp) -> None:
    ct, mr, seg = (get_testdata_file(n) for n in ("CT_small.dcm", "MR_small.dcm", "liver.dcm"))
    assert isinstance(ct, str) and isinstance(mr, str) and isinstance(seg, str)
    statuses = send(scp.port, [Path(ct), Path(mr), Path(seg)],
                    contexts=(CTImageStorage, MRImageStorage, "1.2.840.10008.5.1.4.1.1.66.4"))
    assert statuses == [0x0000, 0x0000, 0x0122]
    assert wait_for(lambda: len(scp.assembler.submitted) == 2)  # CT_small and MR_small are different studies


def test_an_aborted_association_holds_its_study_for_the_retransmission(scp: StoreScp, tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "ct", slices=8)
    assert send(scp.port, list(paths), abort_after=3) == [0] * 3
    assert wait_for(lambda: sum(scp.assembler.pending().values()) == 3)
    time.sleep(IDLE * 2.5)  # idle, but held: the sender is expected to send again
    assert scp.assembler.submitted == []
    assert send(scp.port, list(paths)) == [0] * 8
    assert wait_for(lambda: len(scp.assembler.submitted) == 1)
    assert scp.assembler.submitted[0].instances == 8


def test_a_failed_submission_keeps_the_study_and_a_restart_recovers_the_spool(
        sqlite_platform: Platform, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    config = ScpConfig(model="later", port=0, idle_seconds=IDLE, spool_dir=spool)
    first = StoreScp(sqlite_platform, config)
    first.start()
    try:
        assert send(first.port, list(write_ct_series(tmp_path / "ct", slices=4))) == [0] * 4
        time.sleep(IDLE * 3)  # the model does not exist yet: submit fails, the study stays spooled
        assert first.assembler.submitted == [] and first.assembler.pending() != {}
    finally:
        first.stop()  # the process "dies" with the study in the spool
    assert len(list(spool.iterdir())) == 1

    register_model(sqlite_platform, "later")
    second = StoreScp(sqlite_platform, config)
    second.start()
    try:
        assert wait_for(lambda: len(second.assembler.submitted) == 1)
        assert second.assembler.submitted[0].instances == 4
    finally:
        second.stop()
    assert list(spool.iterdir()) == []


def test_only_allowed_calling_ae_titles_may_associate(sqlite_platform: Platform, tmp_path: Path) -> None:
    register_model(sqlite_platform, "ctseg")
    server = StoreScp(sqlite_platform, ScpConfig(model="ctseg", port=0, allowed_calling_aes=("PACS",),
                                                 spool_dir=tmp_path / "spool"))
    server.start()
    try:
        assert not scu(Verification, title="INTRUDER").associate("127.0.0.1", server.port,
                                                                 ae_title="MEDCYCLE").is_established
        good = scu(Verification, title="PACS").associate("127.0.0.1", server.port, ae_title="MEDCYCLE")
        assert good.is_established
        good.release()
    finally:
        server.stop()


def test_bad_settings_are_refused_with_a_hint() -> None:
    from medcycle.errors import UsageError

    with pytest.raises(UsageError, match="AE title") as bad:
        ScpConfig(model="m", ae_title="WAY-TOO-LONG-AE-TITLE")
    assert bad.value.hint
    with pytest.raises(UsageError, match="needs a model"):
        ScpConfig(model=" ")


def test_study_intake_is_idempotent_on_every_database(platform: Platform, tmp_path: Path) -> None:
    register_model(platform, "ctseg")
    intake = DicomIntake(platform)
    paths = write_ct_series(tmp_path / "ct", slices=3)
    accepted = [intake.accept(pydicom.dcmread(p)) for p in paths]
    first = intake.submit(accepted, model="ctseg", via="c-store", calling_ae="PACS")
    again = intake.submit([intake.accept(pydicom.dcmread(p)) for p in reversed(paths)], model="ctseg", via="c-store")
    assert first.created and not again.created and (again.id, again.job_id) == (first.id, first.job_id)
    other = intake.submit(accepted[:2], model="ctseg", via="c-store")  # fewer instances: another submission
    assert other.created and other.job_id != first.job_id
    assert [r.instances for r in intake.submissions(str(pydicom.dcmread(paths[0]).StudyInstanceUID))] == [2, 3]
