"""Freeze a dataset's working set into an immutable version; resolve, list, show, tag and diff versions.

A version is ``NAME@REF`` where REF is a tag, ``latest``, ``vN`` (the N-th version) or a prefix of the
version id (at least 4 hex characters). ``NAME`` alone means the latest version.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import sqlalchemy.exc
from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.catalog.tables import InstanceRow, SeriesRow, SourceRow, StudyRow
from medcycle.datasets import cards
from medcycle.datasets.diff import ItemState, VersionDiff, diff_items
from medcycle.datasets.items import check_name, chunks, get_dataset
from medcycle.datasets.labels import get_label_set, labels_for
from medcycle.datasets.manifest import Manifest, ManifestItem
from medcycle.datasets.splits import LeakageReport, SplitPolicy, assign_splits, check_leakage
from medcycle.datasets.tables import (
    DatasetItemRow,
    DatasetRow,
    DatasetTagRow,
    DatasetVersionItemRow,
    DatasetVersionRow,
)
from medcycle.errors import Conflict, NotFound, UsageError
from medcycle.objects.base import ObjectStore
from medcycle.objects.tables import ObjectRefRow
from medcycle.store.base import utcnow

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
SEQ_RE = re.compile(r"^v(\d+)\Z")
HEX_RE = re.compile(r"^[0-9a-f]{4,64}\Z")
OWNER_KIND = "dataset_version"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    id: str
    dataset: str
    seq: int
    tags: tuple[str, ...]
    parent: str | None
    label_set: str | None
    split_policy: dict[str, Any]
    n_items: int
    n_patients: int
    n_studies: int
    n_series: int
    bytes: int
    split_counts: dict[str, Any]
    leakage: dict[str, Any]
    message: str | None
    created_by: str
    created_at: datetime

    @property
    def short(self) -> str:
        return self.id[:12]

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.tags[0] if self.tags else f'v{self.seq}'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "dataset": self.dataset, "seq": self.seq, "tags": list(self.tags), "parent": self.parent,
            "label_set": self.label_set, "split_policy": self.split_policy, "items": self.n_items,
            "patients": self.n_patients, "studies": self.n_studies, "series": self.n_series, "bytes": self.bytes,
            "split_counts": self.split_counts, "leakage": self.leakage, "message": self.message,
            "created_by": self.created_by, "created_at": self.created_at.isoformat(),
        }


@dataclass
class FreezeResult:
    version: VersionInfo
    created: bool  # False when an identical version already existed
    leakage: LeakageReport
    changes: dict[str, Any] | None = None  # summary of the diff against the parent
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version.to_dict(), "created": self.created, "leakage": self.leakage.to_dict(),
                "changes": self.changes, "warnings": self.warnings}


# -- lookups ----------------------------------------------------------------------------------------
def split_ref(ref: str) -> tuple[str, str | None]:
    name, sep, rest = ref.partition("@")
    check_name(name)
    if sep and not rest:
        raise UsageError(f"{ref!r} names no version after '@'", hint="Write NAME@TAG, NAME@vN or NAME@ID-PREFIX.")
    return name, rest or None


def _tags(session: Session, version_id: str) -> tuple[str, ...]:
    rows = session.execute(select(DatasetTagRow.tag).where(DatasetTagRow.version_id == version_id)
                           .order_by(DatasetTagRow.created_at, DatasetTagRow.tag))
    return tuple(rows.scalars())


def version_info(session: Session, row: DatasetVersionRow, dataset: str | None = None) -> VersionInfo:
    name = dataset or session.get_one(DatasetRow, row.dataset_id).name
    return VersionInfo(
        id=row.id, dataset=name, seq=row.seq, tags=_tags(session, row.id), parent=row.parent_id,
        label_set=row.label_set_id, split_policy=dict(row.split_policy), n_items=row.n_items,
        n_patients=row.n_patients, n_studies=row.n_studies, n_series=row.n_series, bytes=row.bytes,
        split_counts=dict(row.split_counts), leakage=dict(row.leakage), message=row.message,
        created_by=row.created_by, created_at=row.created_at,
    )


def resolve(session: Session, ref: str) -> DatasetVersionRow:
    """The version ``ref`` names (``NAME``, ``NAME@TAG``, ``NAME@latest``, ``NAME@vN``, ``NAME@IDPREFIX``)."""
    name, which = split_ref(ref)
    ds = get_dataset(session, name)
    base = select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == ds.id)
    hint = f"List the versions with `medcycle dataset log {name}`."
    if which is None or which == "latest":
        row = session.scalar(base.order_by(DatasetVersionRow.seq.desc()).limit(1))
        if row is None:
            raise NotFound(f"dataset {name!r} has no version yet",
                           hint=f"Freeze one: `medcycle dataset freeze {name}`.")
        return row
    tagged = session.scalar(select(DatasetTagRow.version_id).where(
        DatasetTagRow.dataset_id == ds.id, DatasetTagRow.tag == which))
    if tagged is not None:
        return session.get_one(DatasetVersionRow, tagged)
    if m := SEQ_RE.match(which):
        row = session.scalar(base.where(DatasetVersionRow.seq == int(m.group(1))))
        if row is not None:
            return row
    if HEX_RE.match(which):
        rows = list(session.scalars(base.where(DatasetVersionRow.id.startswith(which))))
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise UsageError(f"{ref!r} matches {len(rows)} versions", hint="Give more characters of the id. " + hint)
    raise NotFound(f"dataset {name!r} has no version {which!r}", hint=hint)


def get_version(session: Session, ref: str) -> VersionInfo:
    return version_info(session, resolve(session, ref))


def log(session: Session, name: str) -> list[VersionInfo]:
    """Every version of the dataset, newest first."""
    ds = get_dataset(session, name)
    rows = session.scalars(select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == ds.id)
                           .order_by(DatasetVersionRow.seq.desc()))
    return [version_info(session, r, name) for r in rows]


def item_states(session: Session, version_id: str) -> dict[str, ItemState]:
    stmt = select(DatasetVersionItemRow.instance_uid, DatasetVersionItemRow.digest, DatasetVersionItemRow.split,
                  DatasetVersionItemRow.labels).where(DatasetVersionItemRow.version_id == version_id)
    return {uid: ItemState(d, s, tuple(lab or ())) for uid, d, s, lab in session.execute(stmt)}


def load_manifest(objects: ObjectStore, version_id: str) -> Manifest:
    """The version's manifest, read from the object store and verified against the version id."""
    return Manifest.from_bytes(objects.get(version_id), expected_digest=version_id)


