"""Experiment cards: what one run found, on one page, and posting it to the team chat.

A card holds the run's key metrics (last, min and max), a summary of its params, its reproducibility
verdict with reasons, the dataset version and hypothesis it names (with links into the UI), its code
state, and the conclusions a person wrote about it. Everything but the conclusions is read from the
run as stored, so a card is never stale.

Conclusions live in run tags — ``card.conclusions``, ``card.conclusions_by``, ``card.conclusions_at`` and
``card.key_metrics`` (a JSON list of the metric keys the author chose) — the same table ``run.set_tag``
writes, so they travel with the run and can be filtered on (``tags."card.conclusions" is not null``).
A tag holds at most 1024 characters; a longer write-up belongs in an artifact the conclusions point to.

Posting sends one JSON document with httpx: ``slack`` is Slack's incoming-webhook shape (``text`` plus
Block Kit ``blocks``; Mattermost and Rocket.Chat accept it too), ``json`` is a generic document
``{"type": "medcycle.experiment_card", "version": 1, "text": …, "card": {…}}``. A webhook URL is a
secret: errors and audit events name its scheme and host only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import BackendUnavailable, MedcycleError, UsageError
from medcycle.experiments.runs import RunDetail, get_run, resolve_run
from medcycle.experiments.tables import RunRow, RunTagRow

CONCLUSIONS_TAG = "card.conclusions"
BY_TAG = "card.conclusions_by"
AT_TAG = "card.conclusions_at"
KEY_METRICS_TAG = "card.key_metrics"
CARD_TAGS = (CONCLUSIONS_TAG, BY_TAG, AT_TAG, KEY_METRICS_TAG)
MAX_CONCLUSIONS = 1024  # a run tag's limit
DEFAULT_KEY_METRICS = 8
MAX_KEY_METRICS = 20
MAX_PARAMS = 24
FORMATS = ("slack", "json")
DEFAULT_TIMEOUT = 10.0
_EVAL_PREFIXES = ("val", "valid", "validation", "test", "eval")


class WebhookFailed(BackendUnavailable):
    """The chat webhook could not be reached or refused the card (HTTP 502 from our API, exit 9)."""

    code = "webhook_failed"
    http_status = 502


@dataclass(frozen=True, slots=True)
class KeyMetric:
    key: str
    last: float | None
    min: float | None
    max: float | None
    step: int
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "last": self.last, "min": self.min, "max": self.max, "step": self.step,
                "count": self.count}


@dataclass(frozen=True, slots=True)
class Conclusions:
    text: str
    by: str | None
    at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "by": self.by, "at": self.at.isoformat() if self.at else None}


@dataclass(frozen=True, slots=True)
class Linked:
    """A dataset version or hypothesis the run names: how it was named, what it resolved to, where to see it."""

    ref: str
    label: str
    url: str | None
    detail: str | None = None  # a version digest, a hypothesis status

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "label": self.label, "url": self.url, "detail": self.detail}


@dataclass(slots=True)
class ExperimentCard:
    run_id: str
    name: str
    project: str
    status: str
    user: str
    started_at: datetime
    ended_at: datetime | None
    verdict: str
    verdict_reasons: list[str]
    key_metrics: list[KeyMetric]
    key_metrics_chosen: bool  # chosen by a person (else the default pick)
    params: list[tuple[str, str]]
    params_total: int
    code: dict[str, Any]  # commit, branch, dirty, remote
    dataset: Linked | None
    hypothesis: Linked | None
    conclusions: Conclusions | None
    links: dict[str, str] = field(default_factory=dict)  # run, card, dataset, hypothesis

    @property
    def duration(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None

    @property
    def headline(self) -> str:
        """One line for chat notifications and fallbacks."""
        metrics = ", ".join(f"{m.key} {format_number(m.last)}" for m in self.key_metrics[:3])
        return f"{self.name} ({self.project}): {self.status}, {self.verdict}" + (f"; {metrics}" if metrics else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id, "name": self.name, "project": self.project, "status": self.status, "user": self.user,
            "started_at": self.started_at.isoformat(), "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration": self.duration, "verdict": self.verdict, "verdict_reasons": list(self.verdict_reasons),
            "key_metrics": [m.to_dict() for m in self.key_metrics], "key_metrics_chosen": self.key_metrics_chosen,
            "params": dict(self.params), "params_total": self.params_total, "code": dict(self.code),
            "dataset": self.dataset.to_dict() if self.dataset else None,
            "hypothesis": self.hypothesis.to_dict() if self.hypothesis else None,
            "conclusions": self.conclusions.to_dict() if self.conclusions else None, "links": dict(self.links),
        }

    def to_markdown(self) -> str:
        lines = [f"# Experiment card: {self.name}", "",
                 f"Project **{self.project}** · status **{self.status}** · by {self.user} · "
                 f"started {self.started_at:%Y-%m-%d %H:%M} UTC", "",
                 f"**Verdict:** {self.verdict}" + (f" ({'; '.join(self.verdict_reasons)})" if self.verdict_reasons
                                                   else "")]
        for title, linked in (("Dataset", self.dataset), ("Hypothesis", self.hypothesis)):
            if linked is not None:
                lines.append(f"**{title}:** {linked.label}" + (f" ({linked.url})" if linked.url else ""))
        if self.code.get("commit"):
            lines.append(f"**Code:** {self.code['commit'][:12]} on {self.code.get('branch') or 'a detached HEAD'}"
                         + (" (uncommitted changes)" if self.code.get("dirty") else ""))
        lines += ["", "## Key metrics", ""]
        lines += [f"- {m.key}: {format_number(m.last)} (min {format_number(m.min)}, max {format_number(m.max)}, "
                  f"step {m.step})" for m in self.key_metrics] or ["No metrics logged."]
        lines += ["", "## Params", ""]
        lines += [f"- {k} = {v}" for k, v in self.params] or ["No params logged."]
        if self.params_total > len(self.params):
            lines.append(f"- … and {self.params_total - len(self.params)} more")
        lines += ["", "## Conclusions", ""]
        if self.conclusions:
            lines.append(self.conclusions.text)
            lines.append(f"\n— {self.conclusions.by or 'unknown'}"
                         + (f", {self.conclusions.at:%Y-%m-%d}" if self.conclusions.at else ""))
        else:
            lines.append("None written yet.")
        if self.links:
            lines += ["", " · ".join(f"[{k}]({v})" for k, v in self.links.items())]
        return "\n".join(lines) + "\n"


def format_number(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


# -- building -----------------------------------------------------------------------------------------
def default_key_metrics(keys: list[str], n: int = DEFAULT_KEY_METRICS) -> list[str]:
    """Up to ``n`` metrics worth a headline: evaluation ones (``val…``, ``test…``) first, never ``system/*``."""
    def rank(key: str) -> tuple[int, str]:
        head = key.replace("/", "_").replace(".", "_").split("_")[0].lower()
        return (0 if head in _EVAL_PREFIXES else 1, key)

    return sorted((k for k in keys if not k.startswith("system/")), key=rank)[:n]


def _chosen_metrics(tags: dict[str, str]) -> list[str] | None:
    raw = tags.get(KEY_METRICS_TAG)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return [k for k in value if isinstance(k, str)] if isinstance(value, list) else None


def conclusions_of(tags: dict[str, str]) -> Conclusions | None:
    text = tags.get(CONCLUSIONS_TAG)
    if not text:
        return None
    at = None
    if tags.get(AT_TAG):
        try:
            at = datetime.fromisoformat(tags[AT_TAG])
        except ValueError:
            at = None
    return Conclusions(text, tags.get(BY_TAG), at)


def _version_of(session: Session, digest: str) -> tuple[str, int] | None:
    """Dataset name and version number of a version digest, when the datasets layer knows it."""
    try:
        from medcycle.datasets.tables import DatasetRow, DatasetVersionRow
    except ImportError:  # the datasets layer is optional for tracking
        return None
    found = session.execute(select(DatasetRow.name, DatasetVersionRow.seq)
                            .join(DatasetRow, DatasetRow.id == DatasetVersionRow.dataset_id)
                            .where(DatasetVersionRow.id == digest)).first()
    return (str(found[0]), int(found[1])) if found is not None else None


def _dataset(session: Session, detail: RunDetail, base_url: str) -> Linked | None:
    ref, digest = detail.summary.dataset, detail.summary.dataset_digest
    if not ref and not digest:
        return None
    label, url = ref or digest or "", None
    version = _version_of(session, digest) if digest else None
    if version is not None:
        url = f"{base_url}/ui/datasets/{quote(version[0], safe='')}/v{version[1]}"
        label = ref if ref and "@" in ref else f"{version[0]}@v{version[1]}"
    elif ref:
        name, _, which = ref.partition("@")
        url = f"{base_url}/ui/datasets/{quote(name, safe='')}" + (f"/{quote(which, safe='')}" if which else "")
    return Linked(ref or label, label, url, digest)


def _hypothesis(session: Session, ref: str | None, base_url: str) -> Linked | None:
    if not ref:
        return None
    try:
        from medcycle.hypotheses.inputs import ref_of
        from medcycle.hypotheses.lookup import get_hypothesis

        row = get_hypothesis(session, ref)
    except (ImportError, MedcycleError):  # free text, or a hypothesis not (or no longer) in the register
        return Linked(ref, ref, None)
    canonical = ref_of(row.id)
    return Linked(ref, f"{canonical} {row.title}", f"{base_url}/ui/hypotheses/{canonical}", row.status)


def build_card(session: Session, ref: str, *, base_url: str = "", max_params: int = MAX_PARAMS) -> ExperimentCard:
    """The card of the run ``ref`` names; links start with ``base_url`` (e.g. ``https://medcycle.example.org``)."""
    base_url = base_url.rstrip("/")
    detail = get_run(session, ref)
    s = detail.summary
    chosen = _chosen_metrics(s.tags)
    keys = [k for k in chosen if k in detail.metrics] if chosen else default_key_metrics(list(detail.metrics))
    key_metrics = [KeyMetric(k, m.last, m.min, m.max, m.last_step, m.count)
                   for k in keys if (m := detail.metrics.get(k)) is not None]
    git = detail.capture.get("git") or {}
    code = {"commit": git.get("commit"), "branch": git.get("branch"), "dirty": git.get("dirty"),
            "remote": git.get("remote"), "pushed": git.get("pushed")}
    dataset = _dataset(session, detail, base_url)
    hypothesis = _hypothesis(session, s.hypothesis, base_url)
    links = {"run": f"{base_url}/ui/runs/{s.id}", "card": f"{base_url}/ui/runs/{s.id}/card"}
    for name, linked in (("dataset", dataset), ("hypothesis", hypothesis)):
        if linked is not None and linked.url:
            links[name] = linked.url
    params = list(s.params.items())
    return ExperimentCard(
        run_id=s.id, name=s.name, project=s.project, status=s.status, user=s.created_by, started_at=s.started_at,
        ended_at=s.ended_at, verdict=s.verdict, verdict_reasons=list(s.verdict_reasons), key_metrics=key_metrics,
        key_metrics_chosen=bool(chosen), params=params[:max_params], params_total=len(params), code=code,
        dataset=dataset, hypothesis=hypothesis, conclusions=conclusions_of(s.tags), links=links,
    )


# -- conclusions --------------------------------------------------------------------------------------
def clean_conclusions(text: str) -> str:
    """The conclusions as stored: newlines normalised, outer whitespace dropped, no control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    bad = next((c for c in text if ord(c) < 32 and c not in "\n\t"), None)
    if bad is not None:
        raise UsageError(f"the conclusions contain the control character {bad!r}", hint="Write plain text.")
    if len(text) > MAX_CONCLUSIONS:
        raise UsageError(f"the conclusions are {len(text)} characters long; a card holds at most {MAX_CONCLUSIONS}",
                         hint="Shorten them, and put a longer write-up in an artifact "
                              "(`run.log_artifact`) that the conclusions name.")
    return text


def set_conclusions(session: Session, ref: str, text: str, *, actor: str, key_metrics: list[str] | None = None,
                    via: str = "library") -> Conclusions | None:
    """Store what a person concluded from the run ``ref`` (empty text clears it) and, when given, the metrics
    the card headlines; audited as ``run.card.edit``. Returns the stored conclusions (``None`` once cleared)."""
    text = clean_conclusions(text)
    row = resolve_run(session, ref)
    session.execute(select(RunRow.id).where(RunRow.id == row.id).with_for_update())  # serialise with the ingest
    now = datetime.now(UTC).replace(microsecond=0)
    values: dict[str, str | None] = {CONCLUSIONS_TAG: text or None, BY_TAG: actor[:1024] if text else None,
                                     AT_TAG: now.isoformat() if text else None}
    if key_metrics is not None:
        values[KEY_METRICS_TAG] = _key_metrics_value(session, row.id, key_metrics)
    existing = {t.key: t for t in session.scalars(
        select(RunTagRow).where(RunTagRow.run_id == row.id, RunTagRow.key.in_(list(values))))}
    for key, value in values.items():
        if value is None:
            session.execute(delete(RunTagRow).where(RunTagRow.run_id == row.id, RunTagRow.key == key))
        elif key in existing:
            existing[key].value = value
        else:
            session.add(RunTagRow(run_id=row.id, key=key, value=value))
    audit.record(session, actor, "run.card.edit", target_kind="run", target_id=row.id, via=via,
                 chars=len(text), key_metrics=key_metrics)
    session.flush()
    return Conclusions(text, actor[:1024], now) if text else None


def _key_metrics_value(session: Session, run_id: str, keys: list[str]) -> str | None:
    from medcycle.experiments.tables import MetricSeriesRow

    wanted = list(dict.fromkeys(k.strip() for k in keys if k.strip()))
    if not wanted:
        return None
    if len(wanted) > MAX_KEY_METRICS:
        raise UsageError(f"{len(wanted)} key metrics chosen; a card shows at most {MAX_KEY_METRICS}",
                         hint="Choose the few metrics that say whether the run worked.")
    known = set(session.scalars(select(MetricSeriesRow.key).where(MetricSeriesRow.run_id == run_id)))
    missing = [k for k in wanted if k not in known]
    if missing:
        raise UsageError(f"run {run_id[:12]} has no metric {missing[0]!r}",
                         hint=f"Its metrics: {', '.join(sorted(known)[:30]) or 'none'}.")
    value = json.dumps(wanted, ensure_ascii=False)
    if len(value) > MAX_CONCLUSIONS:
        raise UsageError("the chosen metric names are too long to store together", hint="Choose fewer metrics.")
    return value


# -- chat payloads ------------------------------------------------------------------------------------
def _mrkdwn(text: str) -> str:
    """Text as Slack shows it literally (its three control characters escaped)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str | None, text: str) -> str:
    return f"<{url}|{_mrkdwn(text)}>" if url and url.startswith(("http://", "https://")) else _mrkdwn(text)


def slack_payload(card: ExperimentCard) -> dict[str, Any]:
    """Slack's incoming-webhook message: a ``text`` fallback and Block Kit ``blocks`` (within Slack's limits)."""
    facts = [("Project", _mrkdwn(card.project)), ("Status", _mrkdwn(card.status)),
             ("Verdict", _mrkdwn(card.verdict + (f" ({'; '.join(card.verdict_reasons)})" if card.verdict_reasons
                                                  else ""))),
             ("By", _mrkdwn(card.user))]
    if card.dataset:
        facts.append(("Dataset", _link(card.dataset.url, card.dataset.label)))
    if card.hypothesis:
        facts.append(("Hypothesis", _link(card.hypothesis.url, card.hypothesis.label)))
    if card.code.get("commit"):
        facts.append(("Commit", f"`{card.code['commit'][:12]}`" + (" (dirty)" if card.code.get("dirty") else "")))
    metrics = "\n".join(f"• `{_mrkdwn(m.key)}` *{format_number(m.last)}*  (min {format_number(m.min)}, "
                        f"max {format_number(m.max)})" for m in card.key_metrics) or "_No metrics logged._"
    if card.conclusions:
        by = f" — {_mrkdwn(card.conclusions.by or 'unknown')}"
        conclusions = "\n".join(f"> {_mrkdwn(line)}" for line in card.conclusions.text.splitlines()) + by
    else:
        conclusions = "_No conclusions written yet._"
    params = ", ".join(f"{k}={v}" for k, v in card.params[:12])
    context = " · ".join([_link(card.links.get("run"), "Open the run"), _link(card.links.get("card"), "Card")]
                         + ([_mrkdwn(params[:500])] if params else []))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Experiment card: {card.name}"[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in facts[:10]]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Key metrics*\n{metrics}"[:3000]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Conclusions*\n{conclusions}"[:3000]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context[:3000]}]},
    ]
    text = card.headline + (f" {card.links['run']}" if card.links.get("run", "").startswith("http") else "")
    return {"text": text, "blocks": blocks}


def generic_payload(card: ExperimentCard) -> dict[str, Any]:
    return {"type": "medcycle.experiment_card", "version": 1, "text": card.headline, "card": card.to_dict()}


def payload(card: ExperimentCard, format: str) -> dict[str, Any]:
    if format == "slack":
        return slack_payload(card)
    if format == "json":
        return generic_payload(card)
    raise UsageError(f"{format!r} is not a card format", hint=f"Use one of: {', '.join(FORMATS)}.")


# -- posting ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PostResult:
    target: str  # scheme://host[:port] only: the rest of a webhook URL is a secret
    format: str
    status: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "format": self.format, "status": self.status, "seconds": self.seconds}


def webhook_target(url: str) -> str:
    """``scheme://host[:port]`` of a webhook URL, after checking it is an http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("the chat webhook URL must be an http:// or https:// URL",
                         hint="Copy the incoming-webhook URL from your chat's integration settings.")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def resolve_webhook(settings: Any, url: str | None) -> str:
    """``url`` when given, else the ``chat_webhook_url`` setting; a clear error when neither exists."""
    if url and url.strip():
        return url.strip()
    configured = getattr(settings, "chat_webhook_url", None)
    if configured is not None and hasattr(configured, "get_secret_value"):
        configured = configured.get_secret_value()
    if isinstance(configured, str) and configured.strip():
        return configured.strip()
    raise UsageError("no chat webhook URL was given and none is configured",
                     hint="Give the incoming-webhook URL, or set `chat_webhook_url` (MEDCYCLE_CHAT_WEBHOOK_URL).")


def default_base_url(settings: Any) -> str:
    """Where people reach the UI: ``public_url``, else ``http://HOST:PORT``."""
    public = getattr(settings, "public_url", None)
    if public:
        return str(public).rstrip("/")
    return f"http://{getattr(settings, 'host', '127.0.0.1')}:{getattr(settings, 'port', 8080)}"


def post_card(card: ExperimentCard, url: str, *, format: str = "slack", timeout: float = DEFAULT_TIMEOUT,
              transport: httpx.BaseTransport | None = None) -> PostResult:
    """POST the card to a chat webhook as ``format`` (``slack`` or ``json``).

    Raises:
        UsageError: not an http(s) URL, or an unknown format.
        WebhookFailed: no answer within ``timeout`` seconds, no connection, or an answer other than 2xx.
    """
    target = webhook_target(url)
    body = payload(card, format)
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, transport=transport) as client:
            response = client.post(url.strip(), json=body, headers={"User-Agent": "medcycle-card/1"})
    except httpx.TimeoutException:
        raise WebhookFailed(f"the chat webhook at {target} did not answer within {timeout:g} s",
                            hint="Check that the chat service is reachable from this server, then post again.",
                            target=target) from None
    except httpx.HTTPError as exc:
        reason = str(exc).replace(url.strip(), target) or type(exc).__name__
        raise WebhookFailed(f"could not reach the chat webhook at {target}: {reason}",
                            hint="Check the URL and that this server can reach the chat service.",
                            target=target) from None
    seconds = time.perf_counter() - started
    if not 200 <= response.status_code < 300:
        said = " ".join(response.text.split())[:200]
        hint = ("The chat service failed; post again later." if response.status_code >= 500 else
                "Webhook URLs do not redirect: use the final URL." if 300 <= response.status_code < 400 else
                "Check the webhook URL (it may have been revoked) and the format (slack or json).")
        raise WebhookFailed(f"the chat webhook at {target} answered {response.status_code} "
                            f"{response.reason_phrase}" + (f": {said}" if said else ""),
                            hint=hint, target=target, status=response.status_code)
    return PostResult(target, format, response.status_code, seconds)
