"""``init``, ``serve``, ``doctor`` and ``demo``: the commands that set up and run the platform."""

from __future__ import annotations

from typing import Annotated

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, table


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("serve")(serve)
    app.command("doctor")(doctor)


def demo_app() -> typer.Typer:
    """``medcycle demo`` runs the main job; ``medcycle demo data`` only writes (and loads) the demo data (loaded
    when the command is used: :mod:`medcycle.cli.main`)."""
    from medcycle.training.cli import demo_app as app

    app.callback(invoke_without_command=True)(demo)
    return app


def init(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Create the home, apply migrations and, on a new store, a local admin with a token."""
    st = state(ctx)
    platform = st.platform(migrate=False)
    result = platform.init()
    if json:
        emit_json(
            {
                "home": result.home,
                "database": result.database,
                "schema_revision": result.schema_revision,
                "admin_created": result.admin_created,
                "admin_token": result.admin_token,
            }
        )
        return
    c = console()
    c.print(f"[bold green]medcycle is ready[/] in {result.home}")
    c.print(f"  database  {result.database} (schema {result.schema_revision})")
    c.print(f"  objects   {platform.objects.url}")
    c.print(f"  jobs      {platform.settings.queue_url}")
    if result.admin_token:
        c.print("\nA local admin 'admin' was created. Its API token (shown once, stored only as a hash):")
        c.print(f"  [bold]{result.admin_token}[/]")
        c.print("Lost it? `medcycle token create --user admin` makes another.")
    else:
        c.print("\nUsers already exist. New token: `medcycle token create --user NAME`.")


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on (setting `host`).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (setting `port`).", min=1, max=65535)] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without authentication (local use only).")] = False,
) -> None:
    """Run the REST API and the web UI together."""
    import uvicorn

    from medcycle.api.app import create_app
    from medcycle.api.server import http_protocol, prepare

    st = state(ctx)
    extra = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if no_auth:
        extra["auth_enabled"] = False
    st.overrides.update(extra)
    platform = st.platform()
    s = platform.settings
    app = create_app(platform, migrate=False)
    prepare(platform)
    console().print(f"medcycle UI and API on [bold]{s.resolved_public_url}[/] (API docs at /docs)")
    uvicorn.run(app, host=s.host, port=s.port, log_level=s.log_level.lower(), access_log=False,
                http=http_protocol(s.api_max_header_kib * 1024))


def doctor(
    ctx: typer.Context,
    json: bool = JsonOpt,
    no_gpu: Annotated[bool, typer.Option("--no-gpu", help="Skip the GPU probe (which imports torch).")] = False,
) -> None:
    """Versions, backends in use and whether each is reachable, torch/MONAI and GPUs."""
    from medcycle.doctor import diagnose

    platform = state(ctx).platform(migrate=False)
    report = diagnose(platform, check_gpu=not no_gpu)
    if json:
        emit_json(report)
    else:
        c = console()
        c.print(f"medcycle {report['medcycle']} · Python {report['python']} · {report['os']}")
        c.print(f"home {report['home']} ({report['environment']})")
        table(
            "Backends",
            ["backend", "url", "ok", "detail"],
            [(b["name"], b["url"], b["ok"], b["detail"]) for b in report["backends"]],
        )
        table("Packages", ["package", "version"], [(k, v or "not installed") for k, v in report["packages"].items()])
        ml = report["ml"]
        c.print(
            f"torch {ml['torch'] or 'not installed'} · MONAI {ml['monai'] or 'not installed'} · "
            f"CUDA GPU: {ml.get('torch_cuda')} {', '.join(ml.get('devices', []))}"
        )
    if not report["ok"]:
        raise typer.Exit(9)


def demo(
    ctx: typer.Context,
    serve_ui: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the UI when done.")] = True,
    profile: Annotated[str, typer.Option(help="full (what `make run` does) or quick (smaller, for tests).")] = "full",
) -> None:
    """The main job: walk through the platform on embedded defaults, then serve the UI."""
    if ctx.invoked_subcommand is not None:
        return
    from medcycle.demo import run_demo

    st = state(ctx)
    platform = st.platform(migrate=False)
    token = run_demo(platform, console(), profile=profile)
    if serve_ui:
        import uvicorn

        from medcycle.api.app import create_app
        from medcycle.api.server import http_protocol, prepare

        s = platform.settings
        app = create_app(platform, migrate=False)
        prepare(platform)
        console().print(
            f"\nOpen [bold]{s.resolved_public_url}/login[/] and paste the token:\n  [bold]{token}[/]\nStop with Ctrl-C."
        )
        uvicorn.run(app, host=s.host, port=s.port, log_level="warning", http=http_protocol(s.api_max_header_kib * 1024))
