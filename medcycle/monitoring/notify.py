"""Alerts and reports to the team chat (Slack-compatible or generic JSON), and pages to Sentry.

The webhook URL, its checks and its errors are those of experiment cards
(:mod:`medcycle.experiments.cards`: ``chat_webhook_url``, :class:`~medcycle.experiments.cards.WebhookFailed`;
a URL is a secret, so errors and records name its scheme and host only). ``slack`` is Slack's
incoming-webhook shape (``text`` + Block Kit ``blocks``; Mattermost and Rocket.Chat accept it); ``json`` is
``{"type": "medcycle.alerts" | "medcycle.report", "version": 1, "text": …, …}``. Every message links back
to the UI: the alert, the dashboard filtered to the model version, an example prediction, the model card
and the run that trained the model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.orm import Session

from medcycle.errors import UsageError
from medcycle.experiments.cards import WebhookFailed, default_base_url, resolve_webhook, webhook_target
from medcycle.monitoring import alerts
from medcycle.store.base import utcnow

FORMATS = ("slack", "json")
TIMEOUT = 10.0
ICON = {"page": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}
MAX_ALERTS_PER_MESSAGE = 10


@dataclass(frozen=True, slots=True)
class Posted:
    target: str  # scheme://host[:port] only
    format: str
    status: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "format": self.format, "status": self.status, "seconds": self.seconds}


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise UsageError(f"{format!r} is not a chat format", hint=f"Use one of: {', '.join(FORMATS)}.")
    return format


def post_json(url: str, body: Mapping[str, Any], *, format: str, timeout: float = TIMEOUT,
              transport: httpx.BaseTransport | None = None) -> Posted:
    """POST ``body`` to a chat webhook (the same checks and errors as experiment cards)."""
    target = webhook_target(url)
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, transport=transport) as client:
            response = client.post(url.strip(), json=dict(body), headers={"User-Agent": "medcycle-monitor/1"})
    except httpx.TimeoutException:
        raise WebhookFailed(f"the chat webhook at {target} did not answer within {timeout:g} s",
                            hint="Check that the chat service is reachable from this server.", target=target) from None
    except httpx.HTTPError as exc:
        reason = str(exc).replace(url.strip(), target) or type(exc).__name__
        raise WebhookFailed(f"could not reach the chat webhook at {target}: {reason}",
                            hint="Check the URL and that this server can reach the chat service.",
                            target=target) from None
    if not 200 <= response.status_code < 300:
        said = " ".join(response.text.split())[:200]
        raise WebhookFailed(f"the chat webhook at {target} answered {response.status_code} "
                            f"{response.reason_phrase}" + (f": {said}" if said else ""),
                            hint="Check the webhook URL (it may have been revoked) and the format (slack or json).",
                            target=target, status=response.status_code)
    return Posted(target, format, response.status_code, round(time.perf_counter() - started, 4))


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(base: str, path: str | None, text: str) -> str:
    return f"<{base}{path}|{_esc(text)}>" if path else _esc(text)


def absolute(base: str, links: Mapping[str, Any]) -> dict[str, str]:
    return {k: f"{base}{v}" for k, v in links.items() if isinstance(v, str) and v.startswith("/")}


LINK_NAMES = (("alert", "Alert"), ("dashboard", "Dashboard"), ("prediction", "Prediction"), ("input", "Input"),
              ("model", "Model"), ("run", "Run"))


def alert_text(row: Any) -> str:
    repeat = f" (×{row.count})" if row.count > 1 else ""
    return f"[{row.severity}] {row.title}{repeat}"


def alerts_payload(group: alerts.Group, base: str, format: str) -> dict[str, Any]:
    rows = group.alerts[:MAX_ALERTS_PER_MESSAGE]
    more = len(group.alerts) - len(rows)
    text = (f"{len(group.alerts)} alert(s) for {group.key}: " + "; ".join(alert_text(r) for r in rows)
            + (f"; and {more} more" if more else ""))
    if format == "json":
        return {"type": "medcycle.alerts", "version": 1, "text": text, "group": group.key,
                "severity": group.severity.value,
                "alerts": [{"id": r.id, "key": r.key, "severity": r.severity, "title": r.title, "count": r.count,
                            "first_at": r.first_at.isoformat(), "last_at": r.last_at.isoformat(),
                            "details": r.details, "links": absolute(base, r.links)} for r in rows]}
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": (
        f"medcycle: {len(group.alerts)} alert(s) — {group.key}")[:150]}}]
    for r in rows:
        links = " · ".join(_link(base, r.links.get(k), name) for k, name in LINK_NAMES if r.links.get(k))
        body = f"{ICON.get(r.severity, '')} *{_esc(r.title)}*" + (f" (×{r.count})" if r.count > 1 else "")
        body += f"\n{links}" if links else ""
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}})
    if more:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {more} more — "
                                                        + _link(base, "/ui/monitoring/alerts", "all alerts")}]})
    return {"text": text[:3000], "blocks": blocks[:50]}


@dataclass
class Sent:
    groups: int
    alerts: int
    posted: list[Posted]
    skipped: str | None = None
    errors: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "alerts": self.alerts, "posted": [p.to_dict() for p in self.posted],
                "skipped": self.skipped, "errors": self.errors or []}


def send_due(session: Session, settings: Any, *, url: str | None = None, format: str = "slack",
             now: datetime | None = None, transport: httpx.BaseTransport | None = None) -> Sent:
    """Send every due alert group (one chat message each) and mark it sent; pages also go to Sentry.

    With neither a webhook nor Sentry configured nothing is marked sent (the dashboard still shows the
    alerts). A group whose post fails stays due and is named in ``errors``; the others are still sent.
    """
    from medcycle.monitoring import sentry

    check_format(format)
    now = now or utcnow()
    groups = alerts.due(session, now=now)
    n_alerts = sum(len(g.alerts) for g in groups)
    if not groups:
        return Sent(0, 0, [])
    try:
        target: str | None = resolve_webhook(settings, url)
    except UsageError:
        target = None
    if target is None and not sentry.enabled():
        return Sent(len(groups), n_alerts, [], skipped="no chat webhook (chat_webhook_url) and no Sentry DSN")
    base = default_base_url(settings)
    posted, errors = [], []
    for group in groups:
        if target is not None:
            try:
                posted.append(post_json(target, alerts_payload(group, base, format), format=format,
                                        transport=transport))
            except WebhookFailed as exc:
                errors.append(f"{group.key}: {exc.message}")
                continue
        for row in group.alerts:
            if row.severity == alerts.Severity.PAGE.value:
                sentry.capture_alert(row, base)
        alerts.mark_sent(group.alerts, now=now)
    return Sent(len(groups), n_alerts, posted, None if target else "no chat webhook: Sentry only", errors)
