"""Annotations, schema versions and label sets as stored: immutable, content-addressed, reproducible."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
import sqlalchemy.exc
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from medcycle.errors import Conflict, IntegrityError, NotFound, UsageError, ValidationFailed
from medcycle.labels import schemas, sets, store
from medcycle.labels.model import Annotation, Box, Kind, Level, Mask, Polygon
from medcycle.labels.tables import AnnotationRow, AnnotationSetRow, LabelSchemaRow
from medcycle.objects.tables import ObjectRefRow
from medcycle.platform import Platform
from medcycle.store.base import Base
from medcycle.store.engine import create_engine_for
from medcycle.store.migrate import alembic_config, current_revision
from medcycle.store.registry import import_all_tables
from tests.labels.task_helpers import BOX_SCHEMA, add_schema

LABEL_TABLES = {"label_schemas", "label_readers", "label_tasks", "label_task_items", "label_assignments",
                "annotations", "label_adjudications", "annotation_sets", "annotation_set_members"}


def _mask(shape: tuple[int, ...], box: tuple[slice, ...], value: int = 1,
          dtype: Any = np.uint8) -> np.ndarray[Any, Any]:
    arr = np.zeros(shape, dtype=dtype)
    arr[box] = value
    return arr


# -- masks and JSON (no database) ---------------------------------------------------------------------
def test_mask_bytes_are_deterministic_and_keep_their_geometry() -> None:
    arr = _mask((4, 16, 12), (slice(1, 3), slice(2, 9), slice(3, 7)), 2, np.uint16)
    mask = Mask(arr, spacing=(3.0, 0.7, 0.7), origin=(-10.0, 5.5, 0.0), direction=tuple(np.eye(3).ravel()), z=None)
    data, geometry = store.encode_mask(mask)
    again, _ = store.encode_mask(Mask(arr.copy(), spacing=(3.0, 0.7, 0.7), origin=(-10.0, 5.5, 0.0),
                                      direction=tuple(np.eye(3).ravel())))
    assert data == again  # same array, same bytes, same digest
    assert geometry["shape"] == [4, 16, 12] and geometry["dtype"] == "<u2" and geometry["spacing"] == [3.0, 0.7, 0.7]
    back = store.decode_mask(data, geometry)
    assert back == mask and back.array.dtype == np.uint16
    other, _ = store.encode_mask(Mask(arr.astype(bool)))
    assert other != data and store.decode_mask(other, store.encode_mask(Mask(arr.astype(bool)))[1]).array.dtype == bool
    with pytest.raises(IntegrityError, match="shape"):
        store.decode_mask(data, {**geometry, "shape": [4, 16, 11]})
    with pytest.raises(IntegrityError, match="encoding"):
        store.decode_mask(data, {**geometry, "encoding": "rle"})


def test_annotations_from_json_name_the_bad_field(tmp_path: Any) -> None:
    arr = _mask((8, 8), (slice(2, 5), slice(2, 5)))
    np.save(tmp_path / "m.npy", arr)
    buf = io.BytesIO()
    np.save(buf, arr)
    got = store.annotations_from_list([
        {"label": "normal"},
        {"label": "nodule", "kind": "box", "box": [1, 2, 5, 6], "z": 3, "attributes": {"size_mm": 4}},
        {"label": "nodule", "kind": "polygon", "points": [[0, 0], [4, 0], [4, 4]]},
        {"label": "lesion", "kind": "mask", "mask_file": "m.npy", "spacing": [0.5, 0.5]},
        {"label": "lesion", "kind": "mask", "mask_npy_b64": base64.b64encode(buf.getvalue()).decode()},
    ], item="i1", reader="ann", base_dir=tmp_path)
    assert [a.kind for a in got] == [Kind.CLASS, Kind.BOX, Kind.POLYGON, Kind.MASK, Kind.MASK]
    assert got[1].geometry == Box(1, 2, 5, 6, 3) and got[1].attributes == {"size_mm": 4}
    assert isinstance(got[3].geometry, Mask) and got[3].geometry.spacing == (0.5, 0.5)
    assert got[3].geometry == Mask(arr, spacing=(0.5, 0.5)) and got[4].geometry == Mask(arr)
    bad = [
        ([{"label": "x", "kind": "box", "box": [1, 2, 3]}], "annotations[0].box"),
        ([{"label": "x"}, {"label": "x", "kind": "circle"}], "annotations[1].kind"),
        ([{"kind": "class"}], "annotations[0].label"),
        ([{"label": "x", "kind": "polygon", "points": [[0, 0], [1, "a"], [2, 2]]}], "annotations[0].points[1]"),
        ([{"label": "x", "kind": "mask", "mask_file": "m.npy"}], "files are read only from the command line"),
        ([{"label": "x", "kind": "mask", "mask_npy_b64": "%%%"}], "not base64"),
        ([{"label": "x", "kind": "box", "box": [5, 5, 1, 1]}], "corners swapped"),
        ([{"label": "x", "score": "high"}], "annotations[0].score"),
        ({"label": "x"}, "expected a list"),
    ]
    for entries, message in bad:
        with pytest.raises(ValidationFailed, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
            store.annotations_from_list(entries, item="i1")
        assert err.value.hint


# -- schemas ------------------------------------------------------------------------------------------
def test_schema_versions_are_immutable_and_resolvable(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    v1 = add_schema(p, BOX_SCHEMA)
    assert (v1.ref, v1.created, v1.level, v1.class_names) == ("findings@1", True, Level.INSTANCE, ("nodule", "normal"))
    assert v1.label_class("nodule").kinds == (Kind.BOX,)  # type: ignore[union-attr]
    assert add_schema(p, BOX_SCHEMA + "\n# a comment changes nothing\n").id == v1.id  # same content, same version
    v2 = add_schema(p, BOX_SCHEMA.replace("kinds: [box]", "kinds: [box, mask]"))
    assert (v2.ref, v2.created) == ("findings@2", True)
    with p.session() as s:
        assert schemas.get_schema(s, "findings").id == v2.id
        assert schemas.get_schema(s, "findings@latest").id == v2.id
        assert schemas.get_schema(s, "findings@1").id == v1.id
        assert schemas.get_schema(s, v1.id[:10]).ref == "findings@1"
        assert [x.ref for x in schemas.list_schemas(s)] == ["findings@2", "findings@1"]
        assert schemas.load_schema_body(p.objects, v1.id)["classes"][0] == {"name": "nodule", "kinds": ["box"]}
        with pytest.raises(NotFound, match="findings@3"):
            schemas.get_schema(s, "findings@3")
        with pytest.raises(UsageError, match="version number"):
            schemas.get_schema(s, "findings@new")
        row = s.get_one(LabelSchemaRow, v1.id)
        row.description = "rewritten"
        with pytest.raises(Conflict, match="immutable"):
            s.flush()
        s.rollback()
    bad = [
        ("name: x\nclasses:\n  - a\n  - name: b\n    kinds: [circle]\n", "classes[1].kinds: 'circle' is not a kind"),
        ("name: x\nclasses: [a, a]\n", "classes[1].name: 'a' is listed twice"),
        ("name: x\nclasses: []\n", "classes: give a non-empty list"),
        ("name: bad name\nclasses: [a]\n", "name: use letters"),
        ("name: x\nlevel: patient\nclasses: [a]\n", "level: 'patient'"),
        ("name: x\ncolour: red\nclasses: [a]\n", "colour: unknown key"),
        ("name: x\nclasses:\n  - name: a\n    color: red\n", "classes[0].color"),
        ("name: x\nclasses: [a\n", "line"),
        ("- just\n- a list\n", "must hold a mapping"),
    ]
    with p.session() as s:
        for body, message in bad:
            with pytest.raises(ValidationFailed) as err:
                schemas.add_schema(s, p.objects, body, origin="bad.yaml")
            assert err.value.message.startswith("bad.yaml is not a valid label schema")
            assert message in err.value.message, err.value.message
            assert "docs/labels.md" in (err.value.hint or "")


# -- annotations --------------------------------------------------------------------------------------
def test_annotations_are_content_addressed_and_immutable(platform: Platform) -> None:
    p = platform
    arr = _mask((2, 10, 10), (slice(0, 2), slice(3, 7), slice(3, 7)))
    anns = [Annotation("i1", "normal", Kind.CLASS),
            Annotation("i1", "nodule", Kind.BOX, Box(1, 1, 4, 5)),
            Annotation("i1", "nodule", Kind.POLYGON, Polygon(((0, 0), (3, 0), (3, 3)), z=1)),
            Annotation("i1", "lesion", Kind.MASK, Mask(arr, spacing=(2.5, 0.8, 0.8)), attributes={"note": "ggo"})]
    with p.session() as s:
        saved = store.save(s, p.objects, anns, item="i1", level="instance", reader="ann", tool="cvat 2.1",
                           seconds=42.5)
    with p.session() as s:
        again = store.save(s, p.objects, anns, item="i1", level="instance", reader="ann", tool="cvat 2.1",
                           seconds=42.5)
        other = store.save(s, p.objects, anns[:1], item="i1", level="instance", reader="bob")
        assert [a.id for a in again] == [a.id for a in saved]  # a retried submission stores nothing twice
        assert other[0].id != saved[0].id
        assert s.scalar(select(func.count()).select_from(AnnotationRow)) == 5
        mask_rec = saved[3]
        assert mask_rec.mask_digest and mask_rec.geometry and mask_rec.geometry["spacing"] == [2.5, 0.8, 0.8]
        assert s.scalar(select(func.count()).select_from(ObjectRefRow).where(
            ObjectRefRow.digest == mask_rec.mask_digest, ObjectRefRow.owner_kind == "annotation")) == 1
        assert [store.load(p.objects, r) for r in saved] == [
            Annotation(a.image, a.label, a.kind, a.geometry, "ann", a.score, a.attributes) for a in anns]
        assert {r.id for r in store.find(s, item="i1", reader="ann")} == {r.id for r in saved}
        assert saved[1].to_dict()["geometry"] == {"x0": 1, "y0": 1, "x1": 4, "y1": 5, "z": None}
        assert (saved[0].seconds, saved[0].tool, saved[0].stage.value) == (42.5, "cvat 2.1", "read")
        with pytest.raises(ValidationFailed, match="was given for item"):
            store.save(s, p.objects, anns[:1], item="i2", level="instance", reader="ann")
        with pytest.raises(ValidationFailed, match="seconds"):
            store.save(s, p.objects, anns[:1], item="i1", level="instance", reader="ann", seconds=-1)
    with p.session() as s:
        row = s.get_one(AnnotationRow, saved[0].id)
        row.label = "pneumonia"
        with pytest.raises(Conflict, match="immutable"):
            s.flush()
        s.rollback()
    for sql in ("UPDATE annotations SET label = 'x'", "DELETE FROM annotations"):
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="immutable"), p.session() as s:
            s.execute(text(sql))
    with p.session() as s:
        assert s.scalar(select(func.count()).select_from(AnnotationRow)) == 5


# -- label sets: reproducible history -------------------------------------------------------------------
HISTORY = {
    1: "name: lung\nkinds: [box]\nclasses: [nodule]\n",  # boxes
    2: "name: lung\nkinds: [mask]\nclasses: [nodule]\n",  # masks
    3: "name: lung\nkinds: [mask]\nclasses: [nodule, effusion, {name: normal, kinds: [class]}]\n",  # new classes
}


def _history_annotations(version: int) -> list[Annotation]:
    if version == 1:
        return [Annotation("i1", "nodule", Kind.BOX, Box(2, 2, 6, 6)), Annotation("i2", "nodule", Kind.BOX,
                                                                                   Box(0, 0, 3, 3, z=4))]
    nodule = Mask(_mask((8, 8), (slice(2, 6), slice(2, 6))), spacing=(0.7, 0.7))
    if version == 2:
        return [Annotation("i1", "nodule", Kind.MASK, nodule)]
    effusion = Mask(_mask((8, 8), (slice(5, 8), slice(0, 8))), spacing=(0.7, 0.7))
    return [Annotation("i1", "nodule", Kind.MASK, nodule), Annotation("i2", "effusion", Kind.MASK, effusion),
            Annotation("i3", "normal", Kind.CLASS)]


def test_boxes_then_masks_then_new_classes_stay_reproducible(platform: Platform) -> None:
    p = platform
    made: dict[int, tuple[sets.LabelSetInfo, sets.ResolvedLabelSet, bytes]] = {}
    for version in (1, 2, 3):
        schema = add_schema(p, HISTORY[version])
        assert schema.ref == f"lung@{version}"
        anns = _history_annotations(version)
        with p.session() as s:
            ids = [r.id for item in sorted({a.image for a in anns}) for r in store.save(
                s, p.objects, [a for a in anns if a.image == item], item=item, level="instance",
                reader="model:unet-3" if version == 3 else "ann", stage="model" if version == 3 else "import")]
            info = sets.create_label_set(s, p.objects, ids, schema=schema.ref, items=["i1", "i2", "i3"],
                                         origin=f"v{version}")
            assert info.created and info.schema == schema.ref
            made[version] = (info, sets.resolve_label_set(s, p.objects, info.id), p.objects.get(info.id))
    assert len({m[0].id for m in made.values()}) == 3
    # Later versions changed nothing about earlier sets: same schema version, same content, same bytes.
    with p.session() as s:
        for version, (info, resolved, body) in made.items():
            again = sets.resolve_label_set(s, p.objects, info.id[:10])
            assert p.objects.get(info.id) == body
            assert again.schema.ref == f"lung@{version}" and again.schema.id == info.schema_id
            assert again.annotations == resolved.annotations
            assert sorted((a.image, a.label, a.kind.value) for a in again.annotations) == sorted(
                (a.image, a.label, a.kind.value) for a in _history_annotations(version))
            assert again.items == ("i1", "i2", "i3")  # i3 is labelled with nothing in v1 and v2 (a negative)
        v1, v2, v3 = (made[v][1] for v in (1, 2, 3))
        assert {a.kind for a in v1.annotations} == {Kind.BOX} and Box(0, 0, 3, 3, z=4) in {
            a.geometry for a in v1.annotations}
        assert {a.kind for a in v2.annotations} == {Kind.MASK}
        assert v3.schema.class_names == ("nodule", "effusion", "normal")
        mask = next(a.geometry for a in v3.annotations if a.label == "nodule")
        assert isinstance(mask, Mask) and mask.spacing == (0.7, 0.7) and int(mask.array.sum()) == 16
        labels = sets.dataset_labels(s, p.objects, made[3][0].id)
        assert labels.pairs == (("i1", "nodule"), ("i2", "effusion"), ("i3", "normal"))
        assert labels.to_csv() == "instance,label\ni1,nodule\ni2,effusion\ni3,normal\n"
        assert sets.dataset_labels(s, p.objects, made[1][0].id).pairs == (("i1", "nodule"), ("i2", "nodule"))
        needed = sets.label_set_objects(s, made[3][0].id)
        assert made[3][0].id in needed and made[3][0].schema_id in needed and len(needed) == 4  # + 2 masks
        row = s.get_one(AnnotationSetRow, made[1][0].id)
        row.origin = "rewritten"
        with pytest.raises(Conflict, match="immutable"):
            s.flush()
        s.rollback()
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="immutable"), p.session() as s:
        s.execute(text("DELETE FROM annotation_set_members"))


def test_label_sets_check_their_schema_and_dedupe(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    add_schema(p, HISTORY[1])
    add_schema(p, HISTORY[2])
    with p.session() as s:
        boxes = store.save(s, p.objects, _history_annotations(1)[:1], item="i1", level="instance", reader="ann")
        same = store.save(s, p.objects, _history_annotations(1)[:1], item="i1", level="instance", reader="bob")
        first = sets.create_label_set(s, p.objects, [boxes[0].id], schema="lung@1")
        # the same statement by another reader: the same labels, so the same set
        second = sets.create_label_set(s, p.objects, [same[0].id], schema="lung@1")
        assert (first.id, first.created, second.created) == (second.id, True, False)
        with pytest.raises(ValidationFailed, match=r"item i1: .*may be a mask, not a box"):
            sets.create_label_set(s, p.objects, [boxes[0].id], schema="lung@2")
        with pytest.raises(NotFound, match="do not exist"):
            sets.create_label_set(s, p.objects, ["0" * 64], schema="lung@1")
        with pytest.raises(ValidationFailed, match="not among the set's items"):
            sets.create_label_set(s, p.objects, [boxes[0].id], schema="lung@1", items=["i9"])
        with pytest.raises(UsageError, match="not a label set id"):
            sets.get_label_set(s, "xyz")
        with pytest.raises(NotFound):
            sets.get_label_set(s, "abcdef")
        assert [x.id for x in sets.list_label_sets(s)] == [first.id]


# -- migration ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0008_matches_the_tables_and_downgrades(backend: str, tmp_path: Any,
                                                          request: pytest.FixtureRequest) -> None:
    """On an empty database brought to 0008 only, so that later revisions are not under test here."""
    import_all_tables()
    server = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = server.create_database()
        url = server.url_for(name)
    engine = create_engine_for(url)
    try:
        cfg = alembic_config(engine)
        command.upgrade(cfg, "0008")
        assert current_revision(engine) == "0008"
        assert set(inspect(engine).get_table_names()) >= LABEL_TABLES
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert [d for d in diff if LABEL_TABLES & _names(d)] == []
        command.downgrade(cfg, "0007")
        assert not LABEL_TABLES & set(inspect(engine).get_table_names())
        command.upgrade(cfg, "0008")
        with engine.begin() as conn:  # the triggers came back with the tables
            conn.execute(text("INSERT INTO label_schemas (id, name, version, level, multi_label, classes, created_by, "
                              "created_at) VALUES ('abc', 'x', 1, 'instance', false, '[]', 'me', CURRENT_TIMESTAMP)"))
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="immutable"), engine.begin() as conn:
            conn.execute(text("DELETE FROM label_schemas"))
    finally:
        engine.dispose()
        if server is not None:
            server.drop_database(name)


def _names(diff: Any) -> set[str]:
    items = diff if isinstance(diff, list) else [diff]
    found: set[str] = set()
    for item in items:
        for part in item:
            for obj in (part, getattr(part, "table", None)):
                name = getattr(obj, "name", None)
                if isinstance(name, str):
                    found.add(name)
            if isinstance(part, str):
                found.add(part)
    return found
