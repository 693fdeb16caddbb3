"""Admission of inference requests: refusals are shared and fast, intakes bounded, a saturated intake sheds."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from medcycle.api.admission import Admission
from medcycle.errors import QueueFull


def _run(coro_fn):  # type: ignore[no-untyped-def]
    """asyncio.run in a thread of its own (a browser test may own this thread's loop in the full suite)."""
    box: dict[str, object] = {}

    def go() -> None:
        try:
            box["value"] = asyncio.run(coro_fn())
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    thread.join(60)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


def test_a_full_queue_is_looked_up_once_and_the_refusal_reused() -> None:
    looks = []

    def check() -> None:
        looks.append(time.monotonic())
        time.sleep(0.05)  # a slow look: concurrent requests wait for it instead of asking again
        raise QueueFull("queue 'inference' is full (32 of 32 jobs waiting or running)", retry_after=3,
                        queue="inference")

    admission = Admission(check, concurrency=2, hold_s=0.5)

    async def burst() -> list[BaseException | None]:
        return await asyncio.gather(*(admission.admit() for _ in range(20)), return_exceptions=True)

    outcomes = _run(burst)
    assert len(looks) == 1
    assert all(isinstance(o, QueueFull) for o in outcomes)
    assert {o.retry_after for o in outcomes} == {3}  # type: ignore[union-attr]
    assert len({id(o) for o in outcomes}) == 20  # a fresh exception each (no growing traceback)

    async def later() -> float:
        started = time.perf_counter()
        with pytest.raises(QueueFull, match="is full"):
            await admission.admit()
        return time.perf_counter() - started

    assert _run(later) < 0.04  # within the hold: answered without looking (the look takes 50 ms)
    assert len(looks) == 1


def test_room_is_looked_up_again_and_a_refusal_expires() -> None:
    full = {"now": True}
    looks = []

    def check() -> None:
        looks.append(1)
        if full["now"]:
            raise QueueFull("full", retry_after=1)

    admission = Admission(check, concurrency=1, hold_s=0.05)

    async def once() -> None:
        await admission.admit()

    with pytest.raises(QueueFull):
        _run(once)
    full["now"] = False
    time.sleep(0.06)
    _run(once)  # the hold passed: looked up again, room
    _run(once)  # room is never cached
    assert len(looks) == 3


def test_intakes_are_bounded_and_a_saturated_intake_sheds_at_once() -> None:
    admission = Admission(lambda: None, concurrency=2, waiting=2)
    running = {"now": 0, "most": 0}
    lock = threading.Lock()
    release = threading.Event()

    def intake() -> str:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        release.wait(10)
        with lock:
            running["now"] -= 1
        return "queued"

    async def crowd() -> tuple[list[object], float]:
        tasks = [asyncio.create_task(admission.run(intake)) for _ in range(4)]  # 2 run, 2 wait
        for _ in range(100):
            await asyncio.sleep(0.01)
            if admission.limiter.statistics().tasks_waiting == 2 and running["now"] == 2:
                break
        started = time.perf_counter()
        with pytest.raises(QueueFull, match="intake is busy"):
            await admission.run(intake)
        shed = time.perf_counter() - started
        release.set()
        return list(await asyncio.gather(*tasks)), shed

    results, shed = _run(crowd)
    assert results == ["queued"] * 4
    assert running["most"] == 2
    assert shed < 0.05


def test_a_refusal_raised_by_the_intake_is_remembered() -> None:
    looks = []
    admission = Admission(lambda: looks.append(1), concurrency=1, hold_s=1.0)

    def enqueue() -> None:
        raise QueueFull("full at enqueue", retry_after=2)

    async def go() -> None:
        with pytest.raises(QueueFull):
            await admission.run(enqueue)
        with pytest.raises(QueueFull, match="full at enqueue"):
            await admission.admit()

    _run(go)
    assert looks == []


def test_a_known_full_queue_is_refused_before_the_token_is_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from medcycle.api.app import create_app
    from medcycle.platform import Platform
    from medcycle.testing.platform import make_settings

    platform = Platform(make_settings(tmp_path / "home", job_queue_limit=2))
    token = platform.init().admin_token
    try:
        for n in range(2):
            platform.jobs.enqueue("inference", {"n": n})
        app = create_app(platform, web=False)
        app.state.admission = Admission(lambda: platform.jobs.check_capacity("inference"), concurrency=1,
                                        hold_s=2.0)
        upload = {"files": ("a.dcm", b"DICM", "application/dicom")}
        with TestClient(app, raise_server_exceptions=False) as client:
            anonymous = client.post("/v1/jobs", files=upload, data={"model": "m"})
            assert anonymous.status_code == 401  # nothing known yet: authentication comes first
            first = client.post("/v1/jobs", files=upload, data={"model": "m"},
                                headers={"Authorization": f"Bearer {token}"})
            assert first.status_code == 429 and "is full" in first.json()["error"]["message"]
            assert int(first.headers["retry-after"]) >= 1
            again = client.post("/v1/jobs", files=upload, data={"model": "m"},
                                headers={"Authorization": "Bearer mct_not_a_token"})
            assert again.status_code == 429  # the full answer holds: refused before the token is read
            assert platform.jobs.stats("inference").active == 2  # nothing was queued
            platform.jobs.cancel(platform.jobs.list("inference")[0].id)
            time.sleep(2.1)  # the answer expired: the next request is authenticated first again
            bad = client.post("/v1/jobs", files=upload, data={"model": "m"},
                              headers={"Authorization": "Bearer mct_not_a_token"})
            assert bad.status_code == 401
    finally:
        platform.close()
