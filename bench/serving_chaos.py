"""No job lost or doubled under chaos: medcycle's queue, workers and supervisor against a default Celery setup.

    .venv/bin/python bench/serving_chaos.py [--quick] [--jobs 5000] [--rate 40] [--install-peers] [--celery PATH]
                                            [--only medcycle|celery] [--keep] [--tmp DIR]

The same scenario runs twice, each time against its own ``redis-server`` (a private one on a free loopback port,
``appendonly yes``, ``appendfsync everysec``):

* ``JOBS`` inference jobs (``--quick``: 500) are submitted at ``--rate`` jobs/s (default 40, so the run spans the
  chaos schedule), each with its own idempotency key, over ``JOBS / 2`` distinct inputs (two jobs per input: the
  same result must be computed once and stored once); then one key in ten is submitted again, which must not add
  a job;
* two workers serve them under a supervisor that restarts a worker that dies; **a worker is kill -9ed five
  times** at random points of progress (each between 5 % and 85 % of the jobs finished, at least 1.5 s apart,
  a worker that is serving);
* **Redis is restarted once** (SIGTERM, then started again from its AOF) at a random point between 20 % and
  60 %; clients whose call fails during the restart retry it with the same key (what the idempotency key is
  for);
* at the end (the queue drained and nothing moving for a while, or a time limit) every job is counted.

**medcycle**: :func:`medcycle.serving.intake.submit` (the library behind ``POST /v1/jobs``) on the Redis Streams
queue (lease 3 s, 5 attempts), the real deployment supervisor (:mod:`medcycle.serving.supervisor`) running two
``medcycle.serving.routing`` workers, a tiny untrained CNN (16 × 16 PNG inputs, JSON findings only) so the
numbers are the queue's, not the model's. *Lost*: a key whose job did not end succeeded or dead-lettered.
*Doubled*: a second job for one key, or a second result row for one (inputs, model version, parameters).

**Celery** (its own throwaway venv, ``--install-peers``; never a medcycle dependency): a default setup —
Redis broker, ``acks_late=False``, prefetch multiplier 4, the prefork pool with one process per core, no
result backend — whose task sleeps 10 ms (the medcycle worker's per-job cost here) and appends its key to a
file. The client passes the key as ``task_id`` (Celery does not deduplicate on it). The worker runs under a
small restart loop here, and kill -9 hits its whole process group (the main process and its pool). *Lost*: a
key never run; *doubled*: a key run more than once. Messages prefetched but not started when the worker died
stay in Redis's ``unacked`` hash and come back only after the visibility timeout (one hour): they are lost for
the run and counted separately.

Results are printed and written to ``bench/results/serving_chaos.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform as host
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medcycle.errors import BackendUnavailable  # noqa: E402
from medcycle.platform import Platform  # noqa: E402
from medcycle.testing.platform import make_settings  # noqa: E402
from medcycle.testing.services import free_port, wait_for_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serving_chaos.json"
CELERY_VENV = Path(tempfile.gettempdir()) / "medcycle-bench-celery"
CELERY_SPEC = "celery[redis]>=5.3,<6"
MODEL = "chaos"
LEASE_S = 3.0
TASK_S = 0.010


def say(text: str) -> None:
    print(text, flush=True)


# -- a private redis-server with AOF -------------------------------------------------------------------------
class RedisServer:
    """``redis-server`` on a free loopback port with ``appendonly yes``, restartable from its AOF."""

    def __init__(self, folder: Path, fsync: str = "everysec") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BackendUnavailable("no redis-server binary", hint="Install redis-server (apt install redis-server).")
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "yes",
                     "--appendfsync", fsync, "--dir", str(folder), "--daemonize", "no"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port("127.0.0.1", self.port, 30):
            self.stop()
            raise BackendUnavailable(f"redis-server did not listen on port {self.port}", hint="See its log.")
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2)
        try:  # wait until the AOF is loaded
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.ping()
                    break
                except redis.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean shutdown fsyncs the AOF
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down_s: float = 2.0) -> float:
        """SIGTERM, ``down_s`` later start again on the same port and folder (the AOF is replayed); returns the
        downtime (s)."""
        started = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - started


# -- the chaos schedule, shared by both contestants ---------------------------------------------------------
@dataclass
class Chaos:
    """Kill a worker at ``kills`` points of progress and restart Redis at ``restart_at``."""

    kills: list[float]
    restart_at: float | None
    done: list[str] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # the progress at each action
    downtime_s: float = 0.0

    @classmethod
    def random(cls, rng: random.Random, kills: int, restart: bool) -> Chaos:
        return cls(sorted(rng.uniform(0.05, 0.85) for _ in range(kills)),
                   rng.uniform(0.2, 0.6) if restart else None)

    def run(self, progress: Callable[[], float | None], kill: Callable[[], str | None], redis: RedisServer,
            stop: threading.Event) -> None:
        """Act as progress passes each point (a kill waits for a serving worker; actions ≥ 1.5 s apart)."""
        pending_kills = list(self.kills)
        last = 0.0
        while not stop.is_set() and (pending_kills or self.restart_at is not None):
            stop.wait(0.05)
            if time.monotonic() - last < 1.5:
                continue
            value = progress()
            if value is None:
                continue
            if self.restart_at is not None and value >= self.restart_at:
                self.downtime_s = redis.restart()
                self.done.append(f"redis restarted at {value:.0%} ({self.downtime_s:.1f} s down)")
                self.at.append(value)
                self.restart_at, last = None, time.monotonic()
            elif pending_kills and value >= pending_kills[0]:
                victim = kill()
                if victim is not None:
                    pending_kills.pop(0)
                    self.done.append(f"kill -9 {victim} at {value:.0%}")
                    self.at.append(value)
                    last = time.monotonic()


def pace(started: float, i: int, rate: float | None) -> None:
    """Sleep until job ``i`` is due at ``rate`` jobs/s (None: no pacing), so the run spans the chaos."""
    if rate:
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def retrying(call: Callable[[], Any], seconds: float = 120.0, failures: Counter[str] | None = None) -> Any:
    """``call()``, retried while the backend is unreachable (a Redis restart), for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except BackendUnavailable:
            if failures is not None:
                failures["backend unavailable"] += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- medcycle ------------------------------------------------------------------------------------------------
