"""Errors to exit codes, in one place. Tracebacks only with ``--verbose``."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence

import typer

from medcycle.errors import MedcycleError

INTERNAL_ERROR_EXIT = 70


def run(app: typer.Typer, argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or "-v" in args
    as_json = "--json" in args
    try:
        rv = app(args=args, prog_name="medcycle", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv
    except MedcycleError as exc:
        if as_json:
            sys.stdout.write(json.dumps(exc.to_dict(), default=str) + "\n")
        sys.stderr.write(f"Error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"Hint: {exc.hint}\n")
        if verbose:
            traceback.print_exc()
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        return 130
    except typer.TyperException as exc:  # usage errors: bad option, missing argument, bad value
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            sys.stderr.write(f"Error: {exc}\n")
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback without --verbose
        sys.stderr.write(f"Internal error: {type(exc).__name__}: {exc}\n")
        sys.stderr.write("Hint: run again with --verbose for the traceback, and report it if it persists.\n")
        if verbose:
            traceback.print_exc()
        return INTERNAL_ERROR_EXIT
    return 0
