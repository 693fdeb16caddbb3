"""Serving's typed edges: request parameters, the job request body, and what ``GET /v1/jobs/{id}`` answers.

:class:`Params` is part of a result's identity (input digests + model version + parameters), so it is frozen,
strict and has one canonical JSON form.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medcycle.errors import ValidationFailed

DIGEST_PATTERN = r"^[0-9a-f]{64}$"


class OutputKind(StrEnum):
    """What a result may hold besides its JSON findings."""

    NIFTI = "nifti"  # segmentation mask as NIfTI (on the input's grid)
    PNG = "png"  # overlay of the mask (segmentation) or the finding (classification) on the image
    SEG = "seg"  # DICOM Segmentation referencing the source series (DICOM inputs, segmentation models)
    SC = "sc"  # DICOM secondary capture of the overlay with the finding burnt in (DICOM inputs)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # a result exists (cases may be refused by the OOD gate one by one)
    REFUSED = "refused"  # done, and the OOD gate refused every case
    EXPIRED = "expired"  # the deadline passed before compute: dropped, nothing computed
    CANCELLED = "cancelled"
    FAILED = "failed"  # bad input found by the worker, or attempts exhausted (dead-lettered)


class Params(BaseModel):
    """Inference parameters a client may set; they are part of the result's idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float | None = Field(None, gt=0, lt=1, description="Binary classification: probability of the "
                                    "positive (last) class from which the finding is positive (default 0.5).")
    outputs: tuple[OutputKind, ...] | None = Field(None, description="Outputs to write besides the JSON findings "
                                                   "(default: every one that applies).")

    @field_validator("outputs")
    @classmethod
    def _unique(cls, value: tuple[OutputKind, ...] | None) -> tuple[OutputKind, ...] | None:
        return None if value is None else tuple(sorted(set(value)))

    def wants(self, kind: OutputKind) -> bool:
        return self.outputs is None or kind in self.outputs

    def canonical(self) -> str:
        """The one JSON text of these parameters (sorted keys, defaults included)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, value: Params | dict[str, Any] | str | None) -> Params:
        """Parameters from a model, a mapping or JSON text; bad values raise :class:`ValidationFailed`."""
        if value is None or value == "":
            return cls()
        if isinstance(value, Params):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValidationFailed(f"params is not JSON: {exc.msg}", hint='E.g. {"threshold": 0.3}.') from None
        if not isinstance(value, dict):
            raise ValidationFailed("params must be a JSON object", hint='E.g. {"threshold": 0.3, "outputs": ["png"]}.')
        try:
            return cls.model_validate(value)
        except ValueError as exc:
            raise ValidationFailed(f"params are not valid: {exc}",
                                   hint="threshold is a probability in (0, 1); outputs lists nifti, png, seg, sc."
                                   ) from None


class ObjectInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digest: str = Field(pattern=DIGEST_PATTERN, description="SHA-256 of an object already in the store "
                        "(POST /v1/objects): a DICOM, NIfTI or PNG file, or a zip of them.")


class JobRequest(BaseModel):
    """``POST /v1/jobs`` with a JSON body: inputs by object reference."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200, description="NAME, NAME@vN or NAME@ALIAS (resolved when a "
                       "worker loads it).")
    inputs: list[ObjectInput] = Field(min_length=1, max_length=10_000)
    params: Params = Field(default_factory=Params)
    webhook: str | None = Field(None, max_length=2000, description="URL that gets the finished job as JSON (POST).")
    deadline_s: float | None = Field(None, gt=0, le=7 * 86_400, description="Seconds from now after which the "
                                     "job is dropped instead of computed.")
    priority: int = Field(0, ge=-10, le=10, description="Higher is taken first.")


class OutputOut(BaseModel):
    kind: str
    digest: str
    media_type: str
    url: str


class ModelOut(BaseModel):
    requested: str = Field(description="What the request named (an alias is resolved when the job runs).")
    ref: str = Field(description="The version that computed the result, NAME@vN.")
    version_id: str
    weights_digest: str


class ResultOut(BaseModel):
    key: str = Field(description="SHA-256 of input digests + model version + parameters.")
    status: str
    model: ModelOut
    task: str
    images: int
    cases: list[dict[str, Any]]
    outputs: list[OutputOut]
    compute_ms: float | None
    cached: bool = Field(description="True when this job found the result already stored (no compute).")
    created_at: datetime


class JobOut(BaseModel):
    id: str
    status: JobStatus
    model: str
    images: int
    attempts: int
    priority: int
    created_at: datetime | None
    finished_at: datetime | None
    deadline: datetime | None
    error: str | None = None
    result: ResultOut | None = None
