"""``medcycle train``: run, check, example and models; and ``medcycle demo data``.

Each command parses its input and calls one function of :mod:`medcycle.training` (torch is imported only
by the commands that train). Wire them in ``medcycle/cli/main.py``::

    from medcycle.training import cli as training_cli
    app.add_typer(training_cli.app, name="train", help="MONAI training on dataset versions, tracked.")
    # and the demo data generator under `medcycle demo`:  demo_group.command("data")(training_cli.demo_data)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, err_console, table

app = typer.Typer(no_args_is_help=True, help="MONAI training on dataset versions, tracked as runs.")
demo_app = typer.Typer(help="Demo data for the whole cycle.")
ConfigArg = typer.Argument(help="Training config (.json, .toml, .yaml).", show_default=False)
SetOpt = typer.Option("--set", "-s", help="Override a field: KEY=VALUE, e.g. training.epochs=3 (repeatable).")
TASKS = ("classification-2d", "segmentation-2d", "segmentation-3d")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@app.command("run")
def run_(
    ctx: typer.Context,
    config: Annotated[Path, ConfigArg],
    dataset: Annotated[str | None, typer.Option(help="Dataset version NAME@TAG (overrides data.dataset).")] = None,
    overrides: Annotated[list[str] | None, SetOpt] = None,
    to: Annotated[Path | None, typer.Option(help="Pull the version here (default HOME/pulls/NAME/ID).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Pull the dataset version, train, and track everything as a run."""
    from medcycle.training.config import load_config
    from medcycle.training.trainers import train_version

    cfg = load_config(config, overrides or [])
    err = err_console()

    def progress(epoch: int, metrics: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k.startswith(("val/", "train/epoch")))
        err.print(f"epoch {epoch + 1}/{cfg.training.epochs}  {shown}")

    result = train_version(state(ctx).platform(), cfg, dataset=dataset, dest=to, on_epoch=progress)
    if json:
        emit_json(result.to_dict())
        return
    c = console()
    c.print(f"[bold]{result.task}[/] on {result.dataset or result.data_dir}: best {result.monitor} "
            f"{_fmt(result.best)} at epoch {result.best_epoch + 1} of {result.epochs}"
            f"{' (stopped early)' if result.stopped_early else ''}, {result.seconds:.1f} s on {result.device}"
            f"{' with AMP' if result.amp else ''}")
    c.print(f"   run      {result.run_id}   (medcycle run show {result.run_id[:8]})")
    c.print(f"   model    {result.model_digest}")
    c.print(f"   weights  {result.weights_digest}")


@app.command("check")
def check(
    config: Annotated[Path, ConfigArg],
    overrides: Annotated[list[str] | None, SetOpt] = None,
    json: bool = JsonOpt,
) -> None:
    """Validate a config and print it with every default filled in."""
    from medcycle.training.config import load_config

    cfg = load_config(config, overrides or [])
    if json:
        emit_json(cfg.params())
        return
    console().print(f"{config} is valid: {cfg.task.value}, model {cfg.model.name.value}, "
                    f"epochs {cfg.training.epochs}, monitor {cfg.monitor}")
    sys.stdout.write(cfg.model_dump_json(indent=2) + "\n")


@app.command("example")
def example_(
    task: Annotated[str, typer.Argument(help=f"One of {', '.join(TASKS)}.", show_default=False)],
    dataset: Annotated[str | None, typer.Option(help="Dataset version NAME@TAG to put in it.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (.json).")] = None,
) -> None:
    """Print a config for TASK whose defaults train on the demo data in minutes on a CPU."""
    from medcycle.errors import UsageError
    from medcycle.training.config import example

    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}", hint=f"Use one of {', '.join(TASKS)}.")
    text = json_text(example(task, dataset))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        console().print(f"wrote {output}")


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


@app.command("models")
def models(json: bool = JsonOpt) -> None:
    """The networks a config can name, the tasks they serve and their default size."""
    from medcycle.training.config import MODELS

    rows = [{"name": name.value, "tasks": ", ".join(sorted(t.value for t in tasks)),
             "width": size[0] if size else None, "depth": size[1] if size else None, "about": about}
            for name, (tasks, size, about) in MODELS.items()]
    if json:
        emit_json(rows)
        return
    table("Networks", ["name", "tasks", "width", "depth", "about"],
          [(r["name"], r["tasks"], r["width"], r["depth"], r["about"]) for r in rows])


@demo_app.command("data")
def demo_data(
    ctx: typer.Context,
    to: Annotated[Path | None, typer.Option(help="Folder to write (default HOME/demo-data/training).")] = None,
    seed: Annotated[int, typer.Option(help="Everything follows from it, UIDs included.")] = 0,
    radiographs: Annotated[int, typer.Option(min=0, help="Radiograph studies (half with a lesion).")] = 96,
    volumes: Annotated[int, typer.Option(min=0, help="CT studies (most with a nodule).")] = 12,
    size: Annotated[int, typer.Option(min=32, max=1024, help="Radiograph rows and columns.")] = 128,
    volume_size: Annotated[int, typer.Option(min=16, max=512, help="CT rows and columns.")] = 48,
    slices: Annotated[int, typer.Option(min=4, max=512, help="CT slices.")] = 24,
    load: Annotated[bool, typer.Option(help="Ingest it and freeze datasets demo-xr and demo-ct (v1).")] = True,
    json: bool = JsonOpt,
) -> None:
    """Write synthetic chest radiographs and CT volumes with lesions as DICOM (masks also PNG/NIfTI)."""
    from medcycle.training import demo_data as demo

    cli = state(ctx)
    folder = to or cli.settings().home / "demo-data" / "training"
    data = demo.generate(folder, seed=seed, radiographs=radiographs, volumes=volumes, size=size,
                         volume_size=volume_size, slices=slices)
    out: dict[str, Any] = data.to_dict()
    if load:
        out["datasets"] = demo.load(cli.platform(), folder, actor=cli.actor)
    if json:
        emit_json(out)
        return
    c = console()
    c.print(f"wrote {out['radiographs']} radiographs ({out['radiographs_with_lesion']} with a lesion) and "
            f"{out['volumes']} CT volumes ({out['volumes_with_nodule']} with a nodule) to {folder}")
    for name, ref in out.get("datasets", {}).items():
        c.print(f"   {name:<8} {ref}   medcycle train example "
                f"{'segmentation-3d' if name == 'demo-ct' else 'classification-2d'} --dataset {ref} -o cfg.json")
    c.print("   then:    medcycle train run cfg.json")
