"""Roles and what they may do. One table, checked in one place (:meth:`Principal.require`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from medcycle.errors import PermissionDenied, UsageError


class Role(StrEnum):
    ADMIN = "admin"
    ML_ENGINEER = "ml-engineer"
    ANNOTATOR = "annotator"
    VIEWER = "viewer"


class Permission(StrEnum):
    VIEW = "view"  # catalog summaries, runs, models, dashboards
    BROWSE = "browse"  # item-level catalog metadata (UIDs, fields, dataset diffs): not for annotators
    READ_DATA = "read-data"  # image bytes, pulls, exports
    WRITE_DATA = "write-data"  # ingest, datasets, store maintenance
    LABEL = "label"  # annotate assigned items
    TRAIN = "train"  # runs, queues, agents
    DEPLOY = "deploy"  # promote, deploy, rollback
    ADMIN = "admin"  # users, tokens of others, audit log


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.ML_ENGINEER: frozenset(
        {
            Permission.VIEW,
            Permission.BROWSE,
            Permission.READ_DATA,
            Permission.WRITE_DATA,
            Permission.LABEL,
            Permission.TRAIN,
            Permission.DEPLOY,
        }
    ),
    Role.ANNOTATOR: frozenset({Permission.VIEW, Permission.LABEL}),
    # annotators only ever see the items assigned to them (through the labels layer), so no BROWSE
    Role.VIEWER: frozenset({Permission.VIEW, Permission.BROWSE}),
}


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise UsageError(
            f"{value!r} is not a role", hint=f"Choose one of: {', '.join(r.value for r in Role)}."
        ) from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: a user (through a token or the local CLI) or the system itself."""

    name: str
    role: Role
    user_id: str | None = None
    token_id: str | None = None

    def can(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise PermissionDenied(
                f"{self.name} ({self.role.value}) may not {permission.value}",
                hint="Ask an admin for a role that grants it: `medcycle user add NAME --role ROLE`.",
                permission=permission.value,
            )


SYSTEM = Principal(name="system", role=Role.ADMIN)
