"""Active learning: batches to label next, and the model versions' score cache (under ``/v1/labels``).

A batch by any strategy: random needs no model; the others rank by a model version's scores, read from
the score cache (computed once per version by POST /v1/labels/active/scores, `medcycle labels active score`
or medcycle.labels.active.score_items), or — with "score": true — computed in the request for what is not
cached yet (the model loaded by :class:`medcycle.models.scorer.ModelScorer`, as the CLI loads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from medcycle.api.deps import PlatformDep, SessionDep
from medcycle.api.routers.labels import (
    PREFIX,
    STRATEGIES,
    TAGS,
    VIA,
    ActiveOptions,
    Reader,
    ScoreIn,
    Writer,
    dataset_instances,
)
from medcycle.auth import audit
from medcycle.errors import UsageError
from medcycle.labels import active, tasks
from medcycle.platform import Platform

if TYPE_CHECKING:
    from medcycle.models.scorer import ModelScorer

router = APIRouter(prefix=PREFIX, tags=list(TAGS))
class BatchIn(ActiveOptions):
    schema_: str = Field(alias="schema", description="The label schema (gives the item level).")
    dataset: str | None = Field(default=None, description="Candidates: a dataset version, NAME@TAG.")
    query: str | None = Field(default=None, description="Candidates: a catalog filter expression.")
    size: int = Field(default=20, ge=1, le=10_000)
    seed: int = 0
    diversity: float = Field(default=1.0, ge=1.0, le=100.0, description="> 1: k-center on the features among "
                             "the diversity × size most uncertain (needs cached features).")
    score: bool = Field(default=False, description="Score what the model version has not scored yet, now (loads "
                        "the model; 2D models). Default: cached scores only.")


class BatchTaskIn(BaseModel):
    schema_: str = Field(alias="schema")
    readers_per_item: int = Field(default=1, ge=1, le=100)
    readers: list[str] | None = None
    due: str | None = None
    adjudication_threshold: float | None = Field(default=None, ge=0, le=1)
    blinded: bool = True
    seed: int = 0
    name: str | None = Field(default=None, max_length=128)


def _model_version(session: Session, strategy: active.Strategy, model: str | None) -> str | None:
    """The model version's canonical reference (``None`` for random); a clear 4xx when it is missing or unknown."""
    if strategy is active.Strategy.RANDOM:
        return None
    if model is None:
        raise UsageError(f"the {strategy.value} strategy ranks items by a model version's scores; give \"model\"",
                         hint='Send "model": "NAME@vN" with scores cached by `medcycle labels active score --model '
                              'NAME@vN --strategy ...` (or POST /v1/labels/active/scores), or "strategy": "random".')
    from medcycle.models.registry import info, resolve

    return info(session, resolve(session, model)).ref


def _scorer(platform: Platform, session: Session, schema: str, model: str) -> ModelScorer:
    """The registered model version as the scorer, at the schema's item level (loaded as the CLI loads it)."""
    from medcycle.labels.schemas import resolve_schema
    from medcycle.models.scorer import ModelScorer

    return ModelScorer(platform, model, level=resolve_schema(session, schema).level)


@router.get("/active/batches")
def list_batches(session: SessionDep, _: Reader) -> list[dict[str, Any]]:
    return [b.to_dict() for b in active.list_batches(session)]


@router.get("/active/batches/{ref}")
def show_batch(ref: str, session: SessionDep, _: Reader) -> dict[str, Any]:
    return active.get_batch(session, ref).to_dict()


@router.post("/active/batches", status_code=status.HTTP_201_CREATED)
def create_batch(body: BatchIn, platform: PlatformDep, session: SessionDep, principal: Writer) -> dict[str, Any]:
    """The next batch among the candidates not yet labelled, by any strategy; recorded (B-N), ready to become a
    task (POST /v1/labels/active/batches/{ref}/task)."""
    how = active.parse_strategy(body.strategy)
    version = _model_version(session, how, body.model)
    items = tasks.task_items(session, schema=body.schema_, dataset=body.dataset, query=body.query,
                             dataset_resolver=dataset_instances)
    candidates: Sequence[str] = items.uids
    scorer = None
    if body.score and version is not None:
        scorer = _scorer(platform, session, body.schema_, version)
        candidates = scorer.images_only(session, candidates)
    elif version is not None:  # the model's mask instances were never scored: leave them out
        from medcycle.labels.schemas import resolve_schema
        from medcycle.models.scorer import images_only, mask_modality

        candidates = images_only(session, candidates, level=resolve_schema(session, body.schema_).level,
                                 mask_modality=mask_modality(session, platform.objects, version))
    return active.next_batch(session, candidates, body.size, how.value, scorer=scorer, model_version=version,
                             seed=body.seed, mc_samples=body.mc_samples, aggregate=body.aggregate,
                             diversity=body.diversity, actor=principal.name, via=VIA).to_dict()


@router.post("/active/scores")
def score_items(body: ScoreIn, platform: PlatformDep, session: SessionDep, principal: Writer) -> dict[str, Any]:
    """A scoring run: a model version scores the items (all of them, labelled or not) under a strategy's
    measure, and the cache keeps what it had not scored yet."""
    how = active.parse_strategy(body.strategy)
    version = _model_version(session, how, body.model)
    if version is None:
        raise UsageError("random picks need no scores", hint=f"Choose one of {STRATEGIES} other than random.")
    items = tasks.task_items(session, schema=body.schema_, dataset=body.dataset, query=body.query,
                             dataset_resolver=dataset_instances)
    scorer = _scorer(platform, session, body.schema_, version)
    candidates = scorer.images_only(session, items.uids)
    run = active.score_items(scorer, candidates, how.value, active.SqlCache(session), mc_samples=body.mc_samples,
                             aggregate=body.aggregate, features=body.features)
    audit.record(session, principal.name, "labels.active.score", target_kind="model_version", target_id=version,
                 via=VIA, strategy=how.value, items=len(candidates), measures=run.measures)
    return {**run.to_dict(), "items": len(candidates)}


@router.get("/active/scores")
def cached_scores(session: SessionDep, _: Reader,
                  model: Annotated[str, Query(description="The model version, NAME@vN.")]) -> dict[str, Any]:
    """What the score cache holds for a model version: items per measure."""
    from medcycle.models.registry import info, resolve

    version = info(session, resolve(session, model)).ref
    return {"model_version": version, "measures": active.cached_measures(session, version)}


@router.post("/active/batches/{ref}/task", status_code=status.HTTP_201_CREATED)
def batch_task(ref: str, body: BatchTaskIn, session: SessionDep, principal: Writer) -> dict[str, Any]:
    return active.create_task_from_batch(session, ref, schema=body.schema_, readers_per_item=body.readers_per_item,
                                         readers=body.readers, due=body.due,
                                         adjudication_threshold=body.adjudication_threshold, blinded=body.blinded,
                                         seed=body.seed, name=body.name, actor=principal.name, via=VIA).to_dict()
