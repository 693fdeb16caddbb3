"""Errors on web pages: HTML instead of the API's JSON, a login redirect instead of a 401.

The API's handlers (``medcycle.api.errors``) stay in charge of every other path; for page paths we
call them first (so logging is unchanged) and then answer with a page:

* 401 (no or invalid session) → ``303`` to ``/login?next=<this page>``, dropping a stale cookie;
* 403 → a "not allowed" page naming the permission and who to ask;
* 404 and other errors → an error page with the message and hint (never a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from medcycle.api.deps import resolve_principal
from medcycle.api.errors import route_of
from medcycle.auth.roles import Principal
from medcycle.auth.sessions import COOKIE_NAME
from medcycle.errors import MedcycleError
from medcycle.platform import Platform
from medcycle.web.render import renderer

log = logging.getLogger(__name__)

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]

PAGE_PREFIX = "/ui/"
PAGE_PATHS = frozenset({"/", "/ui", "/login", "/logout"})

TITLES = {
    400: "Bad request",
    401: "Log in required",
    403: "Not allowed",
    404: "Page not found",
    405: "Method not allowed",
    409: "Conflict",
    429: "Too many requests",
    503: "A backend is unavailable",
}


def is_page_path(path: str) -> bool:
    """Whether ``path`` belongs to the web UI (as opposed to the API, probes or static files)."""
    return path in PAGE_PATHS or path.startswith(PAGE_PREFIX)


def safe_next(value: str | None, default: str = "/") -> str:
    """``value`` when it is a local path on this site, else ``default`` (no open redirects)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if any(ord(ch) < 0x20 or ch == "\\" for ch in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def login_redirect(request: Request) -> RedirectResponse:
    """A redirect to the login form that comes back to the page asked for."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)
    if COOKIE_NAME in request.cookies:
        response.delete_cookie(COOKIE_NAME, path="/")
    return response


def error_page(
    request: Request,
    status_code: int,
    message: str,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    principal: Principal | None = getattr(request.state, "principal", None)
    return renderer(request).render(
        request,
        "error.html",
        principal=principal,
        status_code=status_code,
        headers=headers,
        title=TITLES.get(status_code, "Something went wrong"),
        status=status_code,
        message=message,
        hint=hint,
    )


def _principal_if_any(request: Request) -> Principal | None:
    """The visitor, when they have a valid session; for pages no route matched (so nothing resolved it)."""
    platform: Platform = request.app.state.platform
    try:
        with platform.session() as session:
            principal = resolve_principal(request, platform, session)
    except MedcycleError:
        return None
    request.state.principal = principal
    return principal


async def _call(handler: Handler, request: Request, exc: Exception) -> Response:
    result = handler(request, exc)
    if isinstance(result, Response):
        return result
    return await result


def install_page_error_handlers(app: FastAPI) -> None:
    """Wrap the API's handlers so that page paths get HTML (or a login redirect)."""
    api_medcycle: Handler | None = app.exception_handlers.get(MedcycleError)
    api_http: Handler | None = app.exception_handlers.get(StarletteHTTPException)
    api_unexpected: Handler | None = app.exception_handlers.get(Exception)

    async def on_medcycle(request: Request, exc: Exception) -> Response:
        api_response = await _call(api_medcycle, request, exc) if api_medcycle else None
        if not is_page_path(request.url.path) or not isinstance(exc, MedcycleError):
            return api_response or Response(status_code=500)
        if exc.http_status == 401:
            return login_redirect(request)
        headers = {"Retry-After": api_response.headers["Retry-After"]} if (
            api_response is not None and "Retry-After" in api_response.headers
        ) else None
        return error_page(request, exc.http_status, exc.message, exc.hint, headers)

    async def on_http(request: Request, exc: Exception) -> Response:
        api_response = await _call(api_http, request, exc) if api_http else None
        if not is_page_path(request.url.path) or not isinstance(exc, StarletteHTTPException):
            return api_response or Response(status_code=getattr(exc, "status_code", 500))
        if exc.status_code == 404:
            if getattr(request.state, "principal", None) is None:
                await run_in_threadpool(_principal_if_any, request)
            return error_page(
                request, 404, f"There is no page at {request.url.path}.",
                "Pick a page from the navigation on the left, or go back to the overview.",
            )
        message = str(exc.detail) if exc.detail else TITLES.get(exc.status_code, "error")
        return error_page(request, exc.status_code, message, None, dict(exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        if api_unexpected is not None:
            api_response = await _call(api_unexpected, request, exc)
        else:
            log.exception("unexpected error on %s %s", request.method, route_of(request))
            api_response = Response(status_code=500)
        if not is_page_path(request.url.path):
            return api_response
        return error_page(
            request, 500, "An unexpected error occurred while building this page.",
            "The server log has the details; please report it.",
        )

    app.add_exception_handler(MedcycleError, on_medcycle)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
