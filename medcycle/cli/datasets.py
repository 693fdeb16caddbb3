"""``medcycle dataset``: working sets, label imports, freeze/log/show/diff, cards, pull/push/status.

Each command parses its input, calls one function of :mod:`medcycle.datasets` and prints the result.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from medcycle.cli.context import state
from medcycle.cli.data import table  # cells shown as text, never as Rich markup
from medcycle.cli.output import JsonOpt, console, emit_json, err_console, human_bytes
from medcycle.errors import NotFound, UsageError

app = typer.Typer(no_args_is_help=True, help="Versioned datasets: items, labels, splits, versions, cards, pull/push.")
labels_app = typer.Typer(no_args_is_help=True, help="Label sets of a dataset.")
app.add_typer(labels_app, name="labels")

QueryOpt = typer.Option("--query", "-q", help='Catalog query, e.g. \'modality == "CR" and body_part == "chest"\'.')
UidOpt = typer.Option("--uid", help="Instance, series or study uid (repeatable).")
JobsOpt = typer.Option("--jobs", "-j", min=1, max=256, help="Parallel transfers (default: setting io_workers).")


def _who(ctx: typer.Context) -> dict[str, str]:
    return {"actor": state(ctx).actor, "via": "cli"}


@app.command("list")
def list_(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Every dataset with its working-set size and number of versions."""
    from medcycle.datasets.items import list_datasets

    with state(ctx).platform().session() as session:
        rows = list_datasets(session)
    if json:
        emit_json([r.to_dict() for r in rows])
        return
    table("Datasets", ["name", "items", "versions", "latest", "description"],
          [(r.name, r.items, r.versions, (r.latest_version or "")[:12] or None, r.description) for r in rows])


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. chest-xr-pneumonia.")],
    query: Annotated[str | None, QueryOpt] = None,
    uid: Annotated[list[str] | None, UidOpt] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="One line on what it is for.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Create a dataset, optionally filled from a catalog query or uids."""
    from medcycle.datasets.items import create_dataset

    with state(ctx).platform().session() as session:
        info = create_dataset(session, name, description=description, query=query, uids=uid or (), **_who(ctx))
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"created dataset [bold]{name}[/] with {info.items} items")


def _change(ctx: typer.Context, name: str, query: str | None, uid: list[str] | None, json: bool, add: bool) -> None:
    from medcycle.datasets.items import add_items, remove_items

    fn = add_items if add else remove_items
    with state(ctx).platform().session() as session:
        change = fn(session, name, query=query, uids=uid or (), **_who(ctx))
    if json:
        emit_json(change.to_dict())
    else:
        verb = "added" if add else "removed"
        console().print(f"{name}: {verb} {change.changed} of {change.matched} matching; {change.items} items now")


@app.command("add")
def add(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Dataset name.")],
    query: Annotated[str | None, QueryOpt] = None, uid: Annotated[list[str] | None, UidOpt] = None,
    json: bool = JsonOpt,
) -> None:
    """Add catalog instances to the working set (quarantined instances are skipped)."""
    _change(ctx, name, query, uid, json, add=True)


@app.command("remove")
def remove(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Dataset name.")],
    query: Annotated[str | None, QueryOpt] = None, uid: Annotated[list[str] | None, UidOpt] = None,
    json: bool = JsonOpt,
) -> None:
    """Remove instances from the working set (frozen versions keep theirs)."""
    _change(ctx, name, query, uid, json, add=False)


@app.command("delete")
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """Delete a dataset that has no frozen version (one with versions is refused)."""
    from medcycle.datasets.items import delete_dataset

    with state(ctx).platform().session() as session:
        delete_dataset(session, name, **_who(ctx))
    console().print(f"deleted dataset {name}")


@labels_app.command("import")
def labels_import(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    file: Annotated[Path, typer.Argument(help="CSV with a header study,label (or series,label / instance,label).")],
    json: bool = JsonOpt,
) -> None:
    """Import class labels as a new immutable label set and make it the dataset's current one."""
    from medcycle.datasets.labels import decode_labels_csv, import_labels

    if not file.is_file():
        raise NotFound(f"{file} is not a file", hint="Pass the path of a CSV file.")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {file} ({exc.strerror or type(exc).__name__})",
                         hint="Check the file's permissions.") from None
    text = decode_labels_csv(data, origin=file.name)
    platform = state(ctx).platform()
    with platform.session() as session:
        info = import_labels(session, platform.objects, name, text, origin=file.name, **_who(ctx))
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"label set [bold]{info.id[:12]}[/] ({info.level.value}-level): {info.n_labels} labels on "
                        f"{info.n_targets} {info.level.value} uids; classes {escape(', '.join(info.classes))}")


