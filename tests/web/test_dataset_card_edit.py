"""Editing a dataset card's human fields in the web UI: roles, forgery, concurrent edits, the card re-rendered."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from medcycle.api.app import create_app
from medcycle.auth import audit, users
from medcycle.auth.tables import AuditEventRow
from medcycle.datasets import cards, versions
from medcycle.datasets.items import create_dataset, get_dataset
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.testing.catalog import make_catalog
from medcycle.web.datasets import MAX_FIELD_CHARS, text_digest

SECRET = "card-test-secret-" + "x" * 40
FORM = "/ui/datasets/cxr/card"


def make_platform(home: Path, **overrides: Any) -> Platform:
    platform = Platform(load_settings(home=home, environment="test", secret_key=SECRET, **overrides))
    token = platform.init().admin_token
    platform.__dict__["test_admin_token"] = token
    with platform.session() as s:
        make_catalog(s, sources=1, patients=3, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                     objects=platform.objects)
        create_dataset(s, "cxr", query="", description="chest X-rays")
        versions.freeze(s, platform.objects, "cxr", tag="v1.0")
    return platform


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[Platform, TestClient]]:
    platform = make_platform(tmp_path / "home")
    try:
        with TestClient(create_app(platform), follow_redirects=False) as client:
            yield platform, client
    finally:
        platform.close()


def log_in(platform: Platform, client: TestClient, role: str = "admin") -> str:
    token = platform.__dict__["test_admin_token"]
    name = "admin"
    if role != "admin":
        name = f"{role}-user"
        with platform.session() as s:
            users.create_user(s, name, role)
            token = users.create_token(s, name).secret
    r = client.post("/login", data={"token": token, "next": "/"})
    assert r.status_code == 303
    return name


def form_state(html: str) -> dict[str, str]:
    """The hidden fields of the edit form (``back`` and the ``shown.*`` digests)."""
    state = dict(re.findall(r'<input type="hidden" name="([\w.]+)" value="([^"]*)">', html))
    assert set(cards.HUMAN_FIELDS) == {k.removeprefix("shown.") for k in state if k.startswith("shown.")}
    return state


def stored(platform: Platform) -> dict[str, str]:
    with platform.session() as s:
        return dict(get_dataset(s, "cxr").card_fields or {})


def card_edits(platform: Platform) -> list[audit.AuditEvent]:
    with platform.session() as s:
        return audit.query(s, action="dataset.card.edit")


def submit(client: TestClient, state: dict[str, str], values: dict[str, str], **headers: str) -> Any:
    data = {**state, **{k: "" for k in cards.HUMAN_FIELDS}, **values}
    return client.post(FORM, data=data, headers=headers)


# -- the happy path ---------------------------------------------------------------------------------
def test_an_editor_writes_the_card_and_sees_it_rendered(web: tuple[Platform, TestClient]) -> None:
    platform, client = web
    name = log_in(platform, client)
    version = client.get("/ui/datasets/cxr/v1")
    assert 'data-testid="edit-card"' in version.text and "/ui/datasets/cxr/card?back=v1" in version.text
    page = client.get(f"{FORM}?back=v1")
    assert page.status_code == 200
    assert page.text.count("<textarea") == len(cards.HUMAN_FIELDS)
    state = form_state(page.text)
    assert state["back"] == "v1"

    r = submit(client, state, {"motivation": "Triage of chest X-rays.\r\nFor the ED.",
                               "licence": "  CC-BY-NC-4.0  ", "limitations": "One site <b>only</b>."})
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/datasets/cxr/v1?saved=1#card"
    assert stored(platform) == {"motivation": "Triage of chest X-rays.\nFor the ED.", "licence": "CC-BY-NC-4.0",
                                "limitations": "One site <b>only</b>."}
    shown = client.get(r.headers["location"]).text
    assert 'data-testid="saved"' in shown
    card = shown[shown.index('id="card"'):]
    assert "Triage of chest X-rays." in card and "CC-BY-NC-4.0" in card
    assert "One site &lt;b&gt;only&lt;/b&gt;." in card  # escaped, never markup
    assert "Not written yet" in card  # the fields left empty still say so
    events = card_edits(platform)
    assert len(events) == 1
    assert (events[0].actor, events[0].via, events[0].target_id) == (name, "web", "cxr")
    assert events[0].details["fields"] == ["licence", "limitations", "motivation"]
    # The Markdown the API renders for the same version carries the text too (one library, one store).
    with platform.session() as s:
        version_id = versions.resolve(s, "cxr@v1").id
    md = client.get(f"/v1/datasets/cxr/versions/{version_id}/card?format=md")
    assert md.status_code == 200 and "Triage of chest X-rays." in md.text


def test_the_dataset_page_form_returns_to_the_dataset_and_clears_fields(web: tuple[Platform, TestClient]) -> None:
    platform, client = web
    log_in(platform, client)
    with platform.session() as s:
        cards.edit_card(s, "cxr", {"motivation": "old", "citation": "Doe 2024"})
    page = client.get("/ui/datasets/cxr")
    assert 'href="/ui/datasets/cxr/card"' in page.text
    state = form_state(client.get(FORM).text)
    assert state["back"] == ""
    r = submit(client, state, {"citation": "Doe 2024"})  # motivation emptied, citation as it was
    assert r.headers["location"] == "/ui/datasets/cxr?saved=1#card-fields"
    assert stored(platform) == {"citation": "Doe 2024"}
    assert card_edits(platform)[0].details["fields"] == ["motivation"]  # only what this form changed
    after = client.get(r.headers["location"]).text
    assert 'data-testid="saved"' in after and "Doe 2024" in after


def test_saving_an_unchanged_form_writes_nothing(web: tuple[Platform, TestClient]) -> None:
    platform, client = web
    log_in(platform, client)
    with platform.session() as s:
        cards.edit_card(s, "cxr", {"licence": "line one\nline two"})
    before = len(card_edits(platform))
    page = client.get(FORM).text
    assert "line one\nline two</textarea>" in page
    r = submit(client, form_state(page), {"licence": "line one\r\nline two"})  # as a browser sends it back
    assert r.status_code == 303
    assert len(card_edits(platform)) == before


# -- who may -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["viewer", "annotator"])
def test_roles_without_write_data_cannot_edit(web: tuple[Platform, TestClient], role: str) -> None:
    platform, client = web
    log_in(platform, client, role)
    assert 'data-testid="edit-card"' not in client.get("/ui/datasets/cxr").text
    version = client.get("/ui/datasets/cxr/v1").text
    assert 'data-testid="edit-card"' not in version and "write it</a>" not in version
    page = client.get(FORM)
    assert page.status_code == 403
    assert "may not write-data" in page.text
    digests = {f"shown.{k}": text_digest("") for k in cards.HUMAN_FIELDS}
    r = submit(client, {"back": "", **digests}, {"motivation": "sneaky"})
    assert r.status_code == 403
    assert stored(platform) == {} and card_edits(platform) == []


def test_logged_out_posts_go_to_the_login_page(web: tuple[Platform, TestClient]) -> None:
    platform, client = web
    r = submit(client, {"back": ""}, {"motivation": "anonymous"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get(FORM).headers["location"] == "/login?next=/ui/datasets/cxr/card"
    assert stored(platform) == {}


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port or subdomain of the same site
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
])
def test_forms_posted_from_other_sites_are_refused(web: tuple[Platform, TestClient], headers: dict[str, str]) -> None:
    platform, client = web
    log_in(platform, client)
    state = form_state(client.get(FORM).text)
    r = submit(client, state, {"motivation": "forged"}, **headers)
    assert r.status_code == 403
    assert "sent from another site" in r.text
    assert stored(platform) == {} and card_edits(platform) == []


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://testserver"}, {}])
def test_forms_posted_from_this_site_are_accepted(web: tuple[Platform, TestClient], headers: dict[str, str]) -> None:
    platform, client = web
    log_in(platform, client)
    r = submit(client, form_state(client.get(FORM).text), {"motivation": "ours"}, **headers)
    assert r.status_code == 303
    assert stored(platform) == {"motivation": "ours"}


def test_with_authentication_off_the_local_admin_edits(tmp_path: Path) -> None:
    platform = make_platform(tmp_path / "home", auth_enabled=False)
    try:
        with TestClient(create_app(platform), follow_redirects=False) as client:
            page = client.get(FORM)
            assert page.status_code == 200
            r = submit(client, form_state(page.text), {"intended_uses": "Research only."})
            assert r.status_code == 303
            assert submit(client, form_state(page.text), {"intended_uses": "x"},
                          **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert stored(platform) == {"intended_uses": "Research only."}
        assert [(e.actor, e.via) for e in card_edits(platform)] == [("local", "web")]
    finally:
        platform.close()


# -- concurrent edits and bad input ------------------------------------------------------------------
def test_an_edit_made_meanwhile_to_another_field_is_kept(web: tuple[Platform, TestClient]) -> None:
    platform, client = web
    log_in(platform, client)
    state = form_state(client.get(FORM).text)
    with platform.session() as s:  # someone uses the CLI while the form is open
        cards.edit_card(s, "cxr", {"licence": "CC0-1.0"}, actor="cli-user", via="cli")
    r = submit(client, state, {"motivation": "mine"})  # the form still shows an empty licence
    assert r.status_code == 303
    assert stored(platform) == {"licence": "CC0-1.0", "motivation": "mine"}


def test_an_edit_made_meanwhile_to_the_same_field_is_a_conflict(web: tuple[Platform, TestClient]) -> None:
    platform, client = web
    log_in(platform, client)
    state = form_state(client.get(FORM).text)
    with platform.session() as s:
        cards.edit_card(s, "cxr", {"motivation": "theirs"}, actor="cli-user", via="cli")
    r = submit(client, state, {"motivation": "mine", "licence": "CC0-1.0"})
    assert r.status_code == 409
    assert 'data-testid="card-error"' in r.text and "someone changed motivation" in r.text
    assert 'data-testid="theirs-motivation"' in r.text and "theirs" in r.text
    assert ">mine</textarea>" in r.text and ">CC0-1.0</textarea>" in r.text  # nothing typed is lost
    assert stored(platform) == {"motivation": "theirs"}  # and nothing was saved
    again = submit(client, form_state(r.text), {"motivation": "mine", "licence": "CC0-1.0"})
    assert again.status_code == 303
    assert stored(platform) == {"motivation": "mine", "licence": "CC0-1.0"}


def test_too_long_text_is_refused_and_kept_in_the_form(web: tuple[Platform, TestClient]) -> None:
    platform, client = web
    log_in(platform, client)
    state = form_state(client.get(FORM).text)
    r = submit(client, state, {"motivation": "m" * (MAX_FIELD_CHARS + 1), "licence": "CC0-1.0"})
    assert r.status_code == 400
    assert "motivation: longer than 20,000 characters" in r.text
    assert ">CC0-1.0</textarea>" in r.text
    assert form_state(r.text) == state  # the next save still knows what the form first showed
    assert stored(platform) == {}


def test_unknown_dataset_is_a_404_page(web: tuple[Platform, TestClient]) -> None:
    platform, client = web
    log_in(platform, client)
    r = client.get("/ui/datasets/nope/card")
    assert r.status_code == 404 and "nope" in r.text
    digests = {f"shown.{k}": text_digest("") for k in cards.HUMAN_FIELDS}
    assert client.post("/ui/datasets/nope/card", data={"motivation": "x", **digests}).status_code == 404
    with platform.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditEventRow)
                        .where(AuditEventRow.action == "dataset.card.edit")) == 0


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_file_part_sent_with_the_form_is_closed_and_ignored(web: tuple[Platform, TestClient]) -> None:
    """A client may post the card form as multipart with a file in it: the file is not a card field, and its
    spooled upload is closed when the form has been read (an unclosed one warns when collected: an error here)."""
    platform, client = web
    log_in(platform, client)
    state = form_state(client.get(f"{FORM}?back=v1").text)
    data = {**state, **{k: "" for k in cards.HUMAN_FIELDS}, "licence": "CC0-1.0"}
    r = client.post(FORM, data=data, files={"licence_file": ("licence.txt", b"x" * 2048, "text/plain")})
    assert r.status_code == 303
    assert stored(platform) == {"licence": "CC0-1.0"}
    del r
    gc.collect()  # an unclosed SpooledTemporaryFile would warn here, inside the test


def test_a_control_character_is_refused_and_kept_in_the_form(web: tuple[Platform, TestClient]) -> None:
    """The form checked only the length; a NUL (which no PostgreSQL text can hold) went to the database."""
    platform, client = web
    log_in(platform, client)
    state = form_state(client.get(FORM).text)
    r = submit(client, state, {"motivation": "Triage\x00", "licence": "CC0-1.0"})
    assert r.status_code == 400
    assert "motivation: control character U+0000 (NUL) at character 7" in r.text and "Nothing was saved" in r.text
    assert form_state(r.text) == state
    assert stored(platform) == {}
