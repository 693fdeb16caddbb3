"""Pipelines: declarative DAGs of steps, each cached on the content digests of its inputs, code and params.

* :mod:`.spec` — the YAML file format, validated (errors name the file, step and field); no code evaluation
* :mod:`.references` — ``${{ steps.S.outputs.K }}`` and ``${params.x}``, resolved by plain substitution
* :mod:`.graph` — topological order, cycles, dependants, drawing layers
* :mod:`.keys` — code digests and the cache key of a step
* :mod:`.executors` — the executor interface and the local executor (subprocess in a temporary folder)
* :mod:`.agent` — the agent executor (a :class:`~medcycle.agents.spec.TaskSpec` on a queue, then wait)
* :mod:`.stage` — ``python -m medcycle.pipelines.stage``: places a step's inputs, then runs its command
* :mod:`.runner` — one run: cache look-ups, execution, state recorded as it goes
* :mod:`.state` — reading runs and steps back (list, show)
* :mod:`.tables` — ``pipeline_runs``, ``pipeline_steps``, ``step_cache``
"""
