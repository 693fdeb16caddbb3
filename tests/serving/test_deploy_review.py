"""``medcycle deploy`` as an operator uses it: a second deploy while one rolls out, a version whose weights are
corrupt, the spec after a failed generation, switching models, a crash-looping worker, ``/readyz`` and
``/metrics``. Real processes on loopback; every one is stopped by the module fixture."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from medcycle.errors import Conflict
from medcycle.models import registry
from medcycle.platform import Platform
from medcycle.serving import deploy as deployment
from medcycle.testing.platform import make_settings
from medcycle.testing.services import free_port
from tests.serving.helpers import serving_model, wait_for


@dataclass
class Env:
    platform: Platform
    port: int



def _corrupt(platform: Platform, ref: str) -> None:
    """Cut the stored weights of ``ref`` short (the object store keeps the digest, so loading detects it)."""
    with platform.session(write=False) as session:
        digest = registry.resolve(session, ref).weights_digest
    path = next(p for p in (platform.settings.home / "objects").rglob(digest) if p.is_file())
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:1000])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """xr@v1..v3 (v3's weights corrupt; production → v2) and yy@v1, yy@v2 (v2 corrupt; production → v1)."""
    tmp = tmp_path_factory.mktemp("deploy-review")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        platform = Platform(make_settings(tmp / "home"))
        platform.init()
        for i in (1, 2, 3):
            serving_model(platform, "xr", tmp / f"xr{i}", seed=i)
        for i in (1, 2):
            serving_model(platform, "yy", tmp / f"yy{i}", seed=10 + i)
        with platform.session() as session:
            registry.promote(session, "xr@v1", "production", force_reason="test")
            registry.promote(session, "xr@v2", "production", force_reason="test")
            registry.promote(session, "yy@v1", "production", force_reason="test")
        _corrupt(platform, "xr@v3")
        _corrupt(platform, "yy@v2")
        try:
            yield Env(platform, free_port())
        finally:
            deployment.stop(platform.settings)
            platform.close()


def _cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    settings = env.platform.settings
    return subprocess.run([sys.executable, "-m", "medcycle", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **deployment.child_env(settings)}, check=False)


def test_a_second_deploy_while_one_rolls_out_fails_at_once_and_writes_nothing(env: Env) -> None:
    settings = env.platform.settings
    folder = deployment.deploy_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".deploy.lock").open("a+") as held:  # what a deploy running in another terminal holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(Conflict, match="another `medcycle deploy`") as exc:
            deployment.deploy(env.platform, "xr@production", workers=1, port=env.port, wait_s=None)
        assert exc.value.hint
        # --api: the way back from --no-api (the option did not exist, so the API could not be turned on again)
        out = _cli(env, "deploy", "xr@production", "--api", "--workers", "1", "--wait", "0")
        fcntl.flock(held, fcntl.LOCK_UN)
    assert out.returncode != 0 and "Error: another" in out.stderr and "Hint:" in out.stderr
    assert "Traceback" not in out.stderr
    assert deployment.read_spec(settings) is None and deployment.supervisor_pid(settings) is None


def _status(env: Env) -> dict[str, Any]:
    return deployment.read_status(env.platform.settings)


def _api_pid(env: Env) -> int | None:
    return next((p["pid"] for p in _status(env).get("processes", [])
                 if p["role"] == "api" and p["state"] == "running"), None)


def _ready(env: Env) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{env.port}/readyz", timeout=5)
    except httpx.HTTPError:
        return None


def test_failed_generations_crash_loops_and_readiness(env: Env) -> None:
    platform, settings = env.platform, env.platform.settings
    first = deployment.deploy(platform, "xr@production", workers=1, port=env.port, wait_s=120)
    assert first.spec.generation == 1
    assert wait_for(lambda: (r := _ready(env)) is not None and r.status_code == 200, 60, 0.2)
    ready = _ready(env)
    assert ready is not None
    workers = next(b for b in ready.json()["backends"] if b["name"] == "workers")
    assert workers["ok"] and "1/1 workers ready on xr@production" in workers["detail"]
    from prometheus_client.parser import text_string_to_metric_families

    metrics = httpx.get(f"http://127.0.0.1:{env.port}/metrics", timeout=10)
    assert metrics.status_code == 200 and list(text_string_to_metric_families(metrics.text))

    # -- a candidate whose weights are corrupt: refused, and the spec says again what serves ------------------
    with pytest.raises(Conflict, match="corrupt"):
        deployment.deploy(platform, "xr@production", canary_percent=10, candidate="xr@v3", wait_s=120)
    spec = deployment.read_spec(settings)
    assert spec == first.spec  # the next deploy starts from what serves, not from the failed options
    assert deployment.default_model(platform) == "xr@production"
    assert _status(env)["state"] == "ready" or wait_for(lambda: _status(env)["state"] == "ready", 5)

    # -- the same without waiting: the failed spec stays on disk, yet a dead API is still restarted -----------
    third = deployment.deploy(platform, "xr@production", canary_percent=10, candidate="xr@v3", wait_s=None)
    assert third.spec.generation == 3  # not 2 again: the supervisor remembers 2 as failed and never starts it
    assert wait_for(lambda: (_status(env).get("failed") or {}).get("generation") == 3, 60)
    api = _api_pid(env)
    assert api is not None
    os.kill(api, signal.SIGKILL)
    assert wait_for(lambda: _api_pid(env) not in (None, api), 30), "the API was not restarted"

    # -- another model: the failed spec's canary (a version of xr) is not carried over ------------------------
    fourth = deployment.deploy(platform, "yy@production", wait_s=120)
    assert fourth.spec.generation == 4 and fourth.spec.candidate is None and fourth.spec.canary_percent == 0
    assert fourth.versions == {"yy@production": "yy@v1"}

    # -- a corrupt version promoted, the worker dies: it crash-loops with a growing backoff, and says why -----
    with platform.session() as session:
        registry.promote(session, "yy@v2", "production", force_reason="test")
    worker = next(p["pid"] for p in _status(env)["processes"] if p["role"] == "worker" and p["generation"] == 4)
    os.kill(worker, signal.SIGKILL)

    def looping() -> bool:
        loops = [c for c in _status(env).get("crash_loops") or [] if c["role"] == "worker"]
        return bool(loops) and loops[0]["restarts"] >= 2 and "corrupt" in str(loops[0].get("reason"))

    assert wait_for(looping, 60, 0.2), _status(env)
    loop = next(c for c in _status(env)["crash_loops"] if c["role"] == "worker")
    assert loop["retry_in_s"] >= 4 and loop["exit_code"] == 3  # backs off: 2 s, then 4 s, 8 s ...
    probe = _ready(env)
    assert probe is not None and probe.status_code == 503
    detail = next(b for b in probe.json()["backends"] if b["name"] == "workers")["detail"]
    assert "crash-looping" in detail and "corrupt" in detail
    log = (deployment.deploy_dir(settings) / deployment.LOG_FILE).read_text()
    assert "restarting in" in log and "restart 2 in a row" in log

    # -- the fix is a rollback: the next restart loads yy@v1 and the service is ready again -------------------
    with platform.session() as session:
        registry.rollback(session, "yy", "production")
    assert wait_for(lambda: (r := _ready(env)) is not None and r.status_code == 200, 60, 0.5), _status(env)
    assert deployment.stop(settings)