def diff(session: Session, ref_a: str, ref_b: str) -> VersionDiff:
    a, b = resolve(session, ref_a), resolve(session, ref_b)
    stmt = (select(InstanceRow.digest, InstanceRow.bytes)
            .join(DatasetVersionItemRow, DatasetVersionItemRow.instance_uid == InstanceRow.uid)
            .where(DatasetVersionItemRow.version_id == b.id))
    sizes = {d: int(n) for d, n in session.execute(stmt)}
    out = diff_items(item_states(session, a.id), item_states(session, b.id), a_id=a.id, b_id=b.id, sizes=sizes)
    out.label_set = (a.label_set_id, b.label_set_id)
    out.split_policy = (dict(a.split_policy), dict(b.split_policy))
    return out


# -- freezing ---------------------------------------------------------------------------------------
def _working_items(session: Session, ds: DatasetRow) -> list[tuple[Any, ...]]:
    stmt = (
        select(InstanceRow.uid, InstanceRow.digest, InstanceRow.bytes, InstanceRow.format, InstanceRow.state,
               SeriesRow.uid, SeriesRow.modality, StudyRow.uid, StudyRow.patient_id, SourceRow.name)
        .select_from(DatasetItemRow)
        .join(InstanceRow, InstanceRow.uid == DatasetItemRow.instance_uid)
        .join(SeriesRow, SeriesRow.uid == InstanceRow.series_uid)
        .join(StudyRow, StudyRow.uid == SeriesRow.study_uid)
        .join(SourceRow, SourceRow.id == SeriesRow.source_id)
        .where(DatasetItemRow.dataset_id == ds.id)
    )
    return [tuple(r) for r in session.execute(stmt)]


def _previous_splits(session: Session, version_id: str) -> dict[str, str]:
    stmt = (
        select(StudyRow.patient_id, DatasetVersionItemRow.split)
        .select_from(DatasetVersionItemRow)
        .join(InstanceRow, InstanceRow.uid == DatasetVersionItemRow.instance_uid)
        .join(SeriesRow, SeriesRow.uid == InstanceRow.series_uid)
        .join(StudyRow, StudyRow.uid == SeriesRow.study_uid)
        .where(DatasetVersionItemRow.version_id == version_id, DatasetVersionItemRow.split.is_not(None))
        .distinct()
    )
    return {p: s for p, s in session.execute(stmt) if s is not None}


