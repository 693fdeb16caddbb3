"""Users, API tokens and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from medcycle.api.deps import PrincipalDep, SessionDep, requires
from medcycle.api.schemas import AuditOut, IssuedTokenOut, TokenIn, TokenOut, UserIn, UserOut
from medcycle.auth import audit, users
from medcycle.auth.roles import Permission, Principal
from medcycle.auth.tables import UserRow
from medcycle.errors import NotFound

router = APIRouter(prefix="/v1", tags=["users"])
Admin = Annotated[Principal, requires(Permission.ADMIN)]


def _user_out(u: UserRow) -> UserOut:
    return UserOut(name=u.name, role=u.role, email=u.email, disabled=u.disabled, created_at=u.created_at)


@router.get("/me", response_model=UserOut | dict[str, str])
def me(principal: PrincipalDep, session: SessionDep) -> UserOut | dict[str, str]:
    if principal.user_id is None:
        return {"name": principal.name, "role": principal.role.value}
    return _user_out(users.get_user(session, principal.name))


@router.get("/users", response_model=list[UserOut])
def list_users(session: SessionDep, _: Admin) -> list[UserOut]:
    return [_user_out(u) for u in users.list_users(session)]


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(body: UserIn, session: SessionDep, principal: Admin) -> UserOut:
    user = users.create_user(session, body.name, body.role, email=body.email)
    audit.record(session, principal, "user.create", target_kind="user", target_id=user.name, via="api", role=user.role)
    return _user_out(user)


@router.post("/tokens", response_model=IssuedTokenOut, status_code=status.HTTP_201_CREATED)
def create_token(body: TokenIn, session: SessionDep, principal: PrincipalDep) -> IssuedTokenOut:
    owner = body.user or principal.name
    if owner != principal.name:
        principal.require(Permission.ADMIN)
    issued = users.create_token(session, owner, name=body.name, expires_in_days=body.expires_days)
    audit.record(session, principal, "token.create", target_kind="token", target_id=issued.id, via="api", user=owner)
    return IssuedTokenOut(id=issued.id, user=owner, name=issued.name, expires_at=issued.expires_at, token=issued.secret)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(session: SessionDep, principal: PrincipalDep, user: str | None = None) -> list[TokenOut]:
    if not principal.can(Permission.ADMIN):
        user = principal.name
    return [
        TokenOut(
            id=t.id,
            user=name,
            name=t.name,
            created_at=t.created_at,
            expires_at=t.expires_at,
            last_used_at=t.last_used_at,
            revoked_at=t.revoked_at,
        )
        for t, name in users.list_tokens(session, user)
    ]


@router.delete("/tokens/{token_id}", response_model=TokenOut)
def revoke_token(token_id: str, session: SessionDep, principal: PrincipalDep) -> TokenOut:
    owned = {t.id for t, _ in users.list_tokens(session, principal.name)}
    if token_id not in owned and not principal.can(Permission.ADMIN):
        raise NotFound(f"token {token_id} does not exist", hint="List your tokens with GET /v1/tokens.")
    token = users.revoke_token(session, token_id)
    audit.record(session, principal, "token.revoke", target_kind="token", target_id=token_id, via="api")
    return TokenOut(
        id=token.id,
        user=principal.name if token_id in owned else "",
        name=token.name,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


@router.get("/audit", response_model=list[AuditOut])
def list_audit(
    session: SessionDep,
    _: Admin,
    actor: str | None = None,
    action: str | None = Query(default=None, description="Prefix, e.g. `object.`"),
    since: datetime | None = None,
    limit: int = Query(default=100, ge=1, le=10_000),
) -> list[AuditOut]:
    return [AuditOut(**e.to_dict()) for e in audit.query(session, actor=actor, action=action, since=since, limit=limit)]
