"""Dataset pages: every dataset (``/ui/datasets``), one dataset's versions (``/ui/datasets/NAME``) and one
version (``/ui/datasets/NAME/REF``) with its dataset card, class balance per split and a diff against
another version. All need ``view``; other changes are made with ``medcycle dataset`` or the API.

The card is drawn from the JSON stored with the version (through :func:`medcycle.datasets.cards.sections`,
the same layout the Markdown and HTML renderings use) inside our own layout, with today's human fields.

The human fields of the card (motivation, licence, uses, …) are edited on ``/ui/datasets/NAME/card``, which
needs ``write-data`` as ``medcycle dataset card edit`` and ``PATCH /v1/datasets/NAME/card`` do, and saves
through the same :func:`medcycle.datasets.cards.edit_card` (audited as ``dataset.card.edit`` via ``web``).
Only the fields the form changed are written, so an edit made elsewhere meanwhile to another field is kept;
when someone else changed the same field since the form was opened, nothing is saved and the form comes
back with both texts. Forgery: the session cookie is ``SameSite=Lax`` (a cross-site form post carries no
session), and a post whose ``Sec-Fetch-Site`` or ``Origin`` names another site is refused — which also
covers authentication off, where there is no cookie to withhold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from medcycle.api.deps import SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.datasets import cards, items, labels, versions
from medcycle.datasets.diff import VersionDiff
from medcycle.datasets.labels import LabelSetInfo
from medcycle.datasets.splits import SplitPolicy
from medcycle.datasets.tables import DatasetRow, DatasetVersionRow
from medcycle.errors import Conflict, MedcycleError, NotFound, PermissionDenied, UsageError, ValidationFailed
from medcycle.web.render import renderer

router = APIRouter(prefix="/ui/datasets", include_in_schema=False)
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Editor = Annotated[Principal, requires(Permission.WRITE_DATA)]
MAX_FIELD_CHARS = cards.MAX_FIELD_CHARS  # per human field; the limit is kept (and enforced) by cards.check_fields

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
def dataset_page(
    request: Request, name: str, session: SessionDep, principal: Viewer,
    saved: Annotated[str, Query(max_length=1)] = "",
) -> Response:
    info = items.dataset_info(session, items.get_dataset(session, name))
    log = versions.log(session, name)
    return renderer(request).render(
        request, "datasets_detail.html", principal=principal, active="datasets",
        ds=info, log=log, label_set=_label_set(session, info.label_set), human_fields=cards.HUMAN_FIELDS,
        shares=split_shares, describe_policy=describe_policy, can_edit=principal.can(Permission.WRITE_DATA),
        saved=saved == "1",
    )


# -- editing the card's human fields ---------------------------------------------------------------------
def text_digest(value: str | None) -> str:
    """What the form remembers of each field as it showed it (to tell who changed what on save)."""
    return hashlib.sha256((value or "").encode()).hexdigest()[:32]


def _normalised(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\r", "\n").strip()  # browsers send CR LF from a textarea


def _same_site(request: Request) -> None:
    """Refuse a form another site made the browser post (see the module docstring)."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None:
        forged = site not in {"same-origin", "none"}
    elif origin is not None:
        forged = origin == "null" or urlsplit(origin).netloc != request.headers.get("host", request.url.netloc)
    else:
        forged = False  # not a browser (the CLI, scripts, tests): nothing to forge with
    if forged:
        raise PermissionDenied(
            "this form was sent from another site",
            hint=f"Open the form on this server ({request.url.netloc}) and save it from there.",
        )


async def card_form_fields(request: Request) -> dict[str, str]:
    """The posted form as plain strings (the fields of the card and the form's own hidden fields)."""
    async with request.form() as form:  # any file part a client adds is closed here, not left to the collector
        return {k: v for k, v in form.items() if isinstance(v, str)}


CardForm = Annotated[dict[str, str], Depends(card_form_fields)]


