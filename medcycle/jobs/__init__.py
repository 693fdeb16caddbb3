"""Durable job queues with leases: embedded SQL and Redis Streams backends behind one contract."""

from medcycle.jobs.base import Job, JobCancelled, JobQueue, JobState, LeaseLost, QueueStats
from medcycle.jobs.factory import open_job_queue

__all__ = ["Job", "JobCancelled", "JobQueue", "JobState", "LeaseLost", "QueueStats", "open_job_queue"]
