"""``medcycle labels active | pseudo``: active-learning batches and pseudo-labels.

The labels layer takes a scorer (active learning) or a predictor (pseudo-labels) and never imports a model; the
registered model version is wired as one by :class:`medcycle.models.scorer.ModelScorer`, shared with the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.orm import Session

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, table
from medcycle.labels import active, pseudo, tasks
from medcycle.labels.schemas import resolve_schema
from medcycle.models.scorer import ModelScorer, images_only, mask_modality

if TYPE_CHECKING:
    from medcycle.platform import Platform

active_app = typer.Typer(no_args_is_help=True, help="Active learning: the next batch to label, by a model.")
pseudo_app = typer.Typer(no_args_is_help=True, help="Pseudo-labels from a model, sent to review.")
VIA = "cli"


def _scorer_and_images(platform: Platform, model: str, schema: str, dataset: str | None, query: str | None
                       ) -> tuple[ModelScorer, tuple[str, ...]]:
    """The model's scorer at the schema's item level, and the task items it can score (images, not masks)."""
    with platform.session(write=False) as session:
        items = _items(session, schema, dataset, query)
        level = resolve_schema(session, schema).level
    scorer = ModelScorer(platform, model, level=level)
    with platform.session(write=False) as session:
        return scorer, scorer.images_only(session, items.uids)


def _items(session: Session, schema: str, dataset: str | None, query: str | None) -> tasks.TaskItems:
    from medcycle.cli.labels import dataset_instances

    return tasks.task_items(session, schema=schema, dataset=dataset, query=query, dataset_resolver=dataset_instances)


# -- active learning ------------------------------------------------------------------------------------
AGGREGATE_HELP = "Pixel uncertainty → one number per item: foreground (default), top<P>% (e.g. top1%) or mean."


def _version(platform: Platform, model: str) -> str:
    from medcycle.models.registry import info, resolve

    with platform.session(write=False) as session:
        return info(session, resolve(session, model)).ref


@active_app.command("next")
def active_next(
    ctx: typer.Context,
    schema: Annotated[str, typer.Option(help="The label schema (gives the item level).")],
    dataset: Annotated[str | None, typer.Option(help="Candidates: items of a dataset version, NAME@TAG.")] = None,
    query: Annotated[str | None, typer.Option(help="Candidates: items matching a catalog filter.")] = None,
    strategy: Annotated[str, typer.Option(help="random, entropy, margin, mc-dropout, tta or coreset.")] = "entropy",
    size: Annotated[int, typer.Option(help="How many items.")] = 20,
    model: Annotated[str | None, typer.Option(help="The model version that scores, NAME@VERSION.")] = None,
    mc_samples: Annotated[int, typer.Option(help="MC-dropout passes.")] = 10,
    aggregate: Annotated[str, typer.Option(help=AGGREGATE_HELP)] = "foreground",
    diversity: Annotated[float, typer.Option(help="> 1: k-center on the features among the diversity × size most "
                                                  "uncertain (uncertainty + diversity).")] = 1.0,
    cached: Annotated[bool, typer.Option("--cached", help="Rank by the model version's cached scores only (from "
                                                           "`active score`); do not load the model.")] = False,
    seed: Annotated[int, typer.Option(help="Seed (random picks, core-set start).")] = 0,
    json: bool = JsonOpt,
) -> None:
    """Choose and record the next batch among candidates not yet labelled (scores cached per model version)."""
    platform = state(ctx).platform()
    with platform.session(write=False) as session:
        items = _items(session, schema, dataset, query)
        level = resolve_schema(session, schema).level
    scorer = ModelScorer(platform, model, level=level) if model is not None and not cached else None
    version = _version(platform, model) if model is not None and cached else None
    candidates = items.uids
    with platform.session(write=False) as session:
        if scorer is not None:
            candidates = scorer.images_only(session, candidates)
        elif version is not None:  # the model's mask instances were never scored: leave them out
            candidates = images_only(session, candidates, level=level,
                                     mask_modality=mask_modality(session, platform.objects, version))
    with platform.session() as session:
        info = active.next_batch(session, candidates, size, strategy, scorer=scorer, model_version=version, seed=seed,
                                 mc_samples=mc_samples, aggregate=aggregate, diversity=diversity,
                                 actor=state(ctx).actor, via=VIA)
    if json:
        emit_json(info.to_dict())
        return
    b = info.batch
    console().print(f"[bold]{info.ref}[/]: {len(b.items)} of {b.n_candidates} candidates by {b.strategy.value}"
                    + (f" ({b.model_version}, {b.scored} scored now)" if b.model_version else "")
                    + f"; make it a task: `medcycle labels active task {info.ref} --schema {schema}`")
    table("Next batch", ["#", "item", "score"], [(k + 1, i, f"{s:.4f}" if s is not None else None)
                                                  for k, (i, s) in enumerate(zip(b.items, b.scores, strict=True))])


@active_app.command("score")
def active_score(
    ctx: typer.Context,
    schema: Annotated[str, typer.Option(help="The label schema (gives the item level).")],
    model: Annotated[str, typer.Option(help="The model version that scores, NAME@VERSION.")],
    dataset: Annotated[str | None, typer.Option(help="Items of a dataset version, NAME@TAG.")] = None,
    query: Annotated[str | None, typer.Option(help="Items matching a catalog filter.")] = None,
    strategy: Annotated[str, typer.Option(help="entropy, margin, mc-dropout, tta or coreset.")] = "entropy",
    mc_samples: Annotated[int, typer.Option(help="MC-dropout passes.")] = 10,
    aggregate: Annotated[str, typer.Option(help=AGGREGATE_HELP)] = "foreground",
    features: Annotated[bool | None, typer.Option("--features/--no-features", help="Also cache feature vectors "
                                                  "(default: for coreset; needed by --diversity).")] = None,
    json: bool = JsonOpt,
) -> None:
    """A scoring run: cache a model version's scores of every item (then `next --cached` and the API rank by them)."""
    platform = state(ctx).platform()
    scorer, candidates = _scorer_and_images(platform, model, schema, dataset, query)
    with platform.session() as session:
        run = active.score_items(scorer, candidates, strategy, active.SqlCache(session), mc_samples=mc_samples,
                                 aggregate=aggregate, features=features)
    if json:
        emit_json({**run.to_dict(), "items": len(candidates)})
        return
    table(f"Scores of {run.model_version} ({len(candidates)} items)", ["measure", "scored now", "already cached"],
          [(m, c["scored"], c["cached"]) for m, c in run.measures.items()])