def _back(session: Session, name: str, back: str) -> tuple[str, str]:
    """Where the form returns to, with ``#anchor``: a version's card (``back`` is its ref) or the dataset
    page's card fields; and that version's ref ("" for the dataset page)."""
    if back:
        try:
            row = versions.resolve(session, f"{name}@{back}")
        except (NotFound, UsageError):
            pass
        else:
            return f"/ui/datasets/{name}/v{row.seq}#card", f"v{row.seq}"
    return f"/ui/datasets/{name}#card-fields", ""


def _form_page(request: Request, session: Session, principal: Principal, ds: DatasetRow, back: str, *,
               draft: Mapping[str, str] | None = None, digests: Mapping[str, str] | None = None,
               error: MedcycleError | None = None, conflicts: Mapping[str, str] | None = None,
               status_code: int = 200) -> Response:
    """The edit form: ``draft`` (default: the stored text) in the fields, and per field the digest of the
    text the user is taken to have seen (default: the stored text's)."""
    current = {k: (ds.card_fields or {}).get(k) or "" for k in cards.HUMAN_FIELDS}
    back_url, back_ref = _back(session, ds.name, back)
    return renderer(request).render(
        request, "datasets_card_edit.html", principal=principal, active="datasets", status_code=status_code,
        ds=ds, human_fields=cards.HUMAN_FIELDS, values=dict(draft) if draft is not None else current,
        digests=dict(digests) if digests is not None else {k: text_digest(v) for k, v in current.items()},
        error=error, conflicts=conflicts or {}, back=back_ref, back_url=back_url, max_chars=MAX_FIELD_CHARS,
    )


@router.get("/{name}/card")
def card_form(
    request: Request, name: str, session: SessionDep, principal: Editor,
    back: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    return _form_page(request, session, principal, items.get_dataset(session, name), back)


@router.post("/{name}/card")
def save_card(request: Request, name: str, session: SessionDep, principal: Editor, form: CardForm) -> Response:
    """Write the fields this form changed through :func:`cards.edit_card`, then show the card again."""
    _same_site(request)
    ds = items.get_dataset(session, name)
    back = form.get("back", "")[:64]
    posted = {k: _normalised(form.get(k, "")) for k in cards.HUMAN_FIELDS}
    stored = {k: (ds.card_fields or {}).get(k) or "" for k in cards.HUMAN_FIELDS}
    shown = {k: form.get(f"shown.{k}", "") for k in cards.HUMAN_FIELDS}  # digests of what the form showed
    try:
        cards.check_fields(posted)  # as edit_card would, but before a clash check, to keep the draft in the form
    except ValidationFailed as refused:
        return _form_page(request, session, principal, ds, back, draft=posted, digests=shown, status_code=400,
                          error=refused)
    mine = {k for k in cards.HUMAN_FIELDS if text_digest(posted[k]) != shown[k]}
    theirs = {k for k in cards.HUMAN_FIELDS if text_digest(stored[k]) != shown[k]}
    clash = {k: stored[k] for k in sorted(mine & theirs) if posted[k] != stored[k]}
    if clash:
        error: MedcycleError = Conflict(
            f"someone changed {', '.join(k.replace('_', ' ') for k in clash)} since this form was opened",
            hint="Nothing was saved. Their text is shown under the field; save again to replace it with yours.")
        return _form_page(request, session, principal, ds, back, draft=posted, status_code=409, error=error,
                          digests={k: text_digest(v) for k, v in stored.items()}, conflicts=clash)
    changed = {k: posted[k] for k in sorted(mine) if posted[k] != stored[k]}
    if changed:
        cards.edit_card(session, name, changed, actor=principal.name, via="web")
    path, _, anchor = _back(session, name, back)[0].partition("#")
    return RedirectResponse(f"{path}?saved=1#{anchor}", status_code=303)


@router.get("/{name}/{ref}")
def version_page(
    request: Request, name: str, ref: str, session: SessionDep, principal: Viewer, against: str = "",
    saved: Annotated[str, Query(max_length=1)] = "",
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
        can_edit=principal.can(Permission.WRITE_DATA), saved=saved == "1",
    )
