"""The whole cycle of ``medcycle demo`` on the production stack: PostgreSQL, Redis, S3 and separate processes.

The metadata store is a fresh PostgreSQL database (dropped after), the queue a private key prefix on Redis, the
object store a bucket on SeaweedFS (``weed mini``, started by the ``s3_service`` fixture and stopped by its PID).
The API (``medcycle serve``), two serving workers (``medcycle serve-worker``) and an agent
(``medcycle agent start``) run as their own processes, configured only by ``MEDCYCLE_*`` variables.

The demo's stages drive the cycle (the ``quick`` profile): data ingested with de-identification, dataset v1, a
labeling round by simulated readers, consensus and dataset v2, a hypothesis. Then the two training runs are
queued with ``medcycle run enqueue`` and executed by the agent; the models are evaluated with the release gates,
registered and promoted; production is deployed and studies go in through the API process (REST) and DICOM
C-STORE, answered by the worker processes; results are fetched over REST; drift pages, a monitoring report is
made, production is rolled back and the next study is answered by the earlier version.

Without PostgreSQL, Redis or ``weed`` the test is skipped with the reason — and fails under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rich.console import Console
from sqlalchemy import func, select

from medcycle.agents.executor import settings_env
from medcycle.demo import data, labeling, modeling, monitoring, serving
from medcycle.demo.context import MODEL, PRODUCTION, PROFILES, XR_DATASET, Demo
from medcycle.platform import Platform
from medcycle.settings import Settings
from medcycle.testing.platform import make_settings
from medcycle.testing.postgres import PostgresServer
from medcycle.testing.s3 import S3Service
from medcycle.testing.services import free_port
from tests.training.conftest import pin_deid_key

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

TRAINING_QUEUE = "training-it"
STARTUP_S = 120.0  # a process importing torch on two busy cores
STOP_S = 60.0  # a worker finishes the batch in hand; two busy cores are slow


@dataclass
class Child:
    """A medcycle process started by the test, stopped by its PID."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stdout: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after :data:`STOP_S`; the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_S)
        return int(self.proc.returncode)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(text.splitlines()[-lines:])

    def json_out(self) -> dict[str, Any]:
        """The JSON summary the process printed on stdout when it stopped."""
        text = self.stdout.read_text().strip()
        assert text, self.tail()
        found: dict[str, Any] = json.loads(text[text.index("{"):])
        return found


@dataclass
class Stack:
    """The services and processes of one test run."""

    settings: Settings
    env: dict[str, str]
    folder: Path
    api_url: str = ""
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> Child:
        log, out = self.folder / f"{name}.log", self.folder / f"{name}.out"
        with log.open("wb") as err, out.open("wb") as stdout:
            proc = subprocess.Popen([sys.executable, "-m", "medcycle", *args], env={**self.env, **(extra_env or {})},
                                    cwd=self.folder, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err)
        child = Child(name, proc, log, out)
        self.children.append(child)
        return child

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 120.0) -> str:
        """Run one ``medcycle`` command to its end; its stdout (a failure shows its stderr)."""
        done = subprocess.run([sys.executable, "-m", "medcycle", *args], env=self.env, cwd=cwd or self.folder,
                              capture_output=True, text=True, timeout=timeout, check=False)
        assert done.returncode == 0, f"medcycle {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        return done.stdout

    def logs(self) -> str:
        return "\n".join(c.tail() for c in self.children)


