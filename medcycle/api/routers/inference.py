"""Inference jobs over REST: submit (files or object references), read, wait, cancel, fetch outputs.

* ``POST /v1/jobs`` — ``multipart/form-data`` (``model``, one or more ``files``, optional ``params`` JSON,
  ``webhook``, ``deadline_s``, ``priority``) or ``application/json`` (:class:`JobRequest`, inputs by object
  digest). ``Idempotency-Key`` returns the first job sent with that key (per caller). Answers ``202`` with the
  job and ``Location``; with ``?wait=SECONDS`` it waits up to that long and answers ``200`` once the job has
  finished (the sync facade). A full queue answers ``429`` with ``Retry-After``.
* ``GET /v1/jobs/{id}`` (``?wait=SECONDS`` long-polls), ``DELETE /v1/jobs/{id}`` cancels (a queued job never
  runs; a running one is stopped at its worker's next heartbeat — a batch that ends first still completes it),
  ``GET /v1/jobs/{id}/outputs/{n}`` streams output ``n``.

The route only parses and calls :func:`medcycle.serving.intake.submit`; workers compute.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from medcycle.api.admission import Admission
from medcycle.api.deps import PlatformDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import (
    Conflict,
    LengthRequired,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    UnsupportedMediaType,
    UsageError,
    ValidationFailed,
)
from medcycle.jobs.base import Job, JobState
from medcycle.objects.base import CHUNK
from medcycle.platform import Platform
from medcycle.serving import intake
from medcycle.serving.config import ServingSettings, load_serving_settings
from medcycle.serving.inputs import InputLike, Upload
from medcycle.serving.results import job_out
from medcycle.serving.schemas import JobOut, JobRequest, Params

router = APIRouter(prefix="/v1/jobs", tags=["inference"])
Submitter = Annotated[Principal, requires(Permission.WRITE_DATA)]
Reader = Annotated[Principal, requires(Permission.READ_DATA)]
MAX_JSON_BYTES = 4 * 1024 * 1024
# A refusal waits for an upload of up to this many bytes to arrive (and drops it) before it is sent: answered
# while the client still sends, the connection turns "interactive" and the kernel delays the acknowledgements
# the rest of the upload waits for — 40 ms stalls on one 429 in ten with a 512 KB radiograph. Larger uploads
# are refused at once.
DRAIN_BEFORE_REFUSAL = 16 * 1024 * 1024
WaitQuery = Annotated[float, Query(ge=0, le=600, description="Seconds to wait for the job to finish (sync facade).")]
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input (the message names which)"},
    404: {"description": "No such model or job"},
    411: {"description": "Upload without Content-Length"},
    413: {"description": "Upload, file or archive too large"},
    415: {"description": "Neither multipart/form-data nor application/json"},
    422: {"description": "Invalid request or unreadable image"},
    429: {"description": "Queue full; retry after Retry-After seconds"},
}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` references inlined (OpenAPI request bodies cannot point into them)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.rsplit("/", 1)[1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "files"],
    "properties": {
        "model": {"type": "string", "description": "NAME, NAME@vN or NAME@ALIAS."},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "DICOM, NIfTI or PNG files, or zips of them."},
        "params": {"type": "string", "description": 'JSON, e.g. {"threshold": 0.3, "outputs": ["png"]}.'},
        "webhook": {"type": "string"},
        "deadline_s": {"type": "number"},
        "priority": {"type": "integer"},
    },
}
REQUEST_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": MULTIPART_SCHEMA},
    "application/json": {"schema": _inline(JobRequest.model_json_schema())},
}}


def _settings(request: Request, platform: Platform) -> ServingSettings:
    cfg: ServingSettings | None = getattr(request.app.state, "serving_settings", None)
    if cfg is None:
        cfg = load_serving_settings(platform.settings)
        request.app.state.serving_settings = cfg
    return cfg


async def _known_full(request: Request) -> None:
    """First, on the event loop, before the token is checked (a thread hop and a read): a queue known to be full
    — the shared answer of a look a moment ago — is answered 429 at once. It says no more than that the service
    is busy; everything else waits for authentication."""
    admission: Admission | None = getattr(request.app.state, "admission", None)
    if admission is not None:
        try:
            admission.refuse_if_known_full()
        except QueueFull:
            await _drain(request)
            raise


async def _drain(request: Request) -> None:
    """Receive and drop the rest of an upload that is being refused (see ``DRAIN_BEFORE_REFUSAL``). Not when
    the client waits for ``100 Continue`` before it sends the body: it is told at once and sends nothing."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > DRAIN_BEFORE_REFUSAL:
        return
    if "100-continue" in request.headers.get("expect", "").lower():
        return
    try:
        async for _ in request.stream():
            pass
    except Exception:  # noqa: BLE001 - a client that went away, or a body read before: the refusal stands
        return


