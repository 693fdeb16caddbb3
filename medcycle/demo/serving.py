"""Serving stages: the production alias deployed, studies sent over REST and DICOM C-STORE, predictions.

The deployment spec is written as ``medcycle deploy`` writes it (the model reference the service serves, what
DICOM intake runs when a request names none). Instead of the supervisor's processes, the demo runs the same
parts in this process: the REST API app (requests go through its routes, authenticated with the admin
token), a C-STORE SCP on an ephemeral loopback port fed by a pynetdicom SCU, and a serving worker thread that
takes the queued jobs in dynamic batches and logs every prediction for monitoring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medcycle.demo.context import ACTOR, MODEL, PRODUCTION, Demo

SERVED = f"{MODEL}@{PRODUCTION}"
FINISHED = ("succeeded", "failed", "dead", "cancelled")


def incoming(demo: Demo) -> list[dict[str, str]]:
    """The serving traffic's radiographs (labels.csv rows of the incoming data, in order)."""
    from medcycle.training.demo_data import read_studies

    assert demo.incoming_root is not None
    return [r for r in read_studies(demo.incoming_root) if r["kind"] == "xr"]


def drain(demo: Demo, job_ids: Sequence[str], *, timeout_s: float = 300.0) -> dict[str, Any]:
    """Run a serving worker thread until every job of ``job_ids`` has finished (it takes at most that many);
    with :attr:`Demo.workers_elsewhere`, wait for the worker processes to finish them instead."""
    from medcycle.serving.worker import ServingWorker

    pending = [j for j in dict.fromkeys(job_ids) if demo.platform.jobs.get(j).state.value not in FINISHED]
    if not pending:
        return {"computed": 0, "batches": 0}
    if demo.workers_elsewhere:
        return wait_for(demo, pending, timeout_s=timeout_s)
    worker = ServingWorker(demo.platform, max_batch_images=8, max_delay_ms=20, idle_wait_ms=100, device="cpu",
                           name="demo-worker")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"max_jobs": len(pending)},
                              name="demo-serving-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and thread.is_alive():
            if all(demo.platform.jobs.get(j).state.value in FINISHED for j in pending):
                break
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
        worker.close()
    s = worker.stats
    return {"computed": s.computed, "cached": s.cached, "refused": s.refused, "failed": s.failed,
            "batches": s.batches, "images": s.images}


def wait_for(demo: Demo, job_ids: Sequence[str], *, timeout_s: float = 300.0) -> dict[str, Any]:
    """Wait until every job of ``job_ids`` has finished (taken by workers elsewhere); how they ended, counted.

    Raises:
        WaitTimedOut: some are still queued or running after ``timeout_s`` (no worker is taking them).
    """
    from medcycle.agents.errors import WaitTimedOut

    deadline = time.monotonic() + timeout_s
    while True:
        states = {j: demo.platform.jobs.get(j).state.value for j in job_ids}
        if all(s in FINISHED for s in states.values()):
            break
        if time.monotonic() > deadline:
            left = sorted(j for j, s in states.items() if s not in FINISHED)
            raise WaitTimedOut(f"{len(left)} serving job(s) unfinished after {timeout_s:g} s, e.g. {left[0]}",
                               hint="Check that `medcycle serve-worker` processes run on the same queue and store.",
                               job_id=left[0], state=states[left[0]])
        time.sleep(0.1)
    ended = list(states.values())
    return {"computed": ended.count("succeeded"), "failed": len(ended) - ended.count("succeeded")}


def describe_job(demo: Demo, job_id: str) -> str:
    """One line about a finished job: which version answered and what it found."""
    from medcycle.serving.results import job_out

    out = job_out(demo.platform, demo.platform.jobs.get(job_id))
    if out.result is None:
        return f"job {job_id[:8]}: {out.status.value}{f' ({out.error})' if out.error else ''}"
    case = out.result.cases[0] if out.result.cases else {}
    if case.get("status") == "refused":
        reasons = "; ".join((case.get("ood") or {}).get("reasons") or [])[:90]
        what = f"refused by the OOD gate ({reasons})"
    else:
        finding = case.get("finding") or {}
        mask = case.get("mask") or {}
        what = (f"lesion found ({finding.get('components', 0)} component(s), "
                f"{100 * float(mask.get('foreground_fraction') or 0):.1f}% of the image)" if finding.get("found")
                else "no lesion found")
        what += f", {len(out.result.outputs)} outputs (mask, overlay, DICOM SEG/SC)"
    return f"job {job_id[:8]} ({out.images} image): {what} — by {out.result.model.ref}"


def deploy(demo: Demo) -> str:
    """Record the deployment spec of the production alias; returns the version it serves now."""
    from medcycle.serving import deploy as deploying
    from medcycle.store.base import utcnow

    settings = demo.platform.settings
    current = deploying.read_spec(settings)
    if current is None or current.model != SERVED:
        spec = deploying.DeploymentSpec(model=SERVED, workers=1, host=settings.host, port=settings.port,
                                        generation=(current.generation if current else 0) + 1,
                                        updated_at=utcnow().isoformat(), updated_by=ACTOR)
        versions = deploying.check_refs(demo.platform, spec)
        deploying.write_spec(settings, spec)
        demo.say(f"deployment generation {spec.generation}: {SERVED} (now {versions[SERVED]}), "
                 f"spec in {deploying.deploy_dir(settings) / deploying.SPEC_FILE}")
    else:
        versions = deploying.check_refs(demo.platform, current)
        demo.say(f"deployment generation {current.generation} already serves {SERVED} (now {versions[SERVED]})")
    demo.say("this demo runs the API, the SCP and a worker in its own process; `medcycle deploy "
             f"{SERVED}` runs them as supervised processes")
    return versions[SERVED]


