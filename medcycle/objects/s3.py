"""S3 backend (AWS, MinIO, SeaweedFS, …): objects at ``PREFIX/sha256/ab/<digest>`` in one bucket.

Writes stream: a ``Path`` is hashed first and then uploaded from disk; a stream is spooled to a temp
file while being hashed, then uploaded; nothing holds a whole object in memory (``bytes`` are already
in memory and are sent as they are). An object that already exists with the right size is not sent
again. An object up to ``single_put_limit`` goes in one ``PutObject`` carrying its SHA-256
(``x-amz-checksum-sha256``), so the server refuses bytes that do not match the digest; a larger one is a
multipart upload (boto3's managed transfer, parts in parallel) that is aborted on any error.

Visibility is atomic by S3 semantics: a key appears only when ``PutObject`` or
``CompleteMultipartUpload`` succeeds, so a put killed at any point leaves nothing readable. A process
killed with ``kill -9`` during a multipart upload leaves its uploaded parts behind (invisible, but
billed); give the bucket a lifecycle rule "abort incomplete multipart uploads after N days".

One boto3 client is shared by every thread (botocore clients are thread-safe); its connection pool is
sized for ``workers`` parallel transfers of ``workers`` parts each. Errors from botocore are mapped to
the medcycle tree: a missing object is :class:`~medcycle.errors.NotFound`; a missing bucket, refused
credentials or no credentials are :class:`~medcycle.errors.ConfigError`; an unreachable or failing
server is :class:`~medcycle.errors.BackendUnavailable`. Each names what to check.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TypeVar, cast

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error

from medcycle.errors import (
    BackendUnavailable,
    ConfigError,
    IntegrityError,
    MedcycleError,
    NotFound,
    UsageError,
)
from medcycle.objects.base import (
    ALGORITHM,
    CHUNK,
    DIGEST_RE,
    ObjectInfo,
    ObjectStore,
    Source,
    check_digest,
    digest_file,
    missing,
    open_source,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

    from medcycle.settings import Settings

MiB = 1024 * 1024
PART_SIZE = 32 * MiB
"""Multipart part size: big enough that per-request overhead vanishes, small enough to retry cheaply."""
SINGLE_PUT_LIMIT = 64 * MiB
"""Objects up to this size go in one server-verified PutObject; larger ones are multipart uploads."""
METADATA_KEY = ALGORITHM  # x-amz-meta-sha256: the digest, for tools that look at the bucket directly

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket"})
_AUTH_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
    }
)
_BAD_DIGEST_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_SETTINGS_HINT = "MEDCYCLE_S3_ENDPOINT_URL, MEDCYCLE_S3_ACCESS_KEY_ID and MEDCYCLE_S3_SECRET_ACCESS_KEY"

T = TypeVar("T")


def make_client(
    *,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    workers: int = 8,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    max_attempts: int = 5,
) -> S3Client:
    """A thread-safe S3 client for the object store.

    Credentials left empty come from boto3's usual chain (``AWS_*`` environment, ``~/.aws``, instance
    role). With an ``endpoint_url`` (MinIO, SeaweedFS, …) addressing is path-style, which every
    S3-compatible server understands. Retries use botocore's ``standard`` mode (exponential backoff on
    throttling, 5xx and connection errors).
    """
    if bool(access_key_id) != bool(secret_access_key):
        raise ConfigError(
            "only one of the S3 access key id and secret access key is set",
            hint="Set both MEDCYCLE_S3_ACCESS_KEY_ID and MEDCYCLE_S3_SECRET_ACCESS_KEY, or neither "
            "(then the usual AWS credential chain is used).",
        )
    config = Config(
        region_name=region,
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": max_attempts},
        # put_many runs `workers` puts at once and a multipart put runs `workers` parts at once.
        max_pool_connections=max(10, min(workers * workers, 512)),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tcp_keepalive=True,
        user_agent_extra="medcycle",
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # Every read is verified against its SHA-256 by the store; botocore hashing it again would
        # double the CPU per byte read, and report damage as a transport error rather than an IntegrityError.
        response_checksum_validation="when_required",
    )
    try:
        # A session per client: boto3's default session is not thread-safe to create clients from.
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=config,
        )
    except ValueError as exc:  # botocore's "Invalid endpoint: ..."
        raise ConfigError(
            f"cannot use the S3 endpoint {endpoint_url!r}: {exc}",
            hint="Set MEDCYCLE_S3_ENDPOINT_URL to a URL such as http://127.0.0.1:8333, or leave it empty for AWS.",
        ) from exc
    except BotoCoreError as exc:
        raise ConfigError(
            f"cannot configure the S3 client: {exc}", hint=f"Check the region and {_SETTINGS_HINT}."
        ) from exc


class _Body(io.RawIOBase):
    """A GetObject body as a plain stream whose network errors are medcycle errors."""

    def __init__(self, body: Any, fail: Callable[[BaseException], NoReturn]) -> None:
        super().__init__()
        self._body = body
        self._fail = fail

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._body.read(None if size is None or size < 0 else size)
        except (BotoCoreError, ClientError, Urllib3Error, OSError) as exc:
            self._fail(exc)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


class S3ObjectStore(ObjectStore):
    """Objects in an S3 bucket under ``prefix``.

    Args:
        client: a boto3 S3 client, shared by all threads (see :func:`make_client`).
        bucket: the bucket; it must exist (``medcycle`` does not create buckets).
        prefix: key prefix inside the bucket, without leading or trailing ``/``; may be empty.
        workers: parallel objects in batch operations, and parallel parts in one multipart upload.
        part_size: multipart part size in bytes (S3 needs at least 5 MiB).
        single_put_limit: objects up to this size are sent in one ``PutObject``.
        spool_dir: where streams are spooled before upload (default: the system temp folder).
        list_page_size: keys asked for per ``ListObjectsV2`` request (at most 1000).
    """

    remote = True

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        workers: int = 8,
        part_size: int = PART_SIZE,
        single_put_limit: int = SINGLE_PUT_LIMIT,
        spool_dir: Path | None = None,
        list_page_size: int = 1000,
    ) -> None:
        super().__init__(workers=workers)
        if part_size < 5 * MiB:
            raise UsageError(f"S3 part size {part_size} is below the 5 MiB S3 minimum", hint="Use 16-64 MiB.")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.part_size = part_size
        self.single_put_limit = max(single_put_limit, part_size)
        self.spool_dir = spool_dir
        self.list_page_size = list_page_size
        self._root = f"{self.prefix}/{ALGORITHM}/" if self.prefix else f"{ALGORITHM}/"
        self._bucket_seen = False
        self._transfer_config = TransferConfig(
            multipart_threshold=self.single_put_limit + 1,
            multipart_chunksize=part_size,
            max_concurrency=max(1, workers),
            use_threads=True,
            preferred_transfer_client="classic",  # never awscrt: its errors and settings differ
        )

    @classmethod
    def from_settings(cls, bucket: str, prefix: str, settings: Settings | None, *, workers: int = 8) -> S3ObjectStore:
        """The store at ``s3://bucket/prefix`` with the endpoint, region and credentials of ``settings``."""
        secret = settings.s3_secret_access_key if settings else None
        client = make_client(
            endpoint_url=settings.s3_endpoint_url if settings else None,
            region=settings.s3_region if settings else "us-east-1",
            access_key_id=settings.s3_access_key_id if settings else None,
            secret_access_key=secret.get_secret_value() if secret else None,
            workers=workers,
        )
        return cls(client, bucket, prefix, workers=workers)

    # -- keys ---------------------------------------------------------------------------------
    def key_for(self, digest: str) -> str:
        return f"{self._root}{digest[:2]}/{digest}"

    # -- writes -------------------------------------------------------------------------------
    def put(self, source: Source, *, expected_digest: str | None = None) -> ObjectInfo:
        if expected_digest is not None:
            check_digest(expected_digest)
        if isinstance(source, bytes | bytearray | memoryview):
            return self._put_bytes(bytes(source), expected_digest)
        if isinstance(source, Path):
            return self._put_path(source, expected_digest)
        stream, owned = open_source(source)
        try:
            return self._put_stream(stream, expected_digest)
        finally:
            if owned:
                stream.close()

    def _put_bytes(self, data: bytes, expected: str | None) -> ObjectInfo:
        digest = hashlib.sha256(data).hexdigest()
        self._check_expected(expected, digest)
        if self._has(digest, len(data)):
            return ObjectInfo(digest, len(data))
        if len(data) <= self.single_put_limit:
            self._put_single(io.BytesIO(data), digest)
        else:
            self._put_multipart(io.BytesIO(data), digest)
        return ObjectInfo(digest, len(data))

    def _put_path(self, path: Path, expected: str | None) -> ObjectInfo:
        if not path.is_file():
            raise NotFound(f"file {path} does not exist", hint="Check the path.")
        before = path.stat()
        if expected is not None and self._has(expected, before.st_size):
            return ObjectInfo(expected, before.st_size)
        digest, size = digest_file(path)
        self._check_expected(expected, digest)
        if self._has(digest, size):
            return ObjectInfo(digest, size)
        if size <= self.single_put_limit:
            # The server checks the bytes against the digest, so a file changed meanwhile is refused.
            with path.open("rb") as fh:
                self._put_single(fh, digest)
        else:
            self._put_multipart(path, digest)
            after = path.stat()
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                with contextlib.suppress(MedcycleError):
                    self._delete_key(digest)
                raise IntegrityError(
                    f"{path} changed while it was being stored as {digest}; the upload was removed",
                    hint="Store the file again once nothing is writing to it.",
                    digest=digest,
                )
        return ObjectInfo(digest, size)

    def _put_stream(self, stream: BinaryIO, expected: str | None) -> ObjectInfo:
        h = hashlib.sha256()
        size = 0
        with tempfile.NamedTemporaryFile(prefix="medcycle-put-", dir=self.spool_dir) as spool:
            while chunk := stream.read(CHUNK):
                h.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            spool.flush()
            digest = h.hexdigest()
            self._check_expected(expected, digest)
            if self._has(digest, size):
                return ObjectInfo(digest, size)
            if size <= self.single_put_limit:
                spool.seek(0)
                self._put_single(cast(BinaryIO, spool), digest)
            else:
                self._put_multipart(Path(spool.name), digest)
        return ObjectInfo(digest, size)

    def _extra_args(self, digest: str) -> dict[str, Any]:
        return {"Metadata": {METADATA_KEY: digest}, "ContentType": "application/octet-stream"}

    def _put_single(self, body: BinaryIO, digest: str) -> None:
        checksum = base64.b64encode(bytes.fromhex(digest)).decode("ascii")
        self._call(
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=self.key_for(digest),
                # No ContentLength: botocore measures the body, so a file that grew since it was
                # hashed is sent whole and refused by the checksum, never silently truncated.
                Body=body,
                ChecksumSHA256=checksum,
                **self._extra_args(digest),
            ),
            digest=digest,
        )

    def _put_multipart(self, source: Path | BinaryIO, digest: str) -> None:
        """A managed multipart upload; on any error (also KeyboardInterrupt) s3transfer aborts it."""
        key = self.key_for(digest)

        def upload() -> None:
            with create_transfer_manager(self.client, self._transfer_config) as manager:
                if isinstance(source, Path):
                    future = manager.upload(os.fspath(source), self.bucket, key, self._extra_args(digest))
                else:
                    future = manager.upload(source, self.bucket, key, self._extra_args(digest))
                future.result()

        self._call(upload, digest=digest)

    # -- reads --------------------------------------------------------------------------------
    def _open_raw(self, digest: str) -> tuple[BinaryIO, int]:
        check_digest(digest)
        response = self._call(
            lambda: self.client.get_object(Bucket=self.bucket, Key=self.key_for(digest)), digest=digest
        )
        body = _Body(response["Body"], lambda exc: self._raise(exc, digest=digest))
        return cast(BinaryIO, body), int(response["ContentLength"])

    def stat(self, digest: str) -> ObjectInfo:
        check_digest(digest)
        head = self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=self.key_for(digest)), digest=digest)
        return ObjectInfo(digest, int(head["ContentLength"]), head.get("LastModified"))

    def _has(self, digest: str, size: int) -> bool:
        """Whether the object is stored with ``size`` bytes (a wrong-size object is overwritten)."""
        try:
            return self.stat(digest).size == size
        except NotFound:
            return False

    def delete(self, digest: str) -> bool:
        if not self.exists(check_digest(digest)):
            return False
        self._delete_key(digest)
        return True

    def _delete_key(self, digest: str) -> None:
        key = self.key_for(digest)
        self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=key), digest=digest)

    def list(self) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=self.bucket, Prefix=self._root, PaginationConfig={"PageSize": self.list_page_size}
            )
        )
        while True:
            page = self._call(lambda: next(pages, None))
            if page is None:
                return
            for item in page.get("Contents", []):
                key = item.get("Key", "")
                name = key.rpartition("/")[2]
                if DIGEST_RE.match(name) and key == self.key_for(name):
                    yield ObjectInfo(name, int(item.get("Size", 0)), item.get("LastModified"))

    def check(self) -> None:
        """Raise a medcycle error saying what to fix unless the bucket is reachable with these credentials."""
        self._bucket_seen = False
        if not self._bucket_exists():
            raise self._no_bucket()

    def close(self) -> None:
        self.client.close()

    # -- errors -------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], *, digest: str | None = None) -> T:
        try:
            return fn()
        except (BotoCoreError, ClientError) as exc:
            self._raise(exc, digest=digest)

    def _raise(self, exc: BaseException, *, digest: str | None = None) -> NoReturn:
        raise self._translate(exc, digest=digest) from exc

    def _translate(self, exc: BaseException, *, digest: str | None) -> MedcycleError:
        where = self.url
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in _NO_BUCKET_CODES:
                return self._no_bucket()
            if code in _MISSING_CODES and digest is not None:
                # A HEAD on a missing bucket also answers a bare 404: tell the two apart.
                if code != "NoSuchKey" and not self._bucket_exists():
                    return self._no_bucket()
                return missing(digest)
            if code in _AUTH_CODES or status == 403:
                return ConfigError(
                    f"the S3 server refused access to {where} ({code or status}): wrong credentials "
                    "or no permission on the bucket",
                    hint=f"Check {_SETTINGS_HINT} (or the AWS credential chain) and that these credentials "
                    "may read, write, list and delete in the bucket.",
                    url=where,
                    code=code,
                )
            if code in _BAD_DIGEST_CODES and digest is not None:
                return IntegrityError(
                    f"the S3 server received bytes that do not hash to {digest}",
                    hint="The source changed while it was being stored, or was damaged in transit; store it again.",
                    digest=digest,
                )
            if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}:
                return BackendUnavailable(
                    f"the S3 server behind {where} failed ({code or status}): {error.get('Message', '')}",
                    hint="Retry later; if it persists, check the S3 server's health and logs.",
                    url=where,
                    code=code,
                )
            return BackendUnavailable(
                f"the S3 request to {where} failed ({code or status}): {error.get('Message', '')}",
                hint=f"Check object_store_url and {_SETTINGS_HINT}; the server may not support this request.",
                url=where,
                code=code,
            )
        if isinstance(exc, FlexibleChecksumError) and digest is not None:
            return IntegrityError(
                f"object {digest} is corrupt: its bytes do not match the checksum the S3 server stored",
                hint="Restore the object from a replica or backup, then run `medcycle store fsck`.",
                digest=digest,
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return ConfigError(
                f"no S3 credentials for {where}: {exc}",
                hint=f"Set {_SETTINGS_HINT}, or configure the AWS credential chain (AWS_ACCESS_KEY_ID, ~/.aws).",
                url=where,
            )
        endpoint = self.client.meta.endpoint_url
        if isinstance(exc, BotoConnectionError):
            return BackendUnavailable(
                f"cannot reach the S3 server at {endpoint} for {where}: {exc}",
                hint="Check that the S3 server is running and reachable from here, and that "
                "MEDCYCLE_S3_ENDPOINT_URL names it (scheme, host and port).",
                url=where,
                endpoint=endpoint,
            )
        if isinstance(exc, HTTPClientError | IncompleteReadError | Urllib3Error | OSError):
            return BackendUnavailable(
                f"the connection to the S3 server at {endpoint} broke while reading from {where}: {exc}",
                hint="Retry; if it persists, check the network and the S3 server's health.",
                url=where,
                endpoint=endpoint,
            )
        return BackendUnavailable(
            f"the S3 client failed on {where}: {exc}",
            hint=f"Check object_store_url and {_SETTINGS_HINT}.",
            url=where,
        )

    def _bucket_exists(self) -> bool:
        if self._bucket_seen:
            return True
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_CODES or code in _NO_BUCKET_CODES:
                return False
            raise self._translate(exc, digest=None) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, digest=None) from exc
        self._bucket_seen = True
        return True

    def _no_bucket(self) -> ConfigError:
        return ConfigError(
            f"the S3 bucket {self.bucket!r} does not exist at {self.client.meta.endpoint_url}",
            hint="Create the bucket (e.g. `aws s3 mb s3://BUCKET --endpoint-url URL`), or fix the bucket in "
            "object_store_url and the server in MEDCYCLE_S3_ENDPOINT_URL.",
            url=self.url,
            bucket=self.bucket,
        )
