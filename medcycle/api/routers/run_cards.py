"""Experiment cards over REST: read a run's card, edit its conclusions, post it to a chat webhook.

``GET /v1/runs/{run}/card`` (view; ``?format=markdown|slack|json`` for the rendered forms),
``PUT /v1/runs/{run}/card`` (train; conclusions and key metrics) and ``POST /v1/runs/{run}/card/post``
(train; to ``url`` or the configured webhook). Posting happens outside any database transaction, so a
slow chat service never holds SQLite's write lock.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from medcycle.api.deps import PlatformDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import MedcycleError
from medcycle.experiments import cards
from medcycle.platform import Platform

router = APIRouter(prefix="/v1/runs", tags=["runs"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Trainer = Annotated[Principal, requires(Permission.TRAIN)]


class CardIn(BaseModel):
    conclusions: str = Field(default="", max_length=4 * cards.MAX_CONCLUSIONS,
                             description="What the run showed, in the author's words; empty clears them.")
    key_metrics: list[str] | None = Field(default=None, max_length=cards.MAX_KEY_METRICS,
                                          description="Metrics the card headlines (default: unchanged).")


class PostIn(BaseModel):
    url: str | None = Field(default=None, max_length=2048, description="Webhook URL (default: the configured one).")
    format: Literal["slack", "json"] = "slack"


def base_url(platform: Platform, request: Request) -> str:
    """Links in a card: the configured public URL, else the address this request came to."""
    return (platform.settings.public_url or str(request.base_url)).rstrip("/")


def read_card(platform: Platform, run: str, base: str) -> cards.ExperimentCard:
    with platform.session(write=False) as session:
        return cards.build_card(session, run, base_url=base)


def post(platform: Platform, principal: Principal, run: str, url: str | None, format: str, base: str,
         *, via: str) -> cards.PostResult:
    """Build the card, post it (no transaction open meanwhile) and audit the attempt either way."""
    target_url = cards.resolve_webhook(platform.settings, url)
    target = cards.webhook_target(target_url)
    card = read_card(platform, run, base)
    try:
        result = cards.post_card(card, target_url, format=format)
    except MedcycleError as exc:
        with platform.session() as session:
            audit.record(session, principal, "run.card.post", target_kind="run", target_id=card.run_id,
                         outcome="error", via=via, webhook=target, format=format, error=exc.message)
        raise
    with platform.session() as session:
        audit.record(session, principal, "run.card.post", target_kind="run", target_id=card.run_id, via=via,
                     webhook=target, format=format, status=result.status)
    return result


@router.get("/{run}/card", response_model=None)
def get_card(
    run: str, request: Request, platform: PlatformDep, _: Viewer,
    format: Annotated[Literal["card", "markdown", "slack", "json"], Query()] = "card",
) -> dict[str, Any] | Response:
    card = read_card(platform, run, base_url(platform, request))
    if format == "markdown":
        return Response(card.to_markdown(), media_type="text/markdown; charset=utf-8")
    return card.to_dict() if format == "card" else cards.payload(card, format)


@router.put("/{run}/card")
def edit_card(run: str, body: CardIn, request: Request, platform: PlatformDep, principal: Trainer) -> dict[str, Any]:
    with platform.session() as session:
        cards.set_conclusions(session, run, body.conclusions, actor=principal.name, key_metrics=body.key_metrics,
                              via="api")
    return read_card(platform, run, base_url(platform, request)).to_dict()


@router.post("/{run}/card/post")
def post_card(run: str, body: PostIn, request: Request, platform: PlatformDep, principal: Trainer) -> dict[str, Any]:
    return post(platform, principal, run, body.url, body.format, base_url(platform, request), via="api").to_dict()
