"""``medcycle hypothesis``: the register of ideas, with questions, ICE/RICE, votes, the HiPPO's call, status
and links. Each command parses its input, calls one function of :mod:`medcycle.hypotheses` and prints.
"""

from __future__ import annotations

from typing import Annotated

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, table
from medcycle.errors import UsageError
from medcycle.hypotheses import answers, decisions, detail, lifecycle, links, ranking, register, scoring, votes
from medcycle.hypotheses.detail import Detail
from medcycle.hypotheses.inputs import ref_of
from medcycle.hypotheses.ranking import Summary
from medcycle.hypotheses.scoring import format_score
from medcycle.hypotheses.vocabulary import QUESTIONS, LinkKind

app = typer.Typer(no_args_is_help=True, help="Hypotheses: questions, ICE/RICE, votes, the HiPPO's call, status, links.")

RefArg = typer.Argument(help="The hypothesis, e.g. H-7 (or 7).", show_default=False)
NoteOpt = typer.Option("--note", "-m", help="A note.")


def _who(ctx: typer.Context) -> dict[str, str]:
    return {"actor": state(ctx).actor, "via": "cli"}


def _show(ctx: typer.Context, ref: str | int, json: bool, message: str | None = None) -> None:
    with state(ctx).platform().session() as session:
        record = detail.show(session, ref)
    if json:
        emit_json(record.to_dict())
    elif message:
        console().print(message)
    else:
        _print_detail(record)


def votes_text(s: Summary) -> str:
    return f"{s.votes.score:+d} ({s.votes.up}↑ {s.votes.down}↓)" if s.votes.count else "0"


def hippo_text(s: Summary) -> str:
    return f"{s.decision.decision.value} ({s.decision.by})" if s.decision else "-"


def _print_detail(d: Detail) -> None:
    s = d.summary
    out = console()
    out.print(f"[bold]{s.ref}[/] {s.title}")
    out.print(f"project {s.project} · owner {s.owner} · status [bold]{s.status.value}[/]"
              + (f" — {s.status_reason}" if s.status_reason else ""))
    if d.description:
        out.print(d.description)
    ice = f"{format_score(s.ice)} = {d.ice.impact}×{d.ice.confidence}×{d.ice.ease}" if d.ice else "-"
    rice = (f"{format_score(s.rice)} = {d.rice.reach:g}×{d.rice.impact:g}×{d.rice.confidence:g}%/{d.rice.effort:g}"
            if d.rice else "-")
    table("Scores", ["ICE (I×C×E)", "RICE (R×I×C%/E)", "votes", "HiPPO"], [(ice, rice, votes_text(s), hippo_text(s))])
    table("Questions", ["group", "question", "answer", "confidence", "notes"],
          [(a.question.group.value, a.question.text, a.answer, a.confidence, a.notes) for a in d.answers])
    table("Votes", ["voter", "vote", "comment", "at"], [(v.voter, v.value.value, v.comment, v.updated_at)
                                                        for v in d.votes])
    table("History", ["at", "kind", "from", "to", "by", "note"],
          [(h.at, h.kind, h.from_value, h.to_value, h.actor, h.note) for h in d.history])
    table("Links", ["kind", "target", "digest", "note", "by"],
          [(link.kind.value, link.target, (link.digest or "")[:12] or None, link.note, link.by) for link in d.links])


