"""``medcycle serve-worker``: an inference worker — dynamic batches from the queue, results stored idempotently.

Run as many as the machine (or cluster) has accelerators; each takes batches independently. SIGTERM/SIGINT
stop it after the batch in hand (its jobs complete); a killed worker's jobs are redelivered after their lease.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, emit_json, err_console
from medcycle.errors import MedcycleError, UsageError


def worker(
    ctx: typer.Context,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue to take jobs from (serving `queue`).",
                                              show_default=False)] = None,
    max_batch_images: Annotated[int | None, typer.Option(min=1, max=4096, help="Close a batch at this many "
                                                         "images/slices (serving `max_batch_images`).",
                                                         show_default=False)] = None,
    max_delay_ms: Annotated[int | None, typer.Option(min=0, max=60_000, help="Longest wait to fill a batch "
                                                     "(serving `max_delay_ms`).", show_default=False)] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto (serving `device`).",
                                               show_default=False)] = None,
    lease_seconds: Annotated[float | None, typer.Option(min=0.2, help="Lease per job (default: setting "
                                                        "job_lease_seconds).", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="Worker name (default HOST:PID:THREAD).", show_default=False)
                    ] = None,
    max_jobs: Annotated[int | None, typer.Option(min=1, help="Exit after this many jobs.", show_default=False)
                        ] = None,
    metrics_port: Annotated[int, typer.Option(min=0, max=65535, help="Serve Prometheus metrics on this port "
                                              "(0: off).")] = 0,
    webhooks: Annotated[bool, typer.Option("--webhooks/--no-webhooks", help="Also deliver queued webhooks.")
                        ] = True,
    threads: Annotated[int | None, typer.Option(min=0, max=1024, help="torch CPU threads (serving `cpu_threads`; "
                                                "0: all the cores this process may use).", show_default=False)
                       ] = None,
    priority: Annotated[str | None, typer.Option(help="idle, low or normal: the CPU priority taken at start "
                                                 "(serving `worker_priority`).", show_default=False)] = None,
    warm: Annotated[list[str] | None, typer.Option("--warm", help="Load and warm this model (NAME, NAME@ALIAS or "
                                                   "NAME@vN; repeatable) before taking jobs: its first batch then "
                                                   "waits for no load, and its forward pass size is measured now.",
                                                   show_default=False)] = None,
    json: bool = JsonOpt,
) -> None:
    """Take inference jobs in batches counted in images, run the OOD gate and the model, store the results."""
    from medcycle.serving.config import load_serving_settings
    from medcycle.serving.webhooks import WebhookSender
    from medcycle.serving.worker import ServingWorker

    cli = state(ctx)
    platform = cli.platform()
    cfg = load_serving_settings(platform.settings, queue=queue, cpu_threads=threads, worker_priority=priority)
    from medcycle.monitoring.sentry import init_sentry

    init_sentry(platform.settings, component="worker")
    err = err_console()
    serving = ServingWorker(platform, settings=cfg, max_batch_images=max_batch_images, max_delay_ms=max_delay_ms,
                            lease_seconds=lease_seconds, device=device, name=name)
    from medcycle.serving import cpu

    share = cpu.apply(threads=cfg.cpu_threads, workers=1, priority=cfg.worker_priority,
                      keep_memory=cfg.keep_freed_memory)
    for ref in warm or []:  # after the CPU share: the pass size is measured on the threads the worker runs with
        try:
            predictor = serving.predictor(ref)
        except MedcycleError as exc:
            serving.close()
            raise UsageError(f"--warm {ref}: {exc.message}", hint=exc.hint or "Check the name with "
                             "`medcycle model list`.") from None
        err.print(f"serve-worker {serving.name}: {predictor.ref} loaded and warm, {predictor.chunk} image(s) per "
                  "forward pass")
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=platform.settings.host, registry=serving.metrics.registry)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        err.print(f"serve-worker {serving.name}: {signal.Signals(signum).name}, stopping after this batch")
        stop.set()

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    sender = WebhookSender(platform, cfg) if webhooks else None
    thread = None
    if sender is not None:
        thread = threading.Thread(target=sender.run, args=(stop,), daemon=True, name="medcycle-webhooks")
        thread.start()
    err.print(f"serve-worker {serving.name}: queue {cfg.queue}, batches of up to {serving.cfg.max_batch_images} "
              f"images within {serving.cfg.max_delay_ms} ms; {share.describe()}")
    try:
        stats = serving.run(stop, max_jobs=max_jobs)
    finally:
        stop.set()
        serving.close()  # the decode pool's threads
        if thread is not None and sender is not None:
            thread.join(timeout=5)
            sender.close()
        for sig, old in handlers.items():
            signal.signal(sig, old)
    summary = {"worker": serving.name, "queue": cfg.queue, "batches": stats.batches, "jobs": stats.jobs,
               "computed": stats.computed, "cached": stats.cached, "refused": stats.refused,
               "expired": stats.expired, "failed": stats.failed, "retried": stats.retried, "lost": stats.lost,
               "images": stats.images}
    if json:
        emit_json(summary)
    else:
        err.print(", ".join(f"{k} {v}" for k, v in summary.items()))
