"""Queued execution of runs on agents: the task contract (:mod:`.spec`), submission and the agent loop."""
