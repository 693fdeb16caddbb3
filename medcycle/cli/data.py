"""``medcycle data``: ingest with de-identification, sources, and the catalog (summary, query)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, err_console, human_bytes
from medcycle.cli.output import table as rich_table

app = typer.Typer(no_args_is_help=True)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table whose cells are shown as they are: values from files, paths and users' text may hold '[...]',
    which Rich would otherwise read as markup (dropped, restyled, or a MarkupError for a stray '[/x]')."""
    rich_table(title, columns, ([escape(v) if isinstance(v, str) else v for v in row] for row in rows))


@app.command("ingest")
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files, folders, zip archives or DICOMDIR trees.")],
    source: Annotated[str, typer.Option("--source", "-s", help="Where the data comes from (e.g. clinic-a).")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Worker processes.")] = 1,
    modality: Annotated[str | None, typer.Option(help="Modality for NIfTI/PNG/JPEG inputs (e.g. MR, DX).")] = None,
    body_part: Annotated[str | None, typer.Option(help="Body part for NIfTI/PNG/JPEG inputs (e.g. chest).")] = None,
    no_dates: Annotated[
        bool, typer.Option("--no-dates", help="Remove dates instead of shifting them per patient.")
    ] = False,
    no_characteristics: Annotated[
        bool, typer.Option("--no-characteristics", help="Remove sex and age instead of keeping them.")
    ] = False,
    no_device: Annotated[
        bool, typer.Option("--no-device", help="Remove device identity (manufacturer, model).")
    ] = False,
    keep_private: Annotated[
        list[str] | None, typer.Option("--keep-private", help="Private creator whose tags are kept (repeatable).")
    ] = None,
    json: bool = JsonOpt,
) -> None:
    """De-identify and catalog images; bad files are reported, never stop the run. Re-running adds nothing."""
    from medcycle.catalog.deid import DeidOptions
    from medcycle.catalog.ingest import ingest as run_ingest

    st = state(ctx)
    platform = st.platform()
    options = DeidOptions(
        retain_longitudinal_dates_modified=not no_dates,
        retain_patient_characteristics=not no_characteristics,
        retain_device_identity=not no_device,
        private_allowlist=tuple(keep_private or ()),
    )
    if json:
        summary = run_ingest(
            platform,
            paths,
            source=source,
            jobs=jobs,
            options=options,
            actor=st.actor,
            modality=modality,
            body_part=body_part,
        )
        emit_json(summary.to_dict())
        return
    with Progress(
        TextColumn("ingest"),
        BarColumn(),
        TextColumn("{task.completed} files"),
        TimeElapsedColumn(),
        console=console(),
        transient=True,
    ) as bar:
        task = bar.add_task("ingest", total=None)
        summary = run_ingest(
            platform,
            paths,
            source=source,
            jobs=jobs,
            options=options,
            actor=st.actor,
            modality=modality,
            body_part=body_part,
            progress=lambda _o: bar.advance(task),
        )
    c = console()
    c.print(
        f"[bold]{source}[/]: {summary.ingested} ingested ({human_bytes(summary.bytes)}), "
        f"{summary.duplicates} duplicates, {len(summary.quarantined)} quarantined, "
        f"{len(summary.rejected)} rejected, {len(summary.skipped)} skipped"
        + (f", {len(summary.conflicts)} not stored (conflicts)" if summary.conflicts else "")
        + f" in {summary.seconds:.1f} s"
    )
    for title, rows in (("Quarantined", summary.quarantined), ("Rejected", summary.rejected),
                        ("Conflicts: not stored", summary.conflicts)):
        if rows:
            table(title, ["file", "reason"], [(r["path"], r["reason"]) for r in rows])


@app.command("sources")
def sources(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Sources with their licence and de-identification options."""
    from medcycle.catalog.sources import list_sources

    with state(ctx).platform().session() as session:
        rows: list[dict[str, Any]] = [
            {
                "name": s.name,
                "description": s.description,
                "licence": s.licence,
                "consent_basis": s.consent_basis,
                "deid_profile": s.deid_profile,
                "created_at": s.created_at,
            }
            for s in list_sources(session)
        ]
    if json:
        emit_json(rows)
    else:
        table(
            "Sources",
            ["name", "licence", "consent", "de-identification", "created"],
            [(r["name"], r["licence"], r["consent_basis"], _profile(r["deid_profile"]), r["created_at"]) for r in rows],
        )


def _profile(profile: dict[str, Any]) -> str:
    opts = [k.replace("retain_", "").replace("_", " ") for k, v in profile.items() if v is True]
    return ", ".join(opts) or "basic"


@app.command("summary")
def summary(
    ctx: typer.Context,
    where: Annotated[str | None, typer.Option("--where", "-w", help="Only what matches this query.")] = None,
    json: bool = JsonOpt,
) -> None:
    """What data do we have, how much, from which sources."""
    from medcycle.catalog.summary import summarize

    with state(ctx).platform().session() as session:
        result = summarize(session, where)
    data = result.to_dict()
    if json:
        emit_json(data)
        return
    t = data["totals"]
    console().print(
        f"{t['patients']} patients · {t['studies']} studies · {t['series']} series · "
        f"{t['instances']} instances · {human_bytes(t['bytes'])}"
        + (f" · {data.get('quarantined', 0)} quarantined" if data.get("quarantined") else "")
    )
    _breakdown(
        "By source × modality × body part", data["by_source_modality_body_part"], ["source", "modality", "body_part"]
    )
    _breakdown("By manufacturer", data["by_manufacturer"], ["manufacturer"])
    _breakdown("By year", data["by_year"], ["year"])


def _breakdown(title: str, rows: list[dict[str, Any]], keys: list[str]) -> None:
    table(
        title,
        [*keys, "patients", "studies", "series", "instances", "size"],
        [
            (
                *[r.get(k) for k in keys],
                r["patients"],
                r["studies"],
                r["series"],
                r["instances"],
                human_bytes(r["bytes"]),
            )
            for r in rows
        ],
    )


@app.command("query")
def query(
    ctx: typer.Context,
    expr: Annotated[str, typer.Argument(help='e.g. modality == "CT" and slice_thickness < 1.5')] = "",
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    include_quarantined: Annotated[
        bool, typer.Option("--include-quarantined", help="Also list quarantined instances (for their review).")
    ] = False,
    json: bool = JsonOpt,
) -> None:
    """Instances matching a filter expression (see docs/data.md for the fields and operators)."""
    from medcycle.catalog.query import run_query
    from medcycle.catalog.query_syntax import fields_used, parse

    tree = parse(expr) if expr else None
    with state(ctx).platform().session() as session:
        result = run_query(session, tree, limit=limit, offset=offset, include_quarantined=include_quarantined)
    if tree is not None and not include_quarantined and fields_used(tree) & {"quarantined", "state"}:
        err_console().print("note: quarantined instances are left out of queries; add --include-quarantined "
                            "to list them", markup=False)
    if json:
        emit_json({"total": result.total, "rows": result.rows})
        return
    cols = ["source", "patient", "modality", "body_part", "manufacturer", "rows", "columns", "frames", "bytes"]
    table(
        f"{result.total} instances (showing {len(result.rows)})",
        cols,
        [tuple(str(r.get(c))[:16] if c == "patient" else r.get(c) for c in cols) for r in result.rows],
    )