def register_tiny_model(platform: Platform, folder: Path) -> str:
    """A servable version of ``chaos``: an untrained, seeded tiny CNN on 16 × 16 inputs, logged as training logs."""
    import torch

    from medcycle.experiments.sdk import start_run
    from medcycle.models import registry
    from medcycle.training.config import example, validate
    from medcycle.training.models import build_model, out_channels

    classes = ["normal", "lesion"]
    data = example("classification-2d")
    data["data"] = {**data["data"], "dataset": None, "path": str(folder), "classes": classes}
    data["input"] = {"size": [16, 16], "intensity": {"kind": "percentile", "lower": 1, "upper": 99}}
    data["model"] = {"name": "tiny-cnn", "width": 4, "depth": 1}
    config = validate(data)
    torch.manual_seed(0)
    network = build_model(config, out_channels(config, classes))
    with start_run(MODEL, platform=platform, journal_dir=folder / "journals", capture=False, capture_output=False,
                   resources=False, params={"samples": {"classes": classes}}) as run:
        run.log_artifact(config.model_dump_json(indent=2).encode(), "config.json")
        run.log_model(network)
    with platform.session() as session:
        return registry.register(session, platform.objects, MODEL, run_id=run.id,
                                 task="classification-2d").ref


def store_inputs(platform: Platform, count: int, seed: int) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    digests = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(buf, "PNG")
        digests.append(platform.objects.put(buf.getvalue()).digest)
    return digests


