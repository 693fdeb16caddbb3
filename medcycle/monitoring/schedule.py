"""The monitoring loop behind ``medcycle monitor schedule``: drift, alert rules and notifications every few
minutes; a report at each report time (three a day by default); the retention purge once a day.

Report times come from ``monitoring_report_times`` (default ``06:00,14:00,22:00``) in
``monitoring_timezone`` (default ``UTC``). Each report covers the time since the previous one and is
stored under its slot, so a slot is reported once even with two schedulers running; a scheduler started
after a missed slot reports that slot first. Failures of one step (a webhook down) are logged and retried
on the next tick; they never stop the loop. ``medcycle monitor report`` does the same report step for cron.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from medcycle.errors import ConfigError, MedcycleError
from medcycle.store.base import utcnow

log = logging.getLogger(__name__)

DEFAULT_TIMES = "06:00,14:00,22:00"
DEFAULT_INTERVAL = 300.0


@dataclass(frozen=True, slots=True)
class Schedule:
    times: tuple[time, ...]
    zone: ZoneInfo
    interval: float  # seconds between drift / alert ticks

    @classmethod
    def from_settings(cls, settings: Any) -> Schedule:
        return cls(parse_times(str(getattr(settings, "monitoring_report_times", DEFAULT_TIMES))),
                   zone(str(getattr(settings, "monitoring_timezone", "UTC"))),
                   float(getattr(settings, "monitoring_interval_seconds", DEFAULT_INTERVAL)))

    def slots_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Report times in ``(start, end]``, as UTC instants."""
        out = []
        day = start.astimezone(self.zone).date() - timedelta(days=1)
        while day <= end.astimezone(self.zone).date():
            for t in self.times:
                at = datetime.combine(day, t, tzinfo=self.zone).astimezone(UTC)
                if start < at <= end:
                    out.append(at)
            day += timedelta(days=1)
        return sorted(out)

    def previous(self, now: datetime) -> datetime:
        return self.slots_between(now - timedelta(days=2), now)[-1]

    def next(self, now: datetime) -> datetime:
        return self.slots_between(now, now + timedelta(days=2))[0]

    def slot_name(self, at: datetime) -> str:
        return at.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M")


def parse_times(text: str) -> tuple[time, ...]:
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            hours, minutes = (int(x) for x in part.split(":"))
            out.append(time(hours, minutes))
        except ValueError:
            raise ConfigError(f"monitoring_report_times: {part!r} is not a time of day",
                              hint="Give times as HH:MM separated by commas, e.g. 06:00,14:00,22:00.") from None
    if not out:
        raise ConfigError("monitoring_report_times is empty", hint="E.g. 06:00,14:00,22:00.")
    return tuple(sorted(set(out)))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"monitoring_timezone: {name!r} is not a time zone",
                          hint="Use an IANA name such as UTC or Europe/Berlin.") from None


def tick(platform: Any, *, now: datetime | None = None, post: bool = True) -> dict[str, Any]:
    """One round: drift on every version with a reference, the operational rules, due notifications."""
    from medcycle.monitoring import drift, notify, operations

    now = now or utcnow()
    out: dict[str, Any] = {"at": now.isoformat()}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("drift", lambda: [d.to_dict() for d in drift.evaluate(platform, now=now)]),
        ("rules", lambda: _in_session(platform, lambda s: operations.check(
            s, rules=operations.Rules.from_settings(platform.settings), now=now))),
    ]
    if post:
        steps.append(("notified", lambda: _in_session(platform, lambda s: notify.send_due(
            s, platform.settings, format=_format(platform.settings), now=now).to_dict())))
    for name, step in steps:
        try:
            out[name] = step()
        except MedcycleError as exc:
            log.warning("monitoring %s failed: %s", name, exc)
            out[name] = {"error": exc.message}
    return out


def _in_session(platform: Any, fn: Callable[[Any], Any]) -> Any:
    with platform.session() as session:
        return fn(session)


def _format(settings: Any) -> str:
    return str(getattr(settings, "monitoring_webhook_format", "slack"))


def report_slot(platform: Any, schedule: Schedule, at: datetime, *, post: bool = True) -> dict[str, Any]:
    from medcycle.monitoring import report

    has_hook = bool(getattr(platform.settings, "chat_webhook_url", None))
    done = report.generate(platform, until=at, slot=schedule.slot_name(at), post=post and has_hook,
                           format=_format(platform.settings), actor="scheduler")
    return done.to_dict()


def purge(platform: Any, *, now: datetime | None = None) -> int:
    from medcycle.monitoring import log as plog

    with platform.session() as session:
        return plog.purge(session, older_than_days=plog.retention_days(platform.settings), now=now)


def run(platform: Any, *, stop: threading.Event | None = None, post: bool = True,
        clock: Callable[[], datetime] = utcnow, echo: Callable[[str], None] = lambda _m: None) -> None:
    """Loop until ``stop`` is set (see the module docstring)."""
    schedule = Schedule.from_settings(platform.settings)
    stop = stop or threading.Event()
    now = clock()
    pending = [schedule.previous(now)]  # a missed slot is reported once (a no-op if it was)
    next_report = schedule.next(now)
    last_purge: datetime | None = None
    echo(f"monitoring: reports at {', '.join(t.strftime('%H:%M') for t in schedule.times)} {schedule.zone.key}, "
         f"drift and alerts every {schedule.interval:g} s; next report {next_report.isoformat()}")
    while not stop.is_set():
        now = clock()
        if now >= next_report:
            pending.append(next_report)
            next_report = schedule.next(now)
        failed = []
        for at in pending:
            try:
                done = report_slot(platform, schedule, at, post=post)
                if not done.get("existing"):
                    echo(f"report {schedule.slot_name(at)}: {done.get('headline')}")
            except MedcycleError as exc:
                log.warning("monitoring report %s failed (retried next tick): %s", schedule.slot_name(at), exc)
                failed.append(at)
        pending = failed
        result = tick(platform, now=now, post=post)
        paged = [p for d in result.get("drift") or [] if isinstance(d, dict) for p in d.get("paged", [])]
        if paged:
            echo(f"drift paged: {paged}")
        if last_purge is None or now - last_purge >= timedelta(days=1):
            try:
                removed = purge(platform, now=now)
                last_purge = now
                if removed:
                    echo(f"purged {removed} prediction records past the retention period")
            except MedcycleError as exc:
                log.warning("monitoring purge failed: %s", exc)
        wait = min(schedule.interval, max((next_report - clock()).total_seconds(), 0.0) + 0.5)
        stop.wait(wait)
