"""What every stage of the demo shares: the platform, the console, the profile, and what earlier stages made.

A stage reads what it needs from :class:`Demo` (set by the stages before it), prints what it did with
:meth:`Demo.say`, and records where to look in the UI with :meth:`Demo.look` — the closing table lists every
stage's pages. Stages are idempotent: each first looks for what it would make and reuses it (saying so), so a
second run of the demo adds nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from medcycle.errors import UsageError
from medcycle.platform import Platform

ACTOR = "demo"
XR_DATASET = "chest-xr"
CT_DATASET = "demo-ct"
MODEL = "chest-lesion"
PROJECT = "chest-lesion"
PRODUCTION = "production"


@dataclass(frozen=True, slots=True)
class Profile:
    """How big the demo is. ``full`` is what ``make run`` does (within 10 minutes on 2 cores); ``quick`` is the
    same cycle on smaller images and shorter training, for tests."""

    name: str
    # 160: test splits of 32 give the release gates steady answers (at 96, one split in five failed a good model);
    # val + test hold the drift reference (2 windows) and val calibrates the OOD gate (>= 20)
    radiographs: int = 160
    size: int = 128
    volumes: int = 12
    volume_size: int = 48
    slices: int = 24
    ingest_jobs: int = 2
    train_size: int = 64
    epochs: tuple[int, int] = (6, 12)  # the first and the second experiment
    widths: tuple[int, int] = (8, 8)
    threads: int | None = None  # torch threads (None: the cores less one)
    resamples: int = 1000
    light_tracking: bool = False  # runs without resource sampling, output capture and code capture
    rest_studies: int = 12
    cstore_studies: int = 6
    # some are refused by the OOD gate: 64 keep at least 3 windows of 16 that hold nothing but the drift, so the
    # page (2 drifted windows of 3) does not hang on how many the gate refused
    drift_studies: int = 64
    drift_window: int = 16

    @property
    def incoming(self) -> int:
        """Radiographs to generate for the serving traffic: normal ones from every scanner, then enough of
        one scanner for the drift (the generator spreads studies over its four scanners in turn)."""
        return self.rest_studies + self.cstore_studies + 1 + 4 * self.drift_studies + 4


PROFILES: dict[str, Profile] = {
    "full": Profile("full"),
    "quick": Profile("quick", radiographs=160, size=64, volumes=2, volume_size=32, slices=8, ingest_jobs=1,
                     train_size=32, epochs=(6, 10), threads=1, resamples=200, light_tracking=True, rest_studies=6,
                     cstore_studies=3, drift_studies=64),
}


def profile_of(value: str | Profile) -> Profile:
    if isinstance(value, Profile):
        return value
    try:
        return PROFILES[value]
    except KeyError:
        raise UsageError(f"unknown demo profile {value!r}", hint=f"Use one of: {', '.join(PROFILES)}.") from None


@dataclass
class Demo:
    """The demo's shared state (see the module docstring)."""

    platform: Platform
    console: Console
    profile: Profile
    token: str = ""
    step: int = 0
    started: float = field(default_factory=time.monotonic)
    stage_started: float = field(default_factory=time.monotonic)
    looks: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, label, path)
    missing: list[str] = field(default_factory=list)  # stages left out, and why
    # what the stages made, for the ones after them
    data_root: Path | None = None
    incoming_root: Path | None = None
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)  # xr instance uid -> labels.csv row (+ "file")
    v1: str | None = None
    v2: str | None = None
    task_ref: str | None = None
    consensus_set: str | None = None
    hypothesis: str | None = None
    runs: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # NAME@vN registered, in order
    promoted: list[str] = field(default_factory=list)
    served_jobs: list[str] = field(default_factory=list)
    alert_id: str | None = None
    # where the stages find the services: None runs the API (and a serving worker per drain) in this process;
    # a URL sends REST requests to that running API, and workers_elsewhere waits for separate worker processes
    api_url: str | None = None
    workers_elsewhere: bool = False
    _client: Any = None

    def http(self) -> Any:
        """An HTTP client of the app (REST API and web UI), logged in with the admin token: in-process, or to
        :attr:`api_url` when the API runs elsewhere."""
        if self._client is None and self.api_url is not None:
            import httpx

            self._client = httpx.Client(base_url=self.api_url, timeout=60.0, trust_env=False,
                                        headers={"Authorization": f"Bearer {self.token}"})
        if self._client is None:
            from fastapi.testclient import TestClient

            from medcycle.api.app import create_app

            client = TestClient(create_app(self.platform, migrate=False), base_url=self.url,
                                headers={"Authorization": f"Bearer {self.token}"})
            client.post("/login", data={"token": self.token, "next": "/"}, follow_redirects=False)
            self._client = client
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def home(self) -> Path:
        return self.platform.settings.home

    @property
    def url(self) -> str:
        return self.platform.settings.resolved_public_url

    def begin(self, title: str) -> None:
        self.step += 1
        self.stage_started = time.monotonic()
        self.console.print(f"\n[bold cyan]{self.step}. {escape(title)}[/]")

    def say(self, text: str) -> None:
        self.console.print(f"   {escape(text)}", highlight=False, soft_wrap=True)

    def done(self) -> None:
        self.console.print(f"   [dim]({time.monotonic() - self.stage_started:.1f} s)[/]", highlight=False)

    def look(self, label: str, path: str) -> None:
        """Record (and print) where this stage shows in the UI; ``path`` starts with ``/``."""
        stage = f"{self.step}"
        self.looks.append((stage, label, path))
        self.console.print(f"   [green]look[/] {escape(label)}: {escape(self.url + path)}", highlight=False,
                           soft_wrap=True)

    def skip(self, stage: str, why: str) -> None:
        """Leave a stage out (said now and again in the closing table)."""
        self.missing.append(f"{stage}: {why}")
        self.say(f"{stage} left out: {why}")