@app.command("freeze")
def freeze(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Tag for the version (unique, never moves).")] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Patient-level split: train=0.7,val=0.15,test=0.15.")] = None,
    folds: Annotated[int | None, typer.Option("--folds", help="K patient-level folds instead of named splits.")] = None,
    stratify: Annotated[str | None, typer.Option("--stratify", help="label, source or label,source.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split.")] = 0,
    resplit: Annotated[
        bool, typer.Option("--resplit", help="Reassign every patient (default: keep earlier ones).")] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="What changed, for the log.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Freeze the working set, current label set and split into an immutable version."""
    from medcycle.datasets.splits import folds_policy, parse_stratify, ratios_policy
    from medcycle.datasets.versions import freeze as run_freeze

    if split is not None and folds is not None:
        raise UsageError("--split and --folds exclude each other", hint="Choose named splits or k folds.")
    strat = parse_stratify(stratify)
    policy = (ratios_policy(split, stratify=strat, seed=seed) if split is not None else
              folds_policy(folds, stratify=strat, seed=seed) if folds is not None else None)
    if policy is None and (stratify or seed):
        raise UsageError("--stratify and --seed need --split or --folds", hint="Add e.g. --split train=0.8,test=0.2.")
    platform = state(ctx).platform()
    with platform.session() as session:
        result = run_freeze(session, platform.objects, name, tag=tag, policy=policy, resplit=resplit,
                            message=message, **_who(ctx))
    if json:
        emit_json(result.to_dict())
        return
    v = result.version
    c = console()
    c.print(f"{'froze' if result.created else 'unchanged:'} [bold]{v.ref}[/] {v.id}")
    c.print(f"{v.n_items} images of {v.n_patients} patients ({human_bytes(v.bytes)}); "
            f"split: {_splits(v.split_counts)}")
    if result.changes:
        ch = result.changes
        c.print(f"against the previous version: +{ch['added']} -{ch['removed']} images, {ch['relabeled']} relabeled, "
                f"{ch['moved']} moved")
    for w in result.warnings:
        err_console().print(f"[yellow]warning[/]: {escape(w)}")


def _splits(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {c['patients']} patients/{c['items']} images" for k, c in counts.items())


@app.command("tag")
def tag(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="NAME@REF of the version.")],
    new_tag: Annotated[str, typer.Argument(help="The new tag.")],
) -> None:
    """Give a version another tag."""
    from medcycle.datasets.versions import tag_version

    with state(ctx).platform().session() as session:
        info = tag_version(session, ref, new_tag, **_who(ctx))
    console().print(f"tagged {info.id[:12]} as {info.dataset}@{new_tag}")


@app.command("log")
def log(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Dataset name.")], json: bool = JsonOpt) -> None:
    """The versions of a dataset, newest first, with their counts."""
    from medcycle.datasets.versions import log as run_log

    with state(ctx).platform().session() as session:
        rows = run_log(session, name)
    if json:
        emit_json([r.to_dict() for r in rows])
        return
    table(f"Versions of {name}", ["v", "id", "tags", "images", "patients", "size", "splits", "created", "message"],
          [(f"v{r.seq}", r.short, ", ".join(r.tags), r.n_items, r.n_patients, human_bytes(r.bytes),
            " ".join(f"{k}:{s['items']}" for k, s in r.split_counts.items()), r.created_at, r.message) for r in rows])


@app.command("show")
def show(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="NAME, NAME@TAG, NAME@vN or NAME@ID.")],
         json: bool = JsonOpt) -> None:
    """One version: id, tags, label set, split policy and counts."""
    from medcycle.datasets.splits import SplitPolicy
    from medcycle.datasets.versions import get_version

    with state(ctx).platform().session() as session:
        info = get_version(session, ref)
    if json:
        emit_json(info.to_dict())
        return
    leak = "passed" if info.leakage.get("ok") else "FAILED"
    table(None, ["field", "value"], [
        ("version", f"{info.dataset}@v{info.seq}"), ("id", info.id), ("tags", ", ".join(info.tags) or None),
        ("images", info.n_items), ("patients", info.n_patients), ("studies", info.n_studies),
        ("series", info.n_series), ("size", human_bytes(info.bytes)), ("label set", info.label_set),
        ("split", SplitPolicy.from_dict(info.split_policy).describe()),
        ("splits", ", ".join(f"{k}: {s['patients']} patients, {s['items']} images"
                             for k, s in info.split_counts.items())),
        ("leakage check", leak), ("created", f"{info.created_at:%Y-%m-%d %H:%M} by {info.created_by}"),
        ("message", info.message),
    ])


