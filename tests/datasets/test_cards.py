"""Dataset cards: generated from the database at freeze, stored with the version, human fields editable."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import select

from medcycle.catalog.tables import InstanceRow, SeriesRow
from medcycle.datasets import cards, items, versions
from medcycle.datasets.items import create_dataset
from medcycle.errors import UsageError, ValidationFailed
from medcycle.platform import Platform


def test_card_is_generated_stored_and_complete(platform: Platform, frozen: str) -> None:
    with platform.session() as s:
        row = versions.resolve(s, frozen)
        modalities = Counter(s.scalars(select(SeriesRow.modality).join(InstanceRow)))
        card = row.card
        assert card["format"] == cards.CARD_FORMAT and card["version"]["id"] == row.id
        by_modality = {r["value"]: r["instances"] for r in card["facts"]["breakdowns"]["modality"]}
        assert by_modality == {str(k): v for k, v in modalities.items()}
        assert set(card["facts"]["breakdowns"]) == {"modality", "body_part", "source", "scanner", "year"}
        sources = {src["name"]: src for src in card["facts"]["sources"]}
        assert sources["clinic-a"]["deid_profile"]["retain_device_identity"] is True
        assert sources["clinic-b"]["licence"] == "research-only"
        assert card["facts"]["labels"]["classes"] == ["normal", "pneumonia"]
        assert set(card["facts"]["class_balance"]) == {"train", "val", "test"}
        assert card["facts"]["leakage"]["ok"] is True and card["facts"]["changes"] is None
        for fmt, digest in row.card_digests.items():  # stored as objects, referenced by the version
            assert platform.objects.exists(digest), fmt
        assert json.loads(platform.objects.get(row.card_digests["json"])) == card
        md = platform.objects.get(row.card_digests["md"]).decode()
    for section in ("## Motivation", "## Composition", "## Collection process",
                    "## Preprocessing and de-identification", "## Uses", "## Distribution and licence",
                    "## Maintenance and changes"):
        assert section in md
    assert "Leakage check: passed" in md and "By scanner" in md and "retain_longitudinal_dates_modified" in md
    assert "medcycle dataset card edit cxr --field motivation=" in md
    assert "This is the first version." in md


def test_human_fields_are_edited_live_and_frozen_cards_keep_theirs(platform: Platform, frozen: str) -> None:
    with platform.session() as s:
        cards.edit_card(s, "cxr", {"motivation": "Pneumonia triage <b>research</b>", "licence": "CC-BY-NC-4.0"})
        with pytest.raises(UsageError, match="unknown card field"):
            cards.edit_card(s, "cxr", {"colour": "blue"})
    with platform.session() as s:
        row = versions.resolve(s, frozen)
        live = cards.version_card(s, row)
        frozen_card = cards.version_card(s, row, live=False)
    assert live["human"]["motivation"] == "Pneumonia triage <b>research</b>" and live["human_edited_at"]
    assert frozen_card["human"]["motivation"] is None
    html = cards.render(live, "html")
    assert "Pneumonia triage &lt;b&gt;research&lt;/b&gt;" in html and "<b>research" not in html
    assert "CC-BY-NC-4.0" in cards.render(live, "md")
    assert json.loads(cards.render(live, "json"))["human"]["licence"] == "CC-BY-NC-4.0"
    with pytest.raises(UsageError):
        cards.render(live, "pdf")
    with platform.session() as s:
        cards.edit_card(s, "cxr", {"licence": ""})  # empty clears
        assert cards.version_card(s, versions.resolve(s, frozen))["human"]["licence"] is None


def test_human_fields_over_the_limit_or_with_nul_are_refused(platform: Platform) -> None:
    """The 20,000-character limit held only in the web form; a NUL cannot be kept in a PostgreSQL text."""
    with platform.session() as s:
        create_dataset(s, "cxr", query="")
    with platform.session() as s:
        with pytest.raises(ValidationFailed, match=r"motivation: longer than 20,000 characters") as err:
            cards.edit_card(s, "cxr", {"motivation": "m" * (cards.MAX_FIELD_CHARS + 1), "licence": "CC0-1.0"})
        assert err.value.http_status == 422 and "Nothing was saved" in (err.value.hint or "")
        with pytest.raises(ValidationFailed, match=r"licence: control character U\+0000 \(NUL\) at character 4"):
            cards.edit_card(s, "cxr", {"licence": "CC0\x00-1.0"})
        with pytest.raises(ValidationFailed, match=r"U\+001B"):
            cards.edit_card(s, "cxr", {"limitations": "red \x1b[31mtext"})
    with platform.session() as s:
        assert items.get_dataset(s, "cxr").card_fields == {}  # nothing of a refused edit was kept
        text = "m" * cards.MAX_FIELD_CHARS
        kept = cards.edit_card(s, "cxr", {"motivation": f"  {text}\n", "limitations": "a\tb\r\nc\nd"})
    with platform.session() as s:
        assert items.get_dataset(s, "cxr").card_fields == kept
        assert kept == {"motivation": text, "limitations": "a\tb\r\nc\nd"}
