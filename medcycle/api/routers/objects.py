"""Objects by digest: upload (streamed), download (verified), stat. Every read is audited."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.api.schemas import ObjectOut
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import PayloadTooLarge
from medcycle.objects.base import CHUNK, check_digest

router = APIRouter(prefix="/v1/objects", tags=["objects"])
Reader = Annotated[Principal, requires(Permission.READ_DATA)]
Writer = Annotated[Principal, requires(Permission.WRITE_DATA)]


@router.post("", response_model=ObjectOut, status_code=status.HTTP_201_CREATED)
async def upload(
    request: Request, platform: PlatformDep, session: SessionDep, principal: Writer, expected: str | None = None
) -> ObjectOut:
    """Store the raw request body (streamed to disk, never held in memory); returns its digest. A body over
    ``api_max_object_bytes`` is refused (413) before it is read when its Content-Length says so, else as soon
    as it passes the bound; nothing of a refused body is stored."""
    if expected is not None:
        check_digest(expected)
    limit = platform.settings.api_max_object_bytes
    hint = ("Send files over 64 MiB in parts as the tracking SDK does (each part stored by digest, then "
            "POST /v1/runs/objects/assemble), or raise the setting api_max_object_bytes.")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the object is {int(length)} bytes; at most {limit} are accepted", hint=hint)
    with tempfile.TemporaryDirectory(prefix="medcycle-upload-") as tmp:
        path = Path(tmp) / "body"
        received = 0
        with path.open("wb") as out:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLarge(f"the object is over {limit} bytes", hint=hint)
                out.write(chunk)
        info = await run_in_threadpool(platform.objects.put, path, expected_digest=expected)
    await run_in_threadpool(  # an INSERT: not on the event loop
        audit.record, session, principal, "object.write", target_kind="object", target_id=info.digest, via="api",
        size=info.size)
    return ObjectOut(digest=info.digest, size=info.size)


@router.head("/{digest}")
def head(digest: str, platform: PlatformDep, _: Reader) -> Response:
    info = platform.objects.stat(check_digest(digest))
    return Response(headers={"Content-Length": str(info.size), "ETag": f'"{digest}"', "X-Medcycle-Digest": digest})


@router.get("/{digest}", response_class=StreamingResponse)
def download(digest: str, platform: PlatformDep, principal: Reader) -> StreamingResponse:
    """The object's bytes, verified while streaming: a corrupt object's response is cut short (and logged)."""
    info = platform.objects.stat(check_digest(digest))
    audit.record_read(platform, principal, "object.read", target_kind="object", target_id=digest, via="api",
                      size=info.size)
    stream = platform.objects.open(digest)

    def body() -> Iterator[bytes]:
        # One chunk behind: the last chunk goes out only after the end-of-stream digest check, so a
        # corrupt object ends the response short of its Content-Length and no client takes it as whole.
        with stream:
            held = stream.read(CHUNK)
            while held:
                ahead = stream.read(CHUNK)
                yield held
                held = ahead

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Length": str(info.size), "ETag": f'"{digest}"', "X-Medcycle-Digest": digest},
    )