@app.command("diff")
def diff(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="NAME@A")],
    b: Annotated[str, typer.Argument(help="NAME@B")],
    limit: Annotated[int, typer.Option(help="At most this many uids per list.", min=0)] = 20, json: bool = JsonOpt,
) -> None:
    """Items added and removed, labels changed and split moves between two versions."""
    from medcycle.datasets.versions import diff as run_diff

    with state(ctx).platform().session() as session:
        result = run_diff(session, a, b)
    if json:
        emit_json(result.to_dict(limit=max(limit, 1000)))
        return
    s = result.summary()
    c = console()
    c.print(f"{a} → {b}: +{s['added']} -{s['removed']} images ({human_bytes(s['added_bytes'])} new), "
            f"{s['relabeled']} relabeled, {s['moved']} moved"
            + ("; new label set" if s["label_set_changed"] else "")
            + ("; new split policy" if s["split_policy_changed"] else ""))
    for move, n in s["moves"].items():
        c.print(f"  moved {move}: {n}")
    for uid in result.added[:limit]:
        c.print(f"  [green]+[/] {uid}")
    for uid in result.removed[:limit]:
        c.print(f"  [red]-[/] {uid}")
    for uid, old, new in result.relabeled[:limit]:
        c.print(f"  [yellow]~[/] {uid}: {escape('|'.join(old) or '-')} → {escape('|'.join(new) or '-')}")


@app.command("card")
def card(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@TAG to show, or `edit` to edit NAME's human fields.")],
    name: Annotated[str | None, typer.Argument(help="With `edit`: the dataset name.", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="md, html or json.")] = "md",
    field: Annotated[list[str] | None, typer.Option("--field", help="With `edit`: FIELD=TEXT (repeatable).")] = None,
    frozen: Annotated[bool, typer.Option("--frozen", help="Show the human fields as they were at freeze.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
) -> None:
    """Show a version's dataset card (`card NAME@TAG`), or edit the human fields (`card edit NAME --field k=v`)."""
    from medcycle.datasets import cards
    from medcycle.datasets.versions import resolve

    platform = state(ctx).platform()
    if ref == "edit":
        if not name or not field:
            raise UsageError("card edit needs a dataset and at least one --field",
                             hint="Example: medcycle dataset card edit chest-xr --field licence=CC-BY-4.0")
        pairs: dict[str, str | None] = {}
        for item in field:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"--field {item!r} is not FIELD=TEXT",
                                 hint=f"Fields: {', '.join(cards.HUMAN_FIELDS)}.")
            pairs[key.strip()] = value
        with platform.session() as session:
            cards.edit_card(session, name, pairs, **_who(ctx))
        console().print(f"updated {', '.join(pairs)} of {name}'s card")
        return
    if name is not None:
        raise UsageError(f"unexpected argument {name!r}", hint="Show a card with `medcycle dataset card NAME@TAG`.")
    with platform.session() as session:
        text = cards.render(cards.version_card(session, resolve(session, ref), live=not frozen), fmt)
    if output is not None:
        _write_whole(output, text.encode("utf-8"))
        console().print(f"wrote {escape(str(output))}")
    else:
        sys.stdout.write(text)


def _write_whole(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file beside it: the file is whole or as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path} ({exc.strerror or type(exc).__name__})",
                         hint="Write into an existing folder you can write to.") from None


