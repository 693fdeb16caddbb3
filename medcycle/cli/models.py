"""``medcycle model``: the registry — register, list, show, card, promote, rollback, history, lineage."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, table
from medcycle.errors import UsageError, ValidationFailed
from medcycle.models import cards, lineage, registry

app = typer.Typer(no_args_is_help=True, help="Model registry: versions, aliases, model cards, promotion, rollback.")
RefArg = typer.Argument(help="NAME, NAME@vN or NAME@ALIAS.", show_default=False)
AliasOpt = typer.Option("--alias", "-a", help="The alias, e.g. production, staging.")


def _who(ctx: typer.Context) -> dict[str, str]:
    return {"actor": state(ctx).actor, "via": "cli"}


def _json_file(path: Path | None, what: str) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = jsonlib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"{path} does not exist", hint=f"Give the path of the {what} file.") from exc
    except (UnicodeDecodeError, jsonlib.JSONDecodeError) as exc:
        raise ValidationFailed(f"{path} is not valid JSON: {exc}", hint=f"Write the {what} as a JSON object.") from exc
    if not isinstance(data, dict):
        raise ValidationFailed(f"{path} must hold a JSON object", hint=f"Write the {what} as {{...}}.")
    return data


@app.command("register")
def register_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name, e.g. chest-xr-nodules.")],
    run: Annotated[str | None, typer.Option("--run", help="The run that logged the model.")] = None,
    artifact: Annotated[str, typer.Option(help="Name of the run's logged model.")] = "model",
    weights: Annotated[Path | None, typer.Option(help="A weights file to store instead of a run's model.")] = None,
    contract: Annotated[Path | None, typer.Option(help="Input/output contract (JSON file).")] = None,
    task: Annotated[str | None, typer.Option(help="E.g. classification-2d.")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    note: Annotated[str | None, typer.Option("--note", "-m")] = None,
    json: bool = JsonOpt,
) -> None:
    """Register a new version from a run's logged model (or a weights file), with its lineage."""
    platform = state(ctx).platform()
    digest = None
    if weights is not None:
        if not weights.is_file():
            raise UsageError(f"{weights} is not a file", hint="Give the path of a saved checkpoint.")
        digest = platform.objects.put(weights).digest
    with platform.session() as session:
        version = registry.register(session, platform.objects, name, run_id=run, artifact=artifact,
                                    weights_digest=digest, contract=_json_file(contract, "contract"), task=task,
                                    description=description, note=note, **_who(ctx))
    if json:
        emit_json(version.to_dict())
    else:
        console().print(f"registered [bold]{version.ref}[/] (weights {version.weights_digest[:12]}…, "
                        f"run {version.run_id or '-'}, data {version.dataset_ref or '-'})")