def _child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDCYCLE_", "AWS_"))}
    env.update(settings_env(settings))
    env.update(MEDCYCLE_HOST=settings.host, MEDCYCLE_PORT=str(settings.port), MEDCYCLE_LOG_LEVEL="WARNING",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def stack(postgres_server: PostgresServer, redis_url: str, s3_service: S3Service, s3_bucket: str,
          tmp_path: Path) -> Iterator[Stack]:
    """A fresh PostgreSQL database, a private Redis key prefix and an S3 bucket; processes stopped after."""
    database = postgres_server.create_database()
    prefix = f"medcycle-it-{uuid.uuid4().hex[:12]}:"
    port = free_port()
    settings = make_settings(
        tmp_path / "home", database_url=postgres_server.url_for(database),
        queue_url=f"{redis_url}{'&' if '?' in redis_url else '?'}key_prefix={prefix}",
        host="127.0.0.1", port=port, **s3_service.settings_overrides(s3_bucket))
    folder = tmp_path / "procs"
    folder.mkdir()
    built = Stack(settings, _child_env(settings), folder, api_url=f"http://127.0.0.1:{port}")
    try:
        yield built
    finally:
        for child in reversed(built.children):
            child.stop()
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
        postgres_server.drop_database(database)


def _wait_live(stack: Stack, api: Child) -> None:
    deadline = time.monotonic() + STARTUP_S
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            assert api.alive(), api.tail()
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{stack.api_url}/readyz").status_code == 200:
                    return
            time.sleep(0.2)
    raise AssertionError(f"the API process did not get ready in {STARTUP_S:.0f} s\n{api.tail()}")


def _enqueue_training(stack: Stack, demo: Demo, workdir: Path) -> list[str]:
    """Both runs of the demo as training configs, queued with ``medcycle run enqueue``; their job ids."""
    workdir.mkdir()
    jobs = []
    for name, epochs, width, scheduler in modeling.run_specs(demo):
        config = modeling.training_config(demo, name, epochs, width, scheduler)
        (workdir / f"{name}.json").write_text(json.dumps(config.params(), indent=1))
        out = stack.cli("run", "enqueue", "--queue", TRAINING_QUEUE, "--idempotency-key", f"it-{name}",
                        "--name", name, f"{name}.json", cwd=workdir)
        jobs.append(out.strip().splitlines()[-1])
    return jobs


def _wait_tasks(stack: Stack, platform: Platform, jobs: Sequence[str], agent: Child) -> list[str]:
    """Wait for the agent to finish the training tasks; the run each one made."""
    from medcycle.agents.submit import wait

    runs = []
    for job_id in jobs:
        assert agent.alive() or platform.jobs.get(job_id).state.finished, agent.tail()
        job = wait(platform, job_id, timeout=420)
        assert job.state.value == "succeeded", f"task {job_id}: {job.state.value} {job.error}\n{agent.tail(80)}"
        assert job.result is not None and job.result["exit_code"] == 0 and job.result["run_id"]
        runs.append(str(job.result["run_id"]))
    return runs


def _answer(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_the_whole_cycle_on_postgres_redis_s3_and_separate_processes(stack: Stack) -> None:
    from medcycle.models import registry
    from medcycle.monitoring.tables import PredictionRow, ReportRow
    from medcycle.serving.results import job_out

    started = time.monotonic()
    platform = Platform(stack.settings)
    token = platform.init().admin_token
    assert token is not None
    pin_deid_key(platform)  # the same pseudonyms, hence splits and models, as the demo's own test
    assert platform.settings.resolved_database_url.startswith("postgresql")
    assert platform.settings.resolved_object_store_url.startswith("s3://")
    assert platform.settings.queue_url.startswith("redis://")

    api = stack.start("api", "serve")
    workers = [stack.start(f"worker-{n}", "serve-worker", "--name", f"it-worker-{n}", "--device", "cpu",
                           "--max-batch-images", "1", "--max-delay-ms", "0", "--json") for n in (1, 2)]
    agent = stack.start("agent", "agent", "start", "--queue", TRAINING_QUEUE, "--max-tasks", "2", "--name",
                        "it-agent", "--quiet", "--json")
    out = io.StringIO()
    demo = Demo(platform, Console(file=out, width=200), PROFILES["quick"], token=token, api_url=stack.api_url,
                workers_elsewhere=True)
    try:
        # Data, labels and dataset versions: the demo's stages, on PostgreSQL and S3.
        data.generate_and_ingest(demo)
        data.dataset_v1(demo)
        labeling.labeling_task(demo)
        labeling.agreement_and_consensus(demo)
        labeling.dataset_v2(demo)
        modeling.hypothesis(demo)
        assert demo.v2 == f"{XR_DATASET}@v2" and demo.consensus_set is not None

        # Training: queued with the CLI, run by the agent process.
        tasks = _enqueue_training(stack, demo, stack.folder / "task")
        demo.runs = _wait_tasks(stack, platform, tasks, agent)
        agent_summary = (agent.proc.wait(timeout=STOP_S), agent.json_out())
        assert agent_summary[0] == 0 and agent_summary[1]["finished"] == 2, agent.tail()

        modeling.evaluate_and_release(demo)  # release gates, registry, cards, promotion
        assert demo.promoted == [f"{MODEL}@v1", f"{MODEL}@v2"], out.getvalue()[-3000:]

        _wait_live(stack, api)
        serving.deploy_and_serve(demo)  # REST to the API process and C-STORE; the worker processes answer
        p = demo.profile
        assert len(demo.served_jobs) == p.rest_studies + 1 + p.cstore_studies
        client = demo.http()
        answers = [_answer(client, j) for j in demo.served_jobs]
        statuses = [a["status"] for a in answers]
        # the MR slice is refused by its header; a radiograph may be refused by the image statistics, calibrated
        # to flag about 5 % of in-distribution images (a false alarm of the gate, not a failure of the stack)
        layers = [{(c.get("ood") or {}).get("layer") for c in (a["result"] or {}).get("cases", [])} for a in answers]
        mr = p.rest_studies  # served_jobs: the REST radiographs, the MR slice, the C-STORE studies
        assert statuses[mr] == "refused" and layers[mr] == {"header"}, answers[mr]
        others = [(s, la) for k, (s, la) in enumerate(zip(statuses, layers, strict=True)) if k != mr]
        assert all(s == "done" or la == {"image"} for s, la in others), others
        assert sum(s == "done" for s, _ in others) >= len(others) - 2, others
        assert {a["result"]["model"]["ref"] for a in answers} == {f"{MODEL}@v2"}
        first = answers[0]
        assert first["result"]["outputs"], first
        output = client.get(f"/v1/jobs/{first['id']}/outputs/0")
        assert output.status_code == 200 and len(output.content) > 100

        monitoring.report_drift_and_rollback(demo)  # drift traffic over REST, the alert, a report, the rollback
        report = json.loads(stack.cli("monitor", "report", "--since", "8h", "--json"))
        assert re.match(r"\d+ jobs: \d+ succeeded", report["headline"]), report
        page = client.get(report["url"])  # the stored report, through the API process
        assert page.status_code == 200 and report["headline"].split(":")[0] in page.text
    finally:
        demo.close()
    text = out.getvalue()
    assert "left out" not in text, text[-3000:]

    # Both serving workers took jobs.
    summaries = []
    for worker in workers:
        assert worker.alive(), worker.tail()
        assert worker.stop() == 0, worker.tail()
        summaries.append(worker.json_out())
    assert all(s["jobs"] > 0 and s["computed"] > 0 for s in summaries), summaries
    served = len(demo.served_jobs)
    assert sum(s["jobs"] for s in summaries) >= served, (summaries, served)

    with platform.session(write=False) as s:
        history = [(m.action, m.to_ref) for m in registry.alias_history(s, MODEL, PRODUCTION)]
        assert history == [("promote", f"{MODEL}@v1"), ("promote", f"{MODEL}@v2"), ("rollback", f"{MODEL}@v1")]
        by_version = dict(s.execute(select(PredictionRow.model_version, func.count())
                                    .group_by(PredictionRow.model_version)).all())
        assert by_version[f"{MODEL}@v1"] == 1 and by_version[f"{MODEL}@v2"] == served - 1
        assert (s.scalar(select(func.count()).select_from(ReportRow)) or 0) >= 2  # the demo's and the CLI's
    last = demo.served_jobs[-1]
    after = job_out(platform, platform.jobs.get(last))
    assert after.result is not None and after.result.model.ref == f"{MODEL}@v1"

    # Lineage, through the CLI: model -> run -> dataset version -> label set.
    from medcycle.datasets import versions
    from medcycle.datasets.tables import LabelEntryRow
    from medcycle.labels import sets

    with platform.session(write=False) as s:
        v2 = versions.get_version(s, demo.v2)
        assert v2.label_set is not None
        entries = dict(s.execute(select(LabelEntryRow.target_uid, LabelEntryRow.label)
                                 .where(LabelEntryRow.label_set_id == v2.label_set)).all())
        consensus = sets.dataset_labels(s, platform.objects, demo.consensus_set)
    # v2's class labels are the consensus label set's (content-addressed: the same labels, the same id)
    lesion = {item for item, _ in consensus.pairs}
    assert entries == {item: "lesion" if item in lesion else "normal" for item in consensus.items}
    for ref, run_id in zip(demo.versions, demo.runs, strict=True):
        chain = {step["stage"]: step for step in json.loads(stack.cli("model", "lineage", ref, "--json"))["chain"]}
        assert chain["model"]["id"] == ref
        assert chain["run"]["id"] == run_id
        assert chain["data"]["id"] == v2.id and chain["data"]["ref"] == demo.v2
        assert chain["labels"]["id"] == v2.label_set
        run = json.loads(stack.cli("run", "show", run_id, "--json"))
        assert run["dataset_digest"] == v2.id, run
    platform.close()
    elapsed = time.monotonic() - started
    print(text, f"full stack cycle: {elapsed:.0f} s", sep="\n")  # shown with -s, for the time budget
