"""Errors of queued execution (both in the :mod:`medcycle.errors` tree)::

    Conflict
    └── TaskSetupFailed      exit 5   HTTP 409   the agent cannot rebuild the code, environment or data
    MedcycleError
    └── WaitTimedOut         exit 1   HTTP 504   a task did not finish within the time waited for it
"""

from __future__ import annotations

from medcycle.errors import Conflict, MedcycleError


class TaskSetupFailed(Conflict):
    """The agent could not prepare the task: the commit cannot be found, the diff does not apply, a package
    cannot be installed. Running it again on the same input will not help, so the job is not retried."""

    code = "task_setup_failed"


class WaitTimedOut(MedcycleError):
    """The task was still queued or running when the wait ended (it goes on; wait again or cancel it)."""

    code = "wait_timeout"
    http_status = 504
