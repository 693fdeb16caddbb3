"""Admin pages: users and tokens, the audit log, queues and the object store. Admins only."""

from __future__ import annotations

from itertools import islice
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth import audit, users
from medcycle.auth.roles import Permission, Principal
from medcycle.jobs.base import JobState
from medcycle.platform import redact
from medcycle.store.base import utcnow
from medcycle.web.render import renderer

router = APIRouter(prefix="/ui/admin", include_in_schema=False)
Admin = Annotated[Principal, requires(Permission.ADMIN)]

AUDIT_PAGE_SIZES = (50, 100, 500, 1000)
RECENT_JOBS = 10
OBJECT_COUNT_LIMIT = 100_000


@router.get("/users")
def users_and_tokens(request: Request, session: SessionDep, principal: Admin) -> Response:
    return renderer(request).render(
        request, "admin_users.html", principal=principal, active="admin-users",
        users=users.list_users(session), tokens=users.list_tokens(session), now=utcnow(),
    )


@router.get("/audit")
def audit_log(
    request: Request,
    session: SessionDep,
    principal: Admin,
    actor: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> Response:
    actor, action = actor.strip(), action.strip()
    events = audit.query(session, actor=actor or None, action=action or None, limit=limit)
    return renderer(request).render(
        request, "admin_audit.html", principal=principal, active="admin-audit",
        events=events, actor=actor, action=action, limit=limit, page_sizes=AUDIT_PAGE_SIZES,
    )


@router.get("/queues")
def queues(request: Request, platform: PlatformDep, principal: Admin) -> Response:
    names = platform.jobs.queues()
    return renderer(request).render(
        request, "admin_queues.html", principal=principal, active="admin-queues",
        queues=[(platform.jobs.stats(name), platform.jobs.list(name, None, RECENT_JOBS)) for name in names],
        states=[state.value for state in JobState], queue_url=redact(platform.settings.queue_url),
        recent=RECENT_JOBS,
    )


@router.get("/store")
def object_store(request: Request, platform: PlatformDep, principal: Admin) -> Response:
    store = platform.objects
    count = 0
    size = 0
    for info in islice(store.list(), OBJECT_COUNT_LIMIT + 1):
        count += 1
        size += info.size
    truncated = count > OBJECT_COUNT_LIMIT
    return renderer(request).render(
        request, "admin_store.html", principal=principal, active="admin-store",
        url=redact(store.url), backend=type(store).__name__, count=min(count, OBJECT_COUNT_LIMIT),
        truncated=truncated, size=size, limit=OBJECT_COUNT_LIMIT,
    )