def _check_tag(session: Session, ds: DatasetRow, tag: str, seq: int) -> None:
    """A tag is new in its dataset, well formed, not ``latest``, and ``vN`` only on the N-th version."""
    taken = session.scalar(select(DatasetTagRow.version_id).where(
        DatasetTagRow.dataset_id == ds.id, DatasetTagRow.tag == tag))
    if taken is not None:  # first: a taken vN is taken, not malformed
        raise Conflict(f"tag {tag!r} already names version {taken[:12]} of {ds.name!r}",
                       hint="Tags never move; choose a new tag (e.g. v2, 2026-03-release).", version=taken)
    m = SEQ_RE.match(tag)
    if not TAG_RE.match(tag) or tag == "latest" or (m and int(m.group(1)) != seq):
        raise UsageError(f"{tag!r} is not a valid tag for version v{seq}",
                         hint="Use letters, digits, '.', '_' or '-' (up to 64); 'latest' is reserved and "
                         "vN may only tag the N-th version.")


def tag_version(session: Session, ref: str, tag: str, *, actor: str = "system", via: str = "library") -> VersionInfo:
    row = resolve(session, ref)
    ds = session.get_one(DatasetRow, row.dataset_id)
    _check_tag(session, ds, tag, row.seq)
    session.add(DatasetTagRow(dataset_id=ds.id, tag=tag, version_id=row.id, created_by=actor, created_at=utcnow()))
    session.flush()
    audit.record(session, actor, "dataset.tag", target_kind="dataset_version", target_id=row.id, via=via, tag=tag)
    return version_info(session, row, ds.name)


def freeze(
    session: Session, objects: ObjectStore, name: str, *, tag: str | None = None, policy: SplitPolicy | None = None,
    resplit: bool = False, message: str | None = None, actor: str = "system", via: str = "library",
) -> FreezeResult:
    """Make an immutable version of the working set with the current label set and a split.

    Args:
        policy: the split; ``None`` keeps the previous version's policy (no split for a first version).
        resplit: assign every patient afresh; by default patients of the previous version made with the
            same policy keep their split and only new patients are assigned.

    Freezing content identical to an existing version returns that version (``created`` False), tagging it
    if a new tag is given. The manifest, the card and every listed image object are referenced so that
    ``medcycle store gc`` never deletes them.
    """
    with _gc_paused():
        return _freeze(session, objects, name, tag=tag, policy=policy, resplit=resplit, message=message,
                       actor=actor, via=via)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile: a freeze makes a few objects per item (rows, manifest items,
    dicts), nearly all of which live on, so the collector would run full passes over the whole process
    (measured: a quarter of a 10,000-item freeze) to find nothing. Restored afterwards; nothing is collected
    early or lost, collection just resumes."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _freeze(
    session: Session, objects: ObjectStore, name: str, *, tag: str | None, policy: SplitPolicy | None,
    resplit: bool, message: str | None, actor: str, via: str,
) -> FreezeResult:
    ds = get_dataset(session, name)
    parent = session.scalar(select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == ds.id)
                            .order_by(DatasetVersionRow.seq.desc()).limit(1))
    if tag is not None:
        _check_tag(session, ds, tag, (parent.seq if parent else 0) + 1)
    if policy is None:
        policy = SplitPolicy.from_dict(parent.split_policy if parent else None)
    keep = parent is not None and not resplit and SplitPolicy.from_dict(parent.split_policy) == policy
    manifest = _build_manifest(session, ds, policy, _previous_splits(session, parent.id) if parent and keep else {})
    leakage = check_leakage(manifest.items)
    warnings = [] if leakage.ok else [
        f"leakage: {len(leakage.patients)} patient(s) and {len(leakage.images)} image(s) in several splits"]
    used = {item.split for item in manifest.items}
    if empty := [n for n in policy.names if n not in used]:
        patients = len({item.patient for item in manifest.items})
        warnings.append(f"empty split(s): {', '.join(empty)} ({patients} patient(s) for {len(policy.names)} "
                        "splits); add data or use fewer splits")
    body, version_id = manifest.encoded()  # the one serialisation of the manifest: its bytes and their digest
    existing = session.get(DatasetVersionRow, version_id)
    if existing is not None:
        if tag is not None:
            _check_tag(session, ds, tag, existing.seq)
            session.add(DatasetTagRow(dataset_id=ds.id, tag=tag, version_id=existing.id, created_by=actor,
                                      created_at=utcnow()))
            session.flush()
        return FreezeResult(version_info(session, existing, ds.name), False, leakage, None,
                            [f"nothing changed: identical to v{existing.seq}"])
    row, changes = _write_version(session, objects, ds, parent, manifest, body, version_id, leakage, message, actor)
    if tag is not None:
        session.add(DatasetTagRow(dataset_id=ds.id, tag=tag, version_id=row.id, created_by=actor,
                                  created_at=row.created_at))
        session.flush()
    audit.record(session, actor, "dataset.freeze", target_kind="dataset_version", target_id=row.id, via=via,
                 dataset=ds.name, seq=row.seq, tag=tag, items=row.n_items)
    return FreezeResult(version_info(session, row, ds.name), True, leakage, changes, warnings)


