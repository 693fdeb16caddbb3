"""``python -m medcycle.pipelines.stage [--input PATH=DIGEST]... [--run ID --step NAME] -- COMMAND...``

What an agent runs for a pipeline step: it places the outputs of earlier steps the step reads (objects, by
digest, fetched and verified from the store the ``MEDCYCLE_*`` variables name — an agent hands its child
those) at their paths under the current folder, then replaces itself with the step's command, so the exit
status, signals and output are the command's own. ``python``/``python3`` as the command means this
interpreter (the one the agent chose for the task).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medcycle.errors import MedcycleError
from medcycle.objects.base import DIGEST_RE
from medcycle.pipelines.spec import check_relative

MODULE = "medcycle.pipelines.stage"
SETUP_FAILED = 70


def wrap(command: list[str] | tuple[str, ...], inputs: dict[str, str], *, run: str, step: str) -> list[str]:
    """The argv that places ``inputs`` and then runs ``command`` (for a task on an agent)."""
    argv = ["python", "-m", MODULE, "--run", run, "--step", step]
    for path, digest in sorted(inputs.items()):
        argv += ["--input", f"{path}={digest}"]
    return [*argv, "--", *command]


def place_inputs(inputs: dict[str, str], cwd: Path) -> None:
    """Fetch each input object (verified) to its relative path under ``cwd``."""
    if not inputs:
        return
    from medcycle.platform import Platform
    from medcycle.settings import load_settings

    platform = Platform(load_settings())
    try:
        for rel, digest in inputs.items():
            platform.objects.get_to_path(digest, cwd / rel)
    finally:
        platform.close()


def _parse(argv: list[str]) -> tuple[dict[str, str], list[str], argparse.Namespace]:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--input", action="append", default=[], metavar="PATH=DIGEST")
    parser.add_argument("--run", default=None)
    parser.add_argument("--step", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    inputs: dict[str, str] = {}
    for item in args.input:
        path, sep, digest = item.partition("=")
        rel = check_relative(path) if sep else None
        if rel is None or not DIGEST_RE.match(digest):
            parser.error(f"--input {item!r} is not RELATIVE_PATH=DIGEST")
        inputs[rel] = digest
    return inputs, command, args


def main(argv: list[str] | None = None) -> int:
    inputs, command, args = _parse(list(sys.argv[1:] if argv is None else argv))
    try:
        place_inputs(inputs, Path.cwd())
    except MedcycleError as exc:
        print(f"medcycle: cannot place the step's inputs: {exc}", file=sys.stderr)  # noqa: T201
        return SETUP_FAILED
    if args.run:
        os.environ["MEDCYCLE_PIPELINE_RUN"] = args.run
    if args.step:
        os.environ["MEDCYCLE_PIPELINE_STEP"] = args.step
    if command[0] in ("python", "python3"):
        command = [sys.executable, *command[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)  # noqa: S606 - the step's own argv, as declared in the pipeline file
    except OSError as exc:
        print(f"medcycle: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)  # noqa: T201
        return 127
    return 0  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    raise SystemExit(main())
