"""``submit``: every intake (REST, DICOMweb STOW-RS, the C-STORE SCP) turns inputs into one queued job here.

Inputs are checked and cleaned (:mod:`medcycle.serving.inputs`), stored as objects, and the job's payload
names them by digest only — never pixels, never file names. The model reference is checked to exist now but
an alias is resolved when a worker runs the job (so a rollback applies to jobs not yet started). The queue
is bounded: a full queue raises :class:`~medcycle.errors.QueueFull` (HTTP 429 + Retry-After) and nothing is
enqueued. The same idempotency key on the inference queue returns the first job.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlparse

from medcycle.errors import BackendUnavailable, UsageError, ValidationFailed
from medcycle.jobs.base import Job
from medcycle.serving.config import ServingSettings, load_serving_settings
from medcycle.serving.inputs import InputLike, Prepared, Upload, cases, materialise, prepare
from medcycle.serving.schemas import Params
from medcycle.serving.scratch import new_tag, remove_tagged, scratch_dir
from medcycle.store.base import utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from medcycle.platform import Platform

PAYLOAD_VERSION = 1
INPUT_REF = "serving_input"
MAX_KEY = 200


def check_webhook(url: str | None) -> str | None:
    """The webhook URL if it is an absolute http(s) URL without credentials."""
    if url is None or not url.strip():
        return None
    import httpx

    url = url.strip()
    problem = UsageError(f"webhook {url[:80]!r} is not an http(s) URL",
                         hint="Give an absolute URL such as https://ris.example.org/hooks/ai (no user:password@, "
                              "no spaces, a port from 1 to 65535).")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise problem
    try:  # what the sender will post to must parse there too: an unparsable URL is refused now, not at delivery
        parsed = urlparse(url)
        port = parsed.port
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        raise problem from None
    if parsed.scheme not in {"http", "https"} or not parsed.hostname or parsed.username or parsed.password \
            or port == 0:
        raise problem
    _check_webhook_host(url, parsed.hostname)
    return url


def _check_webhook_host(url: str, host: str) -> None:
    """Refuse a webhook to an address no receiver listens on and that only reaches the worker's own cloud: a
    link-local address (169.254.0.0/16 and fe80::/10, where instance metadata services answer), the unspecified
    address, multicast, or a metadata service's name. Loopback and private addresses stay allowed (a RIS on the
    hospital's network); workers' egress is the operator's to filter (docs/serving.md, Webhooks)."""
    import ipaddress
    import socket

    name = host.rstrip(".").lower()
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        try:  # the legacy IPv4 forms the resolver takes too (2852039166, 0xa9fea9fe, 169.254.43518)
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            address = None
    if address is None:
        bad = name in METADATA_HOSTS
    else:
        mapped = getattr(address, "ipv4_mapped", None)
        address = mapped or address
        bad = address.is_link_local or address.is_unspecified or address.is_multicast
    if bad:
        raise UsageError(f"webhook {url[:80]!r} points at a link-local, metadata or unspecified address",
                         hint="Give the receiver's own address or name; link-local addresses (169.254.x.x, fe80::) "
                              "and metadata services are refused.")


METADATA_HOSTS: Final = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                                   "instance-data.ec2.internal"})


