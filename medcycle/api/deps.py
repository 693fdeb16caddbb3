"""Request dependencies: the platform, a DB session and the calling principal."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from medcycle.auth.roles import Permission, Principal, Role
from medcycle.auth.sessions import COOKIE_NAME, verify_session
from medcycle.auth.users import TOUCH_EVERY, authenticate, principal_for_token_id, touch_token
from medcycle.errors import AuthError
from medcycle.platform import Platform

ANONYMOUS_ADMIN = Principal(name="local", role=Role.ADMIN)


async def get_platform(request: Request) -> Platform:  # on the event loop: no I/O, no thread hop
    platform: Platform = request.app.state.platform
    return platform


def get_session(request: Request, platform: Annotated[Platform, Depends(get_platform)]) -> Iterator[Session]:
    """The request's unit of work; requests that change things take SQLite's write lock up front."""
    with platform.session(write=request.method not in {"GET", "HEAD", "OPTIONS"}) as session:
        yield session


def resolve_principal(request: Request, platform: Platform, session: Session, *, touch: bool = True) -> Principal:
    """Bearer token first, then the web session cookie; with auth off everyone is a local admin. ``touch``
    stamps the token's last use in ``session`` (which must then be a write session)."""
    if not platform.settings.auth_enabled:
        return ANONYMOUS_ADMIN
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(
                "the Authorization header is not a bearer token", hint="Send `Authorization: Bearer <token>`."
            )
        return authenticate(session, token.strip(), touch=touch)
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        token_id = verify_session(platform.settings.secret_key.get_secret_value(), cookie)
        return principal_for_token_id(session, token_id, touch=touch)
    raise AuthError(
        "this endpoint needs an API token",
        hint="Send `Authorization: Bearer <token>`; create one with `medcycle token create --user NAME`.",
    )


_TOUCHED: dict[str, float] = {}  # token id → when this process last stamped its use (monotonic)
_TOUCH_LOCK = threading.Lock()


def get_principal(request: Request, platform: Annotated[Platform, Depends(get_platform)]) -> Principal:
    # A read: checking a token must not take SQLite's write lock (requests would queue behind every writer).
    # The token's last-use stamp is written in a short transaction of its own, at most once a minute.
    with platform.session(write=False) as session:
        principal = resolve_principal(request, platform, session, touch=False)
    if principal.token_id is not None:
        now = time.monotonic()
        with _TOUCH_LOCK:
            due = now - _TOUCHED.get(principal.token_id, -1e9) > TOUCH_EVERY.total_seconds()
            if due:
                if len(_TOUCHED) > 10_000:
                    _TOUCHED.clear()
                _TOUCHED[principal.token_id] = now
        if due:
            with platform.session() as session:
                touch_token(session, principal.token_id)
    request.state.principal = principal
    return principal


def requires(permission: Permission) -> Any:
    """A dependency that checks ``permission`` and returns the principal."""

    async def _check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        # on the event loop: a check of the principal's role, no I/O (a sync dependency is a thread hop)
        principal.require(permission)
        return principal

    return Depends(_check)


PlatformDep = Annotated[Platform, Depends(get_platform)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
