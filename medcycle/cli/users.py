"""``medcycle user`` and ``medcycle token``."""

from __future__ import annotations

from typing import Annotated

import typer

from medcycle.auth import audit, users
from medcycle.auth.roles import Role
from medcycle.auth.tables import UserRow
from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, table

user_app = typer.Typer(no_args_is_help=True)
token_app = typer.Typer(no_args_is_help=True)
RoleOpt = typer.Option("--role", "-r", help="admin, ml-engineer, annotator or viewer.")


def _user_dict(u: UserRow) -> dict[str, object]:
    return {"name": u.name, "role": u.role, "email": u.email, "disabled": u.disabled, "created_at": u.created_at}


@user_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Login name (lowercase).")],
    role: Annotated[str, RoleOpt] = Role.VIEWER.value,
    email: Annotated[str | None, typer.Option(help="Contact e-mail.")] = None,
    token: Annotated[bool, typer.Option("--token/--no-token", help="Also create an API token.")] = False,
    json: bool = JsonOpt,
) -> None:
    """Add a user."""
    platform = state(ctx).platform()
    with platform.session() as session:
        user = users.create_user(session, name, role, email=email)
        audit.record(
            session, state(ctx).actor, "user.create", target_kind="user", target_id=name, via="cli", role=user.role
        )
        issued = users.create_token(session, name, name="cli") if token else None
    out = _user_dict(user) | ({"token": issued.secret} if issued else {})
    if json:
        emit_json(out)
    else:
        console().print(f"added {user.name} ({user.role})")
        if issued:
            console().print(f"token (shown once): [bold]{issued.secret}[/]")


@user_app.command("list")
def list_(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """List users."""
    with state(ctx).platform().session() as session:
        rows = [_user_dict(u) for u in users.list_users(session)]
    if json:
        emit_json(rows)
    else:
        table(
            "Users",
            ["name", "role", "email", "disabled", "created"],
            [(r["name"], r["role"], r["email"], r["disabled"], r["created_at"]) for r in rows],
        )


@user_app.command("show")
def show(ctx: typer.Context, name: str, json: bool = JsonOpt) -> None:
    """Show one user and their tokens."""
    with state(ctx).platform().session() as session:
        user = _user_dict(users.get_user(session, name))
        tokens = [
            {
                "id": t.id,
                "name": t.name,
                "created_at": t.created_at,
                "expires_at": t.expires_at,
                "last_used_at": t.last_used_at,
                "revoked_at": t.revoked_at,
            }
            for t, _ in users.list_tokens(session, name)
        ]
    if json:
        emit_json(user | {"tokens": tokens})
    else:
        table(
            f"User {name}",
            ["name", "role", "email", "disabled", "created"],
            [(user["name"], user["role"], user["email"], user["disabled"], user["created_at"])],
        )
        table(
            "Tokens",
            ["id", "name", "created", "expires", "last used", "revoked"],
            [
                (t["id"], t["name"], t["created_at"], t["expires_at"], t["last_used_at"], t["revoked_at"])
                for t in tokens
            ],
        )


def _set(ctx: typer.Context, name: str, action: str, **change: object) -> None:
    with state(ctx).platform().session() as session:
        user = users.set_user_state(session, name, **change)  # type: ignore[arg-type]
        audit.record(
            session,
            state(ctx).actor,
            action,
            target_kind="user",
            target_id=name,
            via="cli",
            **{k: str(v) for k, v in change.items()},
        )
    console().print(f"{user.name}: role {user.role}, {'disabled' if user.disabled else 'enabled'}")


@user_app.command("role")
def role(ctx: typer.Context, name: str, new_role: Annotated[str, typer.Argument(help="The new role.")]) -> None:
    """Change a user's role."""
    _set(ctx, name, "user.role", role=new_role)


@user_app.command("disable")
def disable(ctx: typer.Context, name: str) -> None:
    """Disable a user (their tokens stop working)."""
    _set(ctx, name, "user.disable", disabled=True)


@user_app.command("enable")
def enable(ctx: typer.Context, name: str) -> None:
    """Enable a disabled user."""
    _set(ctx, name, "user.enable", disabled=False)


@token_app.command("create")
def create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", "-u", help="Whose token.")] = "admin",
    name: Annotated[str, typer.Option(help="A label for the token.")] = "cli",
    expires_days: Annotated[float | None, typer.Option(help="Lifetime in days (default: no expiry).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Create an API token; the secret is printed once and stored only as a hash."""
    with state(ctx).platform().session() as session:
        issued = users.create_token(session, user, name=name, expires_in_days=expires_days)
        audit.record(
            session, state(ctx).actor, "token.create", target_kind="token", target_id=issued.id, via="cli", user=user
        )
    if json:
        emit_json(
            {
                "id": issued.id,
                "user": issued.user,
                "name": issued.name,
                "expires_at": issued.expires_at,
                "token": issued.secret,
            }
        )
    else:
        console().print(f"token {issued.id} for {issued.user} (shown once):\n[bold]{issued.secret}[/]")


@token_app.command("list")
def tokens(
    ctx: typer.Context, user: Annotated[str | None, typer.Option(help="Only this user's.")] = None, json: bool = JsonOpt
) -> None:
    """List tokens (never their secrets)."""
    with state(ctx).platform().session() as session:
        rows = [
            {
                "id": t.id,
                "user": u,
                "name": t.name,
                "created_at": t.created_at,
                "expires_at": t.expires_at,
                "last_used_at": t.last_used_at,
                "revoked_at": t.revoked_at,
            }
            for t, u in users.list_tokens(session, user)
        ]
    if json:
        emit_json(rows)
    else:
        table(
            "Tokens",
            ["id", "user", "name", "created", "expires", "last used", "revoked"],
            [tuple(r.values()) for r in rows],
        )


@token_app.command("revoke")
def revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument(help="The token id (not the secret).")]) -> None:
    """Revoke a token at once."""
    with state(ctx).platform().session() as session:
        users.revoke_token(session, token_id)
        audit.record(session, state(ctx).actor, "token.revoke", target_kind="token", target_id=token_id, via="cli")
    console().print(f"revoked {token_id}")
