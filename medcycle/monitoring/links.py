"""Where things live in the UI and API (paths only; the chat and Sentry prefix the public URL)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode


def dashboard(model_version: str | None = None, *, source: str | None = None, since: datetime | None = None,
              until: datetime | None = None) -> str:
    query = {k: v for k, v in (("model_version", model_version), ("source", source),
                               ("since", since.isoformat(timespec="seconds") if since else None),
                               ("until", until.isoformat(timespec="seconds") if until else None)) if v}
    return "/ui/monitoring" + (f"?{urlencode(query)}" if query else "")


def alert(alert_id: str) -> str:
    return f"/ui/monitoring/alerts/{alert_id}"


def prediction(prediction_id: str) -> str:
    return f"/ui/monitoring/predictions/{prediction_id}"


def prediction_image(prediction_id: str) -> str:
    return f"/ui/monitoring/predictions/{prediction_id}/overlay.png"


def model(model_version: str) -> str:
    name, _, version = model_version.partition("@")
    return f"/ui/models/{name}/{version or 'latest'}"


def run(run_id: str) -> str:
    return f"/ui/runs/{run_id}"


def report(report_id: str) -> str:
    return f"/ui/monitoring/reports/{report_id}"
