"""``medcycle backup``: consistent backups of the database and objects, and restore into an empty system."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medcycle.auth import audit
from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, human_bytes
from medcycle.store.backup import create_backup, restore_backup

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Backup folder (another disk or machine); reused = incremental.")],
    keys_to: Annotated[Path | None, typer.Option(
        "--keys-to", help="Also copy the de-identification key here (keep it apart from the backup).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Snapshot the database (while the system runs), then copy every object not yet in FOLDER, verified."""
    platform = state(ctx).platform(migrate=False)
    report = create_backup(platform, folder, keys_to=keys_to)
    with platform.session() as session:
        audit.record(session, state(ctx).actor, "system.backup", via="cli", objects=report.objects_total,
                     copied=report.objects_copied, revision=report.revision)
    if json:
        emit_json(report.to_dict())
        return
    c = console()
    c.print(f"[bold green]backup written[/] to {report.folder} in {report.seconds:.1f} s")
    c.print(f"  database  {report.database}, schema {report.revision}, {human_bytes(report.database_bytes)}")
    c.print(f"  objects   {report.objects_total} in the store ({report.referenced} referenced); "
            f"{report.objects_copied} copied now ({human_bytes(report.bytes_copied)})")
    if report.keys_copied_to:
        c.print(f"  key       copied to {report.keys_copied_to}")
    for warning in report.warnings:
        c.print(f"[yellow]warning:[/] {warning}")


@app.command("restore")
def restore(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A folder `medcycle backup create` wrote.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a database that already holds data.")] = False,
    keys_from: Annotated[Path | None, typer.Option(
        "--keys-from", help="Restore the de-identification key from this file or folder (what --keys-to wrote).")]
    = None,
    json: bool = JsonOpt,
) -> None:
    """Restore the database and objects into the configured (empty) system, then migrate to this version."""
    platform = state(ctx).platform(migrate=False)
    report = restore_backup(platform, folder, force=force, keys_from=keys_from)
    with platform.session() as session:
        audit.record(session, state(ctx).actor, "system.restore", via="cli", objects=report.objects_restored,
                     revision=report.revision_now)
    if json:
        emit_json(report.to_dict())
        return
    c = console()
    c.print(f"[bold green]restored[/] from {report.folder} in {report.seconds:.1f} s")
    c.print(f"  database  {report.database}, schema {report.revision_in_backup} → {report.revision_now}")
    c.print(f"  objects   {report.objects_restored} restored ({human_bytes(report.bytes_restored)}), "
            f"{report.objects_present} already present")
    c.print("  key       restored" if report.key_restored else
            "  key       not restored (pass --keys-from, or new pseudonyms will not re-link old patients)")
    c.print("Check it: `medcycle store fsck`.")
