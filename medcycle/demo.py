"""The main job run by ``make run``: a short walk through what the platform does today.

Later stages extend this into the whole-cycle demo; each step prints what it did and where to look.
"""

from __future__ import annotations

import hashlib
import threading

from rich.console import Console
from sqlalchemy import select

from medcycle.auth import audit, users
from medcycle.auth.tables import UserRow
from medcycle.jobs.base import JobState
from medcycle.objects.maintenance import fsck
from medcycle.objects.refs import add_ref
from medcycle.platform import Platform

DEMO_QUEUE = "demo"


def _step(console: Console, n: int, title: str) -> None:
    console.print(f"\n[bold cyan]{n}. {title}[/]")


def run_demo(platform: Platform, console: Console) -> str:
    """Run the demo and return an admin token for the UI."""
    url = platform.settings.resolved_public_url
    _step(console, 1, "Initialise the home on embedded defaults")
    result = platform.init()
    token = result.admin_token
    if token is None:
        with platform.session() as session:
            admin = session.scalar(select(UserRow).where(UserRow.role == "admin", UserRow.disabled.is_(False)))
            if admin is None:
                admin = users.create_user(session, "admin", "admin")
            token = users.create_token(session, admin.name, name="demo").secret
    console.print(f"   home {result.home}\n   database {result.database}, schema {result.schema_revision}")

    _step(console, 2, "Store objects by content (SHA-256), verified on every read")
    blobs = [hashlib.sha256(f"demo-{i}".encode()).digest() * 2048 for i in range(5)]  # 64 KiB each
    infos = platform.objects.put_many(blobs)
    again = platform.objects.put(blobs[0])
    with platform.session() as session:
        for info in infos:
            add_ref(session, info.digest, "demo", "quickstart", size=info.size)
        audit.record(session, "system", "object.write", target_kind="demo", target_id="quickstart", count=len(infos))
    console.print(
        f"   stored {len(infos)} objects; storing the first again gave the same digest: "
        f"{again.digest == infos[0].digest} ({again.digest[:12]}…)"
    )

    _step(console, 3, "Run jobs through the durable queue (leases, batches, exactly-once completion)")
    jobs = [platform.jobs.enqueue(DEMO_QUEUE, {"object": i.digest}, idempotency_key=f"demo-{i.digest}") for i in infos]
    done: list[str] = []

    def worker(name: str) -> None:
        while True:
            batch = platform.jobs.take(DEMO_QUEUE, name, max_jobs=2, wait_ms=200)
            if not batch:
                return
            for job in batch:
                size = len(platform.objects.get(job.payload["object"]))
                platform.jobs.complete(job, {"bytes": size, "worker": name})
                done.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"demo-worker-{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    states = {platform.jobs.get(j.id).state for j in jobs}
    console.print(
        f"   {len(jobs)} jobs enqueued, {len(set(done))} completed by 2 workers; "
        f"all succeeded: {states <= {JobState.SUCCEEDED}}"
    )

    _step(console, 4, "Check the object store (fsck re-hashes every object)")
    with platform.session() as session:
        report = fsck(platform.objects, session)
    console.print(
        f"   checked {report.checked} objects: "
        f"{'all intact' if report.ok else f'{len(report.corrupt)} corrupt, {len(report.missing)} missing'}"
    )

    _step(console, 5, "Where to look")
    console.print(
        f"   UI           {url}/  (log in with the admin token)\n"
        f"   API docs     {url}/docs\n"
        f"   Queues       {url}/ui/admin/queues\n"
        f"   Audit log    {url}/ui/admin/audit\n"
        "   CLI          medcycle --help · medcycle doctor · medcycle store fsck · medcycle jobs list"
    )
    return token