def store_failed(exc: OSError, what: str = "the object store") -> BackendUnavailable:
    """A failed write of intake's (a read-only or full object store or scratch folder, a permission taken away) as
    the 503 it is: the service cannot take input now, the request was fine. Named by the error only (the path
    may name a folder the operator chose; the message stays short)."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    reason = exc.strerror or type(exc).__name__
    return BackendUnavailable(
        f"{what} cannot be written now ({name}: {reason}); nothing was queued",
        hint="Check that the object store (and the scratch folder) is writable and has free space "
             "(`medcycle doctor`), then send the request again.")


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY or not key.isprintable():
        raise UsageError("the idempotency key must be 1-200 printable characters",
                         hint="Use a UUID per logical request, e.g. Idempotency-Key: 3f2b…")
    return key.strip()


class IdempotencyKeyReused(ValidationFailed):
    """An idempotency key sent again with another request (other files, model or parameters)."""

    code = "idempotency_key_reused"


def request_fingerprint(secret: str, inputs: Sequence[InputLike], model: str, params: Params) -> str | None:
    """What makes two requests with one idempotency key the same request: the model as named, the parameters and
    every input's bytes (or digest), in order — an HMAC under ``secret``, since the bytes are not yet
    de-identified. ``None`` when an input is a stream that cannot be read twice (no check is then made)."""
    mac = hmac.new(secret.encode(), f"{model.strip()}\n{params.canonical()}\n".encode(), hashlib.sha256)
    for item in inputs:
        data = item.data if isinstance(item, Upload) else item
        if isinstance(data, str):
            mac.update(b"object " + data.encode())
        elif isinstance(data, bytes | bytearray):
            mac.update(hashlib.sha256(data).digest())
        else:
            one = hashlib.sha256()
            if isinstance(data, Path):
                with data.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        one.update(chunk)
            else:
                if not data.seekable():
                    return None
                start = data.tell()
                while chunk := data.read(1 << 20):
                    one.update(chunk)
                data.seek(start)
            mac.update(one.digest())
        mac.update(b"\n")
    return mac.hexdigest()


def _same_request(job: Job, key: str, fingerprint: str | None) -> Job:
    """``job`` (the first one sent with ``key``) if this request is that one; a key sent again with other files,
    model or parameters is refused rather than answered with another request's job (another patient's result)."""
    first = (job.payload or {}).get("request")
    if fingerprint is not None and first is not None and first != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was first sent with another request (other files, model or parameters)",
            hint="Use a new key for each new request; send the very same request again to get its first job.")
    return job


_MODELS_SEEN: weakref.WeakKeyDictionary[Platform, dict[str, float]] = weakref.WeakKeyDictionary()
MODEL_CHECK_TTL_S = 5.0


def _check_model(platform: Platform, model: str) -> str:
    """``model`` if it names a registered model; a name seen in the last few seconds is not looked up again
    (every request names one of a handful of models). A worker resolves the reference again when it runs the
    job, so a model deleted meanwhile fails that job with the registry's message."""
    from medcycle.models.registry import resolve

    model = model.strip()
    seen = _MODELS_SEEN.setdefault(platform, {})
    now = time.monotonic()
    if seen.get(model, 0.0) > now:
        return model
    with platform.session(write=False) as session:
        resolve(session, model)  # NotFound / UsageError with hints
    if len(seen) > 256:
        seen.clear()
    seen[model] = now + MODEL_CHECK_TTL_S
    return model


