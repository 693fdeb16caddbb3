"""The overview page and the life-cycle stage pages (placeholders until each stage is built)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, PrincipalDep, SessionDep
from medcycle.auth import audit
from medcycle.auth.roles import Permission
from medcycle.auth.tables import UserRow
from medcycle.jobs.base import JobState, QueueStats
from medcycle.platform import BackendHealth
from medcycle.web.nav import STAGES, NavItem
from medcycle.web.render import renderer

router = APIRouter(include_in_schema=False)

RECENT_AUDIT_EVENTS = 10
JOB_STATES = tuple(state.value for state in JobState)


def queue_chart(stats: list[QueueStats]) -> dict[str, Any]:
    """Jobs per state per queue, as the data the overview's stacked bar chart draws."""
    return {
        "queues": [s.queue for s in stats],
        "series": [
            {"state": state, "counts": [s.counts.get(state, 0) for s in stats]}
            for state in JOB_STATES
            if any(s.counts.get(state, 0) for s in stats)
        ],
    }


@router.get("/")
def overview(
    request: Request, platform: PlatformDep, session: SessionDep, principal: PrincipalDep
) -> Response:
    principal.require(Permission.VIEW)
    health = platform.health()
    queues = [platform.jobs.stats(name) for name in platform.jobs.queues()] if _jobs_ok(health) else []
    user_count = session.scalar(select(func.count()).select_from(UserRow)) or 0
    events = audit.query(session, limit=RECENT_AUDIT_EVENTS) if principal.can(Permission.ADMIN) else None
    return renderer(request).render(
        request, "overview.html", principal=principal, active="overview",
        health=health, queues=queues, chart=queue_chart(queues), user_count=user_count, events=events,
        job_states=JOB_STATES,
    )


def _jobs_ok(health: list[BackendHealth]) -> bool:
    return all(h.ok for h in health if h.name in {"jobs", "database"})


def _placeholder_view(item: NavItem) -> Callable[..., Response]:
    def view(request: Request, principal: PrincipalDep) -> Response:
        principal.require(item.permission)
        return renderer(request).render(
            request, "placeholder.html", principal=principal, active=item.key,
            item=item, placeholder=item.placeholder,
        )

    view.__name__ = f"stage_{item.key}"
    return view


for _item in STAGES:
    if _item.placeholder is not None:
        router.add_api_route(_item.href, _placeholder_view(_item), methods=["GET"], name=f"stage_{_item.key}")
