"""Users, roles, API tokens, web sessions and the audit log."""

from medcycle.auth.roles import SYSTEM, Permission, Principal, Role

__all__ = ["SYSTEM", "Permission", "Principal", "Role"]
