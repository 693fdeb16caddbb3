"""``medcycle store``: put, get, stat, ls, fsck and gc on the object store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medcycle.auth import audit
from medcycle.catalog import rollup
from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, human_bytes, table
from medcycle.errors import NotFound
from medcycle.objects.base import ObjectInfo
from medcycle.objects.maintenance import fsck as run_fsck
from medcycle.objects.maintenance import gc as run_gc

app = typer.Typer(no_args_is_help=True)


@app.command("put")
def put(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Files to store.")],
    json: bool = JsonOpt,
) -> None:
    """Store files by content; prints each digest. Storing the same bytes twice stores them once."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise NotFound(f"not a file: {', '.join(missing)}", hint="Pass existing regular files.")
    platform = state(ctx).platform()
    infos = platform.objects.put_many(list(files))
    with platform.session() as session:
        audit.record(session, state(ctx).actor, "object.write", target_kind="object", via="cli", count=len(infos))
    pairs = list(zip(files, infos, strict=True))
    if json:
        emit_json([{"file": str(f), "digest": i.digest, "size": i.size} for f, i in pairs])
    else:
        table(None, ["file", "digest", "size"], [(str(f), i.digest, human_bytes(i.size)) for f, i in pairs])


@app.command("get")
def get(
    ctx: typer.Context,
    digest: Annotated[str, typer.Argument(help="Object digest (64 hex).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the object.")],
) -> None:
    """Write an object to a file, verified, atomically."""
    platform = state(ctx).platform()
    info = platform.objects.get_to_path(digest, output)
    with platform.session() as session:
        audit.record(
            session, state(ctx).actor, "object.read", target_kind="object", target_id=digest, via="cli", size=info.size
        )
    console().print(f"wrote {human_bytes(info.size)} to {output}")


@app.command("stat")
def stat(
    ctx: typer.Context, digest: Annotated[str, typer.Argument(help="Object digest.")], json: bool = JsonOpt
) -> None:
    """Size and modification time of an object."""
    info = state(ctx).platform().objects.stat(digest)
    if json:
        emit_json({"digest": info.digest, "size": info.size, "modified": info.modified})
    else:
        table(None, ["digest", "size", "modified"], [(info.digest, human_bytes(info.size), info.modified)])


@app.command("ls")
def ls(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many rows.", min=1)] = 100,
    json: bool = JsonOpt,
) -> None:
    """List stored objects (no particular order)."""
    infos: list[ObjectInfo] = []
    for info in state(ctx).platform().objects.list():
        infos.append(info)
        if len(infos) >= limit:
            break
    if json:
        emit_json([{"digest": i.digest, "size": i.size, "modified": i.modified} for i in infos])
    else:
        table("Objects", ["digest", "size", "modified"], [(i.digest, human_bytes(i.size), i.modified) for i in infos])


@app.command("fsck")
def fsck(
    ctx: typer.Context,
    repair_rollup: bool = typer.Option(False, "--repair-rollup", help="Rebuild the catalog summary's rollup "
                                       "when it differs from a recount (it is kept by triggers; drift means "
                                       "someone bypassed them)."),
    json: bool = JsonOpt,
) -> None:
    """Re-hash every object; report corrupt ones and referenced-but-missing ones, and check the catalog
    summary's rollup against a recount. Exit 7 when anything is wrong."""
    platform = state(ctx).platform()
    with platform.session() as session:
        if json:
            report = run_fsck(platform.objects, session)
        else:
            with Progress(
                TextColumn("fsck"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console(),
                transient=True,
            ) as bar:
                task = bar.add_task("fsck", total=None)
                report = run_fsck(platform.objects, session, progress=lambda n: bar.advance(task, n))
        catalog = rollup.check(session)  # the summary's rollup against a recount of the catalog rows
        if not catalog.ok and repair_rollup:
            rollup.rebuild(session.connection())
            catalog = rollup.check(session)
        audit.record(session, state(ctx).actor, "store.fsck", via="cli", ok=report.ok and catalog.ok,
                     checked=report.checked)
    if json:
        emit_json({**report.to_dict(), "catalog_rollup": catalog.to_dict()})
    else:
        c = console()
        c.print(f"checked {report.checked} objects ({human_bytes(report.bytes_checked)})")
        for d in report.corrupt:
            c.print(f"[red]corrupt[/] {d}")
        for d in report.missing:
            c.print(f"[red]missing[/] {d} (referenced, not stored)")
        c.print(
            "[green]store is intact[/]"
            if report.ok
            else "[red]store has problems[/]: restore the objects named above from a replica or backup"
        )
        for diff in catalog.differences:
            c.print(f"[red]catalog rollup[/] {diff}")
        if not catalog.ok:
            c.print("[red]the catalog summary's rollup drifted[/]: rebuild it with "
                    "`medcycle store fsck --repair-rollup`")
    if not report.ok or not catalog.ok:
        raise typer.Exit(7)


@app.command("gc")
def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be deleted.")] = False,
    grace_seconds: Annotated[
        float | None,
        typer.Option(help="Keep unreferenced objects younger than this (setting gc_grace_seconds).", min=0),
    ] = None,
    json: bool = JsonOpt,
) -> None:
    """Delete objects that nothing references, older than the grace period."""
    platform = state(ctx).platform()
    grace = platform.settings.gc_grace_seconds if grace_seconds is None else grace_seconds
    with platform.session() as session:
        report = run_gc(platform.objects, session, grace_seconds=grace, dry_run=dry_run)
        if not dry_run:
            audit.record(
                session, state(ctx).actor, "store.gc", via="cli", deleted=len(report.deleted), bytes=report.bytes_freed
            )
    if json:
        emit_json(report.to_dict())
    else:
        verb = "would delete" if dry_run else "deleted"
        console().print(
            f"examined {report.examined} objects; {verb} {len(report.deleted)} "
            f"({human_bytes(report.bytes_freed)}); kept {report.kept_recent} younger than {grace:g} s"
        )
