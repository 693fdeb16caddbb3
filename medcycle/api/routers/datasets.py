"""Datasets: list/create, working-set changes, label import, freeze, versions, diff and cards.

Pull stays a CLI/SDK operation (it writes files on the caller's machine); the manifest endpoint gives
remote clients what they need to fetch objects through ``/v1/objects``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.datasets import cards, items, labels, versions
from medcycle.datasets.schemas import (
    CardEditIn,
    DatasetIn,
    DatasetOut,
    FreezeIn,
    FreezeOut,
    ItemChangeOut,
    ItemsIn,
    LabelSetOut,
    VersionOut,
)
from medcycle.datasets.splits import folds_policy, parse_stratify, ratios_policy
from medcycle.errors import UsageError

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Browser = Annotated[Principal, requires(Permission.BROWSE)]
Reader = Annotated[Principal, requires(Permission.READ_DATA)]
Writer = Annotated[Principal, requires(Permission.WRITE_DATA)]
MAX_CSV = 64 * 1024 * 1024
MEDIA = {"md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8", "json": "application/json"}


def _ref(name: str, ref: str) -> str:
    return f"{name}@{ref}"


@router.get("", response_model=list[DatasetOut])
def list_datasets(session: SessionDep, _: Viewer) -> list[DatasetOut]:
    return [DatasetOut.of(d) for d in items.list_datasets(session)]


@router.post("", response_model=DatasetOut, status_code=status.HTTP_201_CREATED)
def create_dataset(body: DatasetIn, session: SessionDep, principal: Writer) -> DatasetOut:
    info = items.create_dataset(
        session,
        body.name,
        description=body.description,
        query=body.query,
        uids=body.uids,
        actor=principal.name,
        via="api",
    )
    return DatasetOut.of(info)


@router.get("/{name}", response_model=DatasetOut)
def show_dataset(name: str, session: SessionDep, _: Viewer) -> DatasetOut:
    return DatasetOut.of(items.dataset_info(session, items.get_dataset(session, name)))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(name: str, session: SessionDep, principal: Writer) -> Response:
    items.delete_dataset(session, name, actor=principal.name, via="api")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/items", response_model=ItemChangeOut)
def add_items(name: str, body: ItemsIn, session: SessionDep, principal: Writer) -> ItemChangeOut:
    change = items.add_items(session, name, query=body.query, uids=body.uids, actor=principal.name, via="api")
    return ItemChangeOut.of(change)


@router.post("/{name}/items/remove", response_model=ItemChangeOut)
def remove_items(name: str, body: ItemsIn, session: SessionDep, principal: Writer) -> ItemChangeOut:
    change = items.remove_items(session, name, query=body.query, uids=body.uids, actor=principal.name, via="api")
    return ItemChangeOut.of(change)


@router.post("/{name}/labels", response_model=LabelSetOut, status_code=status.HTTP_201_CREATED)
async def import_labels(
    name: str,
    request: Request,
    platform: PlatformDep,
    session: SessionDep,
    principal: Writer,
    origin: str | None = None,
) -> LabelSetOut:
    """Import a CSV body (``study,label`` …) as the dataset's new label set."""
    too_big = UsageError("the CSV is larger than 64 MiB", hint="Split the labels or import them with the CLI.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_CSV:
        raise too_big
    body = await request.body()
    if len(body) > MAX_CSV:
        raise too_big
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError("the CSV is not UTF-8", hint="Save the file as UTF-8 and send it again.") from None
    info = await run_in_threadpool(
        labels.import_labels, session, platform.objects, name, text, origin=origin, actor=principal.name, via="api"
    )
    return LabelSetOut.of(info)


@router.post("/{name}/versions", response_model=FreezeOut, status_code=status.HTTP_201_CREATED)
def freeze(name: str, body: FreezeIn, platform: PlatformDep, session: SessionDep, principal: Writer) -> FreezeOut:
    strat = parse_stratify(body.stratify)
    if body.split is not None and body.folds is not None:
        raise UsageError("split and folds exclude each other", hint="Send one of them.")
    policy = (
        ratios_policy(body.split, stratify=strat, seed=body.seed)
        if body.split is not None
        else folds_policy(body.folds, stratify=strat, seed=body.seed)
        if body.folds is not None
        else None
    )
    result = versions.freeze(
        session,
        platform.objects,
        name,
        tag=body.tag,
        policy=policy,
        resplit=body.resplit,
        message=body.message,
        actor=principal.name,
        via="api",
    )
    return FreezeOut(
        version=VersionOut.of(result.version),
        created=result.created,
        leakage=result.leakage.to_dict(),
        changes=result.changes,
        warnings=result.warnings,
    )


@router.get("/{name}/versions", response_model=list[VersionOut])
def log(name: str, session: SessionDep, _: Viewer) -> list[VersionOut]:
    return [VersionOut.of(v) for v in versions.log(session, name)]


@router.get("/{name}/versions/{ref}", response_model=VersionOut)
def show_version(name: str, ref: str, session: SessionDep, _: Viewer) -> VersionOut:
    return VersionOut.of(versions.get_version(session, _ref(name, ref)))


@router.get("/{name}/versions/{ref}/manifest")
def manifest(name: str, ref: str, platform: PlatformDep, session: SessionDep, principal: Reader) -> Response:
    """The canonical manifest bytes (their SHA-256 is the version id); reading it is audited."""
    row = versions.resolve(session, _ref(name, ref))
    data = platform.objects.get(row.id)
    audit.record_read(
        platform, principal, "dataset.manifest.read", target_kind="dataset_version", target_id=row.id, via="api"
    )
    return Response(data, media_type="application/json", headers={"ETag": f'"{row.id}"', "X-Medcycle-Digest": row.id})


@router.get("/{name}/diff")
def diff(
    name: str,
    session: SessionDep,
    _: Browser,
    a: Annotated[str, Query(description="Version ref, e.g. v1")],
    b: Annotated[str, Query(description="Version ref, e.g. v2")],
    limit: Annotated[int, Query(ge=0, le=100_000)] = 1000,
) -> dict[str, Any]:
    return versions.diff(session, _ref(name, a), _ref(name, b)).to_dict(limit=limit)


@router.get("/{name}/versions/{ref}/card")
def card(
    name: str,
    ref: str,
    session: SessionDep,
    _: Viewer,
    fmt: Annotated[str, Query(alias="format", pattern="^(md|html|json)$")] = "json",
    frozen: bool = False,
) -> Response:
    """The dataset card in Markdown, HTML or JSON (human fields live unless ``frozen``)."""
    row = versions.resolve(session, _ref(name, ref))
    text = cards.render(cards.version_card(session, row, live=not frozen), fmt)
    return Response(text, media_type=MEDIA[fmt])


@router.patch("/{name}/card", response_model=dict[str, str])
def edit_card(name: str, body: CardEditIn, session: SessionDep, principal: Writer) -> dict[str, str]:
    return cards.edit_card(session, name, body.fields, actor=principal.name, via="api")
