"""Experiment tracking: runs with params, metrics, artifacts, images, models, captured code/environment/output.

The SDK is :func:`start_run` (see :mod:`medcycle.experiments.sdk`); reading is :func:`list_runs`,
:func:`get_run`, :func:`metric_history` and :func:`compare_runs`. Modules:

- ``sdk``: ``start_run`` and ``Run``; ``journal``: the crash-safe journal and background writer;
  ``records``: the record framing shared by journals and the ingest endpoint; ``ingest``: applying records
  to the store exactly once; ``sync``: replaying journals; ``remote``: the SDK against a server;
- ``capture``: git, packages, platform, environment, seeds; ``monitor``: stdout/stderr tee and resource
  sampling; ``verdict``: the reproducibility verdict; ``images``: rendering images and volumes;
- ``query``: the filter language and listings; ``runs``: one run, metric series, logs; ``compare``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medcycle.experiments.compare import compare_runs
    from medcycle.experiments.query import list_runs
    from medcycle.experiments.runs import get_run, metric_history
    from medcycle.experiments.sdk import Run, start_run

__all__ = ["Run", "compare_runs", "get_run", "list_runs", "metric_history", "start_run"]
_WHERE = {"Run": "sdk", "start_run": "sdk", "list_runs": "query", "get_run": "runs", "metric_history": "runs",
          "compare_runs": "compare"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"medcycle.experiments.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'medcycle.experiments' has no attribute {name!r}")