def _admission(request: Request, platform: Platform, cfg: ServingSettings) -> Admission:
    found: Admission | None = getattr(request.app.state, "admission", None)
    if found is None:
        threads = intake_threads(platform, cfg)
        found = request.app.state.admission = Admission(
            lambda: platform.jobs.check_capacity(cfg.queue), concurrency=threads,
            large_concurrency=max(2, os.cpu_count() or 1), waiting=max(4, 2 * threads))
    return found


def intake_threads(platform: Platform, cfg: ServingSettings) -> int:
    """How many uploads (up to ``intake_large_bytes``) the API takes in at once: the setting, or by default one
    for a store on this machine and two per core for a remote one (see ``intake_threads`` in the settings).
    With four clients uploading 512 KiB radiographs to the API alone on two cores, one thread cost less CPU a
    request than two in each of six alternating pairs of runs (by 0.2-3.6 ms, median about 1 ms)."""
    if cfg.intake_threads:
        return cfg.intake_threads
    return 2 * (os.cpu_count() or 1) if platform.objects.remote else 1


def _float(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(str(value))
    except ValueError:
        raise ValidationFailed(f"{name} must be a number, not {str(value)[:20]!r}", hint=f"E.g. {name}=300.") from None


def _priority(value: Any) -> int:
    """The form's ``priority``: an integer from -10 to 10, as the JSON body's schema says (0 when absent)."""
    number = _float(value, "priority")
    if number is None:
        return 0
    if not number.is_integer() or not -10 <= number <= 10:  # NaN and infinities included
        raise ValidationFailed(f"priority must be an integer from -10 to 10, not {str(value)[:20]!r}",
                               hint="E.g. priority=5 (higher is taken first).")
    return int(number)


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"{name} must be a text field, not a file", hint=f"Send {name} as a form field.")
    return value


def _form_fields(form: FormData) -> tuple[list[InputLike], dict[str, Any]]:
    given = [*form.getlist("files"), *form.getlist("file")]
    files = [f for f in given if isinstance(f, UploadFile)]
    if not files:
        if given:  # parts named files without a filename are text fields to the form parser: the bytes are lost
            raise UsageError(f"the form's {len(given)} 'files' part(s) have no filename, so they are not files",
                             hint='Send each file with a filename in its Content-Disposition (form-data; name="files"; '
                                  'filename="image.dcm"), as curl -F files=@image.dcm does.')
        raise UsageError("the form holds no files", hint="Send one or more 'files' parts.")
    model = _text(form.get("model"), "model")
    if not model:
        raise UsageError("the form names no model", hint="Add a 'model' field: NAME, NAME@vN or NAME@ALIAS.")
    fields = {"model": model, "params": Params.parse(_text(form.get("params"), "params")),
              "webhook": _text(form.get("webhook"), "webhook"),
              "deadline_s": _float(form.get("deadline_s"), "deadline_s"),
              "priority": _priority(form.get("priority"))}
    return [Upload(f.filename or f"file {i + 1}", f.file) for i, f in enumerate(files)], fields


MAX_FIELDS = 32
MAX_FIELD_BYTES = 64 * 1024


