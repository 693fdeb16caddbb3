"""Content-addressed object store: local folder, S3 and memory backends, chosen by URL scheme."""

from medcycle.objects.base import ObjectInfo, ObjectStore, check_digest, digest_bytes, digest_file
from medcycle.objects.factory import open_object_store

__all__ = ["ObjectInfo", "ObjectStore", "check_digest", "digest_bytes", "digest_file", "open_object_store"]
