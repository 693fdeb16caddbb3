"""Params and tags as the store keeps them: canonical text (numbers at full precision), nested keys flattened."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from medcycle.errors import UsageError
from medcycle.experiments.ingest import MAX_VALUE, check_key
from medcycle.experiments.records import Kind, Record


def param_text(value: Any) -> str:
    """The canonical text a param value is stored as (numbers keep full precision)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # NumPy / torch scalars
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return str(value)
    return json.dumps(value, default=str, sort_keys=True)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"lr": 1}}`` → ``{"model.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def params_record(params: Mapping[str, Any]) -> Record | None:
    values = {check_key(k, "param name"): param_text(v) for k, v in flatten(params).items()}
    for key, text in values.items():
        if len(text) > MAX_VALUE:
            raise UsageError(f"param {key!r} is {len(text)} characters long (at most {MAX_VALUE})",
                             hint="Log long configurations with run.log_artifact.")
    return Record(Kind.PARAMS, {"params": values}) if values else None


def tags_record(tags: Mapping[str, Any]) -> Record | None:
    values = {check_key(k, "tag name"): param_text(v)[:1024] for k, v in tags.items()}
    return Record(Kind.TAGS, {"tags": values}) if values else None
