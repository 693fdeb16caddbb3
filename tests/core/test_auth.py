from __future__ import annotations

from datetime import timedelta

import pytest

from medcycle.auth import audit, users
from medcycle.auth.roles import Permission, Role
from medcycle.auth.sessions import sign_session, verify_session
from medcycle.auth.tables import TokenRow
from medcycle.errors import AuthError, Conflict, NotFound, PermissionDenied, UsageError
from medcycle.platform import Platform
from medcycle.store.base import utcnow


def test_tokens_are_hashed_and_checked(platform: Platform) -> None:
    with platform.session() as s:
        users.create_user(s, "dr-ivanova", Role.ANNOTATOR)
        issued = users.create_token(s, "dr-ivanova", name="laptop")
    with platform.session() as s:
        row = s.get(TokenRow, issued.id)
        assert row is not None
        assert issued.secret.split("_", 2)[2] not in row.secret_hash
        principal = users.authenticate(s, issued.secret)
    assert principal.name == "dr-ivanova" and principal.role == Role.ANNOTATOR
    assert principal.can(Permission.LABEL) and not principal.can(Permission.READ_DATA)
    with pytest.raises(PermissionDenied) as err:
        principal.require(Permission.DEPLOY)
    assert "medcycle user" in (err.value.hint or "")
    with platform.session() as s, pytest.raises(AuthError):
        users.authenticate(s, issued.secret[:-1] + ("A" if issued.secret[-1] != "A" else "B"))
    with platform.session() as s, pytest.raises(AuthError, match="malformed"):
        users.authenticate(s, "garbage")


def test_revoked_expired_and_disabled_tokens_fail(platform: Platform) -> None:
    with platform.session() as s:
        users.create_user(s, "bob", "viewer")
        a = users.create_token(s, "bob")
        b = users.create_token(s, "bob", expires_in_days=1)
        c = users.create_token(s, "bob")
    with platform.session() as s:
        users.revoke_token(s, a.id)
        row = s.get(TokenRow, b.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    with platform.session() as s:
        with pytest.raises(AuthError, match="revoked"):
            users.authenticate(s, a.secret)
        with pytest.raises(AuthError, match="expired"):
            users.authenticate(s, b.secret)
        assert users.authenticate(s, c.secret).name == "bob"
        users.set_user_state(s, "bob", disabled=True)
    with platform.session() as s, pytest.raises(AuthError, match="disabled"):
        users.authenticate(s, c.secret)


def test_a_token_is_checked_with_one_query_and_a_change_in_the_same_session_is_seen(platform: Platform) -> None:
    from medcycle.testing.sql import statements

    with platform.session() as s:
        users.create_user(s, "carol", "viewer")
        issued = users.create_token(s, "carol")
    with statements(platform.engine) as seen, platform.session(write=False) as s:
        assert users.authenticate(s, issued.secret, touch=False).name == "carol"
    queries = [q for q in seen if q.split()[0].upper() not in {"BEGIN", "COMMIT", "ROLLBACK"}]
    assert len(queries) == 1 and queries[0].lstrip().upper().startswith("SELECT"), seen
    with platform.session() as s:  # a revocation not yet flushed is seen by a check in the same unit of work
        row = s.get(TokenRow, issued.id)
        assert row is not None
        row.revoked_at = utcnow()
        with pytest.raises(AuthError, match="revoked"):
            users.authenticate(s, issued.secret)


def test_user_errors_have_hints(platform: Platform) -> None:
    with platform.session() as s:
        users.create_user(s, "carol", "ml-engineer")
        with pytest.raises(Conflict):
            users.create_user(s, "carol", "viewer")
        with pytest.raises(UsageError, match="not a role"):
            users.create_user(s, "dave", "superuser")
        with pytest.raises(UsageError, match="valid user name"):
            users.create_user(s, "Bad Name", "viewer")
        with pytest.raises(NotFound) as err:
            users.create_token(s, "nobody")
        assert err.value.hint


def test_audit_log_query(platform: Platform) -> None:
    with platform.session() as s:
        audit.record(s, "alice", "object.read", target_kind="object", target_id="d1")
        audit.record(s, "alice", "user.create", target_kind="user", target_id="x")
        audit.record(s, "bob", "object.read", target_kind="object", target_id="d2")
    with platform.session() as s:
        reads = audit.query(s, action="object.")
        assert [e.target_id for e in reads] == ["d2", "d1"]
        assert [e.action for e in audit.query(s, actor="alice")] == ["user.create", "object.read"]
        assert audit.query(s, since=utcnow() + timedelta(hours=1)) == []
        # init wrote the admin creation
        assert any(e.action == "user.create" and e.target_id == "admin" for e in audit.query(s))


def test_rolled_back_change_leaves_no_audit_event(platform: Platform) -> None:
    def attempt() -> None:
        with platform.session() as s:
            audit.record(s, "eve", "user.create", target_id="admin")
            users.create_user(s, "admin", "viewer")

    with pytest.raises(Conflict):
        attempt()
    with platform.session() as s:
        assert audit.query(s, actor="eve") == []


def test_an_audit_event_is_one_insert_and_flushes_nothing_pending(platform: Platform) -> None:
    from medcycle.auth.tables import UserRow
    from medcycle.testing.sql import statements

    with platform.session() as s:
        s.add(UserRow(name="dave", role="viewer"))  # pending: written at the next flush, not by the audit
        with statements(platform.engine) as seen:
            audit.record(s, "alice", "object.read", target_kind="object", target_id="d9", images=1)
        assert [q.split()[:3] for q in seen if not q.startswith(("BEGIN", "SAVEPOINT"))] == [
            ["INSERT", "INTO", "audit_events"]]
        assert s.new  # still pending
    with platform.session() as s:
        (event,) = audit.query(s, actor="alice", action="object.read")
        assert (event.target_id, event.details, event.via, event.outcome) == ("d9", {"images": 1}, "library", "ok")
        assert users.get_user(s, "dave").role == "viewer"  # committed with the event


def test_session_cookie_signing() -> None:
    cookie = sign_session("k" * 40, "tok123", ttl=60, now=1000)
    assert verify_session("k" * 40, cookie, now=1030) == "tok123"
    with pytest.raises(AuthError, match="expired"):
        verify_session("k" * 40, cookie, now=2000)
    with pytest.raises(AuthError, match="not valid"):
        verify_session("other" * 10, cookie, now=1030)
    with pytest.raises(AuthError, match="malformed"):
        verify_session("k" * 40, "x.y", now=1030)
