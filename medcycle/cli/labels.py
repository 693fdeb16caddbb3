"""``medcycle labels``: label schemas, readers, labeling tasks, queues, submissions, adjudication, label sets.

Each command parses its input, calls one function of :mod:`medcycle.labels` and prints (``--json`` for
programs). The local CLI acts with the operator's authority; the REST API enforces who sees what.
"""

from __future__ import annotations

import getpass
import json as jsonlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml  # type: ignore[import-untyped,unused-ignore]
from sqlalchemy.orm import Session

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, fmt, table
from medcycle.errors import UsageError, ValidationFailed
from medcycle.labels import adjudication, readers, schemas, sets, store, tasks
from medcycle.labels.model import Annotation, Kind

app = typer.Typer(no_args_is_help=True, help="Labeling: schemas, readers, tasks, queues, adjudication, label sets.")
schema_app = typer.Typer(no_args_is_help=True, help="Label schemas (classes and kinds), versioned.")
reader_app = typer.Typer(no_args_is_help=True, help="Readers and their qualification flags.")
task_app = typer.Typer(no_args_is_help=True, help="Labeling tasks: create, list, show (progress), close.")
set_app = typer.Typer(no_args_is_help=True, help="Label sets: immutable chosen or consensus annotations.")
app.add_typer(schema_app, name="schema")
app.add_typer(reader_app, name="reader")
app.add_typer(task_app, name="task")
app.add_typer(set_app, name="set")

TaskArg = typer.Argument(help="The task, e.g. T-3 (or 3).", show_default=False)
ItemArg = typer.Argument(help="The item's uid (at the task's level).", show_default=False)
VIA = "cli"


def _who(ctx: typer.Context) -> dict[str, str]:
    return {"actor": state(ctx).actor, "via": VIA}


def _me(reader: str | None, option: str = "--reader") -> str:
    """The reader named, or the operating-system user when none is (if that is a valid reader name)."""
    if reader:
        return readers.check_reader(reader)
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    if not readers.READER_RE.match(name):
        raise UsageError("say which reader", hint=f"Pass {option} NAME.")
    return name


def dataset_instances(session: Session, ref: str) -> tuple[Sequence[str], str]:
    """A dataset version's instance uids and id (the datasets layer sits above labels: wired here)."""
    from medcycle.datasets import versions

    row = versions.resolve(session, ref)
    return sorted(versions.item_states(session, row.id)), row.id


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", hint="Give a readable UTF-8 file.") from None


# -- schemas --------------------------------------------------------------------------------------------
def _print_schema(info: schemas.SchemaInfo) -> None:
    console().print(f"[bold]{info.ref}[/] ({info.level.value}{', multi-label' if info.multi_label else ''}) "
                    f"id {info.id[:12]}" + (f" — {info.description}" if info.description else ""))
    table("Classes", ["class", "kinds", "colour", "description"],
          [(c.name, ", ".join(k.value for k in c.kinds), c.color, c.description) for c in info.classes])


@schema_app.command("add")
def schema_add(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="A YAML or JSON schema file.")],
               json: bool = JsonOpt) -> None:
    """Add a schema file: a new version if it changed, the existing version if not."""
    text = _read_text(file)
    with state(ctx).platform().session() as session:
        info = schemas.add_schema(session, state(ctx).platform().objects, text, origin=file.name, **_who(ctx))
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"{'added' if info.created else 'unchanged:'} [bold]{info.ref}[/] "
                        f"({len(info.classes)} classes)")


@schema_app.command("list")
def schema_list(ctx: typer.Context, name: Annotated[str | None, typer.Option(help="Only this schema.")] = None,
                json: bool = JsonOpt) -> None:
    """Every schema version, newest first within a name."""
    with state(ctx).platform().session(write=False) as session:
        found = schemas.list_schemas(session, name)
    if json:
        emit_json([s.to_dict() for s in found])
        return
    table("Label schemas", ["schema", "level", "classes", "kinds", "id", "created"],
          [(s.ref, s.level.value, len(s.classes), ", ".join(sorted(k.value for k in s.kinds)), s.id[:12],
            s.created_at) for s in found])


