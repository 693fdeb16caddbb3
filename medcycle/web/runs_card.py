"""The experiment card of a run (``/ui/runs/RUN/card``): read it, write the conclusions, post it to the chat.

Reading needs ``view``; writing conclusions and posting need ``train``. Both forms post back here (the
SameSite session cookie) and redirect to the card with a confirmation; a refused change (too long, an
unknown metric, a webhook that failed) is shown on the card with its hint, the text kept.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.api.routers.run_cards import base_url, post
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import MedcycleError
from medcycle.experiments import cards
from medcycle.experiments.runs import resolve_run
from medcycle.experiments.tables import MetricSeriesRow
from medcycle.platform import Platform
from medcycle.web.render import renderer
from medcycle.web.runs_data import number

router = APIRouter()
Viewer = Annotated[Principal, requires(Permission.VIEW)]


def _metric_keys(session: Session, run_id: str) -> list[str]:
    return [k for k in session.scalars(select(MetricSeriesRow.key).where(MetricSeriesRow.run_id == run_id)
                                       .order_by(MetricSeriesRow.key)) if not k.startswith("system/")]


def _page(request: Request, platform: Platform, session: Session, principal: Principal, run: str, *,
          status_code: int = 200, error: MedcycleError | None = None, draft: str | None = None,
          saved: bool = False, posted: dict[str, str] | None = None, post_error: MedcycleError | None = None,
          url: str = "", format: str = "slack") -> Response:
    card = cards.build_card(session, run, base_url=base_url(platform, request))
    chosen = [m.key for m in card.key_metrics] if card.key_metrics_chosen else []
    return renderer(request).render(
        request, "runs_card.html", principal=principal, active="experiments", status_code=status_code,
        card=card, metric_keys=_metric_keys(session, card.run_id), chosen=chosen,
        draft=draft if draft is not None else (card.conclusions.text if card.conclusions else ""),
        error=error, saved=saved, posted=posted, post_error=post_error, url=url, format=format,
        formats=cards.FORMATS, max_chars=cards.MAX_CONCLUSIONS, can_edit=principal.can(Permission.TRAIN),
        configured=bool(getattr(platform.settings, "chat_webhook_url", None)), number=number,
        markdown=card.to_markdown(),
    )


@router.get("/{run}/card")
def card_page(
    request: Request, run: str, platform: PlatformDep, session: SessionDep, principal: Viewer,
    saved: Annotated[str, Query(max_length=1)] = "", posted: Annotated[str, Query(max_length=8)] = "",
    status: Annotated[str, Query(max_length=3)] = "", target: Annotated[str, Query(max_length=300)] = "",
) -> Response:
    done = {"format": posted, "status": status, "target": target} if posted else None
    return _page(request, platform, session, principal, run, saved=saved == "1", posted=done)


@router.post("/{run}/card")
def save_card(
    request: Request, run: str, platform: PlatformDep, session: SessionDep, principal: Viewer,
    conclusions: Annotated[str, Form(max_length=4 * cards.MAX_CONCLUSIONS)] = "",
    key_metric: Annotated[list[str] | None, Form()] = None,
) -> Response:
    principal.require(Permission.TRAIN)
    run_id = resolve_run(session, run).id
    try:
        with session.begin_nested():
            cards.set_conclusions(session, run_id, conclusions, actor=principal.name, key_metrics=key_metric or [],
                                  via="web")
    except MedcycleError as exc:
        if exc.http_status >= 500:
            raise
        return _page(request, platform, session, principal, run_id, status_code=exc.http_status, error=exc,
                     draft=conclusions)
    return RedirectResponse(f"/ui/runs/{run_id}/card?saved=1#conclusions", status_code=303)


@router.post("/{run}/card/post")
def post_card(
    request: Request, run: str, platform: PlatformDep, principal: Viewer,
    url: Annotated[str, Form(max_length=2048)] = "", format: Annotated[str, Form(max_length=8)] = "slack",
) -> Response:
    """Post the card; the page says where it went (scheme and host only) or why it did not."""
    principal.require(Permission.TRAIN)
    with platform.session(write=False) as session:
        run_id = resolve_run(session, run).id
    try:
        result = post(platform, principal, run_id, url or None, format, base_url(platform, request), via="web")
    except MedcycleError as exc:
        if exc.http_status >= 500 and not isinstance(exc, cards.WebhookFailed):
            raise
        with platform.session(write=False) as session:
            return _page(request, platform, session, principal, run_id, status_code=exc.http_status, post_error=exc,
                         url=url, format=format)
    query: dict[str, Any] = {"posted": result.format, "status": result.status, "target": result.target}
    return RedirectResponse(f"/ui/runs/{run_id}/card?{urlencode(query)}#share", status_code=303)
