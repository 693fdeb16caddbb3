"""Request dependencies: the platform, a DB session and the calling principal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from medcycle.auth.roles import Permission, Principal, Role
from medcycle.auth.sessions import COOKIE_NAME, verify_session
from medcycle.auth.users import authenticate, principal_for_token_id
from medcycle.errors import AuthError
from medcycle.platform import Platform

ANONYMOUS_ADMIN = Principal(name="local", role=Role.ADMIN)


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def get_session(request: Request, platform: Annotated[Platform, Depends(get_platform)]) -> Iterator[Session]:
    """The request's unit of work; requests that change things take SQLite's write lock up front."""
    with platform.session(write=request.method not in {"GET", "HEAD", "OPTIONS"}) as session:
        yield session


def resolve_principal(request: Request, platform: Platform, session: Session) -> Principal:
    """Bearer token first, then the web session cookie; with auth off everyone is a local admin."""
    if not platform.settings.auth_enabled:
        return ANONYMOUS_ADMIN
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(
                "the Authorization header is not a bearer token", hint="Send `Authorization: Bearer <token>`."
            )
        return authenticate(session, token.strip())
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        token_id = verify_session(platform.settings.secret_key.get_secret_value(), cookie)
        return principal_for_token_id(session, token_id)
    raise AuthError(
        "this endpoint needs an API token",
        hint="Send `Authorization: Bearer <token>`; create one with `medcycle token create --user NAME`.",
    )


def get_principal(request: Request, platform: Annotated[Platform, Depends(get_platform)]) -> Principal:
    # Its own short transaction: the token's last-use stamp must not hold SQLite's write lock
    # while the route goes on to use other connections (job queue, object references).
    with platform.session() as session:
        principal = resolve_principal(request, platform, session)
    request.state.principal = principal
    return principal


def requires(permission: Permission) -> Any:
    """A dependency that checks ``permission`` and returns the principal."""

    def _check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        principal.require(permission)
        return principal

    return Depends(_check)


PlatformDep = Annotated[Platform, Depends(get_platform)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
