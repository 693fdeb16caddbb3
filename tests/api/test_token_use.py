"""Checking a token is a read; its last-use stamp is written at most once a minute per token and process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from medcycle.api import deps
from medcycle.api.app import create_app
from medcycle.auth import users
from medcycle.auth.tables import TokenRow
from medcycle.platform import Platform
from medcycle.store.base import utcnow


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    deps._TOUCHED.clear()
    with TestClient(create_app(platform, web=False), raise_server_exceptions=False) as c:
        yield c


def _stamp(platform: Platform, token_id: str):  # type: ignore[no-untyped-def]
    with platform.session(write=False) as s:
        row = s.get(TokenRow, token_id)
        assert row is not None
        return row.last_used_at


def test_the_last_use_is_stamped_once_a_minute_and_revocation_still_applies_at_once(
        client: TestClient, platform: Platform) -> None:
    with platform.session() as s:
        users.create_user(s, "ana", "viewer")
        issued = users.create_token(s, "ana")
    headers = {"Authorization": f"Bearer {issued.secret}"}
    assert _stamp(platform, issued.id) is None

    assert client.get("/v1/me", headers=headers).status_code == 200
    first = _stamp(platform, issued.id)
    assert first is not None and utcnow() - first < timedelta(seconds=30)

    # a minute later (as this process remembers it) the next request stamps again; before that none writes
    assert client.get("/v1/me", headers=headers).status_code == 200
    assert _stamp(platform, issued.id) == first
    deps._TOUCHED[issued.id] -= 61
    with platform.session() as s:
        row = s.get(TokenRow, issued.id)
        assert row is not None
        row.last_used_at = first - timedelta(minutes=5)
    assert client.get("/v1/me", headers=headers).status_code == 200
    later = _stamp(platform, issued.id)
    assert later is not None and later > first

    with platform.session() as s:
        users.revoke_token(s, issued.id)
    refused = client.get("/v1/me", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
