"""Audited reads under concurrency on a real server (SQLite): every image handed out has its audit event."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import func, select

from medcycle.auth.tables import AuditEventRow
from medcycle.catalog.ingest import ingest
from medcycle.catalog.tables import InstanceRow
from medcycle.testing.browser import LiveServer
from medcycle.testing.dicom import FakePatient, write_ct_series


def _count(server: LiveServer, action: str) -> int:
    with server.platform.session() as s:
        return s.scalar(select(func.count()).select_from(AuditEventRow).where(AuditEventRow.action == action)) or 0


def test_parallel_thumbnails_and_downloads_are_all_audited(live_server: LiveServer, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", FakePatient(patient_id="MRN-CONCURRENT"), slices=4, seed=3)
    ingest(live_server.platform, [tmp_path / "ct"], source="concurrency")
    with live_server.platform.session() as s:
        rows = list(s.execute(select(InstanceRow.uid, InstanceRow.digest).where(InstanceRow.format == "dicom")
                              .limit(4)))
    before_views, before_reads = _count(live_server, "image.view"), _count(live_server, "object.read")
    headers = {"Authorization": f"Bearer {live_server.token}"}
    urls = [f"/v1/catalog/instances/{uid}/thumbnail.png?preset=lung" for uid, _ in rows] * 4
    urls += [f"/v1/objects/{digest}" for _, digest in rows] * 2

    def fetch(path: str) -> int:
        with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as client:
            return client.get(path).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(fetch, urls))
    assert codes == [200] * len(urls)
    assert _count(live_server, "image.view") - before_views == 16
    assert _count(live_server, "object.read") - before_reads == 8
