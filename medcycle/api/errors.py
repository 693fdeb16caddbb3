"""One JSON error shape for every failure the API returns: ``{"error": {code, message, hint, details}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from medcycle.errors import BackendUnavailable, MedcycleError, QueueFull

log = logging.getLogger(__name__)


def route_of(request: Request) -> str:
    """The route template (``/dicomweb/studies/{study}``), never the concrete path: paths can hold a hospital's
    original UIDs, which must not reach the logs."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "(no route)"

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "validation_failed",
    429: "queue_full",
}


#: A client that hung up before its request's body arrived (nginx's "client closed request"): nothing can be
#: answered, the server did nothing wrong, so neither a 500 nor a traceback in the log.
CLIENT_CLOSED = 499

#: ``Retry-After`` (seconds) of a 503 for a backend that cannot be reached: long enough for a restart or a lock
#: held by a backup to pass, short enough that a study sent again is not held up for long.
BACKEND_RETRY_AFTER_S = 5

#: Refusals of a request body before it is read (too large, no length): the connection is closed after the
#: answer, so a client streaming gigabytes stops at once instead of having them read and discarded.
BODY_REFUSED = frozenset({411, 413})


def error_body(code: str, message: str, hint: str | None = None, **details: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "hint": hint, "details": details}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MedcycleError)
    async def _medcycle(request: Request, exc: MedcycleError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else None
        if isinstance(exc, BackendUnavailable):  # a database, queue or store that is down: clients back off
            headers = {"Retry-After": str(BACKEND_RETRY_AFTER_S)}
        if exc.http_status == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="medcycle"'}
        if exc.http_status in BODY_REFUSED:  # the body is refused unread: close rather than drain it
            headers = {"Connection": "close"}
        if exc.http_status >= 500:
            log.warning("%s %s failed: %s", request.method, route_of(request), exc.message)
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        log.info("%s %s: the client hung up before its request body arrived", request.method, route_of(request))
        return JSONResponse(error_body("client_closed_request", "the client closed the connection mid-request",
                                       "Send the whole request again."), status_code=CLIENT_CLOSED)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"where": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg", "")}
            for err in exc.errors()
        ]
        first = problems[0] if problems else {"where": "request", "problem": "invalid"}
        return JSONResponse(
            error_body(
                "validation_failed",
                f"invalid request: {first['where']}: {first['problem']}",
                "See the endpoint's schema at /docs.",
                problems=problems,
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        hint = "See the API reference at /docs." if exc.status_code in {404, 405} else None
        message = str(exc.detail) if exc.detail else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return JSONResponse(error_body(code, message, hint), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, route_of(request))
        return JSONResponse(
            error_body(
                "internal_error", "an unexpected error occurred", "The server log has the details; please report it."
            ),
            status_code=500,
        )
