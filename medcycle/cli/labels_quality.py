"""``medcycle labels exam | honeypot | qualification | scorecard``: reader qualification.

Exams (gold-standard sets with pass thresholds) and their sittings, honeypots planted in live queues,
certifications and re-testing, and reader scorecards. Each command parses, calls one function of
:mod:`medcycle.labels` and prints (``--json`` for programs). Registered on ``medcycle labels`` by
:func:`register` (called from :mod:`medcycle.cli.labels`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, fmt, table
from medcycle.labels import certifications, exams, honeypots, qualification, scorecards
from medcycle.labels.tasks import parse_due, parse_ref

exam_app = typer.Typer(no_args_is_help=True, help="Gold-standard exams and honeypot pools; sittings and grades.")
honeypot_app = typer.Typer(no_args_is_help=True, help="Honeypots: gold items hidden in live queues, graded silently.")
qual_app = typer.Typer(no_args_is_help=True, help="Certifications: status, re-tests due, revocation, refresh.")
VIA = "cli"
AttemptArg = typer.Argument(help="The sitting, e.g. A-3 (or 3).", show_default=False)


def _metrics(grade: dict[str, object] | None) -> str:
    if not grade:
        return "-"
    metrics = grade.get("metrics")
    if not isinstance(metrics, dict):
        return "-"
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))


# -- exams ----------------------------------------------------------------------------------------------
@exam_app.command("add")
def exam_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A new exam name, e.g. chest-xr-2026.")],
    label_set: Annotated[str, typer.Option("--set", help="The gold label set (id or prefix).")],
    pass_: Annotated[list[str], typer.Option("--pass", help="A pass threshold METRIC=MIN (repeatable), "
                                                            "e.g. sensitivity=0.85.")],
    negative: Annotated[list[str] | None, typer.Option("--negative", help="A class meaning 'nothing found' "
                                                                          "(repeatable), e.g. normal.")] = None,
    valid_days: Annotated[int | None, typer.Option(help="A pass certifies for this many days.")] = None,
    purpose: Annotated[str, typer.Option(help="exam (sat) or honeypot (planted in live queues).")] = "exam",
    guards: Annotated[str | None, typer.Option(help="Honeypot pool: the exam whose certification it guards.")]
    = None,
    window: Annotated[int, typer.Option(help="Honeypot pool: judge the last N honeypots of a reader.")] = 10,
    description: Annotated[str | None, typer.Option(help="What the exam is for.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Define an exam (or a honeypot pool) over a gold label set, with pass thresholds."""
    with state(ctx).platform().session() as session:
        info = exams.create_exam(session, name, label_set=label_set, thresholds=exams.parse_thresholds(pass_),
                                 purpose=purpose, negative_labels=negative or (), valid_days=valid_days,
                                 guards=guards, window=window, description=description, actor=state(ctx).actor, via=VIA)
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"added {info.purpose.value} [bold]{info.name}[/]: {info.items} items of {info.schema}, "
                        f"pass if " + ", ".join(f"{k} >= {v:g}" for k, v in info.thresholds.items()))


@exam_app.command("list")
def exam_list(ctx: typer.Context, purpose: Annotated[str | None, typer.Option(help="exam or honeypot.")] = None,
              json: bool = JsonOpt) -> None:
    """Exams and honeypot pools."""
    with state(ctx).platform().session(write=False) as session:
        found = exams.list_exams(session, purpose=purpose)
    if json:
        emit_json([e.to_dict() for e in found])
        return
    table("Exams", ["name", "purpose", "schema", "items", "pass", "valid days", "guards", "state"],
          [(e.name, e.purpose.value, e.schema, e.items, ", ".join(f"{k}>={v:g}" for k, v in e.thresholds.items()),
            e.valid_days, e.guards, e.state) for e in found])


@exam_app.command("show")
def exam_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The exam.")], json: bool = JsonOpt) -> None:
    """One exam's definition."""
    with state(ctx).platform().session(write=False) as session:
        info = exams.get_exam(session, name)
    if json:
        emit_json(info.to_dict())
    else:
        for k, v in info.to_dict().items():
            console().print(f"{k:16} {fmt(v)}")


@exam_app.command("retire")
def exam_retire(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The exam.")],
                json: bool = JsonOpt) -> None:
    """No new sittings or plantings; results stay."""
    with state(ctx).platform().session() as session:
        info = exams.retire_exam(session, name, actor=state(ctx).actor, via=VIA)
    emit_json(info.to_dict()) if json else console().print(f"{info.name} retired")


