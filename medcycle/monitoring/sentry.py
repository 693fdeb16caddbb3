"""Sentry for the API, workers and agents: off unless ``sentry_dsn`` is set, and patient data scrubbed first.

:func:`init_sentry` is called once per process (``component``: ``api``, ``worker``, ``agent``,
``monitor``). Sentry's own PII options stay off (``send_default_pii`` is never set, local variables and
request bodies are not collected), and :func:`before_send` / :func:`before_breadcrumb` scrub every
event before it leaves the process: the user, cookies and credentials are dropped; exception messages, log messages,
breadcrumbs, tags, extras and request data pass through :mod:`medcycle.monitoring.scrub` (DICOM person
names, UIDs, dates, record numbers, patient keywords). Page-severity alerts are sent as Sentry messages
fingerprinted by the alert key (:func:`capture_alert`), so Sentry groups repeats and its own alert
routing (e.g. to Slack) takes over.
"""

from __future__ import annotations

from typing import Any

from medcycle import __version__
from medcycle.monitoring.scrub import REPLACEMENT, scrub, scrub_text

SAFE_HEADERS = frozenset({"user-agent", "content-type", "content-length", "accept", "host", "x-request-id"})
_SCRUBBED_SECTIONS = ("extra", "tags", "contexts", "breadcrumbs", "exception", "threads", "logentry", "message",
                      "transaction")


def dsn_of(settings: Any) -> str | None:
    value = getattr(settings, "sentry_dsn", None)
    if value is not None and hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return value.strip() if isinstance(value, str) and value.strip() else None


def _request(request: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: request[k] for k in ("method",) if k in request}
    if "url" in request:
        out["url"] = scrub_text(str(request["url"]).split("?")[0])
    headers = request.get("headers")
    if isinstance(headers, dict):
        out["headers"] = {k: scrub_text(str(v)) for k, v in headers.items() if k.lower() in SAFE_HEADERS}
    return out


def _frames(value: Any) -> None:
    """Drop local variables from every stack frame (``include_local_variables`` is off; belt and braces)."""
    if isinstance(value, dict):
        value.pop("vars", None)
        for v in value.values():
            _frames(v)
    elif isinstance(value, list):
        for v in value:
            _frames(v)


def before_send(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event with patient data and credentials removed (see the module docstring)."""
    event.pop("user", None)
    if isinstance(event.get("request"), dict):
        event["request"] = _request(event["request"])
    for section in _SCRUBBED_SECTIONS:
        if section in event:
            _frames(event[section])
            event[section] = scrub(event[section])
    if isinstance(event.get("server_name"), str):
        event["server_name"] = scrub_text(event["server_name"])
    return event


def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    scrubbed: dict[str, Any] = scrub(crumb)
    return scrubbed


def init_sentry(settings: Any, *, component: str) -> bool:
    """Start Sentry for this process when ``sentry_dsn`` is set; returns whether it is on."""
    dsn = dsn_of(settings)
    if dsn is None:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=dsn,
        environment=str(getattr(getattr(settings, "environment", None), "value", None) or "development"),
        release=f"medcycle@{__version__}",
        include_local_variables=False,  # and no send_default_pii: off by default (deprecated in newer SDKs)
        max_request_body_size="never",
        traces_sample_rate=float(getattr(settings, "sentry_traces_sample_rate", 0.0) or 0.0),
        before_send=before_send,  # type: ignore[arg-type]
        before_breadcrumb=before_breadcrumb,
        send_client_reports=False,
        auto_session_tracking=False,
    )
    sentry_sdk.set_tag("component", component)
    return True


def enabled() -> bool:
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover - a dependency; tolerate its absence in slim installs
        return False
    return bool(sentry_sdk.get_client().is_active())


def capture_alert(row: Any, base_url: str = "") -> str | None:
    """Send a page-severity alert to Sentry as a message grouped by its key; the event id, or None when off."""
    if not enabled():
        return None
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["medcycle-alert", row.key]
        scope.set_tag("alert_kind", row.kind)
        scope.set_tag("alert_severity", row.severity)
        if row.model_version:
            scope.set_tag("model_version", row.model_version)
        links = {k: f"{base_url}{v}" for k, v in (row.links or {}).items() if isinstance(v, str)}
        scope.set_context("alert", {"id": row.id, "key": row.key, "count": row.count, "links": links})
        return sentry_sdk.capture_message(f"[{row.severity}] {row.title}", level="error")


def shutdown() -> None:
    """Flush and stop the client (tests, and processes that end)."""
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover
        return
    client = sentry_sdk.get_client()
    if client.is_active():
        client.flush(timeout=5)
        client.close(timeout=5)
    sentry_sdk.init()  # an inactive client: capture calls become no-ops


__all__ = ["REPLACEMENT", "before_send", "capture_alert", "dsn_of", "enabled", "init_sentry", "shutdown"]
