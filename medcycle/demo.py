"""The main job run by ``make run``: a walk through the platform on embedded defaults.

Each step prints what it did and where to look. Later stages extend it into the whole-cycle demo.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from rich.console import Console
from sqlalchemy import select

from medcycle.auth import users
from medcycle.auth.tables import UserRow
from medcycle.jobs.base import JobState
from medcycle.objects.maintenance import fsck
from medcycle.platform import Platform

DEMO_QUEUE = "demo"
SOURCES = {  # source → (manufacturer-like seed offset, number of patients)
    "clinic-a": (0, 6),
    "clinic-b": (100, 6),
}
PYDICOM_DATA = ("CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm", "JPEG2000.dcm", "SC_rgb.dcm")


def _step(console: Console, n: int, title: str) -> None:
    console.print(f"\n[bold cyan]{n}. {title}[/]")


def _admin_token(platform: Platform, created: str | None) -> str:
    if created is not None:
        return created
    with platform.session() as session:
        admin = session.scalar(select(UserRow).where(UserRow.role == "admin", UserRow.disabled.is_(False)))
        name = admin.name if admin is not None else users.create_user(session, "demo-admin", "admin").name
        return users.create_token(session, name, name="demo").secret


def _write_studies(root: Path) -> dict[tuple[str, str], bool]:
    """Synthetic CT studies (half with a nodule) per source; returns (source, patient id) → has lesion.

    Files are written once: a second run finds them and the ingest recognises every one.
    """
    from medcycle.testing.dicom import FakePatient, write_ct_series, write_radiograph

    truth: dict[tuple[str, str], bool] = {}
    for source, (offset, patients) in SOURCES.items():
        for i in range(patients):
            pid = f"{source.upper()}-{offset + i:05d}"
            lesion = i % 2 == 0
            truth[(source, pid)] = lesion
            if (root / source / pid).exists():
                continue
            patient = FakePatient(name=f"Demo^Patient^{offset + i}", patient_id=pid, sex="FM"[i % 2])
            write_ct_series(
                root / source / pid / "ct",
                patient,
                slices=6,
                size=64,
                seed=offset + i,
                lesion=lesion,
                study_date=f"2024{1 + i % 9:02d}15",
            )
            write_radiograph(root / source / pid / "dx.dcm", patient, seed=offset + i, monochrome1=i % 3 == 0)
    return truth


def run_demo(platform: Platform, console: Console) -> str:
    """Run the demo and return an admin token for the UI."""
    from medcycle.catalog.deid import Pseudonymizer
    from medcycle.catalog.ingest import ingest
    from medcycle.catalog.keys import load_or_create_key
    from medcycle.catalog.summary import summarize
    from medcycle.datasets import items, labels, transfer, versions
    from medcycle.datasets.splits import parse_stratify, ratios_policy

    home = platform.settings.home
    url = platform.settings.resolved_public_url
    _step(console, 1, "Initialise the home on embedded defaults")
    result = platform.init()
    token = _admin_token(platform, result.admin_token)
    console.print(f"   home {result.home}\n   database {result.database}, schema {result.schema_revision}")

    _step(console, 2, "Ingest DICOM with de-identification (synthetic studies and real files from pydicom-data)")
    demo_dir = home / "demo-data"
    truth = _write_studies(demo_dir)
    for source in SOURCES:
        summary = ingest(platform, [demo_dir / source], source=source, jobs=2, actor="demo")
        console.print(
            f"   {source}: {summary.ingested} ingested, {summary.duplicates} already there, "
            f"{len(summary.rejected)} rejected, {len(summary.quarantined)} quarantined"
        )
    from pydicom.data import get_testdata_file

    real = [Path(p) for name in PYDICOM_DATA if (p := get_testdata_file(name)) is not None]
    summary = ingest(platform, real, source="pydicom-data", actor="demo")
    console.print(
        f"   pydicom-data: {summary.ingested} ingested, {len(summary.quarantined)} quarantined "
        f"(burned-in text suspects), {summary.duplicates} already there"
    )

    _step(console, 3, "What data do we have, how much, from where")
    with platform.session() as session:
        totals = summarize(session).to_dict()
    t = totals["totals"]
    console.print(
        f"   {t['patients']} patients, {t['studies']} studies, {t['series']} series, {t['instances']} instances"
    )
    for row in totals["by_source_modality_body_part"]:
        console.print(
            f"   {row['source']:<13} {row['modality'] or '-':<4} {row['body_part'] or '-':<10} "
            f"{row['instances']:>4} instances"
        )

    _step(console, 4, "A versioned dataset with study labels and a patient-level split")
    pseudo = Pseudonymizer(load_or_create_key(platform.settings.resolved_deid_key_file))
    lesion_of = {pseudo.patient(source, pid): lesion for (source, pid), lesion in truth.items()}
    from medcycle.catalog.query import run_query

    with platform.session() as session:
        if "chest-ct" not in {d.name for d in items.list_datasets(session)}:
            items.create_dataset(
                session,
                "chest-ct",
                description="Synthetic chest CT with and without a nodule",
                query='modality == "CT" and source in ["clinic-a", "clinic-b"]',
                actor="demo",
            )
        rows = run_query(session, 'modality == "CT" and source in ["clinic-a", "clinic-b"]', limit=10_000).rows
        csv = "study,label\n" + "".join(
            f"{study},{'nodule' if lesion_of[patient] else 'normal'}\n"
            for study, patient in sorted({(r["study"], r["patient"]) for r in rows})
        )
        labels.import_labels(session, platform.objects, "chest-ct", csv, origin="demo", actor="demo")
        frozen = (
            versions.freeze(
                session,
                platform.objects,
                "chest-ct",
                tag="v1",
                policy=ratios_policy("train=0.6,val=0.2,test=0.2", stratify=parse_stratify("label"), seed=7),
                actor="demo",
            )
            if not versions.log(session, "chest-ct")
            else None
        )
    if frozen is not None:
        v = frozen.version.to_dict()
        console.print(
            f"   chest-ct@v1 = {v.get('id', '')[:16]}… ; leakage check: "
            f"{'clean' if frozen.leakage.to_dict().get('ok', True) else 'LEAKS'}"
        )
    report = transfer.pull(platform, "chest-ct@v1", home / "pulls" / "chest-ct-v1", actor="demo")
    console.print(f"   pulled {report.items} items to {report.dest} (manifest.csv beside them)")

    _step(console, 5, "Run jobs through the durable queue (leases, batches, exactly-once completion)")
    blobs = [hashlib.sha256(f"demo-{i}".encode()).digest() * 2048 for i in range(5)]
    infos = platform.objects.put_many(blobs)
    jobs = [platform.jobs.enqueue(DEMO_QUEUE, {"object": i.digest}, idempotency_key=f"demo-{i.digest}") for i in infos]

    def worker(name: str) -> None:
        while batch := platform.jobs.take(DEMO_QUEUE, name, max_jobs=2, wait_ms=200):
            for job in batch:
                platform.jobs.complete(job, {"bytes": len(platform.objects.get(job.payload["object"])), "worker": name})

    threads = [threading.Thread(target=worker, args=(f"demo-worker-{n}",)) for n in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    states = {platform.jobs.get(j.id).state for j in jobs}
    console.print(f"   {len(jobs)} jobs, all succeeded: {states <= {JobState.SUCCEEDED}}")

    _step(console, 6, "Check the object store (fsck re-hashes every object)")
    with platform.session() as session:
        check = fsck(platform.objects, session)
    console.print(
        f"   checked {check.checked} objects: "
        f"{'all intact' if check.ok else f'{len(check.corrupt)} corrupt, {len(check.missing)} missing'}"
    )

    _step(console, 7, "Where to look")
    console.print(
        f"   UI           {url}/  (log in with the admin token)\n"
        f"   Catalog      {url}/ui/data\n"
        f"   Datasets     {url}/ui/datasets\n"
        f"   Hypotheses   {url}/ui/hypotheses\n"
        f"   API docs     {url}/docs\n"
        "   CLI          medcycle data summary · medcycle dataset log chest-ct · medcycle doctor"
    )
    return token
