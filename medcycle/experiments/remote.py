"""The tracking SDK against a remote medcycle server, over httpx.

:class:`HttpSink` is the journal's drain target when ``start_run(server=..., token=...)`` is used: record
batches go to ``POST /v1/runs/{id}/records`` in the journal's own binary framing (one request per batch of
up to 512 records / 32 MiB), and objects to ``/v1/objects``. Files larger than ``part_size`` are sent in
parts, each stored by its own digest (a part the server already has is skipped, so an interrupted upload
resumes where it stopped) and then assembled server-side into the whole file's object. The transport is
injectable (``transport=httpx.MockTransport(...)``, or ``client=`` any ``httpx.Client`` such as a
FastAPI ``TestClient``).

:class:`RemoteRuns` reads runs from a server with the same shapes as the library (JSON dicts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from medcycle.errors import (
    AuthError,
    BackendUnavailable,
    Conflict,
    MedcycleError,
    NotFound,
    PermissionDenied,
    UsageError,
    ValidationFailed,
)
from medcycle.experiments.records import Record
from medcycle.objects.base import CHUNK, DIGEST_RE

PART_SIZE = 64 * 1024 * 1024
_ERRORS: dict[str, type[MedcycleError]] = {
    "not_found": NotFound, "conflict": Conflict, "unauthorized": AuthError, "forbidden": PermissionDenied,
    "validation_failed": ValidationFailed, "bad_request": UsageError, "backend_unavailable": BackendUnavailable,
}


def raise_for(response: httpx.Response) -> None:
    """Turn an error response into the :class:`MedcycleError` the server raised (5xx/429 → unavailable)."""
    if response.is_success:
        return
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    message = error.get("message") or f"the server answered {response.status_code} {response.reason_phrase}"
    hint = error.get("hint")
    if response.status_code >= 500 or response.status_code == 429:
        raise BackendUnavailable(f"server: {message}",
                                 hint=hint or "Retry later; `medcycle run sync` delivers journals.")
    raise _ERRORS.get(error.get("code", ""), MedcycleError)(f"server: {message}", hint=hint)


def _client(server: str, token: str | None, transport: httpx.BaseTransport | None, timeout: float) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout, transport=transport)


class HttpSink:
    """Delivers a run's records and objects to a medcycle server."""

    def __init__(self, server: str, token: str | None = None, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 60.0, part_size: int = PART_SIZE, client: httpx.Client | None = None) -> None:
        self.target = f"server:{server.rstrip('/')}"
        self.part_size = part_size
        self._http = client or _client(server, token, transport, timeout)
        self._owned = client is None

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach the server: {exc}",
                                     hint="The run continues offline; `medcycle run sync` delivers it later.") from exc
        return response

    def apply(self, run_id: str, records: list[Record]) -> int:
        body = b"".join(r.encode() for r in records)
        response = self._call("POST", f"/v1/runs/{run_id}/records", content=body,
                              headers={"Content-Type": "application/octet-stream"})
        raise_for(response)
        return int(response.json()["applied_seq"])

    def applied_seq(self, run_id: str) -> int:
        response = self._call("GET", f"/v1/runs/{run_id}/applied")
        raise_for(response)
        return int(response.json()["applied_seq"])

    def resolve_dataset(self, ref: str) -> str | None:
        if DIGEST_RE.match(ref):
            return ref
        name, _, which = ref.partition("@")
        response = self._call("GET", f"/v1/datasets/{name}/versions/{which or 'latest'}", timeout=5.0)
        if response.status_code == 404:
            return None
        raise_for(response)
        value = response.json().get("id")
        return value if isinstance(value, str) else None

    def has_object(self, digest: str) -> bool:
        response = self._call("HEAD", f"/v1/objects/{digest}")
        if response.status_code == 404:
            return False
        raise_for(response)
        return True

    def _upload(self, path: Path, digest: str, offset: int, length: int) -> None:
        def body() -> Iterator[bytes]:
            with path.open("rb") as fh:
                fh.seek(offset)
                left = length
                while left > 0 and (chunk := fh.read(min(CHUNK, left))):
                    left -= len(chunk)
                    yield chunk

        response = self._call("POST", "/v1/objects", params={"expected": digest}, content=body(),
                              headers={"Content-Type": "application/octet-stream"})
        raise_for(response)

    def put_object(self, path: Path, digest: str) -> None:
        """Upload ``path`` (streamed); above ``part_size`` in resumable parts assembled on the server."""
        size = path.stat().st_size
        if size <= self.part_size:
            self._upload(path, digest, 0, size)
            return
        parts: list[dict[str, Any]] = []
        with path.open("rb") as fh:
            offset = 0
            while offset < size:
                h, n = hashlib.sha256(), 0
                while n < self.part_size and (chunk := fh.read(min(CHUNK, self.part_size - n))):
                    h.update(chunk)
                    n += len(chunk)
                parts.append({"digest": h.hexdigest(), "size": n, "offset": offset})
                offset += n
        for part in parts:
            if not self.has_object(part["digest"]):
                self._upload(path, part["digest"], part["offset"], part["size"])
        response = self._call("POST", "/v1/runs/objects/assemble", json={
            "digest": digest, "size": size, "parts": [{"digest": p["digest"], "size": p["size"]} for p in parts]})
        raise_for(response)

    def close(self) -> None:
        if self._owned:
            self._http.close()


class RemoteRuns:
    """Read runs from a server: ``list_runs``, ``get_run``, ``metrics``, ``log`` and ``compare`` (JSON dicts)."""

    def __init__(self, server: str, token: str | None = None, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 60.0, client: httpx.Client | None = None) -> None:
        self._http = client or _client(server, token, transport, timeout)

    def _get(self, url: str, **params: Any) -> httpx.Response:
        try:
            response = self._http.get(url, params={k: v for k, v in params.items() if v is not None})
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach the server: {exc}") from exc
        raise_for(response)
        return response

    def list_runs(self, filter: str | None = None, *, project: str | None = None, order: str | None = None,
             limit: int = 100, offset: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = self._get("/v1/runs", filter=filter, project=project, order=order, limit=limit,
                                         offset=offset).json()
        return data

    def get_run(self, run: str) -> dict[str, Any]:
        data: dict[str, Any] = self._get(f"/v1/runs/{run}").json()
        return data

    def metrics(self, run: str, keys: list[str] | None = None, max_points: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"max_points": max_points}
        if keys:
            params["key"] = keys
        data: dict[str, Any] = self._get(f"/v1/runs/{run}/metrics", **params).json()
        return data

    def log(self, run: str, stream: str | None = None) -> str:
        return self._get(f"/v1/runs/{run}/log", stream=stream).text

    def compare(self, runs: list[str]) -> dict[str, Any]:
        data: dict[str, Any] = self._get("/v1/runs/compare", run=runs).json()
        return data

    def close(self) -> None:
        self._http.close()