@schema_app.command("show")
def schema_show(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="NAME, NAME@N or an id prefix.")],
                json: bool = JsonOpt) -> None:
    """One schema version and its classes."""
    with state(ctx).platform().session(write=False) as session:
        info = schemas.get_schema(session, ref)
    if json:
        emit_json(info.to_dict())
    else:
        _print_schema(info)


# -- readers --------------------------------------------------------------------------------------------
@reader_app.command("set")
def reader_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The reader's user name (or model:VERSION).")],
    qualified: Annotated[bool | None, typer.Option("--qualified/--unqualified", help="May be assigned items.")] = None,
    senior: Annotated[bool | None, typer.Option("--senior/--not-senior", help="May resolve adjudications.")] = None,
    certification: Annotated[str | None, typer.Option(help="e.g. chest-xr-2026 ('' clears).")] = None,
    note: Annotated[str | None, typer.Option(help="A note ('' clears).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Register a reader or change their flags."""
    with state(ctx).platform().session() as session:
        info = readers.set_reader(session, name, qualified=qualified, senior=senior, certification=certification,
                                  note=note, **_who(ctx))
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"reader [bold]{info.name}[/]: qualified {fmt(info.qualified)}, senior {fmt(info.senior)}")


@reader_app.command("list")
def reader_list(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Registered readers and their flags."""
    with state(ctx).platform().session(write=False) as session:
        found = readers.list_readers(session)
    if json:
        emit_json([r.to_dict() for r in found])
        return
    table("Readers", ["reader", "qualified", "senior", "certification", "note", "updated"],
          [(r.name, r.qualified, r.senior, r.certification, r.note, r.updated_at) for r in found])


# -- tasks ----------------------------------------------------------------------------------------------
def _print_task(info: tasks.TaskInfo) -> None:
    out = console()
    out.print(f"[bold]{info.ref}[/]{' ' + info.name if info.name else ''} · {info.schema} · {info.level.value} · "
              f"{info.origin} · {info.readers_per_item} reader(s) per item · "
              f"{'blinded' if info.blinded else 'not blinded'} · {info.state}")
    due = f" · due {fmt(info.due_at)}{' (OVERDUE)' if info.overdue else ''}" if info.due_at else ""
    thr = (f" · adjudication below {info.adjudication_threshold:g}" if info.adjudication_threshold is not None
           else "")
    out.print(f"{info.done}/{info.items} items done{due}{thr}")
    table("Items", ["state", "items"], [(k, v) for k, v in info.item_states.items()])
    table("Readers", ["reader", "assigned", "submitted", "remaining", "seconds"],
          [(r.reader, r.assigned, r.submitted, r.remaining, f"{r.seconds:.0f}") for r in info.readers_progress])
    for w in info.warnings:
        out.print(f"[yellow]warning:[/] {w}")


@task_app.command("create")
def task_create(
    ctx: typer.Context,
    schema: Annotated[str, typer.Option(help="The label schema: NAME or NAME@VERSION.")],
    dataset: Annotated[str | None, typer.Option(help="Items of a dataset version, NAME@TAG.")] = None,
    query: Annotated[str | None, typer.Option(help="Items matching a catalog filter expression.")] = None,
    readers_per_item: Annotated[int, typer.Option(help="Readers for each item.")] = 1,
    readers_: Annotated[str | None, typer.Option("--readers", help="Reader pool a,b,c (default: all qualified).")]
    = None,
    due: Annotated[str | None, typer.Option(help="Due date, YYYY-MM-DD.")] = None,
    adjudication_threshold: Annotated[float | None, typer.Option(help="Adjudicate items whose agreement is below "
                                                                      "this (0-1).")] = None,
    blinded: Annotated[bool, typer.Option("--blinded/--unblinded", help="Readers see only their own labels.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the assignment.")] = 0,
    name: Annotated[str | None, typer.Option(help="A name for the task.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Create a task over a dataset version or a catalog query, assigned to qualified readers."""
    pool = [r for r in readers_.split(",") if r.strip()] if readers_ is not None else None
    with state(ctx).platform().session() as session:
        items = tasks.task_items(session, schema=schema, dataset=dataset, query=query,
                                 dataset_resolver=dataset_instances)
        info = tasks.create_task(session, items, schema=schema, readers_per_item=readers_per_item, readers=pool,
                                 due=due, adjudication_threshold=adjudication_threshold, blinded=blinded, seed=seed,
                                 name=name, **_who(ctx))
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"created [bold]{info.ref}[/]: {info.items} items, {len(info.readers)} readers")
        _print_task(info)


@task_app.command("list")
def task_list(
    ctx: typer.Context,
    reader: Annotated[str | None, typer.Option(help="Only tasks that assign this reader items.")] = None,
    state_: Annotated[str | None, typer.Option("--state", help="open or closed.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Tasks with their progress, newest first."""
    with state(ctx).platform().session(write=False) as session:
        found = tasks.list_tasks(session, reader=reader, state=state_)
    if json:
        emit_json([t.to_dict() for t in found])
        return
    table("Labeling tasks", ["task", "name", "schema", "origin", "items", "done", "adjudication", "readers", "due",
                             "state"],
          [(t.ref, t.name, t.schema, t.origin, t.items, t.done, t.item_states.get("adjudication", 0),
            len(t.readers), f"{fmt(t.due_at)}{' OVERDUE' if t.overdue else ''}" if t.due_at else None, t.state)
           for t in found])


@task_app.command("show")
def task_show(ctx: typer.Context, ref: Annotated[str, TaskArg], json: bool = JsonOpt) -> None:
    """A task's progress: items by state, each reader's assigned/submitted/time."""
    with state(ctx).platform().session(write=False) as session:
        info = tasks.get_task(session, ref)
    if json:
        emit_json(info.to_dict())
    else:
        _print_task(info)


@task_app.command("close")
def task_close(ctx: typer.Context, ref: Annotated[str, TaskArg], json: bool = JsonOpt) -> None:
    """Close a task: no more readings are taken (nothing is deleted)."""
    with state(ctx).platform().session() as session:
        info = tasks.close_task(session, ref, **_who(ctx))
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"{info.ref} closed ({info.done}/{info.items} items done)")


# -- queue, submit, annotations ---------------------------------------------------------------------------
@app.command("queue")
def queue(
    ctx: typer.Context,
    reader: Annotated[str | None, typer.Option(help="Whose queue (default: you).")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many items.")] = 100,
    json: bool = JsonOpt,
) -> None:
    """A reader's items still to read, earliest due first."""
    who = _me(reader)
    with state(ctx).platform().session(write=False) as session:
        found = tasks.reader_queue(session, who, task=task, limit=limit)
    if json:
        emit_json([e.to_dict() for e in found])
        return
    table(f"Queue of {who}", ["task", "item", "level", "schema", "due"],
          [(e.task, e.item, e.level.value, e.schema, e.due_at) for e in found])


def _annotations_from(item: str, labels: Sequence[str] | None, file: Path | None, reader: str) -> tuple[
        list[Annotation], dict[str, Any]]:
    """Class labels from --label, or everything (boxes, polygons, masks) from a JSON/YAML file."""
    if labels and file is not None:
        raise UsageError("give --label or --file, not both", hint="Put class labels in the file too.")
    if labels:
        return [Annotation(image=item, label=lab, kind=Kind.CLASS, reader=reader) for lab in labels], {}
    if file is None:
        return [], {}
    try:
        data = yaml.safe_load(_read_text(file))
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{file}: not valid JSON or YAML ({exc})", hint="See docs/labels.md.") from None
    extra: dict[str, Any] = {}
    if isinstance(data, dict):
        extra = {k: data[k] for k in ("seconds", "tool") if data.get(k) is not None}
        data = data.get("annotations", [])
    anns = store.annotations_from_list(data, item=item, reader=reader, base_dir=file.parent,
                                       where=f"{file.name}: annotations")
    return anns, extra


@app.command("submit")
def submit(
    ctx: typer.Context,
    task: Annotated[str, TaskArg],
    item: Annotated[str, ItemArg],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="A class label (repeatable).")] = None,
    file: Annotated[Path | None, typer.Option(help="Annotations as JSON/YAML (boxes, polygons, masks as .npy).")]
    = None,
    nothing: Annotated[bool, typer.Option("--nothing", help="Nothing to label on this item.")] = False,
    reader: Annotated[str | None, typer.Option(help="Submit as this reader (default: you).")] = None,
    seconds: Annotated[float | None, typer.Option(help="Time spent on the item.")] = None,
    tool: Annotated[str | None, typer.Option(help="Tool or model version.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Submit a reading of an assigned item: --label for classes, --file for geometry, --nothing for none."""
    who = _me(reader)
    if nothing and (label or file is not None):
        raise UsageError("--nothing says there is nothing to label", hint="Drop --label/--file, or --nothing.")
    anns, extra = _annotations_from(item, label, file, who)
    if not anns and not nothing and file is None:
        raise UsageError("nothing to submit", hint="Pass --label L, --file F, or --nothing for an item with none.")
    platform = state(ctx).platform()
    with platform.session() as session:
        result = tasks.submit(session, platform.objects, task, item, who, anns,
                              seconds=seconds if seconds is not None else extra.get("seconds"),
                              tool=tool or extra.get("tool"), **_who(ctx))
    if json:
        emit_json(result.to_dict())
        return
    agreed = f" (agreement {result.agreement:.3f}, {result.metric})" if result.agreement is not None else ""
    console().print(f"{who}: {len(result.annotations)} annotation(s) on {item} in {result.task}; "
                    f"item {result.item_state.value}{agreed}")


@app.command("annotations")
def annotations_cmd(
    ctx: typer.Context, task: Annotated[str, TaskArg], item: Annotated[str, ItemArg],
    reader: Annotated[str | None, typer.Option(help="Only this reader's.")] = None, json: bool = JsonOpt,
) -> None:
    """Every stored annotation of an item in a task (all readers: the CLI acts as a lead)."""
    with state(ctx).platform().session(write=False) as session:
        row = tasks.get_task_row(session, task)
        found = store.find(session, task_id=row.id, item=item, reader=reader)
    if json:
        emit_json([a.to_dict() for a in found])
        return
    table(f"Annotations of {item}", ["id", "reader", "stage", "kind", "label", "geometry", "seconds", "tool"],
          [(a.id[:12], a.reader, a.stage.value, a.kind.value, a.label,
            (f"mask {a.mask_digest[:12]}" if a.mask_digest else jsonlib.dumps(a.geometry) if a.geometry else None),
            a.seconds, a.tool) for a in found])


# -- adjudication ---------------------------------------------------------------------------------------
@app.command("adjudications")
def adjudications(
    ctx: typer.Context, task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    state_: Annotated[str, typer.Option("--state", help="open, resolved or all.")] = "open", json: bool = JsonOpt,
) -> None:
    """The adjudication queue: items whose readers disagreed, lowest agreement first."""
    with state(ctx).platform().session(write=False) as session:
        found = adjudication.adjudication_queue(session, task=task, state=None if state_ == "all" else state_)
    if json:
        emit_json([a.to_dict() for a in found])
        return
    table("Adjudication", ["task", "item", "agreement", "metric", "threshold", "readers", "state", "resolved by"],
          [(a.task, a.item, f"{a.agreement:.3f}", a.metric, f"{a.threshold:g}", ", ".join(a.readers), a.state,
            a.resolved_by) for a in found])


@app.command("adjudicate")
def adjudicate(
    ctx: typer.Context,
    task: Annotated[str, TaskArg],
    item: Annotated[str, ItemArg],
    choose: Annotated[str | None, typer.Option(help="Keep this reader's annotations.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Own class label (repeatable).")] = None,
    file: Annotated[Path | None, typer.Option(help="Own annotations as JSON/YAML.")] = None,
    nothing: Annotated[bool, typer.Option("--nothing", help="Decide there is nothing to label.")] = False,
    senior: Annotated[str | None, typer.Option(help="The senior reader deciding (default: you).")] = None,
    note: Annotated[str | None, typer.Option("--note", "-m", help="Why.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Resolve an item of the adjudication queue: --choose READER, or your own --label/--file/--nothing."""
    who = _me(senior, "--senior")
    own: list[Annotation] | None = None
    if label or file is not None or nothing:
        own, _ = _annotations_from(item, label, file, who)
    platform = state(ctx).platform()
    with platform.session() as session:
        info = adjudication.adjudicate(session, platform.objects, task, item, senior=who, choose_reader=choose,
                                       annotations=own, note=note, actor=state(ctx).actor, via=VIA)
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"{info.task} {info.item}: resolved by {info.resolved_by} ({info.decision})")


# -- label sets -----------------------------------------------------------------------------------------
@set_app.command("create")
def set_create(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Option(help="The set of a task's finished items.")] = None,
    partial: Annotated[bool, typer.Option(help="With --task: allow unfinished items (left out).")] = False,
    annotation: Annotated[list[str] | None, typer.Option("--annotation", help="An annotation id (repeatable).")]
    = None,
    schema: Annotated[str | None, typer.Option(help="With --annotation: the schema version, NAME@N.")] = None,
    origin: Annotated[str | None, typer.Option(help="Where it came from (with --annotation).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Make an immutable label set (its id is the digest of its content)."""
    platform = state(ctx).platform()
    with platform.session() as session:
        if task is not None and not annotation:
            info = sets.label_set_from_task(session, platform.objects, task, partial=partial, **_who(ctx))
        elif annotation and schema is not None and task is None:
            info = sets.create_label_set(session, platform.objects, annotation, schema=schema, origin=origin,
                                         **_who(ctx))
        else:
            raise UsageError("give --task, or --annotation ids with --schema",
                             hint="e.g. `medcycle labels set create --task T-3`.")
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"{'created' if info.created else 'unchanged:'} label set [bold]{info.id[:12]}[/] "
                        f"({info.items} items, {info.annotations} annotations, {info.schema})")


@set_app.command("list")
def set_list(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Label sets, newest first."""
    with state(ctx).platform().session(write=False) as session:
        found = sets.list_label_sets(session)
    if json:
        emit_json([s.to_dict() for s in found])
        return
    table("Label sets", ["id", "schema", "level", "items", "annotations", "origin", "created"],
          [(s.id[:12], s.schema, s.level.value, s.items, s.annotations, s.origin, s.created_at) for s in found])


@set_app.command("show")
def set_show(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="The id or a prefix.")],
             json: bool = JsonOpt) -> None:
    """One label set."""
    with state(ctx).platform().session(write=False) as session:
        info = sets.get_label_set(session, ref)
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"label set [bold]{info.id}[/] · {info.schema} · {info.level.value} · {info.items} items · "
                        f"{info.annotations} annotations · {info.origin or '-'}")


@set_app.command("export")
def set_export(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="The id or a prefix.")],
    csv: Annotated[Path | None, typer.Option(help="Write the dataset labels CSV here ('-' for stdout).")] = None,
    json: bool = JsonOpt,
) -> None:
    """The set's class labels per item, as a dataset version takes them (CSV for `dataset labels import`)."""
    platform = state(ctx).platform()
    with platform.session(write=False) as session:
        labels = sets.dataset_labels(session, platform.objects, ref)
    if csv is not None and str(csv) == "-":
        typer.echo(labels.to_csv(), nl=False)
    elif csv is not None:
        csv.write_text(labels.to_csv(), encoding="utf-8")
    if json:
        emit_json(labels.to_dict())
    elif csv is None:
        table(f"Labels of {labels.label_set[:12]}", [labels.level.value, "label"], labels.pairs)
    elif str(csv) != "-":
        console().print(f"wrote {len(labels.pairs)} labels to {csv}")


# -- qualification, active learning, pseudo-labels (their own modules) ------------------------------------
def _register_more() -> None:
    from medcycle.cli import labels_active, labels_quality

    labels_quality.register(app)
    labels_active.register(app)


_register_more()