class _Bars:
    """Rich progress for transfers: one bar per phase, in bytes, with throughput."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: Any) -> None:
        if event.start:
            label = {"fetch": "fetch", "link": "place", "upload": "upload"}.get(event.phase, event.phase)
            self.tasks[event.phase] = self.bar.add_task(f"{label} {event.objects} files", total=event.bytes or 1)
            if not event.bytes:
                self.bar.update(self.tasks[event.phase], completed=1)
        else:
            self.bar.advance(self.tasks[event.phase], event.bytes)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err_console(), transient=True)


@app.command("pull")
def pull(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@TAG (or NAME for the latest version).")],
    to: Annotated[str, typer.Option("--to", help="Folder to materialise the version in.")],
    split: Annotated[str | None, typer.Option("--split", help="Only this split.")] = None,
    query: Annotated[str | None, QueryOpt] = None,
    jobs: Annotated[int | None, JobsOpt] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash objects already on this machine.")] = False,
    json: bool = JsonOpt,
) -> None:
    """Materialise a version (or a subset) under DIR: verified, parallel, resumable, hard-linked from the cache."""
    from medcycle.datasets.transfer import pull as run_pull

    if not to.strip():  # Path("") is the current folder: an unset variable would fill it
        raise UsageError("--to is empty", hint="Name the folder to pull into, e.g. --to ./data/NAME (or --to . "
                         "for the current folder).")
    dest = Path(to)
    platform = state(ctx).platform()
    kwargs: dict[str, Any] = {"split": split, "query": query, "workers": jobs, "verify": verify, **_who(ctx)}
    if json:
        report = run_pull(platform, ref, dest, **kwargs)
        emit_json(report.to_dict())
        return
    with _progress() as bar:
        report = run_pull(platform, ref, dest, progress=_Bars(bar), **kwargs)
    console().print(
        f"pulled {report.items} images ({human_bytes(report.bytes_total)}) of {report.dataset} "
        f"{report.version[:12]} to {escape(report.dest)} in {report.seconds:.1f} s: fetched {report.fetched_objects} "
        f"objects ({human_bytes(report.fetched_bytes)}, {human_bytes(report.fetch_throughput)}/s), "
        f"{report.cached_objects} already local; {report.linked} linked, {report.copied} copied, "
        f"{report.unchanged} unchanged, {report.removed} removed")


@app.command("push")
def push(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="NAME@TAG")],
    jobs: Annotated[int | None, JobsOpt] = None, json: bool = JsonOpt,
) -> None:
    """Upload the version's objects that the store lacks from this machine's cache."""
    from medcycle.datasets.transfer import ensure_found
    from medcycle.datasets.transfer import push as run_push

    platform = state(ctx).platform()
    if json:
        report = run_push(platform, ref, workers=jobs)
        emit_json(report.to_dict())
    else:
        with _progress() as bar:
            report = run_push(platform, ref, workers=jobs, progress=_Bars(bar))
        console().print(f"{report.present} of {report.objects} objects were in the store; uploaded "
                        f"{report.uploaded_objects} ({human_bytes(report.uploaded_bytes)}) in {report.seconds:.1f} s")
    ensure_found(report)


@app.command("status")
def status(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="NAME@TAG")],
    to: Annotated[Path | None, typer.Option("--to", help="Also check a pulled folder.")] = None,
    json: bool = JsonOpt,
) -> None:
    """What of a version is on this machine, what is missing, and whether the store has everything."""
    from medcycle.datasets.transfer import status as run_status

    report = run_status(state(ctx).platform(), ref, to=to)
    if json:
        emit_json(report.to_dict())
    else:
        rows: list[tuple[str, Any]] = [
            ("version", f"{report.dataset} {report.version[:12]}"), ("images", report.items),
            ("objects", report.objects), ("size", human_bytes(report.bytes_total)),
            ("on this machine", report.local),
            ("missing here", f"{report.missing_locally} ({human_bytes(report.missing_bytes)})"),
            ("missing in the store", len(report.missing_in_store)),
        ]
        if report.folder is not None:
            rows.append((f"in {to}", ", ".join(f"{k} {v}" for k, v in report.folder.items())))
        table(None, ["", "value"], rows)
    if not report.complete:
        raise typer.Exit(1)
