"""Settings: one declaration of every knob, layered defaults < config file < ``MEDCYCLE_*`` env < arguments.

Nothing here is built at import. Interfaces call :func:`load_settings` once and hand the result to
:class:`medcycle.platform.Platform`. Every field is documented in ``docs/configuration.md``
(``tests/test_docs.py`` fails when one is not).
"""

from __future__ import annotations

import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from medcycle.errors import ConfigError

ENV_PREFIX = "MEDCYCLE_"
CONFIG_ENV = "MEDCYCLE_CONFIG"
DEFAULT_SECRET = "medcycle-development-secret-change-me"  # noqa: S105 - refused outside development
CONFIG_FILE_NAME = "config.toml"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every setting of medcycle. Field descriptions are the documentation's source of truth."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    home: Path = Field(
        default_factory=lambda: Path("~/.medcycle"),
        description="Home folder: default database, object store, keys and logs live here.",
    )
    environment: Environment = Field(
        default=Environment.DEVELOPMENT,
        description="development, test or production. Outside development a default secret key is refused.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata store. Default: SQLite file `medcycle.db` in the home. "
        "PostgreSQL: `postgresql://user@host:5432/db` (driven by psycopg 3).",
    )
    object_store_url: str | None = Field(
        default=None,
        description="Where objects (images, masks, checkpoints) live. Default: the folder `objects` in the home. "
        "`file:///path`, a plain path, `s3://bucket/prefix` or `memory://` (tests only).",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint for `s3://` object stores (MinIO, SeaweedFS, …); empty = AWS."
    )
    s3_region: str = Field(default="us-east-1", description="S3 region name.")
    s3_access_key_id: str | None = Field(
        default=None, description="S3 access key; empty = the usual AWS_ACCESS_KEY_ID / credential chain."
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret key; empty = the usual AWS_SECRET_ACCESS_KEY / credential chain."
    )
    queue_url: str = Field(
        default="embedded",
        description="Job queue backend: `embedded` (a table in the metadata store) or `redis://host:6379/0` "
        "(Redis Streams consumer groups).",
    )
    secret_key: SecretStr = Field(
        default=SecretStr(DEFAULT_SECRET),
        description="Key that signs web sessions. Must be changed outside development.",
    )
    auth_enabled: bool = Field(default=True, description="Require an API token on the API and a login on the web UI.")
    host: str = Field(default="127.0.0.1", description="Address `medcycle serve` listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port `medcycle serve` listens on.")
    public_url: str | None = Field(
        default=None, description="URL users reach the UI at, used in links (default http://HOST:PORT)."
    )
    log_level: str = Field(default="INFO", description="Logging level: DEBUG, INFO, WARNING or ERROR.")
    api_freeze_heap: bool = Field(
        default=True,
        description="`medcycle serve` warms up (database, intake tables) and freezes the objects alive then out of "
        "the garbage collector's scans: a full collection of them stalled every request 100-270 ms.",
    )
    api_switch_interval_ms: float = Field(
        default=0.5, gt=0, le=100,
        description="Interpreter switch interval of `medcycle serve` (ms): how soon the event loop answering "
        "requests gets the interpreter lock from an intake thread (Python's default is 5).",
    )
    api_max_header_kib: int = Field(
        default=64, ge=8, le=4096,
        description="Bound on a request's request line and headers at `medcycle serve` (KiB): a longer head is "
        "answered 431 and its connection closed (uvicorn's HTTP parser has no bound of its own).",
    )
    api_max_object_bytes: int = Field(
        default=1024**3, ge=1,
        description="Bound on one `POST /v1/objects` body (bytes): a longer one is answered 413 and nothing is "
        "stored. The tracking SDK sends files over 64 MiB in parts, each under it.",
    )
    job_lease_seconds: float = Field(
        default=30.0, gt=0, description="How long a worker holds a job without a heartbeat before redelivery."
    )
    job_max_attempts: int = Field(
        default=5, ge=1, description="Deliveries of a job before it goes to the dead-letter state."
    )
    job_queue_limit: int = Field(
        default=10_000, ge=1, description="Jobs waiting or running per queue before enqueue answers 'queue full'."
    )
    gc_grace_seconds: float = Field(
        default=86_400.0, ge=0, description="Unreferenced objects younger than this are kept by `medcycle store gc`."
    )
    io_workers: int = Field(default=8, ge=1, le=256, description="Threads for parallel object transfers.")
    deid_key_file: Path | None = Field(
        default=None,
        description="The de-identification key (pseudonyms and date shifts). Default: `keys/deid.key` in the home, "
        "created on first use with mode 0600. Keep it apart from the data and back it up: without it later "
        "studies of a patient no longer re-link.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Local object cache for `medcycle dataset pull` (hard-linked into pull folders on the same "
        "file system). Default: `cache` in the home.",
    )
    ingest_max_file_bytes: int = Field(
        default=4 * 1024**3, ge=1, description="Files larger than this are rejected by `medcycle data ingest`."
    )
    sentry_dsn: SecretStr | None = Field(
        default=None, description="Sentry DSN for errors of the API, workers, agents and the monitoring loop "
        "(patient data scrubbed before sending); empty = off.",
    )
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0,
                                             description="Share of requests traced by Sentry (0 to 1).")
    prediction_retention_days: float = Field(default=90.0, gt=0,
                                             description="Days the prediction log keeps records (`monitor purge`).")
    monitoring_report_times: str = Field(default="06:00,14:00,22:00",
                                         description="When `monitor schedule` writes and posts reports (HH:MM, comma "
                                         "separated).")
    monitoring_timezone: str = Field(default="UTC", description="Time zone of `monitoring_report_times`.")
    monitoring_interval_seconds: float = Field(default=300.0, gt=0,
                                               description="Seconds between drift and alert checks of `monitor "
                                               "schedule`.")
    monitoring_webhook_format: str = Field(default="slack", pattern="^(slack|json)$",
                                           description="Chat message shape: `slack` (blocks) or `json` (generic).")
    monitoring_latency_p95_ms: float = Field(default=10000.0, gt=0,
                                             description="p95 latency above which an alert fires.")
    chat_webhook_url: SecretStr | None = Field(
        default=None,
        description="Incoming-webhook URL (Slack-compatible) that experiment cards, reports and alerts are posted "
        "to; empty = give one per post.",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("log_level", mode="after")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @model_validator(mode="after")
    def _enforce_non_default_secret(self) -> Settings:
        if self.environment != Environment.DEVELOPMENT and self.secret_key.get_secret_value() == DEFAULT_SECRET:
            raise ValueError(
                f"the default secret_key is refused in {self.environment.value}; "
                f"set {ENV_PREFIX}SECRET_KEY to a long random value"
            )
        return self

    # -- derived values ---------------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'medcycle.db'}"

    @property
    def resolved_object_store_url(self) -> str:
        return self.object_store_url or (self.home / "objects").as_uri()

    @property
    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.home / "cache").expanduser()

    @property
    def resolved_deid_key_file(self) -> Path:
        return (self.deid_key_file or self.home / "keys" / "deid.key").expanduser()

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


