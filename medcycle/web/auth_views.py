"""Log in with an API token (the cookie holds a signed token id, never the token) and log out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, SessionDep, resolve_principal
from medcycle.auth import audit
from medcycle.auth.sessions import COOKIE_NAME, SESSION_SECONDS, sign_session, verify_session
from medcycle.auth.users import authenticate, principal_for_token_id
from medcycle.errors import AuthError
from medcycle.web.errors import safe_next
from medcycle.web.render import renderer

router = APIRouter(include_in_schema=False)


def _login_form(
    request: Request,
    next_path: str,
    *,
    error: str | None = None,
    hint: str | None = None,
    status_code: int = 200,
) -> Response:
    return renderer(request).render(
        request, "login.html", principal=None, status_code=status_code,
        next_path=next_path, error=error, hint=hint,
    )


@router.get("/login")
def login_form(
    request: Request, platform: PlatformDep, session: SessionDep, next: str | None = None
) -> Response:
    target = safe_next(next)
    if not platform.settings.auth_enabled:
        return RedirectResponse(target, status_code=303)
    try:
        resolve_principal(request, platform, session)
    except AuthError:
        return _login_form(request, target)
    return RedirectResponse(target, status_code=303)  # already logged in


@router.post("/login")
def login(
    request: Request,
    platform: PlatformDep,
    session: SessionDep,
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    target = safe_next(next)
    if not platform.settings.auth_enabled:
        return RedirectResponse(target, status_code=303)
    try:
        principal = authenticate(session, token)
    except AuthError as exc:
        audit.record(session, "anonymous", "web.login", outcome="denied", via="web", reason=exc.message)
        return _login_form(
            request, target, status_code=401,
            error=f"That token was not accepted: {exc.message}.",
            hint="Paste the whole token (it starts with `mct_`). "
            "Create one with `medcycle token create --user NAME`.",
        )
    assert principal.token_id is not None  # authenticate always names the token
    audit.record(
        session, principal, "web.login", target_kind="token", target_id=principal.token_id, via="web"
    )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        sign_session(platform.settings.secret_key.get_secret_value(), principal.token_id),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request, platform: PlatformDep, session: SessionDep) -> Response:
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie and platform.settings.auth_enabled:
        try:
            token_id = verify_session(platform.settings.secret_key.get_secret_value(), cookie)
            principal = principal_for_token_id(session, token_id, touch=False)
        except AuthError:
            pass  # a stale or forged cookie: nothing to record, it is dropped below
        else:
            audit.record(session, principal, "web.logout", target_kind="token", target_id=token_id, via="web")
    response = RedirectResponse("/login" if platform.settings.auth_enabled else "/", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")
    return response