@active_app.command("task")
def active_task(
    ctx: typer.Context, batch: Annotated[str, typer.Argument(help="The batch, e.g. B-3.")],
    schema: Annotated[str, typer.Option(help="The label schema.")],
    readers_per_item: Annotated[int, typer.Option(help="Readers for each item.")] = 1,
    readers_: Annotated[str | None, typer.Option("--readers", help="Reader pool a,b,c (default: all qualified).")]
    = None,
    due: Annotated[str | None, typer.Option(help="Due date, YYYY-MM-DD.")] = None,
    adjudication_threshold: Annotated[float | None, typer.Option(help="Adjudicate below this agreement.")] = None,
    name: Annotated[str | None, typer.Option(help="A name for the task.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Make a recorded batch the next labeling task (qualified readers only)."""
    pool = [r for r in readers_.split(",") if r.strip()] if readers_ is not None else None
    with state(ctx).platform().session() as session:
        info = active.create_task_from_batch(session, batch, schema=schema, readers_per_item=readers_per_item,
                                             readers=pool, due=due, adjudication_threshold=adjudication_threshold,
                                             name=name, actor=state(ctx).actor, via=VIA)
    emit_json(info.to_dict()) if json else console().print(f"created [bold]{info.ref}[/] from {batch}: "
                                                           f"{info.items} items, {len(info.readers)} readers")


@active_app.command("list")
def active_list(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Recorded batches, newest first."""
    with state(ctx).platform().session(write=False) as session:
        found = active.list_batches(session)
    if json:
        emit_json([b.to_dict() for b in found])
        return
    table("Active-learning batches", ["batch", "strategy", "model", "items", "candidates", "task", "created"],
          [(b.ref, b.batch.strategy.value, b.batch.model_version, len(b.batch.items), b.batch.n_candidates, b.task,
            b.created_at) for b in found])


@active_app.command("show")
def active_show(ctx: typer.Context, batch: Annotated[str, typer.Argument(help="The batch, e.g. B-3.")],
                json: bool = JsonOpt) -> None:
    """One batch: its items in the order picked, with their scores."""
    with state(ctx).platform().session(write=False) as session:
        info = active.get_batch(session, batch)
    if json:
        emit_json(info.to_dict())
        return
    b = info.batch
    console().print(f"[bold]{info.ref}[/] {b.strategy.value} · {b.model_version or '-'} · {b.measure or '-'} · "
                    f"task {info.task or '-'}")
    table("Items", ["#", "item", "score"], [(k + 1, i, s) for k, (i, s) in enumerate(zip(b.items, b.scores,
                                                                                        strict=True))])


# -- pseudo-labels --------------------------------------------------------------------------------------
@pseudo_app.command("run")
def pseudo_run(
    ctx: typer.Context,
    schema: Annotated[str, typer.Option(help="The label schema the model's classes belong to.")],
    model: Annotated[str, typer.Option(help="The model version, NAME@VERSION.")],
    dataset: Annotated[str | None, typer.Option(help="Items of a dataset version, NAME@TAG.")] = None,
    query: Annotated[str | None, typer.Option(help="Items matching a catalog filter.")] = None,
    min_score: Annotated[float | None, typer.Option(help="Drop annotations less confident than this.")] = None,
    review: Annotated[str, typer.Option(help="senior (every item to adjudication), readers, or none.")] = "senior",
    readers_per_item: Annotated[int, typer.Option(help="With --review readers: readers per item.")] = 1,
    adjudication_threshold: Annotated[float | None, typer.Option(help="With --review readers.")] = None,
    blinded: Annotated[bool, typer.Option("--blinded/--unblinded", help="With --review readers: hide the model's "
                                                                        "labels from readers.")] = True,
    json: bool = JsonOpt,
) -> None:
    """Pseudo-label items with a model (reader model:VERSION) and send them to review as a task."""
    platform = state(ctx).platform()
    scorer, candidates = _scorer_and_images(platform, model, schema, dataset, query)
    with platform.session() as session:
        labels = pseudo.pseudo_label(session, platform.objects, candidates, scorer, model_version=scorer.version,
                                     schema=schema, min_score=min_score, actor=state(ctx).actor, via=VIA)
        task = None
        if review != "none":
            task = pseudo.send_to_review(session, platform.objects, labels, mode=review,
                                         readers_per_item=readers_per_item,
                                         adjudication_threshold=adjudication_threshold, blinded=blinded,
                                         actor=state(ctx).actor, via=VIA)
    if json:
        emit_json({**labels.to_dict(), "task": task.to_dict() if task else None})
        return
    data = labels.to_dict()
    console().print(f"{labels.reader}: {data['annotations']} annotation(s) on {data['with_findings']} of "
                    f"{data['items']} items ({data['dropped']} below --min-score)"
                    + (f"; review in [bold]{task.ref}[/] ({review})" if task else ""))


def register(app: typer.Typer) -> None:
    """Add these groups to ``medcycle labels``."""
    app.add_typer(active_app, name="active")
    app.add_typer(pseudo_app, name="pseudo")
