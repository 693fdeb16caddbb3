"""Static files: our own CSS/JS from ``web/static`` and plotly.js read from the installed ``plotly`` package.

No third-party code is copied into the repository: ``/static/vendor/plotly.min.js`` streams the file the
``plotly`` Python package ships, found at request time, with long-lived cache headers keyed on its version.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from medcycle.errors import NotFound
from medcycle.web.render import STATIC

router = APIRouter(include_in_schema=False)

PLOTLY_URL = "/static/vendor/plotly.min.js"
VENDOR_CACHE = "public, max-age=604800, immutable"


@cache
def plotly_bundle() -> tuple[Path, str]:
    """Path of the plotly.js bundle inside the installed ``plotly`` package, and the package version."""
    spec = importlib.util.find_spec("plotly")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            try:
                return path, version("plotly")
            except PackageNotFoundError:  # pragma: no cover - found on disk but without metadata
                return path, "unknown"
    raise NotFound(
        "plotly.js is not available: the plotly package is not installed",
        hint="Install medcycle with its dependencies (`pip install medcycle`), which include plotly.",
    )


@router.get(PLOTLY_URL)
def plotly_js(request: Request) -> Response:
    path, plotly_version = plotly_bundle()
    etag = f'"plotly-{plotly_version}"'
    headers = {"Cache-Control": VENDOR_CACHE, "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type="text/javascript; charset=utf-8", headers=headers)


def static_files() -> StaticFiles:
    """Our own stylesheet, scripts and icon."""
    return StaticFiles(directory=STATIC, check_dir=True)