@exam_app.command("start")
def exam_start(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The exam.")],
    reader: Annotated[str, typer.Option(help="Who sits it (need not be qualified).")],
    due: Annotated[str | None, typer.Option(help="Due date, YYYY-MM-DD.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the reading order (default random).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Give a reader a sitting: the exam's items appear in their queue as a task of its own."""
    platform = state(ctx).platform()
    with platform.session() as session:
        info = qualification.start_attempt(session, platform.objects, name, reader, due=due, seed=seed,
                                           actor=state(ctx).actor, via=VIA)
    if json:
        emit_json(info.to_dict())
    else:
        console().print(f"[bold]{info.ref}[/]: {reader} sits {name} through {info.task} ({info.items} items); "
                        f"graded when the last item is submitted (`medcycle labels exam score {info.ref}`)")


def _print_attempt(info: qualification.AttemptInfo) -> None:
    verdict = {True: "[green]passed[/]", False: "[red]failed[/]", None: info.state.value}[info.passed]
    console().print(f"[bold]{info.ref}[/] {info.reader} · {info.exam} · {info.task} · {info.submitted}/{info.items} "
                    f"submitted · {verdict}")
    if info.grade:
        console().print(_metrics(info.grade))
    for f in info.failures:
        console().print(f"[red]below threshold:[/] {f}")


@exam_app.command("score")
def exam_score(ctx: typer.Context, attempt: Annotated[str, AttemptArg], json: bool = JsonOpt) -> None:
    """Grade a finished sitting, record pass or fail and certify (or not)."""
    platform = state(ctx).platform()
    with platform.session() as session:
        info = qualification.score_attempt(session, platform.objects, attempt, actor=state(ctx).actor, via=VIA)
    emit_json(info.to_dict()) if json else _print_attempt(info)


@exam_app.command("cancel")
def exam_cancel(ctx: typer.Context, attempt: Annotated[str, AttemptArg], json: bool = JsonOpt) -> None:
    """Abandon an open sitting (its task is closed; nothing is graded)."""
    with state(ctx).platform().session() as session:
        info = qualification.cancel_attempt(session, attempt, actor=state(ctx).actor, via=VIA)
    emit_json(info.to_dict()) if json else _print_attempt(info)


@exam_app.command("attempts")
def exam_attempts(
    ctx: typer.Context, reader: Annotated[str | None, typer.Option(help="Only this reader's.")] = None,
    exam: Annotated[str | None, typer.Option(help="Only this exam's.")] = None,
    state_: Annotated[str | None, typer.Option("--state", help="open, passed, failed or cancelled.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Sittings, newest first."""
    with state(ctx).platform().session(write=False) as session:
        found = qualification.list_attempts(session, reader=reader, exam=exam, state=state_)
    if json:
        emit_json([a.to_dict() for a in found])
        return
    table("Exam sittings", ["attempt", "reader", "exam", "task", "submitted", "state", "metrics", "finished"],
          [(a.ref, a.reader, a.exam, a.task, f"{a.submitted}/{a.items}", a.state.value, _metrics(a.grade),
            a.finished_at) for a in found])


@exam_app.command("attempt")
def exam_attempt(ctx: typer.Context, attempt: Annotated[str, AttemptArg],
                 items: Annotated[bool, typer.Option(help="With each item's grade.")] = False,
                 json: bool = JsonOpt) -> None:
    """One sitting and its grade."""
    with state(ctx).platform().session(write=False) as session:
        info = qualification.get_attempt(session, attempt)
    if json:
        emit_json(info.to_dict(items=items))
        return
    _print_attempt(info)
    if items:
        table("Items", ["item", "reference", "reading", "dice", "seconds"],
              [(g.item, g.reference, g.reading, g.dice, g.seconds) for g in info.item_grades])


# -- honeypots ------------------------------------------------------------------------------------------
@honeypot_app.command("plant")
def honeypot_plant(
    ctx: typer.Context, task: Annotated[str, typer.Argument(help="A live, blinded task, e.g. T-3.")],
    pool: Annotated[str, typer.Option(help="The honeypot pool.")],
    per_reader: Annotated[int, typer.Option(help="Honeypots per reader.")] = 1,
    reader: Annotated[list[str] | None, typer.Option("--reader", help="Only these readers (repeatable).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the choice and placement (default random).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Hide gold items in readers' queues of a live task (each at a random place among their unread items)."""
    platform = state(ctx).platform()
    with platform.session() as session:
        planted = honeypots.plant(session, platform.objects, task, pool, per_reader=per_reader, readers=reader,
                                  seed=seed, actor=state(ctx).actor, via=VIA)
    if json:
        emit_json([h.to_dict() for h in planted])
    else:
        console().print(f"planted {len(planted)} honeypot(s) in {task} for "
                        f"{len({h.reader for h in planted})} reader(s)")


@honeypot_app.command("list")
def honeypot_list(
    ctx: typer.Context, task: Annotated[str | None, typer.Option(help="Only this task's.")] = None,
    reader: Annotated[str | None, typer.Option(help="Only this reader's.")] = None,
    pool: Annotated[str | None, typer.Option(help="Only this pool's.")] = None, json: bool = JsonOpt,
) -> None:
    """Planted honeypots and their grades (for leads: this names the honeypot items)."""
    with state(ctx).platform().session(write=False) as session:
        found = honeypots.results(session, reader=reader, pool=pool,
                                  task_id=parse_ref(task) if task is not None else None)
    if json:
        emit_json([h.to_dict() for h in found])
        return
    table("Honeypots", ["task", "item", "reader", "pool", "state", "reference", "reading", "dice"],
          [(h.task, h.item, h.reader, h.pool, h.state, h.grade.reference if h.grade else None,
            h.grade.reading if h.grade else None, h.grade.dice if h.grade else None) for h in found])


# -- certifications and scorecards ------------------------------------------------------------------------
@qual_app.command("refresh")
def qual_refresh(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Grade finished sittings and submitted honeypots, judge honeypot pools, expire certifications."""
    platform = state(ctx).platform()
    with platform.session() as session:
        report = qualification.refresh(session, platform.objects, actor=state(ctx).actor, via=VIA)
    if json:
        emit_json(report.to_dict())
        return
    data = report.to_dict()
    console().print(f"graded {len(report.attempts)} sitting(s) and {len(report.honeypots)} honeypot(s); "
                    f"revoked: {', '.join(data['revoked']) or 'none'}; "
                    f"expired: {', '.join(c.reader + '/' + c.exam for c in report.expired) or 'none'}")


@qual_app.command("status")
def qual_status(
    ctx: typer.Context, reader: Annotated[str | None, typer.Option(help="Only this reader.")] = None,
    due_within: Annotated[int | None, typer.Option(help="Only re-tests due: lapsed, failed, revoked, or "
                                                        "expiring within N days.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Where each reader stands with each exam."""
    with state(ctx).platform().session(write=False) as session:
        found = (certifications.retest_due(session, within_days=due_within) if due_within is not None
                 else certifications.certifications(session, reader=reader))
    found = [c for c in found if reader is None or c.reader == reader]
    if json:
        emit_json([c.to_dict() for c in found])
        return
    table("Certifications", ["reader", "exam", "state", "attempt", "granted", "expires", "reason"],
          [(c.reader, c.exam, c.state.value, c.attempt, c.granted_at, c.expires_at, c.reason) for c in found])


@qual_app.command("revoke")
def qual_revoke(
    ctx: typer.Context, reader: Annotated[str, typer.Argument(help="The reader.")],
    exam: Annotated[str, typer.Argument(help="The exam.")],
    reason: Annotated[str, typer.Option("--reason", "-m", help="Why (kept with the certification).")],
    json: bool = JsonOpt,
) -> None:
    """Withdraw a certification (the reader is no longer assigned items unless certified otherwise)."""
    with state(ctx).platform().session() as session:
        info = certifications.revoke(session, reader, exam, reason=reason, actor=state(ctx).actor, via=VIA)
    emit_json(info.to_dict()) if json else console().print(f"{reader}: {exam} {info.state.value}")


def scorecard(
    ctx: typer.Context, reader: Annotated[str | None, typer.Argument(help="One reader (default: all).")] = None,
    period: Annotated[str, typer.Option(help="month, week or day.")] = "month",
    since: Annotated[str | None, typer.Option(help="Periods from this date, YYYY-MM-DD.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Reader scorecards: exam and honeypot results, time per study, certifications, re-tests due."""
    start: datetime | None = parse_due(since)
    if start is not None:
        start = start.replace(hour=0, minute=0, second=0)
    with state(ctx).platform().session(write=False) as session:
        cards = ([scorecards.scorecard(session, reader, period=period, since=start)] if reader is not None
                 else scorecards.scorecards(session, period=period, since=start))
    if json:
        emit_json([c.to_dict() for c in cards])
        return
    table("Scorecards", ["reader", "qualified", "sittings", "passed", "honeypots", "honeypot metrics",
                         "s/study (last period)", "re-test"],
          [(c.reader, c.qualified, len(c.attempts), sum(1 for a in c.attempts if a.passed),
            c.honeypots.items if c.honeypots else 0,
            _metrics(c.honeypots.to_dict()) if c.honeypots else None,
            f"{c.periods[-1].seconds_per_study:.0f}" if c.periods and c.periods[-1].seconds_per_study else None,
            "; ".join(c.retest) or None) for c in cards])
    if reader is not None and cards:
        table(f"{reader} by {period}", ["from", "sittings", "passed", "exam metrics", "honeypot metrics", "studies",
                                         "s/study"],
              [(p.start.isoformat(), p.sittings, p.passed, _metrics(p.exams.to_dict()) if p.exams else None,
                _metrics(p.honeypots.to_dict()) if p.honeypots else None, p.studies,
                f"{p.seconds_per_study:.0f}" if p.seconds_per_study else None) for p in cards[0].periods])


def register(app: typer.Typer) -> None:
    """Add these groups and commands to ``medcycle labels``."""
    app.add_typer(exam_app, name="exam")
    app.add_typer(honeypot_app, name="honeypot")
    app.add_typer(qual_app, name="qualification")
    app.command("scorecard")(scorecard)
