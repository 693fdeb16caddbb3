"""Serving settings: batching, deadlines, upload limits, header rules, webhooks — one declaration of each knob.

Layered like :mod:`medcycle.settings`: defaults < the ``[serving]`` table of ``HOME/serving.toml`` (or the file
``MEDCYCLE_SERVING_CONFIG`` names) < ``MEDCYCLE_SERVING_*`` environment variables < arguments. Changing how the
service batches, which headers a model accepts or how long a request may wait is a settings change, never a
code change. Every field is documented in ``docs/serving.md``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medcycle.errors import ConfigError
from medcycle.settings import Settings

ENV_PREFIX = "MEDCYCLE_SERVING_"
CONFIG_ENV = "MEDCYCLE_SERVING_CONFIG"
CONFIG_FILE_NAME = "serving.toml"
ANY_MODEL = "*"


class ServingSettings(BaseModel):
    """Every serving knob. Field descriptions are the documentation's source of truth."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str = Field("inference", description="Queue inference jobs go to (and workers take from).")
    webhook_queue: str = Field("inference-webhooks", description="Queue of pending webhook deliveries.")
    max_batch_images: int = Field(16, ge=1, le=4096,
                                  description="A batch closes once its jobs hold this many images/slices.")
    max_delay_ms: int = Field(10, ge=0, le=60_000,
                              description="Longest wait, from a batch's first job, for more jobs to fill it.")
    idle_wait_ms: int = Field(500, ge=1, le=60_000, description="How long an idle worker waits per poll.")
    default_deadline_s: float = Field(600.0, gt=0, le=7 * 86_400,
                                      description="Deadline of a request that gives none; expired jobs are "
                                      "dropped before compute.")
    max_wait_s: float = Field(60.0, ge=0, le=600, description="Most a client may wait on `?wait=SECONDS`.")
    max_upload_bytes: int = Field(1024**3, ge=1, description="Largest request body (upload) accepted.")
    max_files: int = Field(2000, ge=1, description="Most files in one request (zip members included).")
    zip_max_bytes: int = Field(2 * 1024**3, ge=1, description="Most uncompressed bytes of one zip archive.")
    zip_max_ratio: float = Field(200.0, gt=1, description="Largest compression ratio of a zip member larger "
                                 "than 1 MiB (zip bombs are refused).")
    header_rules: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Header rules of the OOD gate per model name (`*`: every model), e.g. "
        '`{"nodules": {"modality": ["CR", "DX"], "body_part": ["CHEST"]}}`. They replace the version\'s '
        "contract `input` rules.")
    device: str = Field("auto", description="`cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present).")
    forward_batch: int = Field(0, ge=0, le=4096,
                               description="images per forward pass (a worker's batch is cut into passes of at most "
                               "this many); 0: on the CPU, the size with the least time per image, measured when a "
                               "model is loaded (on a CPU the cheapest size an image is often not the largest), "
                               "on CUDA `max_batch_images`.")
    cpu_threads: int = Field(0, ge=0, le=1024,
                             description="torch CPU threads of each worker; 0: this machine's cores shared out "
                             "among its workers (`cores // workers`, at least 1; cores as the process's affinity and "
                             "a cgroup CPU quota allow).")
    worker_priority: Literal["normal", "low", "idle"] = Field(
        "low", description="CPU priority a worker takes at start so the API on the same cores answers first: "
        "`low` (nice 10), `idle` (Linux SCHED_IDLE: only CPU time nothing else wants) or `normal`.")
    keep_freed_memory: bool = Field(True, description="A worker keeps the memory it frees for its next batch "
                                    "(glibc malloc: no mmap per large allocation, no heap trimming) instead of "
                                    "page-faulting fresh pages on every forward pass; its resident memory stays at its "
                                    "largest batch's peak.")
    freeze_heap: bool = Field(True, description="A worker process (one that took its CPU share: `medcycle "
                              "serve-worker`, a deployed worker) collects once and freezes the objects alive after "
                              "it loads a model (gc.freeze), so that full collections no longer walk its ~400,000 "
                              "long-lived objects (about 0.3 s of CPU each with DenseNet121 loaded).")
    intake_threads: int = Field(0, ge=0, le=256,
                                description="Uploads of up to `intake_large_bytes` the API takes in (reads, "
                                "de-identifies, stores, queues) at once; 0: one where the object store is this "
                                "machine's disk (that work is CPU under Python's interpreter lock: a second thread "
                                "only contends with the first and with the event loop that answers 429s), two per "
                                "core where it is remote (S3: its calls mostly wait).")
    intake_large_bytes: int = Field(8 * 1024**2, ge=0,
                                    description="Uploads larger than this (by Content-Length) are taken in beside "
                                    "the small ones, at most one per core (at least 2) at once: a large zip does not "
                                    "hold up radiographs.")
    predictor_cache: int = Field(4, ge=1, le=64, description="Model versions a worker keeps loaded.")
    webhook_attempts: int = Field(8, ge=1, le=100, description="Deliveries of a webhook before it is dead-lettered.")
    webhook_timeout_s: float = Field(10.0, gt=0, le=120, description="Timeout of one webhook POST.")
    webhook_backoff_s: float = Field(0.5, ge=0, le=3600,
                                     description="First retry delay of a failed webhook; doubles per attempt "
                                     "(at most 5 minutes).")

    @field_validator("header_rules")
    @classmethod
    def _rules(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from medcycle.errors import ValidationFailed
        from medcycle.evaluation.ood import HeaderRules

        for model, rules in value.items():
            try:
                HeaderRules.from_dict(rules, where=f"rules of {model!r}")
            except ValidationFailed as exc:
                raise ValueError(f"{exc.message} ({exc.hint})") from None
        return value

    def rules_for(self, model: str) -> dict[str, Any] | None:
        """The header rules configured for ``model`` (its own, else the ``*`` entry)."""
        return self.header_rules.get(model, self.header_rules.get(ANY_MODEL))


def _env_values() -> dict[str, Any]:
    import json

    out: dict[str, Any] = {}
    for name, field in ServingSettings.model_fields.items():
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        annotation = str(field.annotation)
        if "dict" in annotation:
            try:
                out[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} is not JSON: {exc}",
                                  hint='Give a JSON object, e.g. {"nodules": {"modality": ["DX"]}}.') from exc
        else:
            out[name] = raw
    return out


