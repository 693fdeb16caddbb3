"""A first ``medcycle deploy`` that names no worker count: one worker per usable core on a CPU-only machine (at
most four), one with CUDA; a later deploy keeps the count it has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medcycle.platform import Platform
from medcycle.serving import cpu
from medcycle.serving import deploy as deployment
from medcycle.testing.platform import make_settings


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Platform:
    for key in ("MEDCYCLE_SERVING_DEVICE",):
        monkeypatch.delenv(key, raising=False)
    return Platform(make_settings(tmp_path / "home"))


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (3, 3), (16, deployment.MAX_DEFAULT_CPU_WORKERS)])
def test_a_cpu_machine_gets_a_worker_per_core(platform: Platform, monkeypatch: pytest.MonkeyPatch, cores: int,
                                              expected: int) -> None:
    monkeypatch.setattr(cpu, "usable_cores", lambda: cores)
    monkeypatch.setenv("MEDCYCLE_SERVING_DEVICE", "cpu")
    assert deployment.default_workers(platform.settings) == expected


def test_cuda_or_a_missing_device_gets_one_worker(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(cpu, "usable_cores", lambda: 8)
    monkeypatch.setenv("MEDCYCLE_SERVING_DEVICE", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # resolve_device: CUDA is there
    assert deployment.default_workers(platform.settings) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # asked for, absent: the workers will say so
    assert deployment.default_workers(platform.settings) == 1
    monkeypatch.setenv("MEDCYCLE_SERVING_DEVICE", "auto")  # auto without CUDA is the CPU
    assert deployment.default_workers(platform.settings) == 4


def test_the_first_deploy_takes_the_default_and_later_ones_keep_theirs(platform: Platform,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[Any] = []
    monkeypatch.setattr(deployment, "check_refs", lambda _p, spec: {spec.model: f"{spec.name}@v1"})
    monkeypatch.setattr(deployment, "supervisor_pid", lambda _s: None)
    monkeypatch.setattr(deployment, "_spawn_supervisor", lambda settings, config_file: spawned.append(settings))
    monkeypatch.setattr(deployment, "default_workers", lambda _s: 3)
    first = deployment.deploy(platform, "xr@production", wait_s=None)
    assert first.spec.workers == 3 and deployment.read_spec(platform.settings) == first.spec
    monkeypatch.setattr(deployment, "default_workers", lambda _s: 1)
    again = deployment.deploy(platform, "xr@production", wait_s=None)
    assert again.spec.workers == 3 and again.spec.generation == first.spec.generation + 1  # kept
    chosen = deployment.deploy(platform, "xr@production", workers=2, wait_s=None)
    assert chosen.spec.workers == 2 and len(spawned) == 3