def _build_manifest(session: Session, ds: DatasetRow, policy: SplitPolicy, previous: dict[str, str]) -> Manifest:
    """The manifest of the working set: catalog fields, labels of the current label set, split assignment."""
    rows = _working_items(session, ds)
    if not rows:
        raise UsageError(f"dataset {ds.name!r} has no items to freeze",
                         hint=f"Add some with `medcycle dataset add {ds.name} --query EXPR`.")
    quarantined = [r[0] for r in rows if r[4] != "ok"]
    if quarantined:
        raise Conflict(f"{len(quarantined)} item(s) of {ds.name!r} are quarantined, e.g. {quarantined[0]}",
                       hint=f"Remove them: `medcycle dataset remove {ds.name} --query 'quarantined'`.")
    labels = labels_for(session, ds.label_set_id, [(r[0], r[5], r[7]) for r in rows])
    base = [ManifestItem(uid=r[0], digest=r[1], bytes=int(r[2]), format=r[3], patient=r[8], study=r[7], series=r[5],
                         source=r[9], modality=r[6], labels=labels.get(r[0], ())) for r in rows]
    assignment = assign_splits(base, policy, previous)
    items = [i.with_split(assignment.get(i.patient)) for i in base]
    return Manifest.build(ds.name, items, label_set=ds.label_set_id, split_policy=policy.to_dict())


def _write_version(
    session: Session, objects: ObjectStore, ds: DatasetRow, parent: DatasetVersionRow | None, manifest: Manifest,
    body: bytes, version_id: str, leakage: LeakageReport, message: str | None, actor: str,
) -> tuple[DatasetVersionRow, dict[str, Any] | None]:
    """Store the manifest (``body``, whose digest is ``version_id``) and card objects, then the version row,
    its items and its object references.

    Items and references go in with Core ``INSERT`` statements run as one executemany per chunk: no ORM
    unit of work (nothing reads them back in this session), a tenth of the cost per row.
    """
    objects.put(body, expected_digest=version_id)  # objects first: a crash leaves garbage, never a dangling ref
    changes = None
    if parent is not None:
        sizes = {i.digest: i.bytes for i in manifest.items}
        new_states = {i.uid: ItemState(i.digest, i.split, i.labels) for i in manifest.items}
        changes = diff_items(item_states(session, parent.id), new_states, sizes=sizes).summary()
        changes["label_set_changed"] = parent.label_set_id != ds.label_set_id
        changes["split_policy_changed"] = dict(parent.split_policy) != manifest.split_policy
    row = DatasetVersionRow(
        id=version_id, dataset_id=ds.id, seq=(parent.seq if parent else 0) + 1, parent_id=parent.id if parent else None,
        label_set_id=ds.label_set_id, split_policy=manifest.split_policy, n_items=len(manifest.items),
        n_patients=len({i.patient for i in manifest.items}), n_studies=len({i.study for i in manifest.items}),
        n_series=len({i.series for i in manifest.items}), bytes=manifest.bytes_total, manifest_bytes=len(body),
        split_counts=_split_counts(manifest), leakage=leakage.to_dict(), message=message, created_by=actor,
        created_at=utcnow(),
    )
    label_set = get_label_set(session, ds.label_set_id) if ds.label_set_id else None
    card = cards.build_card(session, ds, row, manifest, label_set=label_set, leakage=leakage,
                            changes=changes, parent_seq=parent.seq if parent else None)
    rendered = {"json": cards.card_json_bytes(card), "md": cards.render_markdown(card).encode(),
                "html": cards.render_html(card).encode()}
    infos = objects.put_many(list(rendered.values()))
    row.card, row.card_digests = card, {fmt: info.digest for fmt, info in zip(rendered, infos, strict=True)}
    session.add(row)  # complete before it is written: the row is never updated afterwards
    try:
        session.flush()
    except sqlalchemy.exc.IntegrityError as exc:  # another freeze of this dataset took the same number
        raise Conflict(f"dataset {ds.name!r} was frozen by someone else at the same time",
                       hint=f"Run `medcycle dataset freeze {ds.name}` again.") from exc
    items_table = cast(Table, DatasetVersionItemRow.__table__)
    for part in chunks(manifest.items, 5000):
        session.execute(insert(items_table), [
            {"version_id": version_id, "instance_uid": i.uid, "digest": i.digest, "split": i.split,
             "labels": list(i.labels)} for i in part])
    sizes_by_digest = {i.digest: i.bytes for i in manifest.items}
    sizes_by_digest[version_id] = len(body)
    sizes_by_digest.update({info.digest: info.size for info in infos})
    _add_refs(session, version_id, sizes_by_digest)
    session.flush()
    return row, changes


