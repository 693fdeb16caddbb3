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

    admission = Admission(check, concurrency=1, hold_s=0.05, stale_s=0.2, room_s=0.1)

    async def once() -> None:
        await admission.admit()

    with pytest.raises(QueueFull):
        _run(once)
    full["now"] = False
    time.sleep(0.25)
    _run(once)  # the answer is older than stale_s: looked up again, room
    _run(once)  # room found within room_s: no look
    assert len(looks) == 2
    time.sleep(0.12)
    _run(once)  # older than room_s: looked up again
    assert len(looks) == 3
    full["now"] = True
    time.sleep(0.12)
    with pytest.raises(QueueFull):
        _run(once)  # the look finds the queue full
    with pytest.raises(QueueFull):
        _run(once)  # from the refusal, not from the room seen before it
    assert len(looks) == 4


def test_room_is_reused_only_for_the_places_it_found() -> None:
    looks = []
    places = {"n": 3}

    def check() -> int:
        looks.append(1)
        return places["n"]

    admission = Admission(check, concurrency=4, room_s=60.0)

    async def scenario() -> None:
        slots = [await admission.reserve() for _ in range(3)]  # one look, three places given out
        assert len(looks) == 1
        for slot in slots:
            slot.release()  # queued: each still takes its place in the queue, so the answer is used up
        places["n"] = 1
        await admission.reserve()  # used up: looked up again (one place left), and it is taken
        assert len(looks) == 2
        with pytest.raises(QueueFull, match="1 uploads are being taken in for its last 1 place"):
            await admission.reserve()  # that answer is used up too: a look, which finds the one place held
        assert len(looks) == 3

    _run(scenario)


def test_a_look_older_than_a_refusal_does_not_replace_it() -> None:
    started, go = threading.Event(), threading.Event()

    def check() -> int:
        started.set()
        go.wait(5)
        return 5  # what the queue held when the look read it

    admission = Admission(check, concurrency=2, hold_s=5.0, stale_s=10.0, room_s=60.0)

    async def scenario() -> None:
        first = asyncio.ensure_future(admission.admit())
        await asyncio.to_thread(started.wait, 5)
        # meanwhile an intake's enqueue met the queue's bound: a newer answer than the look's
        admission.remember(QueueFull("queue 'inference' is full (at enqueue)", retry_after=1))
        go.set()
        await first  # the request that looked is admitted on its own look, as before
        with pytest.raises(QueueFull, match="at enqueue"):
            await admission.admit()  # the refusal stands: the older look neither cleared it nor left room

    _run(scenario)


def test_room_counts_the_uploads_in_intake_when_it_was_looked_up() -> None:
    looks = []

    def check() -> int:
        looks.append(1)
        return 3  # the two uploads in intake are not queued yet, so not counted by the queue

    admission = Admission(check, concurrency=4, room_s=60.0)
    admission._pending = 2  # two uploads in intake, admitted before any look

    async def scenario() -> None:
        await admission.reserve()  # a look: 3 places, 2 of them for the uploads in intake; this takes the third
        assert len(looks) == 1
        with pytest.raises(QueueFull):
            await admission.reserve()  # a new look (the answer is used up) finds 3 uploads for 3 places
        assert len(looks) == 2

    _run(scenario)


def test_past_the_hold_a_refusal_is_still_at_once_and_a_background_look_refreshes_it() -> None:
    full = {"now": True}
    looks: list[float] = []

    def check() -> None:
        looks.append(time.monotonic())
        time.sleep(0.05)  # a slow look: nobody waits for it once an answer is known
        if full["now"]:
            raise QueueFull("queue 'inference' is full", retry_after=2)

    admission = Admission(check, concurrency=1, hold_s=0.05, stale_s=5.0)

    async def scenario() -> tuple[float, int]:
        with pytest.raises(QueueFull):
            await admission.admit()  # nothing known: this one waits for the look
        await asyncio.sleep(0.06)  # past the hold
        started = time.perf_counter()
        with pytest.raises(QueueFull, match="is full"):
            await admission.admit()  # refused from the answer, a look started behind it
        refused_in = time.perf_counter() - started
        with pytest.raises(QueueFull):
            await admission.admit()  # the look in flight is not started twice
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not admission._background:
                break
        started_looks = len(looks)
        full["now"] = False  # a slot opens after the background look saw the queue full
        await asyncio.sleep(0.06)
        with pytest.raises(QueueFull):
            await admission.admit()  # past the hold again: still refused from the answer, refreshed behind it
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not admission._background:
                break
        await admission.admit()  # the refresh saw the open slot: admitted
        return refused_in, started_looks

    refused_in, started_looks = _run(scenario)
    assert refused_in < 0.04  # the look takes 50 ms: not waited for
    assert started_looks == 2  # the first look and one background look, however many requests came
    assert len(looks) == 3  # + one more background look, which found room: the admitted request used its answer