def _resolve_config_file(config_file: Path | str | None, overrides: dict[str, Any]) -> Path | None:
    """Explicit path > ``MEDCYCLE_CONFIG`` > ``HOME/config.toml`` when it exists."""
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", hint="Pass an existing TOML file or drop --config.")
        return path
    env_path = os.environ.get(CONFIG_ENV)
    if env_path:
        path = Path(env_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV} names {path}, which does not exist", hint=f"Fix or unset {CONFIG_ENV}.")
        return path
    home = overrides.get("home") or os.environ.get(f"{ENV_PREFIX}HOME") or "~/.medcycle"
    candidate = Path(home).expanduser() / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", hint="Fix the file's syntax.") from exc
    section = data.get("medcycle", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [medcycle] must be a table")
    return dict(section)


class _FileSource(PydanticBaseSettingsSource):
    """Values read from the TOML config file (lowest priority above the defaults)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults < config file < ``MEDCYCLE_*`` environment < ``overrides``.

    Args:
        config_file: a TOML file (flat keys, or a ``[medcycle]`` table). Default: ``MEDCYCLE_CONFIG`` or
            ``HOME/config.toml`` when it exists.
        overrides: values from CLI arguments or code; ``None`` values are ignored.

    Raises:
        ConfigError: naming the offending setting and what to do.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    path = _resolve_config_file(config_file, given)
    file_values = _read_toml(path) if path else {}

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _FileSource(settings_cls, file_values))

    try:
        layered = _Layered(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        origin = f" (config file {path})" if path else ""
        raise ConfigError(
            f"invalid settings{origin}: {problems}",
            hint="See docs/configuration.md for every setting, its environment variable and its default.",
        ) from None
    return Settings.model_validate(layered.model_dump())
