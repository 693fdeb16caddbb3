"""Pick an object-store backend by URL scheme; backends are imported lazily (boto3 only for s3://)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from medcycle.errors import ConfigError
from medcycle.objects.base import ObjectStore
from medcycle.settings import Settings


def open_object_store(url: str, settings: Settings | None = None) -> ObjectStore:
    """Open the store named by ``url``: ``file:///path``, a plain path, ``s3://bucket/prefix`` or ``memory://``."""
    workers = settings.io_workers if settings else 8
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in {"", "file"}:
        from medcycle.objects.local import LocalObjectStore

        path = Path(unquote(parsed.path)) if scheme == "file" else Path(url)
        return LocalObjectStore(path, workers=workers)
    if scheme == "memory":
        from medcycle.objects.memory import MemoryObjectStore

        return MemoryObjectStore(workers=workers)
    if scheme == "s3":
        try:
            from medcycle.objects.s3 import S3ObjectStore
        except ImportError as exc:
            raise ConfigError(
                f"object_store_url {url!r} needs boto3, which is not installed",
                hint="Install the s3 extra: pip install 'medcycle[s3]'.",
            ) from exc
        if not parsed.netloc:
            raise ConfigError(f"object_store_url {url!r} names no bucket", hint="Use s3://bucket/prefix.")
        return S3ObjectStore.from_settings(parsed.netloc, parsed.path.strip("/"), settings, workers=workers)
    raise ConfigError(
        f"object_store_url scheme {scheme!r} is not supported",
        hint="Use a folder path, file:///path, s3://bucket/prefix or memory://.",
    )