def test_a_failing_background_look_drops_the_answer() -> None:
    calls = {"n": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise QueueFull("full", retry_after=1)
        raise RuntimeError("the database went away")

    admission = Admission(check, concurrency=1, hold_s=0.01, stale_s=5.0)

    async def scenario() -> None:
        with pytest.raises(QueueFull):
            await admission.admit()
        await asyncio.sleep(0.02)
        with pytest.raises(QueueFull):
            await admission.admit()  # refused from the answer; the background look fails
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not admission._background:
                break
        with pytest.raises(RuntimeError, match="went away"):
            await admission.admit()  # no answer to reuse: this request looks itself and sees the error

    _run(scenario)


def test_admitted_uploads_hold_their_places_and_the_next_is_refused_before_its_intake() -> None:
    looks = []

    def check() -> int:
        looks.append(1)
        return 2  # two places left: the uploads being taken in are not queued yet

    admission = Admission(check, concurrency=4)

    async def scenario() -> None:
        first, second = await admission.reserve(), await admission.reserve()
        assert admission.pending == 2
        with pytest.raises(QueueFull, match="2 uploads are being taken in for its last 2 places"):
            await admission.reserve()  # refused now, not after reading its upload
        assert admission.pending == 2
        with first:
            pass  # the intake ended (queued or failed): its place is free again
        first.release()  # released once only
        assert admission.pending == 1
        with await admission.reserve():
            assert admission.pending == 2
        second.release()
        assert admission.pending == 0

    _run(scenario)
    # the first look's two places served the first two requests; the third and the fourth looked again
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



def test_a_large_upload_has_a_lane_of_its_own() -> None:
    """A small upload waits behind the one small intake; a large one runs beside it, and a busy large lane
    refuses large uploads only."""
    admission = Admission(lambda: None, concurrency=1, large_concurrency=1, waiting=1)
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "small"

    async def lanes() -> tuple[str, list[object]]:
        small = asyncio.create_task(admission.run(slow))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if admission.limiter.statistics().borrowed_tokens == 1:
                break
        large = await asyncio.wait_for(admission.run(lambda: "large", large=True), 5)  # not behind the small one
        waiting = asyncio.create_task(admission.run(lambda: "small 2"))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if admission.limiter.statistics().tasks_waiting == 1:
                break
        with pytest.raises(QueueFull, match="intake is busy"):
            await admission.run(lambda: "small 3")
        assert await asyncio.wait_for(admission.run(lambda: "large 2", large=True), 5) == "large 2"
        release.set()
        return large, list(await asyncio.gather(small, waiting))

    large, smalls = _run(lanes)
    assert large == "large"
    assert smalls == ["small", "small 2"]


def test_intake_threads_one_for_a_local_store_more_for_a_remote_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from medcycle.api.routers.inference import intake_threads
    from medcycle.platform import Platform
    from medcycle.serving.config import ServingSettings
    from medcycle.testing.platform import make_settings

    platform = Platform(make_settings(tmp_path / "home"))
    try:
        assert not platform.objects.remote
        assert intake_threads(platform, ServingSettings()) == 1
        assert intake_threads(platform, ServingSettings(intake_threads=3)) == 3
        platform.objects.remote = True  # as S3ObjectStore says of itself
        assert intake_threads(platform, ServingSettings()) == 2 * (os.cpu_count() or 1)
    finally:
        platform.close()
    from medcycle.objects.s3 import S3ObjectStore

    assert S3ObjectStore.remote

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


@pytest.mark.parametrize(("headers", "drained"), [
    ({"content-length": "300000"}, True),  # a radiograph-sized upload: received and dropped before the 429
    ({"content-length": "300000", "expect": "100-continue"}, False),  # the client waits: it sends nothing
    ({"content-length": str(64 * 1024 * 1024)}, False),  # too large to wait for: refused at once
    ({}, False),  # no length
])
def test_a_refused_upload_is_received_before_the_answer_when_it_is_small(headers: dict[str, str],
                                                                        drained: bool) -> None:
    from starlette.requests import Request

    from medcycle.api.routers.inference import _drain

    chunks = [b"x" * 100_000, b"x" * 100_000, b"x" * 100_000]
    received: list[int] = []

    async def receive() -> dict[str, object]:
        received.append(1)
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}

    async def go() -> None:
        await _drain(Request(scope, receive))

    _run(go)
    assert (chunks == []) is drained and (len(received) == 3) is drained


def test_a_look_left_in_flight_by_a_closed_event_loop_does_not_block_the_next_one() -> None:
    looks: list[int] = []
    admission = Admission(lambda: looks.append(1) or 5, concurrency=1)
    old = asyncio.new_event_loop()
    admission._inflight = old.create_future()  # as a loop that closed mid-look would leave it
    admission._full, admission._seen = QueueFull("full", retry_after=1), time.monotonic() - 0.5
    old.close()

    async def again() -> None:
        with pytest.raises(QueueFull):
            admission.refuse_if_known_full()  # stale-but-young answer: refused, and a refresh of this loop starts
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not admission._background:
                break
        await asyncio.wait_for(admission.admit(), 5)  # the refresh found room: admitted

    _run(again)
    assert len(looks) == 1  # the background refresh, whose room the admitted request used