def submit(
    platform: Platform,
    inputs: Sequence[InputLike],
    *,
    model: str,
    source: str | None = None,
    idempotency_key: str | None = None,
    deadline_s: float | None = None,
    webhook: str | None = None,
    params: Params | Mapping[str, Any] | str | None = None,
    priority: int = 0,
    settings: ServingSettings | None = None,
    record: Callable[[Session, Job], None] | None = None,
    stored_clean: bool = False,
) -> Job:
    """Store ``inputs`` and enqueue one inference job for ``model``; returns the job (the first one for a key).

    Args:
        inputs: files (``Path``, ``bytes``, :class:`~medcycle.serving.inputs.Upload`) — DICOM, NIfTI, PNG or a zip
            of them — or digests (``str``) of objects already stored.
        model: ``NAME``, ``NAME@vN`` or ``NAME@ALIAS``.
        source: which intake (``rest``, ``stow-rs``, ``c-store``), recorded with the job.
        idempotency_key: the same key returns the first job enqueued with it.
        deadline_s: seconds from now after which the job is dropped, not computed (default: settings).
        webhook: URL that receives the finished job (POST, JSON), with retries.
        params: :class:`~medcycle.serving.schemas.Params` (or a mapping / JSON text of them).
        record: called with the transaction that records the job's input references and the new job (not a
            replayed one), e.g. to write an audit event in the same commit.
        stored_clean: every digest in ``inputs`` was stored de-identified by the caller (the DICOM intakes).
            Otherwise a digest is taken as stored only when a catalog instance or an earlier job's input
            references it; other objects are fetched, checked and de-identified like uploads.

    Raises:
        UsageError / ValidationFailed / PayloadTooLarge: a bad input (the message names which).
        NotFound: no such model or version.
        QueueFull: the inference queue is at its bound.
    """
    cfg = settings or load_serving_settings(platform.settings)
    parsed = Params.parse(params if not isinstance(params, Mapping) else dict(params))
    model = _check_model(platform, model)
    hook = check_webhook(webhook)
    key = check_idempotency_key(idempotency_key)
    if deadline_s is not None and not 0 < deadline_s <= 7 * 86_400:
        raise UsageError(f"deadline {deadline_s} s is not in (0, 7 days]", hint="Give seconds, e.g. 300.")
    fingerprint = None
    if key is not None:  # a replay finds its job without de-identifying or storing anything again
        fingerprint = request_fingerprint(platform.settings.secret_key.get_secret_value(), inputs, model, parsed)
        existing = _existing(platform, cfg.queue, key)
        if existing is not None:
            return _same_request(existing, key, fingerprint)
    try:
        prepared = _prepare_all(platform, inputs, cfg, stored_clean)
        digests = []
        for item in prepared:
            if item.digest is not None:
                digests.append(item.digest)
            else:
                assert item.data is not None
                digests.append(platform.objects.put(item.data).digest)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except OSError as exc:  # read-only or full: a 503 with what to check, not a 500 "please report it"
        raise store_failed(exc) from None
    groups = cases(prepared)
    payload: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "model": model,
        "inputs": digests,
        "formats": [p.format for p in prepared],
        "cases": [c.to_dict() for c in groups],
        "images": sum(c.images for c in groups),
        "params": parsed.model_dump(mode="json"),
        "webhook": hook,
        "source": (source or "library")[:32],
    }
    if fingerprint is not None:
        payload["request"] = fingerprint
    deadline = utcnow() + timedelta(seconds=deadline_s or cfg.default_deadline_s)
    job = platform.jobs.enqueue(cfg.queue, payload, priority=priority, idempotency_key=key, deadline=deadline)
    if key is not None:  # a request with the same key may have been queued meanwhile: the first one stands
        job = _same_request(job, key, fingerprint)
    from medcycle.objects.refs import add_refs

    with platform.session() as session:
        add_refs(session, digests, INPUT_REF, job.id)
        if record is not None:
            record(session, job)
    return job


def _existing(platform: Platform, queue: str, key: str) -> Job | None:
    """The job enqueued with ``key`` on ``queue``, if any (the backends return it on enqueue too)."""
    from medcycle.jobs.sql import SqlJobQueue

    jq = platform.jobs
    if isinstance(jq, SqlJobQueue):
        from sqlalchemy import select

        from medcycle.jobs.tables import JobRow

        with platform.session(write=False) as session:
            job_id = session.scalar(select(JobRow.id).where(JobRow.queue == queue, JobRow.idempotency_key == key))
        return jq.get(job_id) if job_id else None
    return None


#: Object references whose owners hold de-identified bytes: catalog instances (ingest) and inputs of inference
#: jobs (stored by this module after cleaning).
CLEAN_OWNERS: Final = frozenset({"instance", INPUT_REF})


def clean_objects(platform: Platform, digests: Sequence[str]) -> set[str]:
    """Which of ``digests`` a de-identifying intake stored (:data:`CLEAN_OWNERS`); one query."""
    from medcycle.objects.refs import refs_of

    if not digests:
        return set()
    with platform.session(write=False) as session:
        refs = refs_of(session, dict.fromkeys(digests))
    return {d for d, owners in refs.items() if any(kind in CLEAN_OWNERS for kind, _ in owners)}


def _prepare_all(platform: Platform, inputs: Sequence[InputLike], cfg: ServingSettings,
                 stored_clean: bool = False) -> list[Prepared]:
    from medcycle.catalog.deid import Pseudonymizer
    from medcycle.catalog.keys import load_or_create_key

    given = [i for i in inputs if isinstance(i, str)]
    clean = set(given) if stored_clean else clean_objects(platform, given)
    raw = len(clean) < len(inputs)
    pseudo = Pseudonymizer(load_or_create_key(platform.settings.resolved_deid_key_file)) if raw else None
    folder, tag = scratch_dir(), new_tag()
    try:
        files = materialise(list(inputs), folder, platform.objects, cfg, tag, clean=clean)
        if not files:
            raise UsageError("the request holds no files (an empty zip?)", hint="Send at least one image file.")
        return [prepare(f, pseudo, cfg) for f in files]
    finally:
        remove_tagged(folder, tag)