@app.command("add")
def add(
    ctx: typer.Context,
    title: Annotated[str, typer.Argument(help="One line: the idea to test.")],
    project: Annotated[str, typer.Option("--project", "-p", help="The project it belongs to.")],
    description: Annotated[str | None, typer.Option("--description", "-d", help="Longer text.")] = None,
    owner: Annotated[str | None, typer.Option(help="Owner's user name (default: you).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Register a hypothesis (status proposed)."""
    with state(ctx).platform().session() as session:
        row = register.create(session, title, project=project, description=description, owner=owner, **_who(ctx))
        ref = ref_of(row.id)
    _show(ctx, ref, json, f"added [bold]{ref}[/] {title}")


@app.command("list")
def list_(
    ctx: typer.Context,
    sort: Annotated[str, typer.Option("--sort", "-s", help="Rank by ice, rice or votes.")] = "ice",
    status: Annotated[list[str] | None, typer.Option(help="Only this status (repeatable, or comma-separated).")] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's.")] = None,
    json: bool = JsonOpt,
) -> None:
    """The register, ranked, with ICE, RICE, votes and the HiPPO's call side by side."""
    statuses = [part for value in status or () for part in value.split(",") if part.strip()]
    with state(ctx).platform().session() as session:
        ranked = ranking.rank(session, sort=sort, statuses=statuses, project=project, owner=owner)
    if json:
        emit_json([s.to_dict() for s in ranked])
        return
    table(f"Hypotheses by {sort.lower()}", ["#", "ref", "title", "project", "status", "ICE", "RICE", "votes", "HiPPO",
                                           "answered"],
          [(s.rank, s.ref, s.title, s.project, s.status.value, format_score(s.ice), format_score(s.rice),
            votes_text(s), hippo_text(s), f"{s.answered}/{len(QUESTIONS)}") for s in ranked])


@app.command("show")
def show(ctx: typer.Context, ref: Annotated[str, RefArg], json: bool = JsonOpt) -> None:
    """Everything about one hypothesis: questions, scores, votes, decision, history, links."""
    _show(ctx, ref, json)


@app.command("questions")
def questions(json: bool = JsonOpt) -> None:
    """The business and technical questions every hypothesis answers (keys for `answer`)."""
    if json:
        emit_json([q.to_dict() for q in QUESTIONS])
        return
    table("Questions", ["key", "group", "question"], [(q.key, q.group.value, q.text) for q in QUESTIONS])


@app.command("edit")
def edit(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    title: Annotated[str | None, typer.Option(help="New title.")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="New description ('' clears).")] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="New project.")] = None,
    owner: Annotated[str | None, typer.Option(help="New owner.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Change the title, description, project or owner."""
    with state(ctx).platform().session() as session:
        row = register.edit(session, ref, title=title, description=description, project=project, owner=owner,
                            **_who(ctx))
        ref = ref_of(row.id)
    _show(ctx, ref, json, f"{ref} updated")


@app.command("answer")
def answer(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    question: Annotated[str, typer.Argument(help="Question key (see `medcycle hypothesis questions`).")],
    text: Annotated[str | None, typer.Argument(help="The answer.", show_default=False)] = None,
    confidence: Annotated[str | None, typer.Option("--confidence", "-c", help="low, medium or high.")] = None,
    notes: Annotated[str | None, typer.Option("--notes", "-n", help="Sources, caveats.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the answer instead.")] = False,
    json: bool = JsonOpt,
) -> None:
    """Answer one of the business or technical questions (again to replace the answer)."""
    with state(ctx).platform().session() as session:
        if clear:
            answers.clear_answer(session, ref, question, **_who(ctx))
        else:
            answers.answer(session, ref, question, text or "", confidence=confidence, notes=notes, **_who(ctx))
    _show(ctx, ref, json, f"{'cleared' if clear else 'answered'} {question} on {ref}")


@app.command("score")
def score(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    method: Annotated[str, typer.Argument(help="ice or rice.")],
    impact: Annotated[float | None, typer.Option(help="ICE: 1-10. RICE: 0.25, 0.5, 1, 2 or 3.")] = None,
    confidence: Annotated[float | None, typer.Option(help="ICE: 1-10. RICE: percent (80 = 80%).")] = None,
    ease: Annotated[float | None, typer.Option(help="ICE: 1-10.")] = None,
    reach: Annotated[float | None, typer.Option(help="RICE: people or studies per period.")] = None,
    effort: Annotated[float | None, typer.Option(help="RICE: person-months.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Set the ICE score (--impact --confidence --ease) or the RICE score (--reach --impact --confidence --effort)."""
    kind = method.strip().lower()
    ice: scoring.Ice | None = None
    rice: scoring.Rice | None = None
    if kind == "ice":
        if reach is not None or effort is not None:
            raise UsageError("--reach and --effort belong to RICE", hint="ICE takes --impact, --confidence, --ease.")
        ice = scoring.ice(impact, confidence, ease)
    elif kind == "rice":
        if ease is not None:
            raise UsageError("--ease belongs to ICE", hint="RICE takes --reach, --impact, --confidence, --effort.")
        rice = scoring.rice(reach, impact, confidence, effort)
    else:
        raise UsageError(f"{method!r} is not a scoring method", hint="Use `ice` or `rice`.")
    with state(ctx).platform().session() as session:
        row = scoring.score(session, ref, ice=ice, rice=rice, actor=state(ctx).actor, via="cli")
        shown = format_score(row.ice_score if ice else row.rice_score)
    _show(ctx, ref, json, f"{ref_of(row.id)} {kind.upper()} = {shown}")


@app.command("vote")
def vote(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    value: Annotated[str | None, typer.Argument(help="up or down.", show_default=False)] = None,
    comment: Annotated[str | None, typer.Option("--comment", "-m", help="Why.")] = None,
    voter: Annotated[str | None, typer.Option(help="Vote as this user (default: you).")] = None,
    retract: Annotated[bool, typer.Option("--retract", help="Withdraw the vote instead.")] = False,
    json: bool = JsonOpt,
) -> None:
    """Vote up or down (one vote per user; voting again changes it)."""
    with state(ctx).platform().session() as session:
        if retract:
            votes.retract(session, ref, voter=voter, **_who(ctx))
            message = f"vote on {ref} withdrawn"
        else:
            if value is None:
                raise UsageError("say how you vote", hint="Give `up` or `down`, or --retract.")
            cast = votes.vote(session, ref, value, comment=comment, voter=voter, **_who(ctx))
            message = f"{cast.voter} votes {cast.value.value} on {ref}"
    _show(ctx, ref, json, message)


@app.command("decide")
def decide(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    decision: Annotated[str, typer.Argument(help="go, no-go or defer.")],
    note: Annotated[str | None, NoteOpt] = None,
    by: Annotated[str | None, typer.Option(help="Who made the call (default: you).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Record the HiPPO's call (go, no-go, defer) beside the scores and votes."""
    with state(ctx).platform().session() as session:
        made = decisions.decide(session, ref, decision, by=by, note=note, **_who(ctx))
    _show(ctx, ref, json, f"{ref}: {made.decision.value} ({made.by})")


@app.command("explore")
def explore(ctx: typer.Context, ref: Annotated[str, RefArg], note: Annotated[str | None, NoteOpt] = None,
            json: bool = JsonOpt) -> None:
    """Start testing a proposed hypothesis (proposed → exploring)."""
    with state(ctx).platform().session() as session:
        row = lifecycle.explore(session, ref, note=note, **_who(ctx))
    _show(ctx, ref, json, f"{ref_of(row.id)} is {row.status}")


@app.command("close")
def close(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    verdict: Annotated[str, typer.Argument(help="validated or killed.")],
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Why (required).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Close with a verdict and its reason: validated (after exploring) or killed."""
    with state(ctx).platform().session() as session:
        row = lifecycle.close(session, ref, verdict, reason, **_who(ctx))
    _show(ctx, ref, json, f"{ref_of(row.id)} is {row.status}: {row.status_reason}")


@app.command("reopen")
def reopen(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Why look again (required).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Reopen a validated or killed hypothesis (back to exploring)."""
    with state(ctx).platform().session() as session:
        row = lifecycle.reopen(session, ref, reason, **_who(ctx))
    _show(ctx, ref, json, f"{ref_of(row.id)} is {row.status} again")


@app.command("link")
def link(
    ctx: typer.Context,
    ref: Annotated[str, RefArg],
    run: Annotated[str | None, typer.Option(help="A run id.")] = None,
    dataset: Annotated[str | None, typer.Option(help="A dataset version, NAME@TAG.")] = None,
    note: Annotated[str | None, NoteOpt] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the link instead.")] = False,
    json: bool = JsonOpt,
) -> None:
    """Link a run or a dataset version that tests the hypothesis (or --remove the link)."""
    if (run is None) == (dataset is None):
        raise UsageError("give one of --run or --dataset", hint="e.g. --run 3f2a9c or --dataset chest-xr@v1.0.")
    kind, target = (LinkKind.RUN, run) if run is not None else (LinkKind.DATASET, dataset or "")
    with state(ctx).platform().session() as session:
        if remove:
            links.unlink(session, ref, kind, target, **_who(ctx))
            message = f"unlinked {kind.value} {target} from {ref}"
        else:
            made, created = links.link(session, ref, kind, target, note=note, **_who(ctx))
            pinned = f" ({made.digest[:12]})" if made.digest else ""
            message = f"{'linked' if created else 'already linked'} {kind.value} {made.target}{pinned} to {ref}"
    _show(ctx, ref, json, message)
