"""The catalog over REST: summary, query, fields, sources, instance metadata and rendered thumbnails."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import NotFound

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Reader = Annotated[Principal, requires(Permission.READ_DATA)]
Browser = Annotated[Principal, requires(Permission.BROWSE)]


@router.get("/summary")
def summary(
    session: SessionDep, _: Viewer, where: str | None = Query(default=None, description="Filter expression")
) -> dict[str, Any]:
    """Patients, studies, series, instances and bytes by source × modality × body part, manufacturer, year."""
    from medcycle.catalog.summary import summarize

    return summarize(session, where).to_dict()


@router.get("/query")
def query(
    session: SessionDep,
    _: Browser,
    q: str = Query(default="", description='e.g. modality == "CT" and slice_thickness < 1.5'),
    limit: int = Query(default=100, ge=0, le=10_000),
    offset: int = Query(default=0, ge=0),
    include_quarantined: bool = False,
) -> dict[str, Any]:
    """Instances matching the filter (metadata only; image bytes need `read-data`)."""
    from medcycle.catalog.query import run_query

    return run_query(session, q or None, limit=limit, offset=offset, include_quarantined=include_quarantined).to_dict()


@router.get("/fields")
def fields(_: Viewer) -> list[dict[str, str]]:
    """The fields the filter language knows, with their types."""
    from medcycle.catalog.query import FIELDS

    return [f.to_dict() for f in FIELDS.values()]


@router.get("/sources")
def sources(session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    from medcycle.catalog.sources import list_sources

    return [
        {
            "name": s.name,
            "description": s.description,
            "licence": s.licence,
            "consent_basis": s.consent_basis,
            "deid_profile": s.deid_profile,
            "created_at": s.created_at.isoformat(),
        }
        for s in list_sources(session)
    ]


def _instance(session: SessionDep, uid: str) -> Any:
    from medcycle.catalog.tables import InstanceRow

    row = session.get(InstanceRow, uid)
    if row is None:
        raise NotFound(f"instance {uid} is not in the catalog", hint="Find instances with GET /v1/catalog/query.")
    return row


@router.get("/instances/{uid}")
def instance(uid: str, session: SessionDep, _: Browser) -> dict[str, Any]:
    from medcycle.catalog.query import run_query

    _instance(session, uid)
    rows = run_query(session, f'instance == "{uid}"', limit=1, include_quarantined=True).to_dict()["rows"]
    return dict(rows[0])


@router.get("/instances/{uid}/thumbnail.png", response_class=Response)
async def thumbnail(
    uid: str,
    platform: PlatformDep,
    session: SessionDep,
    principal: Reader,
    preset: str = Query(default="auto", description="auto, lung, mediastinum, bone, brain, abdomen"),
    size: int = Query(default=256, ge=16, le=1024),
) -> Response:
    """The middle slice, windowed (CT presets in HU; MONOCHROME1 shown as on a viewer). Audited."""
    from medcycle.catalog.render import parse_preset, render_png

    chosen = parse_preset(preset)
    row = _instance(session, uid)
    data = await run_in_threadpool(platform.objects.get, row.digest)
    png = await run_in_threadpool(render_png, data, row.format, preset=chosen, max_size=size)
    await run_in_threadpool(
        audit.record_read, platform, principal, "image.view", target_kind="instance", target_id=uid, via="api"
    )
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
