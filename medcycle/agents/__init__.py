"""Queued execution of runs on agents.

* :mod:`.spec` — the task contract (``TaskSpec``, ``CodeRef``) between submitters, pipelines and agents;
* :mod:`.code` — capture of the code at submission (commit, diff, bundle of unpushed commits, untracked files);
* :mod:`.enqueue` / :mod:`.submit` — ``run enqueue``; ``submit``/``wait``/``task_result`` for any caller;
* :mod:`.workspace`, :mod:`.environment`, :mod:`.data` — an agent rebuilds the tree, the Python environment
  and the dataset folders;
* :mod:`.executor` — runs one task in a child process (log, outputs, stop); :mod:`.agent` — the queue loop;
* :mod:`.reproduce` — ``run reproduce``: re-execute a finished run and compare its metrics.
"""
