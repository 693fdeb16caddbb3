"""``medcycle serve-scp`` and ``medcycle deploy``: DICOM C-STORE intake and one-command deployment on this machine.

Each command parses its options and calls one library function (:mod:`medcycle.serving.scp`,
:mod:`medcycle.serving.deploy`). ``medcycle model rollback NAME`` is the rollback: deployed workers resolve the
alias again for every batch.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, err_console, table


def register(app: typer.Typer) -> None:
    app.command("serve-scp")(serve_scp)
    app.command("deploy")(deploy)


def serve_scp(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="TCP port to listen on.", min=0, max=65535)] = 11112,
    ae_title: Annotated[str, typer.Option("--ae-title", help="This SCP's AE title (the called one).")] = "MEDCYCLE",
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: the `host` setting).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Model for received studies, NAME@ALIAS (default: the deployed one).")] = None,
    idle_seconds: Annotated[float, typer.Option(
        help="Submit a study once no instance of it arrived for this long.", min=0.01)] = 10.0,
    abort_grace_seconds: Annotated[float, typer.Option(
        help="After an aborted association, hold its studies this long for the retransmission.", min=0)] = 60.0,
    allow_ae: Annotated[list[str] | None, typer.Option(
        "--allow-ae", help="Calling AE titles allowed to associate (repeat; default: any).")] = None,
    spool: Annotated[Path | None, typer.Option(
        help="Spool folder for studies being received (default: HOME/serving/scp-spool).")] = None,
) -> None:
    """Receive studies over DICOM C-STORE (with C-ECHO) and submit each study for inference once complete."""
    from medcycle.serving.deploy import default_model
    from medcycle.serving.scp import ScpConfig, StoreScp

    platform = state(ctx).platform()
    config = ScpConfig(model=default_model(platform, model), ae_title=ae_title,
                       host=host or platform.settings.host, port=port, idle_seconds=idle_seconds,
                       abort_grace_seconds=abort_grace_seconds, allowed_calling_aes=tuple(allow_ae or ()),
                       spool_dir=spool)
    scp = StoreScp(platform, config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    scp.start()
    err_console().print(f"DICOM SCP [bold]{config.ae_title}[/] on {config.host}:{scp.port}; studies go to "
                        f"{config.model} after {config.idle_seconds:g} s without a new instance. Stop with Ctrl-C.")
    try:
        stop.wait()
    finally:
        scp.stop()


def deploy(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="The model to serve: NAME or NAME@ALIAS, e.g. chest@production.",
                                                show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: keep; the first time, one per core "
                                                "up to 4 on a CPU-only machine, 1 with CUDA).", min=1,
                                                max=64)] = None,
    canary: Annotated[float | None, typer.Option(help="Percent of new jobs for the candidate (0 ends a canary).",
                                                 min=0, max=100)] = None,
    candidate: Annotated[str | None, typer.Option(help="The canary's version, e.g. chest@v4.")] = None,
    shadow: Annotated[str | None, typer.Option(
        help="A version that runs on a copy of each job and only logs ('' ends shadowing).")] = None,
    host: Annotated[str | None, typer.Option(help="Address of the API (default: the `host` setting).")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the API (default: the `port` setting).", min=1,
                                             max=65535)] = None,
    scp_port: Annotated[int | None, typer.Option(help="Also run the DICOM SCP on this port.", min=1,
                                                 max=65535)] = None,
    api: Annotated[bool | None, typer.Option(
        "--api/--no-api", help="Run the API, or workers only with --no-api (the API runs elsewhere). Default: keep; "
        "the first time, run it.", show_default=False)] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the new generation (0: do not wait).",
                                        min=0)] = 300.0,
    status: Annotated[bool, typer.Option("--status", help="Show the deployment and exit.")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop everything the deployment runs.")] = False,
    json: bool = JsonOpt,
) -> None:
    """Start or update the inference service on this machine: API, workers (warmed before they take over), SCP."""
    from medcycle.errors import UsageError
    from medcycle.serving import deploy as deployment

    st = state(ctx)
    settings = st.settings()
    if stop:
        stopped = deployment.stop(settings)
        if json:
            emit_json({"stopped": stopped})
        else:
            console().print("deployment stopped" if stopped else "no deployment was running")
        return
    if status:
        _show(deployment.read_status(settings), json)
        return
    if model is None:
        raise UsageError("name the model to deploy", hint="medcycle deploy NAME@ALIAS (or --status, --stop).")
    result = deployment.deploy(st.platform(), model, workers=workers, canary_percent=canary, candidate=candidate,
                               shadow=shadow, host=host, port=port, api=api, scp_port=scp_port,
                               actor=st.actor, config_file=st.config_file, wait_s=wait or None)
    if json:
        emit_json({"spec": result.spec.to_dict(), "versions": result.versions, "status": result.status})
        return
    spec = result.spec
    c = console()
    c.print(f"deployed [bold]{spec.model}[/] ({result.versions[spec.model]}) as generation {spec.generation}"
            f" with {spec.workers} worker(s)" + (f"; API on http://{spec.host}:{spec.port}" if spec.api else ""))
    if spec.candidate:
        c.print(f"  canary: {spec.canary_percent:g} % of new jobs on {spec.candidate} "
                f"({result.versions[spec.candidate]})")
    if spec.shadow:
        c.print(f"  shadow: {spec.shadow} ({result.versions[spec.shadow]}) runs on copies and only logs")
    if wait:
        _show(result.status, False)
    c.print("Roll back with: medcycle model rollback " + spec.name)


def _show(status: dict[str, object], as_json: bool) -> None:
    from medcycle.serving.deploy import describe

    if as_json:
        emit_json(status)
        return
    spec = status.get("spec") or {}
    console().print(f"generation {status.get('generation', '-')} ({status.get('state', 'not running')}), model "
                    f"{spec.get('model', '-') if isinstance(spec, dict) else '-'}, supervisor "
                    f"{'running' if status.get('supervisor_alive') else 'not running'}")
    table("Processes", ["role", "pid", "generation", "state"], describe(status))
    failed = status.get("failed")
    if isinstance(failed, dict) and failed.get("generation"):
        err_console().print(f"generation {failed['generation']} failed: {failed.get('reason')}")
    loops = status.get("crash_loops")
    for loop in loops if isinstance(loops, list) else []:
        err_console().print(f"{loop.get('role')} crash-looping: {loop.get('restarts')} restarts in a row, last exit "
                            f"{loop.get('exit_code')}" + (f" ({loop['reason']})" if loop.get("reason") else "")
                            + f"; next try in {loop.get('retry_in_s')} s")