def _split_counts(manifest: Manifest) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    patients: dict[str, set[str]] = {}
    for i in manifest.items:
        key = i.split or "unsplit"
        c = out.setdefault(key, {"items": 0, "bytes": 0, "patients": 0})
        c["items"] += 1
        c["bytes"] += i.bytes
        patients.setdefault(key, set()).add(i.patient)
    for key, ps in patients.items():
        out[key]["patients"] = len(ps)
    return out


def _add_refs(session: Session, version_id: str, sizes: dict[str, int]) -> None:
    now = utcnow()
    refs_table = cast(Table, ObjectRefRow.__table__)
    for part in chunks(sorted(sizes), 5000):
        session.execute(insert(refs_table), [
            {"digest": d, "owner_kind": OWNER_KIND, "owner_id": version_id, "size": sizes[d], "created_at": now}
            for d in part])


# -- guards -----------------------------------------------------------------------------------------
def versions_referencing(
    session: Session, *, instance_uids: Sequence[str] = (), digests: Sequence[str] = ()
) -> list[str]:
    """``NAME@vN`` of every version that lists one of the instances or object digests."""
    found: set[tuple[str, int]] = set()
    base = (select(DatasetRow.name, DatasetVersionRow.seq).select_from(DatasetVersionItemRow)
            .join(DatasetVersionRow, DatasetVersionRow.id == DatasetVersionItemRow.version_id)
            .join(DatasetRow, DatasetRow.id == DatasetVersionRow.dataset_id).distinct())
    for part in chunks(sorted(set(instance_uids))):
        found.update((n, q) for n, q in session.execute(base.where(DatasetVersionItemRow.instance_uid.in_(part))))
    for part in chunks(sorted(set(digests))):
        found.update((n, q) for n, q in session.execute(base.where(DatasetVersionItemRow.digest.in_(part))))
    return [f"{n}@v{s}" for n, s in sorted(found)]


def check_deletable(session: Session, *, instance_uids: Sequence[str] = (), digests: Sequence[str] = ()) -> None:
    """Raise :class:`Conflict` when a frozen version references any of the instances or objects.

    Catalog and store maintenance call this before deleting data; the database refuses too (foreign keys).
    """
    refs = versions_referencing(session, instance_uids=instance_uids, digests=digests)
    if refs:
        shown = ", ".join(refs[:5]) + (f" and {len(refs) - 5} more" if len(refs) > 5 else "")
        raise Conflict(
            f"the data is part of {len(refs)} frozen dataset version(s): {shown}",
            hint="Dataset versions are immutable so that results stay reproducible; data they list cannot be deleted.",
            versions=refs[:100],
        )


def count_versions(session: Session, dataset_id: str) -> int:
    return int(session.scalar(select(func.count()).where(DatasetVersionRow.dataset_id == dataset_id)) or 0)
