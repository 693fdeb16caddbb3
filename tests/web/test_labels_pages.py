"""The labels pages in-process, one logged-in client per role (admin, annotators A and B, a senior reader, a viewer):
annotators see only their items (any other answers 404 and is audited), the labeling form submits through the
library, the review overlays draw each reader and the consensus in their colours, seniors adjudicate, leads see
progress and agreement."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from medcycle.auth import audit
from medcycle.catalog.ingest import ingest
from medcycle.catalog.tables import InstanceRow, SeriesRow
from medcycle.errors import UsageError
from medcycle.labels import adjudication, readers, schemas, store, tasks
from medcycle.labels.agreement import Ratings, kappa_matrix
from medcycle.labels.model import Annotation, Box, Kind, Mask
from medcycle.platform import Platform
from medcycle.web import labels as labels_pages
from medcycle.web import labels_images
from tests.web.labels_helpers import FINDINGS_SCHEMA, create_users, ct_series, ingest_phantoms, logged_in, make_app
from tests.web.test_pages import parts

PNG = b"\x89PNG\r\n\x1a\n"
CT_SLICES = 5
ROLES = {"ada": "admin", "ann": "annotator", "bob": "annotator", "cal": "annotator", "sue": "annotator",
         "vic": "viewer"}


@dataclass
class World:
    platform: Platform
    ct: str  # the CT series (5 slices): a volume item
    clients: dict[str, TestClient]
    mine: dict[str, list[str]]  # reader -> items assigned in T-1

    def items_of(self, reader: str) -> set[str]:
        return set(self.mine.get(reader, []))

    def shared(self, a: str, b: str) -> list[str]:
        return sorted(self.items_of(a) & self.items_of(b))

    def readers_of(self, item: str) -> list[str]:
        return sorted(r for r, items in self.mine.items() if item in items)

    def not_mine(self, reader: str) -> str:
        everything = {i for items in self.mine.values() for i in items}
        return sorted(everything - self.items_of(reader))[0]


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> Iterator[World]:
    """A CT series and two radiographs, one task T-1 (series level, 2 readers per item, blinded, adjudication
    below 0.9) read by ann, bob and cal; sue is a senior reader; a client logged in (web session) per user."""
    ingest_phantoms(platform, tmp_path / "in", slices=CT_SLICES, ct_size=48, ct_seed=1, radiographs=2, dx_size=64)
    with platform.session() as s:
        schemas.add_schema(s, platform.objects, FINDINGS_SCHEMA, origin="findings.yaml", actor="ada")
        for name in ("ann", "bob", "cal"):
            readers.set_reader(s, name, qualified=True, actor="ada")
        readers.set_reader(s, "sue", senior=True, actor="ada")
        items = tasks.task_items(s, schema="findings", query='source == "phantoms"')
        tasks.create_task(s, items, schema="findings", readers_per_item=2, readers=["ann", "bob", "cal"],
                          adjudication_threshold=0.9, due="2031-01-31", seed=1, name="phantoms", actor="ada")
        ct = ct_series(s)
        mine = tasks.assignments_of(s, 1)
        tokens = create_users(s, ROLES)
    with ExitStack() as stack:
        yield World(platform, ct, logged_in(stack, make_app(platform), tokens), mine)


def denied(platform: Platform, actor: str) -> list[tuple[str, str | None, Any]]:
    with platform.session() as s:
        return [(e.action, e.target_id, e.details.get("item")) for e in audit.query(s, actor=actor)
                if e.outcome == "denied" and e.via == "web"]


def image_views(platform: Platform, actor: str) -> list[dict[str, Any]]:
    with platform.session() as s:
        return [e.details for e in audit.query(s, actor=actor, action="image.view") if e.via == "web"]


def png(content: bytes) -> np.ndarray[Any, Any]:
    assert content.startswith(PNG)
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))


def has_color(pixels: np.ndarray[Any, Any], color: str) -> int:
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return int(np.all(pixels == rgb, axis=-1).sum())


def url(item: str, page: str = "") -> str:
    return labels_pages.item_url("T-1", item, page)


def submit(client: TestClient, item: str, classes: list[str], boxes: list[dict[str, Any]],
           seconds: str = "12.5") -> Any:
    return client.post(url(item), data={"classes": classes, "boxes": json.dumps(boxes), "seconds": seconds})


# -- who sees what --------------------------------------------------------------------------------------
def test_each_role_sees_only_what_access_allows_and_refusals_are_audited(world: World) -> None:
    ada, ann, bob, vic = (world.clients[n] for n in ("ada", "ann", "bob", "vic"))
    platform = world.platform

    # the lead: every task, progress per reader, every item's review, the agreement dashboard
    r = ada.get("/ui/labels")
    assert r.status_code == 200 and 'data-task="T-1"' in r.text and "phantoms" in r.text
    page = parts(r.text)
    assert (page.h1, page.title) == ("Labeling tasks", "Labeling tasks · medcycle")  # the nav entry's title
    assert 'class="nav-link active" href="/ui/labels"' in r.text
    r = ada.get("/ui/labels/tasks/T-1")
    assert r.status_code == 200
    for reader in ("ann", "bob", "cal"):
        assert f'data-reader="{reader}"' in r.text
    assert len(re.findall(r'<tr data-item="', r.text)) == 3 and "2031-01-31" in r.text
    assert ada.get(url(world.ct, "review")).status_code == 200
    assert ada.get("/ui/labels/tasks/T-1/agreement").status_code == 200
    assert ada.get(url(world.ct)).headers["location"] == url(world.ct, "review")  # not assigned: the review

    # annotator A: her own queue, exactly her items
    r = ann.get("/ui/labels/queue")
    assert r.status_code == 200
    listed = set(re.findall(r'data-item="([^"]+)"', r.text))
    assert listed == world.items_of("ann") and len(listed) == 2
    assert ann.get("/ui/labels").status_code == 200
    own = sorted(world.items_of("ann"))[0]
    r = ann.get(url(own))
    assert r.status_code == 200 and 'id="label-form"' in r.text and 'data-testid="viewer"' in r.text
    r = ann.get(url(own, "image.png"), params={"slice": 0})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(PNG)
    assert any(v["item"] == own for v in image_views(platform, "ann"))  # every image served is audited

    # … and nothing else: another item's page, image, overlay and submission answer 404 like a missing one
    other = world.not_mine("ann")
    for path in (url(other), url(other, "image.png"), url(other, "overlay.png"), url(other, "review"),
                 url("2.25.999999", "")):
        r = ann.get(path)
        assert r.status_code == 404, path
        assert "text/html" in r.headers["content-type"] and "assigned to ann" in unescape(r.text)
    assert submit(ann, other, ["normal"], []).status_code == 404
    refused = denied(platform, "ann")
    assert ("labels.item.read", "T-1", other) in refused and ("labels.image.view", "T-1", other) in refused
    assert ("labels.review.read", "T-1", other) in refused and ("labels.submit", "T-1", other) in refused
    assert not any(v["item"] == other for v in image_views(platform, "ann"))
    # nor through the catalog's thumbnails: those need read-data, which annotators do not have
    with platform.session() as s:
        instance = s.scalars(select(InstanceRow.uid).where(InstanceRow.series_uid == other)).first()
    assert ann.get(f"/v1/catalog/instances/{instance}/thumbnail.png").status_code == 403

    # blinded: no review page, no other reader's layer, no agreement dashboard, no one else's queue (audited)
    assert ann.get(url(own, "review")).status_code == 403
    partner = next(r for r in ("bob", "cal") if own in world.items_of(r))
    r = ann.get(url(own, "overlay.png"), params={"layers": partner})
    assert r.status_code == 403
    assert ann.get(url(own, "overlay.png"), params={"layers": "ann"}).status_code == 200
    assert ann.get("/ui/labels/tasks/T-1/agreement").status_code == 403
    assert ann.get("/ui/labels/queue", params={"reader": "bob"}).status_code == 403
    assert ann.get("/ui/labels/tasks/T-1").headers["location"] == "/ui/labels/queue?task=T-1"
    actions = {a for a, _, _ in denied(platform, "ann")}
    assert {"labels.review.read", "labels.annotations.read", "labels.agreement.read",
            "labels.queue.read"} <= actions

    # annotator B: his own items, not A's
    r = bob.get("/ui/labels/queue")
    assert set(re.findall(r'data-item="([^"]+)"', r.text)) == world.items_of("bob")
    assert bob.get(url(world.not_mine("bob"))).status_code == 404
    assert ("labels.item.read", "T-1", world.not_mine("bob")) in denied(platform, "bob")

    # a viewer has no labeling permission at all; without a session the pages ask to log in
    for path in ("/ui/labels", "/ui/labels/queue", url(own), url(own, "image.png"), "/ui/labels/tasks/T-1"):
        assert vic.get(path).status_code == 403, path
    with TestClient(make_app(platform), follow_redirects=False) as anonymous:
        assert anonymous.get("/ui/labels/queue").headers["location"].startswith("/login?next=")


# -- labeling --------------------------------------------------------------------------------------------
def test_labeling_form_submits_through_the_library_and_progress_updates(world: World) -> None:
    me = world.readers_of(world.ct)[0]  # whoever reads the CT volume (uids, hence assignments, vary per run)
    ann = world.clients[me]
    r = ann.get(url(world.ct))
    assert r.status_code == 200
    assert f'data-slices="{CT_SLICES}"' in r.text and 'id="lv-slice"' in r.text and 'id="lv-preset"' in r.text
    assert 'data-width="48" data-height="48"' in r.text
    assert 'data-testid="item-progress"' in r.text and "0 / 2" in r.text

    # slices render differently (the phantom's nodule grows towards the middle) and out-of-range is refused
    first = png(ann.get(url(world.ct, "image.png"), params={"slice": 0}).content)
    middle = png(ann.get(url(world.ct, "image.png"), params={"slice": 2}).content)
    assert first.shape == middle.shape == (512, 512, 3) and not np.array_equal(first, middle)
    lung = png(ann.get(url(world.ct, "image.png"), params={"slice": 2, "preset": "lung"}).content)
    assert not np.array_equal(lung, middle)
    assert ann.get(url(world.ct, "image.png"), params={"slice": CT_SLICES}).status_code == 400
    assert ann.get(url(world.ct, "image.png"), params={"preset": "x"}).status_code == 400

    # bad input is shown on the page with the library's message; nothing is stored
    r = submit(ann, world.ct, ["abnormal"], [{"label": "nodule", "box": [1, 2], "z": 2}])
    assert r.status_code == 422 and "boxes[0].box" in unescape(r.text) and 'data-testid="form-error"' in r.text
    r = ann.post(url(world.ct), data={"classes": ["abnormal"], "boxes": "[{", "seconds": "3"})
    assert r.status_code == 422 and "boxes: not JSON" in unescape(r.text)
    r = submit(ann, world.ct, ["abnormal"], [], seconds="-4")
    assert r.status_code == 422
    r = submit(ann, world.ct, ["unknown"], [])
    assert r.status_code == 422 and "not a class of findings@1" in unescape(r.text)

    # a good reading: stored through tasks.submit with its slice and time, then on to the next item
    r = submit(ann, world.ct, ["abnormal"], [{"label": "nodule", "box": [10, 12, 30, 28.5], "z": 2}])
    assert r.status_code == 303
    following = sorted(world.items_of(me) - {world.ct})[0]
    assert r.headers["location"] == f"{url(following)}?done={world.ct}"
    with world.platform.session() as s:
        found = store.find(s, task_id=1, item=world.ct, reader=me)
        progress = next(p for p in tasks.get_task(s, "T-1").readers_progress if p.reader == me)
    assert sorted((a.kind.value, a.label) for a in found) == [("box", "nodule"), ("class", "abnormal")]
    box = next(a for a in found if a.kind is Kind.BOX)
    assert box.geometry == {"x0": 10, "y0": 12, "x1": 30, "y1": 28.5, "z": 2} and box.seconds == 12.5
    assert box.tool == "medcycle-web" and (progress.submitted, progress.seconds) == (1, 12.5)
    r = ann.get(r.headers["location"])
    assert 'data-testid="flash"' in r.text and "1 / 2" in r.text
    r = ann.get("/ui/labels/queue")
    assert world.ct not in set(re.findall(r'data-item="([^"]+)"', r.text)) and "1 / 2" in r.text

    # submitted once: the item shows the reading read-only, drawn in the reader's colour; a second post is refused
    r = ann.get(url(world.ct))
    assert 'id="label-form"' not in r.text and "nodule (box [10, 12, 30, 28.5] on slice 2)" in unescape(r.text)
    assert f"layers={me}" in unescape(r.text)
    drawn = png(ann.get(url(world.ct, "overlay.png"), params={"layers": me, "slice": 2}).content)
    assert has_color(drawn, labels_images.PALETTE[0]) > 50
    assert submit(ann, world.ct, ["normal"], []).status_code == 409

    # the last item: back to the queue, which says nothing is left
    r = submit(ann, following, ["normal"], [])
    assert r.status_code == 303 and r.headers["location"] == f"/ui/labels/queue?task=T-1&done={following}"
    r = ann.get(r.headers["location"])
    assert "Nothing left to read in T-1" in r.text and "2 / 2" in r.text


# -- review -----------------------------------------------------------------------------------------------
def test_review_overlays_each_reader_and_the_consensus_and_a_senior_adjudicates(world: World) -> None:
    a, b = world.readers_of(world.ct)
    ca, cb = world.clients[a], world.clients[b]
    # the readers agree on one nodule (IoU 0.68) but the first also marks a second: F1 0.67 < 0.9
    assert submit(ca, world.ct, ["abnormal"], [{"label": "nodule", "box": [10, 10, 30, 30], "z": 2},
                                               {"label": "nodule", "box": [34, 6, 44, 16], "z": 2}]).status_code == 303
    assert submit(cb, world.ct, ["abnormal"], [{"label": "nodule", "box": [12, 12, 32, 32], "z": 2}]).status_code == 303
    with world.platform.session() as s:
        entry = adjudication.get_adjudication(s, "T-1", world.ct)
    assert entry.state == "open" and entry.agreement == pytest.approx(2 / 3)

    ada = world.clients["ada"]
    r = ada.get(url(world.ct, "review"))
    assert r.status_code == 200
    page = unescape(r.text)
    assert f'data-reader="{a}"' in page and f'data-reader="{b}"' in page
    assert "nodule (box [11, 11, 31, 31] on slice 2)" in page  # the cluster's median box
    assert "abnormal (class)" in page and 'data-testid="why-not"' in page  # an admin who is not a senior
    assert f"layers={a},{b},consensus" in page

    colors = labels_images.reader_colors([a, b])
    params = {"layers": f"{a},{b},consensus", "slice": 2}
    drawn = png(ada.get(url(world.ct, "overlay.png"), params=params).content)
    plain = png(ada.get(url(world.ct, "image.png"), params={"slice": 2}).content)
    assert drawn.shape == plain.shape
    assert has_color(drawn, colors[a]) > 50 and has_color(drawn, colors[b]) > 50
    assert has_color(drawn, labels_images.CONSENSUS_COLOR) > 50
    for color in (*colors.values(), labels_images.CONSENSUS_COLOR):
        assert has_color(plain, color) == 0
    other_slice = png(ada.get(url(world.ct, "overlay.png"), params={**params, "slice": 0}).content)
    assert has_color(other_slice, colors[a]) == 0  # boxes belong to their slice
    only_b = png(ada.get(url(world.ct, "overlay.png"), params={"layers": b, "slice": 2}).content)
    assert has_color(only_b, colors[a]) == 0 and has_color(only_b, colors[b]) > 50
    assert ada.get(url(world.ct, "overlay.png"), params={"layers": "nobody"}).status_code == 400

    # the lead may not resolve without being a senior reader; a reader of the item may not either
    r = ada.post(url(world.ct, "review"), data={"action": f"reader:{a}"})
    assert r.status_code == 403 and "not a senior reader" in unescape(r.text)

    # the senior reader: the review page with accept/reject, then the consensus accepted
    sue = world.clients["sue"]
    r = sue.get(url(world.ct, "review"))
    assert r.status_code == 200 and 'data-testid="accept-form"' in r.text and 'data-testid="reject"' in r.text
    assert 'data-testid="adjudication-queue"' in sue.get("/ui/labels/queue").text
    r = sue.post(url(world.ct, "review"), data={"action": "consensus", "note": "one nodule"})
    assert r.status_code == 303 and r.headers["location"] == f"{url(world.ct, 'review')}?resolved=1"
    with world.platform.session() as s:
        entry = adjudication.get_adjudication(s, "T-1", world.ct)
        state = tasks.item_states(s, 1)[world.ct][0]
    assert (entry.state, entry.decision, entry.resolved_by, entry.note) == ("resolved", "new", "sue", "one nodule")
    assert state is tasks.ItemState.RESOLVED and len(entry.annotation_ids) == 2
    r = sue.get(url(world.ct, "review") + "?resolved=1")
    assert "resolved" in r.text and "adjudication" in r.text and 'data-testid="accept-form"' not in r.text
    assert sue.post(url(world.ct, "review"), data={"action": f"reader:{a}"}).status_code == 409


def test_a_senior_rejects_the_readings_with_their_own_labels(world: World) -> None:
    a, b = world.readers_of(world.ct)
    submit(world.clients[a], world.ct, ["abnormal"], [])
    submit(world.clients[b], world.ct, ["normal"], [])
    sue = world.clients["sue"]
    r = sue.post(url(world.ct, "review"), data={"action": "own", "classes": ["abnormal"], "seconds": "40",
                                                 "boxes": json.dumps([{"label": "nodule", "box": [5, 5, 9, 9],
                                                                       "z": 1}])})
    assert r.status_code == 303
    with world.platform.session() as s:
        entry = adjudication.get_adjudication(s, "T-1", world.ct)
        own = store.find(s, task_id=1, item=world.ct, reader="sue", stage=store.Stage.ADJUDICATION)
    assert entry.decision == "new" and sorted(a.label for a in own) == ["abnormal", "nodule"]
    assert all(a.seconds == 40 for a in own)
    drawn = png(sue.get(url(world.ct, "overlay.png"), params={"layers": "adjudication", "slice": 1}).content)
    rendered = png(sue.get(url(world.ct, "image.png"), params={"slice": 1}).content)
    assert not np.array_equal(drawn, rendered)
    assert sue.post(url(world.ct, "review"), data={"action": "bogus"}).status_code == 400


# -- agreement ---------------------------------------------------------------------------------------------
def test_agreement_dashboard_shows_the_libraries_reader_matrix(world: World) -> None:
    answers = {"ann": "abnormal", "bob": "normal", "cal": "abnormal"}
    for reader, items in world.mine.items():
        for i, item in enumerate(items):
            label = answers[reader] if i == 0 else "normal"
            assert submit(world.clients[reader], item, [label], []).status_code == 303
    r = world.clients["ada"].get("/ui/labels/tasks/T-1/agreement")
    assert r.status_code == 200
    block = re.search(r'<script type="application/json" id="agreement-data">(.*?)</script>', r.text, re.S)
    assert block is not None
    chart = json.loads(block.group(1))
    titles = [m["title"] for m in chart["matrices"]]
    assert titles == ["Cohen's kappa (class labels)", "Percent agreement (class labels)",
                      "Matched-box F1 (IoU ≥ 0.5)"]
    table: dict[str, dict[str, str | None]] = {}
    for reader, items in world.mine.items():
        table[reader] = {item: (answers[reader] if i == 0 else "normal") for i, item in enumerate(items)}
    expected = kappa_matrix(Ratings.from_table(dict(sorted(table.items())), ["normal", "abnormal"]))
    kappa = chart["matrices"][0]
    assert kappa["readers"] == list(expected.readers) and kappa["shared"] == expected.shared.tolist()
    for got, want in zip(kappa["values"], expected.values.tolist(), strict=True):
        assert got == pytest.approx([None if np.isnan(v) else v for v in want], nan_ok=True)
    assert len(chart["items"]) == 3
    # the readers' scorecards (reader qualification): standing and time per study, charted by month
    cards = re.search(r'data-testid="scorecard-table">(.*?)</table>', r.text, re.S)
    assert cards is not None
    assert re.findall(r'<tr data-reader="([^"]+)"', cards.group(1)) == ["ann", "bob", "cal"]
    assert cards.group(1).count("qualified</span>") == 3 and "12 s" in cards.group(1)
    assert set(chart["scorecards"]) == {"ann", "bob", "cal"}
    assert chart["scorecards"]["ann"]["seconds"] == [12.5]
    r = world.clients["ada"].get("/ui/labels/tasks/T-1")
    assert r.text.count('data-testid="agreement">') == 3


# -- drawing ------------------------------------------------------------------------------------------------
def test_masks_are_drawn_as_contours_on_their_slice() -> None:
    volume = np.zeros((3, 20, 20), np.uint8)
    volume[1, 5:15, 5:15] = 1
    flat = np.zeros((20, 20), np.uint8)
    flat[16:19, 1:4] = 1
    layers = [labels_images.Layer("r", "#e6194b", (Annotation("x", "lesion", Kind.MASK, Mask(volume)),)),
              labels_images.Layer("f", "#4363d8", (Annotation("x", "lesion", Kind.MASK, Mask(flat, z=1)),)),
              labels_images.Layer("c", "#ffe119", (Annotation("x", "nodule", Kind.BOX, Box(2, 2, 4, 4, z=1)),), 3)]
    base = Image.new("RGB", (200, 200), (40, 40, 40))
    on = np.asarray(labels_images.draw_layers(base, (20, 20), layers, index=1, slices=3))
    off = np.asarray(labels_images.draw_layers(base, (20, 20), layers, index=0, slices=3))
    for color in ("#e6194b", "#4363d8", "#ffe119"):
        assert has_color(on, color) > 0 and has_color(off, color) == 0, color
    # the contour runs along the mask's edge, inside it; the inside and the outside keep the image
    assert tuple(on[100, 50]) == tuple(on[100, 51]) == (0xE6, 0x19, 0x4B)
    assert tuple(on[100, 100]) == tuple(on[100, 47]) == tuple(on[30, 30]) == (40, 40, 40)
    assert has_color(on, "#e6194b") == 4 * 2 * 100 - 4 * 4  # 2 px wide around a 100 x 100 square


def test_a_nifti_volume_is_one_item_with_a_plane_per_slice(sqlite_platform: Platform, tmp_path: Path) -> None:
    import nibabel as nib

    volume = np.zeros((40, 30, 6), np.float32)
    for k in range(6):
        volume[5:5 + 5 * k, 4:20, k] = 100.0  # a block that grows along the slices
    folder = tmp_path / "in" / "sub-001" / "anat"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / "sub-001_T1w.nii.gz")
    assert ingest(sqlite_platform, [tmp_path / "in"], source="mri").ingested == 1
    with sqlite_platform.session(write=False) as s:
        series = s.scalars(select(SeriesRow.uid)).one()
        stack = labels_images.item_stack(s, "series", series)
    assert stack.slices == 6 and [p.frame for p in stack.planes] == list(range(6))
    content = sqlite_platform.objects.get(stack.planes[0].digest)
    renders = [labels_images.render_plane(content, p, size=120) for p in stack.planes]
    assert all(native == (stack.width, stack.height) == (40, 30) for _, native in renders)
    bright = [int((np.asarray(img.convert("L")) > 128).sum()) for img, _ in renders]
    assert bright == sorted(bright) and bright[0] < bright[-1]  # each plane is its own slice
    with pytest.raises(UsageError, match="outside this item's 6 slice"):
        stack.plane(6)