def _file_values(settings: Settings, path: Path | None) -> tuple[dict[str, Any], Path | None]:
    if path is None:
        env = os.environ.get(CONFIG_ENV)
        path = Path(env).expanduser() if env else settings.home / CONFIG_FILE_NAME
        if env and not path.is_file():
            raise ConfigError(f"{CONFIG_ENV} names {path}, which does not exist", hint=f"Fix or unset {CONFIG_ENV}.")
        if not path.is_file():
            return {}, None
    elif not path.is_file():
        raise ConfigError(f"serving config {path} does not exist", hint="Pass an existing TOML file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"serving config {path} is not valid TOML: {exc}", hint="Fix the file's syntax.") from exc
    section = data.get("serving", data)
    if not isinstance(section, dict):
        raise ConfigError(f"serving config {path}: [serving] must be a table", hint="Write [serving] then key = value.")
    return dict(section), path


def load_serving_settings(settings: Settings, config_file: Path | None = None, **overrides: Any) -> ServingSettings:
    """Serving settings for ``settings.home``: defaults < file < ``MEDCYCLE_SERVING_*`` < ``overrides``.

    Raises:
        ConfigError: naming the offending setting.
    """
    values, path = _file_values(settings, config_file)
    values.update(_env_values())
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServingSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'serving'}: {e['msg']}" for e in exc.errors())
        origin = f" (file {path})" if path else ""
        raise ConfigError(f"invalid serving settings{origin}: {problems}",
                          hint="See docs/serving.md for every serving setting and its environment variable.") from None
