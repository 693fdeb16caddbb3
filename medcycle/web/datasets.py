"""Dataset pages: every dataset (``/ui/datasets``), one dataset's versions (``/ui/datasets/NAME``) and one
version (``/ui/datasets/NAME/REF``) with its dataset card, class balance per split and a diff against
another version. All need ``view``; changes are made with ``medcycle dataset`` or the API.

The card is drawn from the JSON stored with the version (through :func:`medcycle.datasets.cards.sections`,
the same layout the Markdown and HTML renderings use) inside our own layout, with today's human fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from medcycle.api.deps import SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.datasets import cards, items, labels, versions
from medcycle.datasets.diff import VersionDiff
from medcycle.datasets.labels import LabelSetInfo
from medcycle.datasets.splits import SplitPolicy
from medcycle.datasets.tables import DatasetVersionRow
from medcycle.errors import NotFound
from medcycle.web.render import renderer

router = APIRouter(prefix="/ui/datasets", include_in_schema=False)
Viewer = Annotated[Principal, requires(Permission.VIEW)]

DIFF_SHOWN = 200  # uids listed per kind of change; the counts are always complete
SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class SplitShare:
    """One split's part of a version, for the small stacked bars in tables."""

    name: str
    items: int
    patients: int
    percent: float
    css: str


def split_shares(split_counts: dict[str, Any]) -> list[SplitShare]:
    """Splits in train/val/test order (then folds and others by name) with their share of the images."""
    total = sum(int(c.get("items", 0)) for c in split_counts.values()) or 1
    names = sorted(split_counts, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))
    return [SplitShare(n, int(split_counts[n].get("items", 0)), int(split_counts[n].get("patients", 0)),
                       100.0 * int(split_counts[n].get("items", 0)) / total,
                       f"split-{n}" if n in SPLIT_ORDER else "split-other") for n in names]


def describe_policy(policy: dict[str, Any]) -> str:
    return SplitPolicy.from_dict(policy).describe()


def _label_set(session: Session, label_set_id: str | None) -> LabelSetInfo | None:
    if label_set_id is None:
        return None
    try:
        return labels.get_label_set(session, label_set_id)
    except NotFound:
        return None


def balance_chart(balance: dict[str, dict[str, int]]) -> dict[str, Any]:
    """``{split: {class: images}}`` as the stacked bars ``datasets.js`` draws (one trace per class)."""
    splits = [s.name for s in split_shares({k: {"items": sum(v.values())} for k, v in balance.items()})]
    classes = sorted({c for per in balance.values() for c in per})
    return {"splits": splits,
            "classes": [{"name": c, "counts": [balance[s].get(c, 0) for s in splits]} for c in classes]}


@dataclass(frozen=True, slots=True)
class CardTable:
    caption: str
    columns: list[tuple[str, bool]]  # (name, numeric: right-aligned)
    rows: list[list[Any]]


def card_sections(card: dict[str, Any]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """The card's Datasheets sections (as the Markdown and HTML renderings lay them out). Consecutive tables
    become one ``tables`` block (laid out side by side), each with its number columns marked."""
    out = []
    for title, blocks in cards.sections(card):
        laid: list[tuple[str, Any]] = []
        for kind, value in blocks:
            if kind != "table":
                laid.append((kind, value))
                continue
            caption, columns, rows = value
            numeric = [name == "size" or (bool(rows) and all(isinstance(r[i], int | float) for r in rows))
                       for i, name in enumerate(columns)]
            table = CardTable(str(caption), list(zip(columns, numeric, strict=True)), [list(r) for r in rows])
            if laid and laid[-1][0] == "tables":
                laid[-1][1].append(table)
            else:
                laid.append(("tables", [table]))
        out.append((title, laid))
    return out


def _version_link(name: str, row: DatasetVersionRow | versions.VersionInfo) -> str:
    return f"/ui/datasets/{name}/v{row.seq}"


@router.get("")
def datasets_page(request: Request, session: SessionDep, principal: Viewer) -> Response:
    found = items.list_datasets(session)
    latest = {d.name: versions.version_info(session, session.get_one(DatasetVersionRow, d.latest_version), d.name)
              for d in found if d.latest_version}
    return renderer(request).render(
        request, "datasets.html", principal=principal, active="datasets",
        datasets=found, latest=latest, shares=split_shares, describe_policy=describe_policy,
    )


@router.get("/{name}")
def dataset_page(request: Request, name: str, session: SessionDep, principal: Viewer) -> Response:
    info = items.dataset_info(session, items.get_dataset(session, name))
    log = versions.log(session, name)
    return renderer(request).render(
        request, "datasets_detail.html", principal=principal, active="datasets",
        ds=info, log=log, label_set=_label_set(session, info.label_set), human_fields=cards.HUMAN_FIELDS,
        shares=split_shares, describe_policy=describe_policy,
    )


@router.get("/{name}/{ref}")
def version_page(
    request: Request, name: str, ref: str, session: SessionDep, principal: Viewer, against: str = ""
) -> Response:
    row = versions.resolve(session, f"{name}@{ref}")
    info = versions.version_info(session, row, name)
    card = cards.version_card(session, row, live=True)
    log = versions.log(session, name)
    diff: VersionDiff | None = None
    other: versions.VersionInfo | None = None
    if against:
        other = versions.version_info(session, versions.resolve(session, f"{name}@{against}"), name)
        diff = versions.diff(session, f"{name}@{other.id}", f"{name}@{row.id}")
    balance = card["facts"].get("class_balance") or {}
    parent = next((v for v in log if v.id == info.parent), None)
    return renderer(request).render(
        request, "datasets_version.html", principal=principal, active="datasets",
        v=info, card=card, sections=card_sections(card), log=log, parent=parent, other=other, diff=diff,
        summary=diff.summary() if diff else None, shown=DIFF_SHOWN, balance=balance,
        balance_chart=balance_chart(balance), shares=split_shares, describe_policy=describe_policy,
        label_set=_label_set(session, info.label_set), link=_version_link,
    )