@app.command("list")
def list_(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Models with their latest version and aliases."""
    with state(ctx).platform().session(write=False) as session:
        models = registry.list_models(session)
    if json:
        emit_json(models)
        return
    table("Models", ["name", "task", "versions", "latest", "aliases"],
          [(m["name"], m["task"], m["versions"], m["latest"],
            ", ".join(f"{a} → {r}" for a, r in m["aliases"].items()) or None) for m in models])


@app.command("show")
def show(ctx: typer.Context, ref: Annotated[str, RefArg], json: bool = JsonOpt) -> None:
    """One version (or, for a bare NAME, every version) with lineage, metrics, aliases and gate reports."""
    with state(ctx).platform().session(write=False) as session:
        if "@" in ref:
            versions = [registry.info(session, registry.resolve(session, ref))]
        else:
            versions = registry.versions(session, ref)
        reports = {v.id: [{"id": r.id, "passed": r.passed, "policy": r.policy, "at": r.created_at.isoformat()}
                          for r in registry.gate_reports(session, v.ref)] for v in versions}
    if json:
        emit_json([{**v.to_dict(), "gate_reports": reports[v.id]} for v in versions])
        return
    table("Versions", ["ref", "aliases", "weights", "run", "dataset", "commit", "gates", "registered"],
          [(v.ref, ", ".join(v.aliases) or None, v.weights_digest[:12], v.run_id, v.dataset_ref,
            (v.commit or "")[:10] or None,
            ("passed" if reports[v.id][0]["passed"] else "FAILED") if reports[v.id] else None, v.created_at)
           for v in versions])
    if len(versions) == 1:
        table("Metrics", ["metric", "value"], sorted(versions[0].metrics.items()))


@app.command("card")
def card(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="FIELD=TEXT for a human field "
                                                   f"({', '.join(cards.HUMAN_FIELDS)}); repeatable.")] = None,
    format_: Annotated[str, typer.Option("--format", "-f", help="md, html or json.")] = "md",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
) -> None:
    """Show the model card (Markdown, HTML or JSON), after setting any --set fields; says what is missing."""
    if format_ not in ("md", "html", "json"):
        raise UsageError(f"unknown format {format_!r}", hint="Use md, html or json.")
    values: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r} is not FIELD=TEXT", hint="E.g. --set intended_use='Triage of …'.")
        values[key.strip()] = value
    platform = state(ctx).platform()
    with platform.session(write=bool(values)) as session:
        if values:
            cards.edit(session, ref, values, **_who(ctx))
        data = cards.build(session, ref)
    text = (jsonlib.dumps(data, indent=2) + "\n" if format_ == "json"
            else cards.to_html(data) if format_ == "html" else cards.markdown(data))
    if out is not None:
        out.write_text(text, encoding="utf-8")
        console().print(f"wrote {out}")
    else:
        typer.echo(text, nl=False)
    problems = cards.validate(data)
    if problems:
        console().print(f"[yellow]card incomplete ({len(problems)}): {'; '.join(problems)}[/]")


@app.command("promote")
def promote(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    alias: Annotated[str, AliasOpt] = "production",
    report: Annotated[str | None, typer.Option(help="The gate report that allows it (default: the latest).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Skip the gates (needs --reason; audited).")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why the gates are skipped.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Point an alias at a version; needs a passing gate report and a complete card (or --force --reason)."""
    if force and not (reason or "").strip():
        raise UsageError("--force needs --reason", hint='Add --reason "why the gates are skipped".')
    if reason and not force:
        raise UsageError("--reason is only for --force", hint="Drop --reason, or add --force.")
    with state(ctx).platform().session() as session:
        move = registry.promote(session, ref, alias, report_id=report, force_reason=reason if force else None,
                                **_who(ctx))
    if json:
        emit_json(move.to_dict())
    else:
        console().print(f"{move.model}@{alias}: {move.from_ref or '-'} → [bold]{move.to_ref}[/]"
                        + (" [yellow](forced)[/]" if force else ""))


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The model.")],
    alias: Annotated[str, AliasOpt] = "production",
    reason: Annotated[str | None, typer.Option("--reason", "-m")] = None,
    json: bool = JsonOpt,
) -> None:
    """Point the alias back at the version it held before its last promotion."""
    with state(ctx).platform().session() as session:
        move = registry.rollback(session, name, alias, reason=reason, **_who(ctx))
    if json:
        emit_json(move.to_dict())
    else:
        console().print(f"{move.model}@{alias}: {move.from_ref} → [bold]{move.to_ref}[/] (rolled back)")


@app.command("history")
def history(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The model.")],
            alias: Annotated[str | None, typer.Option("--alias", "-a")] = None, json: bool = JsonOpt) -> None:
    """Every alias move: promotions, forced promotions, rollbacks."""
    with state(ctx).platform().session(write=False) as session:
        moves = registry.alias_history(session, name, alias)
    if json:
        emit_json([m.to_dict() for m in moves])
        return
    table("Alias moves", ["at", "alias", "action", "from", "to", "by", "reason"],
          [(m.at, m.alias, m.action, m.from_ref, m.to_ref, m.by, m.reason) for m in moves])


@app.command("lineage")
def lineage_(ctx: typer.Context, ref: Annotated[str, RefArg], json: bool = JsonOpt) -> None:
    """Data → labels → run → model → aliases → deployments (results served, predictions logged) of one version."""
    with state(ctx).platform().session(write=False) as session:
        chain = lineage.of(session, ref)
    if json:
        emit_json(chain)
        return
    for step in chain["chain"]:
        console().print(f"[bold]{step['stage']:<12}[/] {step['id'] or '-'}  {step.get('detail') or ''}")


@app.command("pin")
def pin(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The model.")],
    case: Annotated[str, typer.Argument(help="The case key (instance UID, or series UID for 3D).")],
    expect: Annotated[str, typer.Option("--expect", help="The right answer: a class, or a minimum Dice.")],
    reason: Annotated[str | None, typer.Option("--reason", "-m")] = None,
    from_version: Annotated[str | None, typer.Option("--from", help="The version that got it wrong.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Pin a case into the regression suite: every later evaluation must get it right."""
    with state(ctx).platform().session() as session:
        row = registry.pin_case(session, name, case, expect, reason=reason, from_ref=from_version, **_who(ctx))
        data = {"model": row.model, "case": row.case_key, "expected": row.expected, "reason": row.reason}
    if json:
        emit_json(data)
    else:
        console().print(f"pinned {data['case']} (expect {data['expected']}) for {name}")


@app.command("pinned")
def pinned(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The model.")], json: bool = JsonOpt) -> None:
    """The cases pinned into the model's regression suite."""
    with state(ctx).platform().session(write=False) as session:
        rows = [{"case": r.case_key, "expected": r.expected, "reason": r.reason, "by": r.pinned_by,
                 "at": r.pinned_at.isoformat()} for r in registry.pinned_cases(session, name)]
    if json:
        emit_json(rows)
    else:
        table("Pinned cases", ["case", "expected", "reason", "by", "at"],
              [(r["case"], r["expected"], r["reason"], r["by"], r["at"]) for r in rows])
