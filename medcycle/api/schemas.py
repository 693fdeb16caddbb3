"""Pydantic shapes of the core API (request bodies and responses)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from medcycle.auth.roles import Role


class BackendOut(BaseModel):
    name: str
    url: str
    ok: bool
    detail: str


class ReadyOut(BaseModel):
    ready: bool
    backends: list[BackendOut]


class InfoOut(BaseModel):
    version: str
    environment: str
    auth_enabled: bool
    backends: dict[str, str]


class UserIn(BaseModel):
    name: str = Field(min_length=2, max_length=64, examples=["dr-ivanova"])
    role: Role
    email: str | None = None


class UserOut(BaseModel):
    name: str
    role: str
    email: str | None
    disabled: bool
    created_at: datetime


class TokenIn(BaseModel):
    user: str | None = Field(default=None, description="Whose token; default the caller. Admins only for others.")
    name: str = Field(default="api", min_length=1, max_length=128)
    expires_days: float | None = Field(default=None, gt=0, le=36_500)


class TokenOut(BaseModel):
    id: str
    user: str
    name: str
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class IssuedTokenOut(TokenOut):
    token: str = Field(description="The secret; shown once, stored only as a hash.")


class AuditOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    target_kind: str | None
    target_id: str | None
    outcome: str
    via: str
    details: dict[str, Any]


class ObjectOut(BaseModel):
    digest: str
    size: int


class JobOut(BaseModel):
    id: str
    queue: str
    state: str
    priority: int
    attempts: int
    max_attempts: int
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    lease_owner: str | None
    created_at: datetime | None
    finished_at: datetime | None


class QueueOut(BaseModel):
    queue: str
    counts: dict[str, int]
    limit: int