@dataclass
class Outcome:
    """How one contestant ended. ``lost``/``doubled`` are what the scenario is about."""

    name: str
    jobs: int
    resubmitted: int = 0
    done: int = 0
    dead: int = 0
    lost: int = 0
    doubled: int = 0
    held_unacked: int = 0  # Celery: prefetched messages only a visibility timeout brings back
    extra: dict[str, Any] = field(default_factory=dict)
    chaos: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class MedcycleChaos:
    """The scenario on medcycle (see the module docstring); :meth:`run` returns the :class:`Outcome`."""

    def __init__(self, tmp: Path, jobs: int, *, seed: int = 0, kills: int = 5, restart_redis: bool = True,
                 workers: int = 2, timeout_s: float = 600.0, resubmit_share: float = 0.1,
                 rate: float | None = None) -> None:
        self.tmp, self.jobs, self.seed, self.workers, self.timeout_s = tmp, jobs, seed, workers, timeout_s
        self.rate = rate
        self.rng = random.Random(seed)
        self.chaos = Chaos.random(self.rng, kills, restart_redis)
        self.resubmit_share = resubmit_share
        self.keys: dict[str, str] = {}  # idempotency key -> job id
        self.mismatched: list[str] = []  # a resubmitted key answered with another job
        self.submit_retries: Counter[str] = Counter()
        self.resubmitted = 0

    def run(self) -> Outcome:
        from medcycle.serving.deploy import DeploymentSpec, child_env, deploy_dir, write_spec

        redis = RedisServer(self.tmp / "redis")
        platform: Platform | None = None
        supervisor: subprocess.Popen[bytes] | None = None
        started = time.monotonic()
        try:
            platform = Platform(make_settings(self.tmp / "home", queue_url=redis.url, job_lease_seconds=LEASE_S,
                                              job_queue_limit=self.jobs * 2 + 100))
            platform.init()
            ref = register_tiny_model(platform, self.tmp / "model")
            digests = store_inputs(platform, max(1, self.jobs // 2), self.seed)
            write_spec(platform.settings, DeploymentSpec(model=ref, workers=self.workers, api=False, generation=1))
            env = child_env(platform.settings)
            env.update({"MEDCYCLE_JOB_LEASE_SECONDS": str(LEASE_S),
                        "MEDCYCLE_JOB_QUEUE_LIMIT": str(self.jobs * 2 + 100),
                        "MEDCYCLE_SERVING_IDLE_WAIT_MS": "50", "MEDCYCLE_SERVING_MAX_BATCH_IMAGES": "32",
                        "MEDCYCLE_SERVING_MAX_DELAY_MS": "10", "OMP_NUM_THREADS": "1", "MEDCYCLE_LOG_LEVEL": "WARNING",
                        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
            folder = deploy_dir(platform.settings)
            supervisor = subprocess.Popen([sys.executable, "-m", "medcycle.serving.supervisor"], env=env, cwd=ROOT,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
            self._wait_ready(folder, supervisor)
            started = time.monotonic()
            stop = threading.Event()
            chaos = threading.Thread(target=self.chaos.run, args=(lambda: self._progress(platform),
                                                                  lambda: self._kill(folder), redis, stop),
                                     daemon=True)
            chaos.start()
            self._submit(platform, ref, digests)
            self._drain(platform, started, chaos)
            stop.set()
            chaos.join(timeout=60)
            return self._count(platform, time.monotonic() - started)
        finally:
            if supervisor is not None:
                supervisor.send_signal(signal.SIGTERM)
                try:
                    supervisor.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    supervisor.kill()
                    supervisor.wait(timeout=10)
            if platform is not None:
                platform.close()
            redis.stop()

    # -- parts ---------------------------------------------------------------------------------------------
    def _wait_ready(self, folder: Path, supervisor: subprocess.Popen[bytes]) -> None:
        from medcycle.serving.deploy import STATUS_FILE, read_json

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if supervisor.poll() is not None:
                raise RuntimeError(f"the supervisor exited with {supervisor.returncode}; see {folder}/supervisor.log")
            status = read_json(folder / STATUS_FILE) or {}
            workers = [p for p in status.get("processes", []) if p.get("role") == "worker"]
            if status.get("state") == "ready" and len(workers) == self.workers:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the workers were not ready in 60 s; see {folder}/supervisor.log")

    def _kill(self, folder: Path) -> str | None:
        """kill -9 one serving worker (None when none is serving right now)."""
        from medcycle.serving.deploy import STATUS_FILE, read_json

        status = read_json(folder / STATUS_FILE) or {}
        serving = [p for p in status.get("processes", []) if p.get("role") == "worker" and p.get("state") == "ready"]
        if not serving:
            return None
        victim = self.rng.choice(serving)
        try:
            os.kill(int(victim["pid"]), signal.SIGKILL)
        except ProcessLookupError:
            return None
        return str(victim["name"])

    def _progress(self, platform: Platform) -> float | None:
        from medcycle.serving.config import ServingSettings

        try:
            counts = platform.jobs.stats(ServingSettings().queue).counts
        except BackendUnavailable:
            return None
        return sum(counts.get(s, 0) for s in ("succeeded", "dead", "failed", "cancelled")) / self.jobs

    def _submit(self, platform: Platform, ref: str, digests: list[str]) -> None:
        from medcycle.serving import intake

        def one(i: int) -> str:
            key = f"job-{i}"
            job = retrying(lambda: intake.submit(platform, [digests[i % len(digests)]], model=ref,
                                                 idempotency_key=key, params={"outputs": []}),
                           failures=self.submit_retries)
            return str(job.id)

        started = time.monotonic()
        for i in range(self.jobs):
            pace(started, i, self.rate)
            self.keys[f"job-{i}"] = one(i)
        again = self.rng.sample(range(self.jobs), int(self.jobs * self.resubmit_share))
        for i in again:
            if one(i) != self.keys[f"job-{i}"]:
                self.mismatched.append(f"job-{i}")
        self.resubmitted = len(again)

    def _drain(self, platform: Platform, started: float, chaos: threading.Thread) -> None:
        """Until every job finished (and the chaos schedule is through, or 30 s more have passed)."""
        finished_at = None
        while time.monotonic() - started < self.timeout_s:
            value = self._progress(platform)
            if value is not None and value >= 1.0:
                try:
                    if not platform.jobs.stats("inference").active:
                        finished_at = finished_at or time.monotonic()
                        if not chaos.is_alive() or time.monotonic() - finished_at > 30:
                            return
                except BackendUnavailable:
                    pass
            time.sleep(0.2)

    def _count(self, platform: Platform, seconds: float) -> Outcome:
        from sqlalchemy import func, select

        from medcycle.jobs.base import JobState
        from medcycle.monitoring.tables import PredictionRow
        from medcycle.serving.tables import ServingResultRow

        out = Outcome("medcycle", self.jobs, resubmitted=self.resubmitted, chaos=self.chaos.done,
                      seconds=round(seconds, 1))
        states: Counter[str] = Counter()
        keys_of_results: dict[str, set[str]] = {}
        for job_id in self.keys.values():
            job = retrying(lambda j=job_id: platform.jobs.get(j))  # type: ignore[misc]
            states[job.state.value] += 1
            if job.state is JobState.SUCCEEDED and job.result:
                keys_of_results.setdefault(str(job.payload["inputs"][0]), set()).add(str(job.result["result"]))
        out.done, out.dead = states["succeeded"], states["dead"]
        out.lost = self.jobs - out.done - out.dead
        queued_total = sum(platform.jobs.stats("inference").counts.values())
        with platform.session(write=False) as s:
            rows = int(s.scalar(select(func.count()).select_from(ServingResultRow)) or 0)
            twice = s.execute(select(ServingResultRow.inputs_digest, ServingResultRow.model_version_id,
                                     ServingResultRow.params, func.count())
                              .group_by(ServingResultRow.inputs_digest, ServingResultRow.model_version_id,
                                        ServingResultRow.params).having(func.count() > 1)).all()
            logged = Counter(dict(s.execute(select(PredictionRow.job_id, func.count())
                                            .group_by(PredictionRow.job_id)).all()))
        out.doubled = len(twice) + (queued_total - self.jobs) + len(self.mismatched)
        out.extra = {"states": dict(states), "result_rows": rows, "distinct_inputs_done": len(keys_of_results),
                     "inputs_with_two_result_keys": sum(len(v) > 1 for v in keys_of_results.values()),
                     "jobs_in_queue": queued_total, "resubmits_answered_by_another_job": len(self.mismatched),
                     "prediction_log_rows": sum(logged.values()),
                     "jobs_logged_twice": sum(1 for n in logged.values() if n > 1),
                     "submit_retries": sum(self.submit_retries.values())}
        return out


# -- Celery --------------------------------------------------------------------------------------------------
CELERY_TASKS = f'''
import os
import time

from celery import Celery

app = Celery("chaos", broker=os.environ["CHAOS_BROKER"])


@app.task(name="chaos.infer")
def infer(key):
    time.sleep({TASK_S})
    fd = os.open(os.environ["CHAOS_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (key + "\\n").encode())
    finally:
        os.close(fd)
'''

CELERY_CLIENT = '''
import json
import sys
import time

from chaos_tasks import infer

jobs, again, rate = int(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
started = time.monotonic()


def send(i):
    deadline = time.monotonic() + 120
    while True:
        try:
            infer.apply_async(args=[f"job-{i}"], task_id=f"job-{i}")
            return
        except Exception:  # the broker is restarting: send again, same task id
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


for i in range(jobs):
    if rate:
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
    send(i)
for i in again:
    send(i)
print("submitted", flush=True)
'''


class CeleryChaos:
    """The same scenario on a default Celery worker (see the module docstring)."""

    def __init__(self, tmp: Path, jobs: int, venv: Path, *, seed: int = 0, kills: int = 5,
                 restart_redis: bool = True, timeout_s: float = 600.0, resubmit_share: float = 0.1,
                 rate: float | None = None) -> None:
        self.tmp, self.jobs, self.venv, self.timeout_s = tmp, jobs, venv, timeout_s
        self.rate = rate
        self.rng = random.Random(seed)
        self.chaos = Chaos.random(self.rng, kills, restart_redis)
        self.again = self.rng.sample(range(jobs), int(jobs * resubmit_share))
        self.worker: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.out = tmp / "done.txt"

    def _env(self, redis: RedisServer) -> dict[str, str]:
        return {**os.environ, "CHAOS_BROKER": redis.url, "CHAOS_OUT": str(self.out), "PYTHONPATH": str(self.tmp)}

    def _start_worker(self, env: dict[str, str]) -> None:
        self.worker = subprocess.Popen([str(self.venv / "bin" / "celery"), "-A", "chaos_tasks", "worker",
                                        "--loglevel", "ERROR"], cwd=self.tmp, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=(self.tmp / "worker.log").open("ab"),
                                       start_new_session=True)

    def _kill(self) -> str | None:
        if self.worker is None or self.worker.poll() is not None:
            return None
        pid = self.worker.pid
        try:
            os.killpg(pid, signal.SIGKILL)  # the main process and its pool
        except ProcessLookupError:
            return None
        return f"celery worker {pid}"

    def _done(self) -> list[str]:
        return self.out.read_text().split() if self.out.exists() else []

    def version(self) -> str:
        out = subprocess.run([str(self.venv / "bin" / "celery"), "--version"], capture_output=True, text=True,
                             check=False)
        return out.stdout.strip()

    def run(self) -> Outcome:
        import redis as redis_py

        self.tmp.mkdir(parents=True, exist_ok=True)
        (self.tmp / "chaos_tasks.py").write_text(CELERY_TASKS)
        (self.tmp / "chaos_client.py").write_text(CELERY_CLIENT)
        redis = RedisServer(self.tmp / "redis")
        env = self._env(redis)
        stop = threading.Event()
        client: subprocess.Popen[bytes] | None = None
        started = time.monotonic()
        try:
            self._start_worker(env)
            time.sleep(3.0)  # let the worker connect before the first message
            started = time.monotonic()
            client = subprocess.Popen([str(self.venv / "bin" / "python"), "chaos_client.py", str(self.jobs),
                                       json.dumps(self.again), str(self.rate or 0)], cwd=self.tmp, env=env,
                                      stdout=subprocess.DEVNULL, stderr=(self.tmp / "client.log").open("ab"))

            def keep_running() -> None:  # the supervisor of this side: restart a dead worker (after 2 s, as ours)
                while not stop.wait(0.2):
                    if self.worker is not None and self.worker.poll() is not None:
                        stop.wait(2.0)
                        self._start_worker(env)
                        self.restarts += 1

            keeper = threading.Thread(target=keep_running, daemon=True)
            keeper.start()
            chaos = threading.Thread(target=self.chaos.run, args=(lambda: len(set(self._done())) / self.jobs,
                                                                  self._kill, redis, stop), daemon=True)
            chaos.start()
            last, moved = -1, time.monotonic()
            broker = redis_py.Redis.from_url(redis.url, socket_timeout=5)
            while time.monotonic() - started < self.timeout_s:
                count = len(self._done())
                if count != last:
                    last, moved = count, time.monotonic()
                try:
                    waiting = int(broker.llen("celery"))
                except redis_py.RedisError:
                    waiting = -1
                idle = time.monotonic() - moved
                if client.poll() is not None and waiting == 0 and idle > 10 and (not chaos.is_alive() or idle > 30):
                    break
                time.sleep(0.2)
            seconds = time.monotonic() - started
            try:
                unacked = int(broker.hlen("unacked"))
            except redis_py.RedisError:
                unacked = -1
            broker.close()
        finally:
            stop.set()
            if client is not None and client.poll() is None:
                client.kill()
                client.wait(timeout=10)
            if self.worker is not None and self.worker.poll() is None:
                os.killpg(self.worker.pid, signal.SIGTERM)
                try:
                    self.worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.worker.pid, signal.SIGKILL)
                    self.worker.wait(timeout=10)
            redis.stop()
        runs = Counter(self._done())
        expected = {f"job-{i}" for i in range(self.jobs)}
        resent = Counter(f"job-{i}" for i in self.again)
        out = Outcome("celery (default)", self.jobs, resubmitted=len(self.again), chaos=self.chaos.done,
                      seconds=round(seconds, 1))
        out.done = sum(1 for k in expected if runs[k])
        out.lost = len(expected) - out.done
        out.doubled = sum(1 for k in expected if runs[k] > 1)
        out.held_unacked = unacked
        out.extra = {"runs": sum(runs.values()), "worker_restarts": self.restarts,
                     "doubled_among_resubmitted_keys": sum(1 for k in resent if runs[k] > 1),
                     "doubled_among_other_keys": sum(1 for k in expected if runs[k] > 1 and k not in resent),
                     "client_exit": client.returncode if client is not None else None}
        return out


def find_celery(args: argparse.Namespace) -> tuple[Path | None, str]:
    venv = args.celery or CELERY_VENV
    if not (venv / "bin" / "celery").exists() and args.install_peers and args.celery is None:
        say(f"installing {CELERY_SPEC} into {venv} (bench-only venv) ...")
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", CELERY_SPEC], check=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            return None, f"Celery could not be installed ({exc}); the Celery row is left out"
    if not (venv / "bin" / "celery").exists():
        return None, f"Celery is not installed in {venv}: rerun with --install-peers (or --celery VENV)"
    return venv, ""


def show(outcomes: list[Outcome]) -> None:
    say(f"{'':18} {'jobs':>6} {'resent':>6} {'done':>6} {'dead':>5} {'LOST':>6} {'DOUBLED':>8} {'unacked':>8} "
        f"{'seconds':>8}")
    for o in outcomes:
        say(f"{o.name:18} {o.jobs:6d} {o.resubmitted:6d} {o.done:6d} {o.dead:5d} {o.lost:6d} {o.doubled:8d} "
            f"{o.held_unacked:8d} {o.seconds:8.1f}")
    for o in outcomes:
        say(f"  {o.name}: {'; '.join(o.chaos)}")
        say(f"  {o.name}: {json.dumps(o.extra)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 jobs instead of 5,000")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=40.0,
                        help="jobs submitted per second (0: as fast as possible), the same for both; paced so the "
                             "run lasts long enough for the chaos schedule")
    parser.add_argument("--install-peers", action="store_true",
                        help=f"install {CELERY_SPEC} into {CELERY_VENV} (a venv of its own) when missing")
    parser.add_argument("--celery", type=Path, default=None, help="a venv with Celery installed")
    parser.add_argument("--only", choices=["medcycle", "celery"], default=None)
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs) afterwards")
    args = parser.parse_args()
    jobs = args.jobs or (500 if args.quick else 5000)
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="medcycle-chaos-", dir=args.tmp))
    outcomes: list[Outcome] = []
    notes: list[str] = []
    celery_version = None
    try:
        if args.only in (None, "medcycle"):
            say(f"medcycle: {jobs} jobs, 2 workers under the supervisor, 5 × kill -9, 1 Redis restart ...")
            outcomes.append(MedcycleChaos(tmp / "medcycle", jobs, seed=args.seed, rate=args.rate or None).run())
        if args.only in (None, "celery"):
            venv, why = find_celery(args)
            if venv is None:
                notes.append(why)
                say(why)
            else:
                runner = CeleryChaos(tmp / "celery", jobs, venv, seed=args.seed, rate=args.rate or None)
                celery_version = runner.version()
                say(f"celery {celery_version}: {jobs} jobs, default worker, 5 × kill -9, 1 Redis restart ...")
                outcomes.append(runner.run())
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    show(outcomes)
    checks = [{"what": f"{o.name}: jobs lost", "value": o.lost, "target": "0", "met": o.lost == 0}
              for o in outcomes if o.name == "medcycle"]
    checks += [{"what": f"{o.name}: jobs doubled", "value": o.doubled, "target": "0", "met": o.doubled == 0}
               for o in outcomes if o.name == "medcycle"]
    for c in checks:
        say(f"[{'met ' if c['met'] else 'MISS'}] {c['what']}: {c['value']} (target {c['target']})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "at": datetime.now(UTC).isoformat(), "machine": host.platform(), "cpus": os.cpu_count(),
        "load_before": load_before, "load_after": os.getloadavg(), "jobs": jobs, "seed": args.seed, "rate": args.rate,
        "celery": celery_version, "outcomes": [o.to_dict() for o in outcomes], "checks": checks, "notes": notes,
    }, indent=2))
    return 0 if all(c["met"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
