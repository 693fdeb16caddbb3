"""The Jinja2 environment (autoescape on, strict undefined) and the one function views render through."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from medcycle import __version__
from medcycle.auth.roles import Permission, Principal
from medcycle.web.nav import ADMIN, STAGES

WEB_ROOT = Path(__file__).resolve().parent
TEMPLATES = WEB_ROOT / "templates"
STATIC = WEB_ROOT / "static"

# Pages are self-contained: our own scripts and styles only, no frames, forms post back to us.
# Plotly sets inline styles on the elements it draws, hence 'unsafe-inline' for styles only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def format_time(value: datetime | None) -> str:
    """A timestamp as ``2024-05-01 12:00:03 UTC``; an em dash for none."""
    if value is None:
        return "\u2014"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_bytes(size: int) -> str:
    """A byte count in binary units (``1.5 MiB``)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def format_hint(text: str | None) -> Markup:
    """A message or hint with its `backticked` commands set as code; everything else escaped."""
    if not text:
        return Markup("")
    pieces = text.split("`")
    if len(pieces) % 2 == 0:  # an unpaired backtick: show the text as it is
        return escape(text)
    code = Markup("<code>{}</code>")
    return Markup("").join(code.format(piece) if i % 2 else escape(piece) for i, piece in enumerate(pieces))


def format_json(value: Any) -> str:
    """Compact JSON for small detail fields shown in tables."""
    return json.dumps(value, sort_keys=True, default=str, separators=(", ", ": "))


class Renderer:
    """Renders templates with the layout's shared context (navigation, the principal, asset URLs)."""

    def __init__(self, *, auth_enabled: bool) -> None:
        self.auth_enabled = auth_enabled
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["time"] = format_time
        self.env.filters["bytes"] = format_bytes
        self.env.filters["json"] = format_json
        self.env.filters["hint"] = format_hint
        self.env.globals["static"] = self.static_url
        self.env.globals["version"] = __version__

    @staticmethod
    def static_url(path: str) -> Markup:
        """URL of one of our static files, versioned so browsers refetch after an upgrade."""
        return Markup("/static/{}?v={}").format(path, __version__)

    def render(
        self,
        request: Request,
        template: str,
        *,
        principal: Principal | None,
        active: str | None = None,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """One page: the template with the layout context, security headers and ``status_code``."""
        nav_stages = [item for item in STAGES if principal is None or principal.can(item.permission)]
        nav_admin = [item for item in ADMIN if principal is not None and principal.can(item.permission)]
        body = self.env.get_template(template).render(
            request_path=request.url.path,
            principal=principal,
            is_admin=principal is not None and principal.can(Permission.ADMIN),
            auth_enabled=self.auth_enabled,
            nav_stages=nav_stages if principal is not None else [],
            nav_admin=nav_admin,
            active=active,
            **context,
        )
        return HTMLResponse(body, status_code=status_code, headers={**SECURITY_HEADERS, **(headers or {})})


def renderer(request: Request) -> Renderer:
    """The app's renderer (built once by :func:`medcycle.web.mount_web`)."""
    found: Renderer = request.app.state.web_renderer
    return found
