"""Working sets, freezing, refs, immutability, guards, diff, label import (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from medcycle.catalog.tables import InstanceRow, SeriesRow, StudyRow
from medcycle.datasets import items, labels, versions
from medcycle.datasets.manifest import MANIFEST_FORMAT, Manifest
from medcycle.datasets.splits import ratios_policy
from medcycle.datasets.tables import DatasetVersionItemRow, DatasetVersionRow, LabelSetRow
from medcycle.errors import Conflict, NotFound, UsageError, ValidationFailed
from medcycle.objects.maintenance import gc
from medcycle.platform import Platform
from medcycle.testing.catalog import make_catalog
from tests.datasets.conftest import Catalog, labels_csv


def test_working_set_by_query_and_uids(platform: Platform, catalog: Catalog) -> None:
    with platform.session() as s:
        cr = len(list(s.scalars(select(InstanceRow.uid).join(SeriesRow).where(SeriesRow.modality == "CT"))))
        info = items.create_dataset(s, "ct", query='modality == "CT"', description="CT only", actor="alice")
        assert info.items == cr and info.versions == 0
        study = catalog.studies[0]
        in_study = set(s.scalars(select(InstanceRow.uid).join(SeriesRow).where(SeriesRow.study_uid == study)))
        change = items.add_items(s, "ct", uids=[study])  # a study uid stands for its instances
        assert change.matched == len(in_study) and change.items == len(set(items.working_set(s, "ct")) | in_study)
        assert items.add_items(s, "ct", uids=[study]).changed == 0  # idempotent
        removed = items.remove_items(s, "ct", uids=sorted(in_study)[:1])
        assert removed.changed == 1
        with pytest.raises(NotFound) as err:
            items.add_items(s, "ct", uids=["2.25.999", study])
        assert "2.25.999" in err.value.message
        with pytest.raises(UsageError):
            items.add_items(s, "ct")
        with pytest.raises(UsageError):
            items.add_items(s, "ct", query="modality = 'CT'")  # the catalog query language's error
        with pytest.raises(Conflict):
            items.create_dataset(s, "ct")
        with pytest.raises(UsageError):
            items.create_dataset(s, "bad name!")
        assert [d.name for d in items.list_datasets(s)] == ["ct"]


def test_freeze_makes_a_content_addressed_version(platform: Platform, frozen: str) -> None:
    with platform.session() as s:
        row = versions.resolve(s, frozen)
        body = platform.objects.get(row.id)
        assert hashlib.sha256(body).hexdigest() == row.id  # the id is the digest of the manifest bytes
        manifest = Manifest.from_bytes(body, expected_digest=row.id)
        raw = json.loads(body)
        assert raw["format"] == MANIFEST_FORMAT and raw["dataset"] == "cxr"
        assert [i["uid"] for i in raw["items"]] == sorted(i["uid"] for i in raw["items"])
        assert set(raw["items"][0]) == {"uid", "digest", "bytes", "format", "patient", "study", "series", "source",
                                        "modality", "labels", "split"}
        assert len(manifest.items) == 96 and row.n_patients == 12 and row.label_set_id == manifest.label_set
        assert {i.split for i in manifest.items} == {"train", "val", "test"}
        assert all(i.labels for i in manifest.items)
        for ref in ("cxr", "cxr@latest", "cxr@v1", f"cxr@{row.id[:8]}", "cxr@v1.0"):
            assert versions.resolve(s, ref).id == row.id
        for bad in ("cxr@v9", "cxr@nope", "cxr@abcdef12"):
            with pytest.raises(NotFound):
                versions.resolve(s, bad)
        with pytest.raises(NotFound):
            versions.resolve(s, "other@v1")
        again = versions.freeze(s, platform.objects, "cxr")  # nothing changed: the same version back
        assert again.created is False and again.version.id == row.id and "nothing changed" in again.warnings[0]
        with pytest.raises(Conflict) as err:
            versions.freeze(s, platform.objects, "cxr", tag="v1.0")
        assert "never move" in (err.value.hint or "")
        versions.tag_version(s, "cxr@v1", "baseline")
        assert versions.get_version(s, "cxr@baseline").tags == ("v1.0", "baseline")
        log = versions.log(s, "cxr")
        assert [(v.seq, v.n_items) for v in log] == [(1, 96)]
        assert sum(c["items"] for c in log[0].split_counts.values()) == 96
        assert log[0].leakage["ok"] is True


def test_versions_are_immutable_in_the_orm_and_the_database(platform: Platform, frozen: str) -> None:
    with platform.session() as s:
        version_id = versions.resolve(s, frozen).id
    with platform.session() as s:
        row = versions.resolve(s, frozen)
        row.message = "rewritten"
        with pytest.raises(Conflict):
            s.flush()
        s.rollback()
        s.delete(versions.resolve(s, frozen))
        with pytest.raises(Conflict):
            s.flush()
        s.rollback()
    statements = [
        update(DatasetVersionRow).where(DatasetVersionRow.id == version_id).values(n_items=1),
        update(DatasetVersionItemRow).where(DatasetVersionItemRow.version_id == version_id).values(split="train"),
        delete(DatasetVersionItemRow).where(DatasetVersionItemRow.version_id == version_id),
        update(LabelSetRow).values(level="series"),
        text("DELETE FROM label_entries"),
    ]
    for stmt in statements:
        with pytest.raises(DBAPIError, match="immutable"), platform.session() as s:
            s.execute(stmt)
    with platform.session() as s:
        assert versions.resolve(s, frozen).n_items == 96


def test_referenced_data_is_kept_and_deletion_refused(platform: Platform, frozen: str) -> None:
    with platform.session() as s:
        row = versions.resolve(s, frozen)
        report = gc(platform.objects, s, grace_seconds=0)
        digests = set(s.scalars(select(DatasetVersionItemRow.digest).where(DatasetVersionItemRow.version_id == row.id)))
        needed = digests | {row.id, *row.card_digests.values(), row.label_set_id}
        assert not needed & set(report.deleted)
        assert all(platform.objects.exists(d) for d in needed)
        uid = s.scalar(select(DatasetVersionItemRow.instance_uid).limit(1))
        with pytest.raises(Conflict) as err:
            versions.check_deletable(s, instance_uids=[uid])
        assert "cxr@v1" in err.value.message
        with pytest.raises(Conflict):
            versions.check_deletable(s, digests=sorted(digests)[:1])
        versions.check_deletable(s, instance_uids=["2.25.1"])  # unreferenced: fine
        with pytest.raises(Conflict) as err:
            items.delete_dataset(s, "cxr")
        assert "immutable" in (err.value.hint or "")
    with pytest.raises(DBAPIError), platform.session() as s:  # the database refuses too (foreign key)
        s.execute(delete(InstanceRow).where(InstanceRow.uid == uid))
    with platform.session() as s:  # data only in a working set may go: it leaves the working set
        make_catalog(s, sources=1, patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                     seed=99)
        new = sorted(s.scalars(select(InstanceRow.uid).where(InstanceRow.uid.not_in(
            select(DatasetVersionItemRow.instance_uid)))))
        assert items.create_dataset(s, "scratch", uids=new).items == 2
        s.execute(delete(InstanceRow).where(InstanceRow.uid == new[0]))
        assert items.working_set(s, "scratch") == new[1:]
        items.delete_dataset(s, "scratch")
        assert [d.name for d in items.list_datasets(s)] == ["cxr"]


def test_diff_reports_added_removed_relabeled_and_moved(platform: Platform, catalog: Catalog, frozen: str) -> None:
    with platform.session() as s:
        v1 = versions.item_states(s, versions.resolve(s, frozen).id)
        study_of = {u: st for u, st in s.execute(select(InstanceRow.uid, SeriesRow.study_uid).join(SeriesRow))}
        gone = sorted(v1)[:5]
        items.remove_items(s, "cxr", uids=gone)
        flip = {catalog.studies[1], catalog.studies[2]}
        labels.import_labels(s, platform.objects, "cxr", labels_csv(catalog.studies, flip))
        result = versions.freeze(s, platform.objects, "cxr", tag="v2", message="drop 5, fix 2 labels")
        assert result.created and result.changes is not None
        assert result.changes["removed"] == 5 and result.changes["label_set_changed"] is True
        d = versions.diff(s, "cxr@v1.0", "cxr@v2")
        assert d.removed == gone and d.added == []
        relabeled = {u for u, _, _ in d.relabeled}
        assert relabeled == {u for u in v1 if study_of[u] in flip and u not in gone}
        assert d.moved == []  # same policy: every patient keeps its split
        items.add_items(s, "cxr", uids=gone)
        versions.freeze(s, platform.objects, "cxr", tag="v3", policy=ratios_policy("train=0.5,test=0.5", seed=5))
        d13 = versions.diff(s, "cxr@v1.0", "cxr@v3")
        assert d13.added == d13.removed == [] and d13.summary()["split_policy_changed"] is True
        assert d13.moved and all(new in {"train", "test"} for _, _, new in d13.moved)
        assert d13.to_dict()["summary"]["moved"] == len(d13.moved)
        assert [v.seq for v in versions.log(s, "cxr")] == [3, 2, 1]


def test_label_csv_errors_name_the_lines(platform: Platform, catalog: Catalog) -> None:
    with platform.session() as s:
        items.create_dataset(s, "l", query="")
        bad = f"study,label\n{catalog.studies[0]},normal\n,normal\n{catalog.studies[1]},\n{catalog.studies[2]},a,b\n"
        with pytest.raises(ValidationFailed) as err:
            labels.import_labels(s, platform.objects, "l", bad, origin="bad.csv")
        assert "bad.csv has 2 bad row(s)" in err.value.message
        assert "line 3: the study uid is empty" in err.value.message
        assert "line 4: the label is empty" in err.value.message
        with pytest.raises(ValidationFailed) as err:
            labels.import_labels(s, platform.objects, "l", f"study,label\n{catalog.studies[0]},x\n2.25.42,y\n")
        assert "line 3: no study '2.25.42'" in err.value.message
        with pytest.raises(ValidationFailed, match="line 1"):
            labels.import_labels(s, platform.objects, "l", "patient,label\np,x\n")
        series = s.scalar(select(SeriesRow.uid).join(StudyRow).where(StudyRow.uid == catalog.studies[0]))
        one = labels.import_labels(s, platform.objects, "l", f"series,label\n{series},a\n{series},b\n{series},a\n")
        assert one.level.value == "series" and one.classes == ("a", "b") and one.n_labels == 2
        same = labels.import_labels(s, platform.objects, "l", f"series,label\n{series},b\n{series},a\n")
        assert same.id == one.id  # content-addressed
        assert platform.objects.exists(one.id)


def test_label_csv_reports_format_errors_and_unknown_uids_together(platform: Platform, catalog: Catalog) -> None:
    """Unknown uids were only reported once every other line was fixed (two rounds), unlike the documented
    example; a '|' in a label split it in two in manifest.csv; a semicolon-separated file was refused with a
    message that did not say why."""
    with platform.session() as s:
        items.create_dataset(s, "l", query="")
        mixed = f"study,label\n{catalog.studies[0]},normal\n,normal\n2.25.42,x\n{catalog.studies[1]},a|b\n"
        with pytest.raises(ValidationFailed) as err:
            labels.import_labels(s, platform.objects, "l", mixed, origin="labels.csv")
        message = err.value.message
        assert "labels.csv has 3 bad row(s)" in message
        assert message.index("line 3: the study uid is empty") < message.index("line 4: no study '2.25.42'")
        assert "line 5:" in message and "'|'" in message
        with pytest.raises(ValidationFailed) as err:
            labels.import_labels(s, platform.objects, "l", f"study;label\n{catalog.studies[0]};normal\n")
        assert "semicolon" in err.value.message


def test_labels_import_of_a_file_that_is_not_utf8(catalog: Catalog) -> None:
    from medcycle.datasets.labels import decode_labels_csv

    assert decode_labels_csv("\ufeffstudy,label\n".encode(), origin="x.csv") == "study,label\n"
    latin1 = f"study,label\n{catalog.studies[0]},normal\n{catalog.studies[1]},caf\xe9\n".encode("latin-1")
    with pytest.raises(ValidationFailed) as err:
        decode_labels_csv(latin1, origin="x.csv")
    assert "line 3" in err.value.message and "UTF-8" in err.value.message


def test_a_taken_vn_tag_is_named_as_taken_and_empty_splits_are_warned(platform: Platform, catalog: Catalog) -> None:
    """Re-running `freeze --tag v1` said "'v1' is not a valid tag for version v2" (no v2 was being made) instead
    of naming the version that has the tag; splits left empty on a tiny dataset passed without a word."""
    with platform.session() as s:
        items.create_dataset(s, "tiny", uids=[catalog.studies[0]])
        first = versions.freeze(s, platform.objects, "tiny", tag="v1",
                                policy=ratios_policy("train=0.7,val=0.15,test=0.15"))
        assert first.version.split_counts.keys() == {"train"}
        assert any("val, test" in w and "empty" in w for w in first.warnings), first.warnings
        with pytest.raises(Conflict) as err:
            versions.freeze(s, platform.objects, "tiny", tag="v1")
        assert f"already names version {first.version.id[:12]}" in err.value.message


def test_names_tags_and_split_names_with_a_trailing_newline_are_refused(platform: Platform, catalog: Catalog) -> None:
    """The name patterns ended in '$', which also matches before a final newline: a dataset 'cxr\\n', a tag
    'v1.0\\n', a split 'test\\n' and a source 'clinic\\n' were accepted, and could hardly be named again."""
    from medcycle.catalog.sources import check_source_name

    with pytest.raises(UsageError):
        check_source_name("clinic\n")
    with pytest.raises(UsageError):
        ratios_policy({"train": 0.5, "test\n": 0.5})
    with platform.session() as s:
        with pytest.raises(UsageError):
            items.create_dataset(s, "cxr\n", query="")
        items.create_dataset(s, "cxr", query="")
        with pytest.raises(UsageError):
            versions.freeze(s, platform.objects, "cxr", tag="v1.0\n")
        versions.freeze(s, platform.objects, "cxr", tag="v1.0")
        for ref in ("cxr@v1\n", "cxr@v1.0\n"):
            with pytest.raises(NotFound):
                versions.resolve(s, ref)
