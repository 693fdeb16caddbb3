"""Users and API tokens. Tokens are shown once and stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from medcycle.auth.roles import Principal, Role, parse_role
from medcycle.auth.tables import TokenRow, UserRow
from medcycle.errors import AuthError, Conflict, NotFound, UsageError
from medcycle.store.base import new_id, utcnow

NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
TOKEN_PREFIX = "mct"
TOUCH_EVERY = timedelta(minutes=1)  # how stale a token's last-use stamp may get


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly created token; ``secret`` is the only copy of the plaintext."""

    id: str
    user: str
    name: str
    secret: str
    expires_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise UsageError(
            f"{name!r} is not a valid user name",
            hint="Use 2-64 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter.",
        )
    return name


def create_user(session: Session, name: str, role: Role | str, *, email: str | None = None) -> UserRow:
    check_name(name)
    role = parse_role(role) if isinstance(role, str) else role
    if session.scalar(select(UserRow).where(UserRow.name == name)) is not None:
        raise Conflict(f"user {name!r} already exists", hint=f"Pick another name, or `medcycle user show {name}`.")
    user = UserRow(id=new_id(), name=name, role=role.value, email=email, disabled=False, created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, name: str) -> UserRow:
    user = session.scalar(select(UserRow).where(UserRow.name == name))
    if user is None:
        raise NotFound(f"user {name!r} does not exist", hint="List users with `medcycle user list`.")
    return user


def list_users(session: Session) -> list[UserRow]:
    return list(session.scalars(select(UserRow).order_by(UserRow.name)))


def set_user_state(
    session: Session, name: str, *, role: Role | str | None = None, disabled: bool | None = None
) -> UserRow:
    user = get_user(session, name)
    if role is not None:
        user.role = (parse_role(role) if isinstance(role, str) else role).value
    if disabled is not None:
        user.disabled = disabled
    session.flush()
    return user


def create_token(
    session: Session, user_name: str, *, name: str = "default", expires_in_days: float | None = None
) -> IssuedToken:
    user = get_user(session, user_name)
    if user.disabled:
        raise UsageError(f"user {user_name!r} is disabled", hint=f"`medcycle user enable {user_name}` first.")
    if expires_in_days is not None and expires_in_days <= 0:
        raise UsageError("a token's lifetime must be positive", hint="Pass --expires-days with a positive number.")
    token_id = new_id()[:16]
    secret = secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    session.add(
        TokenRow(
            id=token_id, user_id=user.id, name=name, secret_hash=_hash(secret), created_at=utcnow(), expires_at=expires
        )
    )
    session.flush()
    return IssuedToken(
        id=token_id, user=user.name, name=name, secret=f"{TOKEN_PREFIX}_{token_id}_{secret}", expires_at=expires
    )


def list_tokens(session: Session, user_name: str | None = None) -> list[tuple[TokenRow, str]]:
    query = select(TokenRow, UserRow.name).join(UserRow, UserRow.id == TokenRow.user_id).order_by(TokenRow.created_at)
    if user_name:
        query = query.where(UserRow.name == user_name)
    return [(row[0], row[1]) for row in session.execute(query).all()]


def revoke_token(session: Session, token_id: str) -> TokenRow:
    token = session.get(TokenRow, token_id)
    if token is None:
        raise NotFound(f"token {token_id} does not exist", hint="List tokens with `medcycle token list`.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    session.flush()
    return token


def _unauthorised(why: str) -> AuthError:
    return AuthError(
        f"the API token {why}",
        hint="Send `Authorization: Bearer <token>`; create a token with `medcycle token create --user NAME`.",
    )


# Token and user columns a request's principal needs, in one Core query (no ORM objects: every authenticated
# request runs it).
_TOKENS, _USERS = TokenRow.__table__, UserRow.__table__
_PRINCIPAL = (
    select(_TOKENS.c.id, _TOKENS.c.secret_hash, _TOKENS.c.revoked_at, _TOKENS.c.expires_at, _TOKENS.c.last_used_at,
           _USERS.c.id.label("user_id"), _USERS.c.name, _USERS.c.role, _USERS.c.disabled)
    .join_from(_TOKENS, _USERS, _USERS.c.id == _TOKENS.c.user_id)
    .where(_TOKENS.c.id == bindparam("token_id"))
)


def _principal_row(session: Session, token_id: str) -> Any:
    """The token's and its user's columns (a row with attribute access), or None for an unknown id."""
    return session.execute(_PRINCIPAL, {"token_id": token_id}).first()


def principal_for_token_id(session: Session, token_id: str, *, touch: bool = True) -> Principal:
    """The principal behind a token id, checking revocation, expiry and the user's state."""
    row = _principal_row(session, token_id)
    if row is None:
        raise _unauthorised("is not known")
    return _principal(session, row, touch=touch)


def _principal(session: Session, row: Any, *, touch: bool) -> Principal:
    now = utcnow()
    if row.revoked_at is not None:
        raise _unauthorised("was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise _unauthorised("has expired")
    if row.disabled:
        raise _unauthorised(f"belongs to the disabled user {row.name!r}")
    if touch and _stale(row.last_used_at, now):
        touch_token(session, row.id)
    return Principal(name=row.name, role=Role(row.role), user_id=row.user_id, token_id=row.id)


def _stale(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at > TOUCH_EVERY


def touch_token(session: Session, token_id: str) -> None:
    """Stamp the token's last use (at most once a minute: a write per request would serialise requests on
    SQLite's write lock)."""
    token = session.get(TokenRow, token_id)
    now = utcnow()
    if token is not None and _stale(token.last_used_at, now):
        token.last_used_at = now
        session.flush()


def authenticate(session: Session, token: str, *, touch: bool = True) -> Principal:
    """Check a plaintext token (``mct_<id>_<secret>``) in constant time and return its principal (``touch``:
    stamp its last use, see :func:`principal_for_token_id`)."""
    parts = (token or "").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise _unauthorised("is malformed")
    token_id, secret = parts[1], parts[2]
    row = _principal_row(session, token_id)
    # Compare against a dummy hash when the id is unknown, so timing does not reveal valid ids.
    expected = row.secret_hash if row is not None else _hash("not-a-token")
    if not hmac.compare_digest(expected, _hash(secret)) or row is None:
        raise _unauthorised("is not valid")
    return _principal(session, row, touch=touch)
