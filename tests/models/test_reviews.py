"""Reviewing an evaluation's cases over REST: the gallery's cases worst first, verdicts (audited, changeable),
pins into the regression suite, roles, forged cross-site writes and bad input."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medcycle.api.app import create_app
from medcycle.auth.tables import AuditEventRow
from medcycle.errors import NotFound, UsageError
from medcycle.evaluation.gallery import case_entries, preview, worst_first
from medcycle.evaluation.predict import CasePrediction
from medcycle.models import registry, reviews
from medcycle.models.tables import CaseReviewRow
from medcycle.platform import Platform
from tests.models.test_cli_api import token


def report_with_cases(platform: Platform, *, segmentation: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """A registered version with a gate report whose gallery holds five cases (the shape evaluate stores)."""
    image = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(1, 16, 16)
    preds = []
    for i, p_lesion in enumerate((0.9, 0.2, 0.6, 0.45, 0.05)):
        label = i % 2  # 0 normal, 1 lesion
        if segmentation:
            truth = np.zeros((16, 16), bool)
            truth[4:10, 4:10] = True
            pred = np.roll(truth, i, axis=1)
            metrics = {"dice": 1.0 - i / 10, "hd95": float(i), "asd": i / 2, "nsd": 1.0 - i / 5}
            preds.append(CasePrediction(f"case/{i}", -1, dice=metrics["dice"], metrics=metrics, split="test",
                                        preview=preview(image, truth=truth, pred=pred)))
        else:
            preds.append(CasePrediction(f"case/{i}", label, probs=(1 - p_lesion, p_lesion), split="test",
                                        factors={"source": "a"}, preview=preview(image)))
    entries = case_entries(preds, ["normal", "lesion"], segmentation=segmentation, threshold=0.5, positive=1,
                           objects=platform.objects, limit=4)
    digest = platform.objects.put(json.dumps({"segmentation": segmentation, "cases": entries}).encode()).digest
    weights = platform.objects.put(b"weights").digest
    with platform.session() as s:
        v = registry.register(s, platform.objects, "nodules", weights_digest=weights)
        rid = registry.record_gate_report(s, v.ref, passed=True, summary={"reports": {"cases": digest}})
    return rid, entries


def test_case_entries_keep_the_worst_and_store_previews(platform: Platform) -> None:
    _rid, entries = report_with_cases(platform)
    # error = 1 - p(true class): case 4 (normal, p_lesion .05) is best and is left out of the four kept
    assert [e["key"] for e in entries] == ["case/0", "case/1", "case/2", "case/3"]
    assert entries[0]["truth"] == "normal" and entries[0]["predicted"] == "lesion"
    assert entries[0]["metrics"]["error"] == pytest.approx(0.9)
    assert platform.objects.get(entries[0]["preview"]).startswith(b"\x89PNG")
    assert [e["key"] for e in worst_first(entries, "p_true")] == ["case/0", "case/1", "case/2", "case/3"]


def test_preview_draws_truth_and_prediction_contours() -> None:
    from io import BytesIO

    from PIL import Image

    truth = np.zeros((16, 16), bool)
    truth[2:8, 2:8] = True
    pred = np.zeros((16, 16), bool)
    pred[9:14, 9:14] = True
    img = np.asarray(Image.open(BytesIO(preview(np.zeros((1, 16, 16), np.float32), truth=truth, pred=pred))))
    assert img.shape == (256, 256, 3)
    green = np.all(img == (64, 220, 96), axis=-1)
    red = np.all(img == (255, 64, 64), axis=-1)
    assert green[:128, :128].any() and not green[150:, 150:].any() and red[150:, 150:].any()


def test_verdicts_and_pins_over_rest(platform: Platform) -> None:
    rid, entries = report_with_cases(platform)
    key = entries[0]["key"]  # contains a slash: the route takes the rest of the path
    with TestClient(create_app(platform, web=False), raise_server_exceptions=False) as client:
        viewer, annotator = token(platform, "vi", "viewer"), token(platform, "ann", "annotator")
        eng = token(platform, "eng", "ml-engineer")
        r = client.get(f"/v1/models/reports/{rid}/cases", headers=viewer)
        assert r.status_code == 200 and [c["key"] for c in r.json()["cases"]] == [e["key"] for e in entries]
        assert client.get(f"/v1/models/reports/{rid}/cases?sort=dice", headers=viewer).status_code == 400

        url = f"/v1/models/reports/{rid}/cases/{key}"
        body = {"verdict": "model_error", "note": "missed the lesion"}
        assert client.put(f"{url}/verdict", json=body, headers=viewer).status_code == 403
        r = client.put(f"{url}/verdict", json=body, headers=annotator)
        assert r.status_code == 200 and r.json()["verdict"] == "model_error" and r.json()["reviewer"] == "ann"
        r = client.put(f"{url}/verdict", json={"verdict": "label_error"}, headers=eng)  # changed, by another person
        assert r.status_code == 200
        r = client.put(f"{url}/verdict", json={"verdict": "wrong"}, headers=eng)
        assert r.status_code == 400 and "model_error" in r.json()["error"]["hint"]
        r = client.put(f"/v1/models/reports/{rid}/cases/nope/verdict", json=body, headers=eng)
        assert r.status_code == 404 and "gallery" in r.json()["error"]["message"]
        r = client.put(f"{url}/verdict", json=body, headers={**eng, "Origin": "https://evil.example"})
        assert r.status_code == 403 and "another site" in r.json()["error"]["message"]

        assert client.post(f"{url}/pin", json={}, headers=annotator).status_code == 403
        r = client.post(f"{url}/pin", json={}, headers={**eng, "Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        r = client.post(f"{url}/pin", json={}, headers=eng)
        assert r.status_code == 201 and r.json()["expected"] == "normal"
        assert "review of nodules@v1" in r.json()["reason"]
        r = client.get(f"/v1/models/reports/{rid}/cases", headers=viewer).json()["cases"][0]
        assert r["verdict"]["verdict"] == "label_error" and r["pinned"] == {"expected": "normal", "by": "eng"}

    with platform.session(write=False) as s:
        row = s.get(CaseReviewRow, (rid, key))
        assert row is not None and row.verdict == "label_error" and row.note is None and row.reviewer == "eng"
        assert [c.case_key for c in registry.pinned_cases(s, "nodules")] == [key]
        events = list(s.scalars(select(AuditEventRow).where(AuditEventRow.action == "model.case_review")
                                .order_by(AuditEventRow.seq)))
        assert [e.actor for e in events] == ["ann", "eng"]
        assert events[1].details["before"] == "model_error" and events[1].details["verdict"] == "label_error"


def test_segmentation_pins_a_minimum_dice(platform: Platform) -> None:
    rid, entries = report_with_cases(platform, segmentation=True)
    assert [e["metrics"]["dice"] for e in entries] == sorted(e["metrics"]["dice"] for e in entries)
    with platform.session() as s:
        assert reviews.pin_from_review(s, platform.objects, rid, entries[0]["key"]).expected == "0.5"
        assert reviews.pin_from_review(s, platform.objects, rid, entries[1]["key"], expected="0.8").expected == "0.8"
        with pytest.raises(UsageError, match="minimum Dice"):
            reviews.pin_from_review(s, platform.objects, rid, entries[1]["key"], expected="lesion")
        with pytest.raises(UsageError, match="Sort by dice"):
            reviews.ordered(reviews.load(s, platform.objects, rid), "error")
        with pytest.raises(NotFound, match="no gate report"):
            reviews.load(s, platform.objects, "missing")
        bare = registry.record_gate_report(s, "nodules@v1", passed=True, summary={})
        with pytest.raises(NotFound, match="no review gallery") as info:
            reviews.load(s, platform.objects, bare)
        assert "gallery.limit" in (info.value.hint or "")


def test_gallery_page_needs_read_data_and_audits_the_read(platform: Platform) -> None:
    rid, entries = report_with_cases(platform)
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        viewer, eng = token(platform, "vi", "viewer"), token(platform, "eng", "ml-engineer")
        assert client.get(f"/ui/evaluation/{rid}/review", headers=viewer).status_code == 403
        r = client.get(f"/ui/evaluation/{rid}/review?sort=p_true", headers=eng)
        assert r.status_code == 200
        assert re_keys(r.text) == [e["key"] for e in entries]
        png = client.get(f"/ui/evaluation/{rid}/preview/{entries[0]['preview']}.png", headers=eng)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        other = platform.objects.put(b"not a preview of this report").digest
        assert client.get(f"/ui/evaluation/{rid}/preview/{other}.png", headers=eng).status_code == 404
        assert client.get(f"/ui/evaluation/{rid}/review?sort=hd95", headers=eng).status_code == 400
        assert client.get("/ui/evaluation/nope/review", headers=eng).status_code == 404
        page = client.get("/ui/evaluation", headers=eng).text
        assert f"/ui/evaluation/{rid}/review" in page
    with platform.session(write=False) as s:
        reads = list(s.scalars(select(AuditEventRow).where(AuditEventRow.action == "evaluation.review.read")))
        assert [(e.actor, e.target_id) for e in reads] == [("eng", rid)]


def re_keys(html: str) -> list[str]:
    import re

    return re.findall(r'data-testid="case" data-key="([^"]+)"', html)