def send_rest(demo: Demo, client: Any, files: Sequence[Path], *, key: str, model: str = SERVED) -> list[str]:
    """POST each file as one job (``Idempotency-Key`` per file: a second run finds the same jobs)."""
    from medcycle.errors import MedcycleError

    ids = []
    for n, path in enumerate(files):
        response = client.post("/v1/jobs", data={"model": model}, headers={"Idempotency-Key": f"{key}-{n}"},
                               files=[("files", (path.name, path.read_bytes(), "application/dicom"))])
        if response.status_code not in (200, 202):
            raise MedcycleError(f"POST /v1/jobs answered {response.status_code}: {response.text[:200]}",
                                hint="See the API log; the demo sends plain DICOM radiographs.")
        ids.append(str(response.json()["id"]))
    return ids


def send_cstore(demo: Demo, files: Sequence[Path], *, wait_s: float = 60.0) -> list[str]:
    """Send the files from a pynetdicom SCU to an SCP on an ephemeral loopback port; returns the studies' jobs."""
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from medcycle.errors import BackendUnavailable
    from medcycle.serving.scp import ScpConfig, StoreScp

    scp = StoreScp(demo.platform, ScpConfig(model=SERVED, port=0, idle_seconds=0.5, abort_grace_seconds=5,
                                            spool_dir=demo.home / "serving" / "scp-spool"))
    scp.start()
    try:
        ae = AE(ae_title="DEMO-PACS")
        ae.add_requested_context(DigitalXRayImageStorageForPresentation,
                                 [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title=scp.config.ae_title)
        if not assoc.is_established:
            raise BackendUnavailable("the SCU could not associate with the demo SCP", hint="See the log above.")
        statuses = [int(assoc.send_c_echo().Status)]
        statuses += [int(assoc.send_c_store(path).Status) for path in files]
        assoc.release()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and (len(scp.assembler.submitted) < len(files) or scp.assembler.pending()):
            time.sleep(0.05)
        bad = [s for s in statuses if s != 0]
        demo.say(f"C-ECHO and {len(files)} C-STORE to {scp.config.ae_title} on 127.0.0.1:{scp.port}: "
                 f"{len(statuses) - len(bad)} succeeded{f', statuses {bad}' if bad else ''}; "
                 f"{len(scp.assembler.submitted)} studies submitted after {scp.config.idle_seconds:g} s idle")
        return [s.job_id for s in scp.assembler.submitted]
    finally:
        scp.stop()


def _say_jobs(demo: Demo, ids: Sequence[str], show: int = 4) -> None:
    for job_id in list(ids)[:show]:
        demo.say(describe_job(demo, job_id))
    if len(ids) > show:
        demo.say(f"… and {len(ids) - show} more")


def deploy_and_serve(demo: Demo) -> None:
    """Deploy production, then send studies over REST (one of them out of distribution) and DICOM C-STORE."""
    from pydicom.data import get_testdata_file

    if not demo.promoted:
        demo.begin("Deploy and serve")
        demo.skip("serving", "no model version passed its gates, so nothing is in production")
        return
    demo.begin("Deployed; studies sent through REST and DICOM C-STORE; predictions")
    deploy(demo)
    rows = incoming(demo)
    assert demo.incoming_root is not None
    root = demo.incoming_root
    p = demo.profile
    client = demo.http()
    files = [root / r["image"] for r in rows[:p.rest_studies]]
    mr = get_testdata_file("MR_small.dcm")
    ids = send_rest(demo, client, files, key="demo-rest")
    ood = send_rest(demo, client, [Path(mr)], key="demo-rest-ood") if mr is not None else []
    demo.say(f"POST /v1/jobs: {len(ids)} radiographs and one MR slice (out of distribution) as {len(ids) + len(ood)}"
             " jobs on the inference queue")
    stats = drain(demo, ids + ood)
    _say_jobs(demo, ids, 3)
    if ood:
        demo.say(describe_job(demo, ood[0]))
    first = ids[0] if ids else None
    cstore = [root / r["image"] for r in rows[p.rest_studies:p.rest_studies + p.cstore_studies]]
    jobs = send_cstore(demo, cstore)
    stats2 = drain(demo, jobs)
    _say_jobs(demo, jobs, 2)
    demo.served_jobs = ids + ood + jobs
    computed = stats.get("computed", 0) + stats2.get("computed", 0)
    batches = stats.get("batches", 0) + stats2.get("batches", 0)
    if demo.workers_elsewhere:
        demo.say(f"serving worker processes: {computed} jobs answered; every prediction is in the prediction log")
    else:
        demo.say(f"worker thread: {computed} jobs computed in {batches} dynamic batches now; every prediction "
                 "is in the prediction log")
    if first is not None:
        demo.look("A job's answer over REST (send the token as a Bearer header)", f"/v1/jobs/{first}")
    demo.look("Inference queue", "/ui/admin/queues")
    demo.look("Serving: deployments and requests", "/ui/serving")
    demo.done()

