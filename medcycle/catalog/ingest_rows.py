"""The catalog rows of an ingest: patients, studies, series, instances, object references and the record of each
file, written by the ingesting process (:mod:`medcycle.catalog.ingest`) in batches from the workers' outcomes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medcycle.catalog import ingest_worker as worker
from medcycle.catalog.tables import IngestFileRow, InstanceRow, PatientRow, SeriesRow, StudyRow
from medcycle.objects.refs import add_ref
from medcycle.objects.tables import ObjectRefRow
from medcycle.store.base import utcnow
from medcycle.store.bulk import insert_many

STAT_COLUMNS = ("p01", "p05", "p50", "p95", "p99", "mean", "std", "saturated_fraction", "air_fraction")
#: A file whose SOP Instance UID the catalog holds with other content (another transfer syntax, a device that
#: reuses UIDs): not stored, the catalogued instance is kept, and the file is named in ``conflicts``.
CONFLICT = "conflict"
CONFLICT_REASON = ("same SOP Instance UID as an instance already catalogued, different content; not stored "
                   "(the catalogued instance is kept)")


def _date(value: date | str | None) -> date | None:
    if isinstance(value, date):
        return value
    if not value or len(value) < 8:
        return None
    try:
        return datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


class CatalogWriter:
    """The catalog rows of ingest outcomes, in the caller's session: the single writer of an ingest."""


    def __init__(self, session: Session, source_id: str, run_id: str) -> None:
        self.session, self.source_id, self.run_id = session, source_id, run_id

    def write_batch(self, outs: list[worker.Outcome]) -> list[str]:
        """Catalog rows for a batch of outcomes with a handful of statements for all of them; their final
        statuses. Should a concurrent ingest have written one of the same files or instances meanwhile, the
        batch is rolled back and written outcome by outcome (:meth:`write`), which settles each conflict.

        A file with a catalogued instance's UID but other content is a :data:`CONFLICT`, recorded as such, so
        that a re-run, which skips the file as already seen, names it again."""
        try:
            with self.session.begin_nested():
                statuses = self._bulk(outs)
        except IntegrityError:
            statuses = [self.write(out) for out in outs]
        return self._known_conflicts(outs, statuses)

    def _known_conflicts(self, outs: list[worker.Outcome], statuses: list[str]) -> list[str]:
        """``statuses`` with each duplicate that an earlier ingest recorded as a conflict made a conflict."""
        seen = {str(out.key) for out, status in zip(outs, statuses, strict=True)
                if status == worker.DUPLICATE and out.key is not None}
        if not seen:
            return statuses
        conflicts = set(self.session.scalars(select(IngestFileRow.key).where(
            IngestFileRow.key.in_(seen), IngestFileRow.outcome == CONFLICT)))
        return [CONFLICT if status == worker.DUPLICATE and out.key in conflicts else status
                for out, status in zip(outs, statuses, strict=True)]

    def _bulk(self, outs: list[worker.Outcome]) -> list[str]:
        s = self.session
        statuses = [out.status for out in outs]
        todo = [i for i, out in enumerate(outs) if out.status in (worker.INGESTED, worker.QUARANTINED)]
        if not todo:
            return statuses

        def existing(column: Any, values: set[str]) -> set[str]:
            return set(s.scalars(select(column).where(column.in_(values)))) if values else set()

        recs = {i: outs[i].record for i in todo}
        keys = existing(IngestFileRow.key, {str(outs[i].key) for i in todo})
        uids: dict[str, str] = {  # uid -> digest of the instances in the catalog or this batch
            uid: digest for uid, digest in s.execute(select(InstanceRow.uid, InstanceRow.digest).where(
                InstanceRow.uid.in_({r["uid"] for r in recs.values()})))}
        patients = existing(PatientRow.id, {r["patient_id"] for r in recs.values()})
        studies = existing(StudyRow.uid, {r["study_uid"] for r in recs.values()})
        series = existing(SeriesRow.uid, {r["series_uid"] for r in recs.values()})
        refs = existing(ObjectRefRow.owner_id, {r["uid"] for r in recs.values()})  # owner kind checked below
        now = utcnow()
        # Rows as plain values, inserted with one executemany a table (no ORM objects: building those cost more
        # than the inserts themselves), parents first: each table's foreign keys point at the ones before.
        hierarchy: tuple[list[Any], list[Any], list[Any]] = ([], [], [])  # new patients, studies, series
        instances: list[dict[str, Any]] = []
        new_refs: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        grow: dict[str, list[int]] = {}  # series uid -> [instances, bytes] added
        for i in todo:
            out, rec = outs[i], recs[i]
            key = str(out.key)
            if key in keys:
                statuses[i] = worker.DUPLICATE
                continue
            keys.add(key)
            if rec["uid"] in uids:
                status = worker.DUPLICATE if uids[rec["uid"]] == rec["digest"] else CONFLICT
                files.append(self._file_values(key, status, rec["uid"], CONFLICT_REASON if status == CONFLICT
                                               else None, now))
                statuses[i] = status
                continue
            uids[rec["uid"]] = rec["digest"]
            self._new_hierarchy(rec, (patients, studies, series), hierarchy, now)
            instances.append(self._instance_values(out, rec, now))
            counts = grow.setdefault(rec["series_uid"], [0, 0])
            counts[0] += 1
            counts[1] += rec["bytes"]
            if rec["uid"] not in refs:
                new_refs.append({"digest": rec["digest"], "owner_kind": "instance", "owner_id": rec["uid"],
                                 "size": rec["bytes"], "created_at": now})
            files.append(self._file_values(key, out.status, rec["uid"], out.reason, now))
        if refs:  # a reference left by an instance since deleted: add_ref checks exactly (rare)
            for i in todo:
                rec = recs[i]
                if rec["uid"] in refs and statuses[i] == outs[i].status:
                    add_ref(s, rec["digest"], "instance", rec["uid"], size=rec["bytes"])
            s.flush()
        conn = s.connection()
        for model, values in ((PatientRow, hierarchy[0]), (StudyRow, hierarchy[1]), (SeriesRow, hierarchy[2]),
                              (InstanceRow, instances), (ObjectRefRow, new_refs), (IngestFileRow, files)):
            if values:
                insert_many(conn, cast(Table, model.__table__), values)
        if grow:
            table = cast(Table, SeriesRow.__table__)
            conn.execute(
                update(table)
                .where(table.c.uid == bindparam("s_uid"))
                .values(n_instances=table.c.n_instances + bindparam("s_n"), bytes=table.c.bytes + bindparam("s_b")),
                [{"s_uid": uid, "s_n": n, "s_b": b} for uid, (n, b) in grow.items()],
            )
        return statuses

    def _file_values(self, key: str, outcome: str, uid: str, reason: str | None, now: datetime) -> dict[str, Any]:
        return {"key": key, "source_id": self.source_id, "outcome": outcome, "instance_uid": uid, "reason": reason,
                "run_id": self.run_id, "created_at": now}

    def _instance_values(self, out: worker.Outcome, rec: dict[str, Any], now: datetime) -> dict[str, Any]:
        values = {
            "uid": rec["uid"],
            "series_uid": rec["series_uid"],
            "digest": rec["digest"],
            "format": rec["format"],
            "state": "quarantined" if out.status == worker.QUARANTINED else "ok",
            "quarantine_reason": out.reason if out.status == worker.QUARANTINED else None,
            "sop_class": rec.get("sop_class"),
            "transfer_syntax": rec.get("transfer_syntax"),
            "photometric": rec.get("photometric"),
            "bits_stored": rec.get("bits_stored"),
            "rows": rec.get("rows"),
            "columns": rec.get("columns"),
            "frames": rec.get("frames"),
            "instance_number": rec.get("instance_number"),
            "bytes": rec["bytes"],
            "ingest_run_id": self.run_id,
            "created_at": now,
        }
        stats = rec.get("stats") or {}
        values.update({name: stats.get(name) for name in STAT_COLUMNS})
        return values

    def _instance(self, out: worker.Outcome, rec: dict[str, Any], now: datetime) -> InstanceRow:
        return InstanceRow(**self._instance_values(out, rec, now))

    def _new_hierarchy(
        self, rec: dict[str, Any], have: tuple[set[str], set[str], set[str]],
        new: tuple[list[Any], list[Any], list[Any]], now: datetime,
    ) -> None:
        """Add to ``new`` the values of the patient, study and series rows ``rec`` needs that are not in ``have``
        (the ids in the catalog or already added), and their ids to ``have``."""
        patients, studies, series = have
        if rec["patient_id"] not in patients:
            patients.add(rec["patient_id"])
            new[0].append({"id": rec["patient_id"], "sex": rec.get("sex"), "created_at": now})
        if rec["study_uid"] not in studies:
            studies.add(rec["study_uid"])
            new[1].append(self._study_values(rec, now))
        if rec["series_uid"] not in series:
            series.add(rec["series_uid"])
            new[2].append(self._series_values(rec, now))

    def _study_values(self, rec: dict[str, Any], now: datetime) -> dict[str, Any]:
        return {"uid": rec["study_uid"], "patient_id": rec["patient_id"], "source_id": self.source_id,
                "study_date": _date(rec.get("study_date")), "age_band": rec.get("age_band"), "created_at": now}

    def _series_values(self, rec: dict[str, Any], now: datetime) -> dict[str, Any]:
        study_date = _date(rec.get("study_date"))
        return {
            "uid": rec["series_uid"],
            "study_uid": rec["study_uid"],
            "source_id": self.source_id,
            "modality": rec.get("modality"),
            "body_part": rec.get("body_part"),
            "body_part_raw": rec.get("body_part_raw"),
            "laterality": rec.get("laterality"),
            "view_position": rec.get("view_position"),
            "manufacturer": rec.get("manufacturer"),
            "model": rec.get("model"),
            "year": study_date.year if study_date else None,
            "slice_thickness": rec.get("slice_thickness"),
            "pixel_spacing_row": rec.get("pixel_spacing_row"),
            "pixel_spacing_col": rec.get("pixel_spacing_col"),
            "kvp": rec.get("kvp"),
            "convolution_kernel": rec.get("convolution_kernel"),
            "field_strength": rec.get("field_strength"),
            "image_type": rec.get("image_type"),
            "n_instances": 0,
            "bytes": 0,
            "created_at": now,
        }

    def _series(self, rec: dict[str, Any], now: datetime) -> SeriesRow:
        return SeriesRow(**self._series_values(rec, now))

    def write(self, out: worker.Outcome) -> str:
        """Catalog rows for one outcome, in a savepoint; returns the final status."""
        s = self.session
        if out.status in (worker.REJECTED, worker.SKIPPED):
            return out.status
        assert out.key is not None
        if out.status == worker.DUPLICATE or s.get(IngestFileRow, out.key) is not None:
            return worker.DUPLICATE
        rec = out.record
        try:
            with s.begin_nested():
                there = s.get(InstanceRow, rec["uid"])
                if there is not None:
                    status = worker.DUPLICATE if there.digest == rec["digest"] else CONFLICT
                    s.add(
                        IngestFileRow(
                            key=out.key,
                            source_id=self.source_id,
                            outcome=status,
                            instance_uid=rec["uid"],
                            reason=CONFLICT_REASON if status == CONFLICT else None,
                            run_id=self.run_id,
                            created_at=utcnow(),
                        )
                    )
                    return status
                self._hierarchy(rec)
                s.add(self._instance(out, rec, utcnow()))
                s.execute(
                    update(SeriesRow)
                    .where(SeriesRow.uid == rec["series_uid"])
                    .values(n_instances=SeriesRow.n_instances + 1, bytes=SeriesRow.bytes + rec["bytes"])
                )
                add_ref(s, rec["digest"], "instance", rec["uid"], size=rec["bytes"])
                s.add(
                    IngestFileRow(
                        key=out.key,
                        source_id=self.source_id,
                        outcome=out.status,
                        instance_uid=rec["uid"],
                        reason=out.reason,
                        run_id=self.run_id,
                        created_at=utcnow(),
                    )
                )
        except IntegrityError:
            # Another ingest wrote the same file or instance between our check and insert.
            return worker.DUPLICATE
        return out.status

    def _hierarchy(self, rec: dict[str, Any]) -> None:
        s = self.session
        now = utcnow()
        if s.get(PatientRow, rec["patient_id"]) is None:
            s.add(PatientRow(id=rec["patient_id"], sex=rec.get("sex"), created_at=now))
        if s.get(StudyRow, rec["study_uid"]) is None:
            s.add(StudyRow(**self._study_values(rec, now)))
        if s.get(SeriesRow, rec["series_uid"]) is None:
            s.add(self._series(rec, now))
        s.flush()