async def _form(request: Request, cfg: ServingSettings) -> FormData:
    """The multipart form, its parser's refusals (plain 400s without a hint) said as the API says them."""
    try:
        return await request.form(max_files=cfg.max_files, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
            raise PayloadTooLarge(f"the request holds more than {cfg.max_files} files",
                                  hint="Split it into several requests, send a zip, or raise serving max_files."
                                  ) from None
        if detail.startswith("Too many fields"):
            raise UsageError(f"the form has more than {MAX_FIELDS} fields",
                             hint="Send model, files and the optional params, webhook, deadline_s, priority only."
                             ) from None
        if detail.startswith("Part exceeded maximum size"):
            raise UsageError(f"a form field is larger than {MAX_FIELD_BYTES // 1024} KiB",
                             hint="Send images as file parts (with a filename); text fields stay small.") from None
        raise UsageError(f"the multipart body is malformed: {detail}",
                         hint="Send multipart/form-data as an HTTP client builds it (a boundary, each part with "
                              "its Content-Disposition).") from None


def _caller_key(principal: Principal, given: str | None) -> str | None:
    """The stored key of a client's ``Idempotency-Key``: per caller, so one caller's key never finds another's
    job. The client's key is checked on its own (1-200 printable characters); a name and key together longer than
    that are stored as the name and the key's SHA-256."""
    key = intake.check_idempotency_key(given) if given is not None else None  # an empty key is refused, not ignored
    if key is None:
        return None
    stored = f"{principal.name}:{key}"
    if len(stored) > intake.MAX_KEY:
        stored = f"{principal.name}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return stored


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise PayloadTooLarge("the JSON body is larger than 4 MiB", hint="Reference inputs by object digest.")
    return body


def _json_fields(body: bytes) -> tuple[list[InputLike], dict[str, Any]]:
    try:
        parsed = JobRequest.model_validate_json(body)
    except ValidationError as exc:
        problems = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        first = problems[0] if problems else {"where": "body", "problem": "invalid"}
        raise ValidationFailed(f"invalid request: {first['where']}: {first['problem']}",
                               hint="See the request schema at /docs.", problems=problems) from None
    fields = {"model": parsed.model, "params": parsed.params, "webhook": parsed.webhook,
              "deadline_s": parsed.deadline_s, "priority": parsed.priority}
    return [i.digest for i in parsed.inputs], fields


async def _wait(platform: Platform, job: Job, seconds: float) -> Job:
    until = time.monotonic() + seconds
    pause = 0.02
    while not job.state.finished and time.monotonic() < until:
        await asyncio.sleep(min(pause, max(0.0, until - time.monotonic())))
        pause = min(pause * 1.5, 0.25)
        job = await run_in_threadpool(platform.jobs.get, job.id)
    return job


def _answer(platform: Platform, job: Job, *, submitted: bool) -> JSONResponse:
    view = job_out(platform, job)
    code = 200 if job.state.finished else 202
    headers = {"Location": f"/v1/jobs/{job.id}"} if submitted else {}
    return JSONResponse(view.model_dump(mode="json"), status_code=code, headers=headers)


@router.post("", response_model=JobOut, status_code=202, responses=ERRORS, openapi_extra={"requestBody": REQUEST_BODY})
async def submit_job(
    request: Request,
    _shed: Annotated[None, Depends(_known_full)],
    platform: PlatformDep,
    principal: Submitter,
    wait: WaitQuery = 0.0,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> JSONResponse:
    """Submit an inference job: files (multipart) or object references (JSON). 202 + the job; see the module."""
    cfg = _settings(request, platform)
    # a full queue answers 429 before the upload is read, stored or de-identified (the bound holds at enqueue too)
    admission = _admission(request, platform, cfg)
    try:
        slot = await admission.reserve()  # a place in the queue, held until the intake has queued the job
    except QueueFull:
        await _drain(request)
        raise
    with slot:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_upload_bytes:
            raise PayloadTooLarge(
                f"the request is {int(length)} bytes; at most {cfg.max_upload_bytes} are accepted",
                hint="Send fewer or smaller files per request, or store them first (POST /v1/objects) and reference "
                     "their digests.")
        form = None
        try:
            if ctype == "multipart/form-data":
                if length is None or not length.isdigit():
                    raise LengthRequired("an upload needs a Content-Length header",
                                         hint="Send the files as one multipart request with its length (every HTTP "
                                              "client does unless streaming).")
                form = await _form(request, cfg)
                inputs, fields = _form_fields(form)
            elif ctype == "application/json":
                inputs, fields = _json_fields(await _body(request))
            else:
                raise UnsupportedMediaType(f"content type {ctype or 'none'!r} is not accepted",
                                           hint="Send multipart/form-data with files, or application/json with "
                                                "object digests.")
            key = _caller_key(principal, idempotency_key)

            recorded: list[str] = []

            def record(session: Session, new: Job) -> None:  # in the transaction that records the job's inputs
                audit.record(session, principal, "serving.submit", target_kind="job", target_id=new.id,
                             via="api", model=fields["model"], images=(new.payload or {}).get("images"))
                recorded.append(new.id)

            def take_in() -> tuple[Job, JSONResponse | None]:  # and a new job's answer, in the same thread hop
                new = intake.submit(platform, inputs, model=fields["model"], source="rest", idempotency_key=key,
                                    deadline_s=fields["deadline_s"], webhook=fields["webhook"],
                                    params=fields["params"], priority=max(-10, min(10, fields["priority"])),
                                    settings=cfg, record=record)
                return new, (_answer(platform, new, submitted=True) if recorded and wait <= 0 else None)

            large = length is not None and length.isdigit() and int(length) > cfg.intake_large_bytes
            job, answer = await admission.run(take_in, large=large)
        finally:
            if form is not None:
                await form.close()
    if answer is not None:
        return answer
    if not recorded:  # a replay of an idempotency key: audited too

        def replayed() -> None:
            with platform.session() as session:
                record(session, job)

        await run_in_threadpool(replayed)
    if wait > 0:
        job = await _wait(platform, job, min(wait, cfg.max_wait_s))
    return await run_in_threadpool(_answer, platform, job, submitted=True)


def _inference_job(platform: Platform, cfg: ServingSettings, job_id: str) -> Job:
    job = platform.jobs.get(job_id)
    if job.queue != cfg.queue:
        raise NotFound(f"job {job_id} is not an inference job", hint="See GET /v1/queues for other jobs.")
    return job


@router.get("/{job_id}", response_model=JobOut, responses={404: ERRORS[404]})
async def get_job(request: Request, job_id: str, platform: PlatformDep, _: Reader, wait: WaitQuery = 0.0
                  ) -> JSONResponse:
    """The job and, once done, its result (findings per case, outputs, the model version that computed it)."""
    cfg = _settings(request, platform)
    job = await run_in_threadpool(_inference_job, platform, cfg, job_id)
    if wait > 0:
        job = await _wait(platform, job, min(wait, cfg.max_wait_s))
    return await run_in_threadpool(_answer, platform, job, submitted=False)


# HEAD as every general-purpose server answers it (RFC 9110 9.1; curl -I, monitors, proxies), kept out of the
# OpenAPI document: the same route, its headers without the body (uvicorn sends none for HEAD).
router.add_api_route("/{job_id}", get_job, methods=["HEAD"], include_in_schema=False)


@router.delete("/{job_id}", response_model=JobOut,
               responses={404: ERRORS[404], 409: {"description": "The job finished before it could be cancelled"}})
def cancel_job(request: Request, job_id: str, platform: PlatformDep, principal: Submitter) -> JobOut:
    """Cancel: a queued job never runs; a running one is stopped at its worker's next heartbeat. A job that
    finished otherwise (done, failed, dead-lettered) cannot be cancelled: 409, its outcome stands."""
    cfg = _settings(request, platform)
    _inference_job(platform, cfg, job_id)
    job = platform.jobs.cancel(job_id)
    if job.state.finished and job.state is not JobState.CANCELLED:
        status = job_out(platform, job).status
        raise Conflict(f"job {job_id} has already finished ({status}); there is nothing to cancel",
                       hint="Its outcome stands: read it with GET /v1/jobs/{id}. Cancelling a cancelled job is a "
                            "no-op.",
                       status=status)
    with platform.session() as session:
        audit.record(session, principal, "serving.cancel", target_kind="job", target_id=job_id, via="api")
    return job_out(platform, job)


@router.get("/{job_id}/outputs/{n}", response_class=StreamingResponse, responses={404: ERRORS[404]})
def get_output(request: Request, job_id: str, n: int, platform: PlatformDep, principal: Reader) -> Response:
    """Output ``n`` (0-based, as listed in the result) with its media type; the read is audited. ``HEAD`` answers
    the headers (type, length, digest) without reading the object, and is not audited (nothing is read)."""
    cfg = _settings(request, platform)
    view = job_out(platform, _inference_job(platform, cfg, job_id))
    if view.result is None or not 0 <= n < len(view.result.outputs):
        count = len(view.result.outputs) if view.result is not None else 0
        raise NotFound(f"job {job_id} has no output {n} ({count} outputs)",
                       hint="GET /v1/jobs/{id} lists the outputs once the job is done.")
    output = view.result.outputs[n]
    headers = {"ETag": f'"{output.digest}"', "X-Medcycle-Digest": output.digest}
    if request.method == "HEAD":
        size = platform.objects.stat(output.digest).size
        return Response(status_code=200, media_type=output.media_type,
                        headers={**headers, "Content-Length": str(size)})
    audit.record_read(platform, principal, "serving.output.read", target_kind="job", target_id=job_id, via="api",
                      output=n, digest=output.digest)
    stream = platform.objects.open(output.digest)

    def body() -> Iterator[bytes]:
        with stream:
            while chunk := stream.read(CHUNK):
                yield chunk

    return StreamingResponse(body(), media_type=output.media_type, headers=headers)


router.add_api_route("/{job_id}/outputs/{n}", get_output, methods=["HEAD"], include_in_schema=False)
