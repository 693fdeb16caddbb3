"""What every command receives: the global options and a lazily built Platform."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from medcycle.platform import Platform
from medcycle.settings import Settings, load_settings


@dataclass
class CliState:
    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False
    _platform: Platform | None = None

    @property
    def actor(self) -> str:
        """Who the audit log names for local CLI use: the operating-system account."""
        try:
            return f"local:{getpass.getuser()}"
        except (KeyError, OSError):
            return "local:unknown"

    def settings(self, **extra: Any) -> Settings:
        return load_settings(self.config_file, **{**self.overrides, **extra})

    def platform(self, *, migrate: bool = True) -> Platform:
        """The platform for this invocation; migrations are applied on first use unless told not to."""
        if self._platform is None:
            self._platform = Platform(self.settings())
            if migrate:
                self._platform.migrate()
        return self._platform

    def close(self) -> None:
        if self._platform is not None:
            self._platform.close()
            self._platform = None


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj
