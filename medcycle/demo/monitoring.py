"""Monitoring stages: drift references, injected drift, the drift page, a report, and the rollback it leads to.

Each promoted version gets a drift reference captured on dataset v2's validation and test splits (what the
model's inputs and outputs looked like when it was released). Then drift is injected the way it happens: a
new site goes live and every study for a while comes from one scanner. The drift check cuts the prediction
log into windows, tests each against the reference and pages when a signal drifts in enough consecutive
windows; the on-call engineer acknowledges the page, the report of the period shows it, and production is
rolled back to the previous version — the next study is answered by it.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from medcycle.demo.context import ACTOR, MODEL, PRODUCTION, Demo
from medcycle.demo.serving import SERVED, describe_job, drain, incoming, send_cstore, send_rest

REPORT_SLOT = "demo-cycle"
ONCALL = "dr-oncall"


def _production(demo: Demo) -> str:
    from medcycle.models import registry

    with demo.platform.session(write=False) as session:
        row = registry.resolve(session, SERVED)
        return f"{row.model}@v{row.version}"


def references(demo: Demo) -> None:
    """A drift reference for every promoted version (captured once)."""
    from medcycle.monitoring import reference

    policy = reference.Policy(window=demo.profile.drift_window, k=2, n=3)
    for ref in demo.promoted:
        with demo.platform.session(write=False) as session:
            have = reference.latest(session, ref)
        if have is not None:
            demo.say(f"drift reference of {ref}: {have.cases} cases of {have.dataset_ref} ({have.split}), "
                     "captured before")
            continue
        assert demo.v2 is not None
        got = reference.capture(demo.platform, ref, demo.v2, split="val,test", policy=policy, actor=ACTOR, via="demo")
        demo.say(f"drift reference of {ref}: {got.cases} cases of {got.dataset} ({got.split}), signals "
                 f"{', '.join(got.summary.get('signals', []))}; windows of {policy.window}, page on {policy.k} of "
                 f"{policy.n}")


def _drift_traffic(demo: Demo) -> tuple[str, list[Any]]:
    """The incoming radiographs of one scanner (after those sent already): a new site going live."""
    p = demo.profile
    rows = incoming(demo)[p.rest_studies + p.cstore_studies + 1:]
    scanner = "FlatPanel-X"
    chosen = [r for r in rows if r["model"] == scanner][:p.drift_studies]
    return f"{chosen[0]['manufacturer']} {scanner}" if chosen else scanner, chosen


def _answered_by(demo: Demo, job_ids: list[str]) -> str | None:
    """The version that answered most of the jobs (a second run finds the drift traffic answered before)."""
    from collections import Counter

    from medcycle.serving.results import job_out

    refs = Counter(out.result.model.ref for j in job_ids
                   if (out := job_out(demo.platform, demo.platform.jobs.get(j))).result is not None)
    return refs.most_common(1)[0][0] if refs else None


def _open_alert(demo: Demo, version: str) -> Any:
    from medcycle.monitoring import alerts

    with demo.platform.session(write=False) as session:
        rows = [a for a in alerts.list_alerts(session, limit=500) if a.model_version == version and a.kind == "drift"]
        if rows:
            session.expunge(rows[0])
            return rows[0]
    return None


def report_drift_and_rollback(demo: Demo) -> None:
    from medcycle.models import registry
    from medcycle.monitoring import alerts, drift, links, report
    from medcycle.store.base import utcnow

    if not demo.promoted or not demo.served_jobs:
        demo.begin("Monitoring, drift and rollback")
        demo.skip("monitoring", "nothing was served")
        return
    assert demo.incoming_root is not None
    demo.begin("Monitoring: drift references, injected drift, a drift alert, the report, and a rollback")
    references(demo)
    what, rows = _drift_traffic(demo)
    ids = send_rest(demo, demo.http(), [demo.incoming_root / r["image"] for r in rows], key="demo-drift")
    stats = drain(demo, ids)
    serving = _answered_by(demo, ids) or _production(demo)
    demo.served_jobs += ids
    demo.say(f"injected drift: {len(ids)} studies from one scanner only ({what}), as when a new site goes live; "
             f"{stats.get('computed', 0)} computed now")
    cutoff = utcnow() + drift.SETTLE  # judged as the scheduled check does once these predictions have settled
    results = drift.evaluate(demo.platform, model_version=serving, now=cutoff)
    for r in results:
        drifted = ", ".join(f"{k} in {v}" for k, v in sorted(r.drifted.items())) or "none"
        demo.say(f"drift check of {r.model_version}: {r.windows} new windows tested, drifted signals: {drifted}; "
                 f"{len(r.paged)} page(s)")
    alert = _open_alert(demo, serving)
    if alert is None:
        demo.skip("rollback", f"the injected drift did not page on {serving}")
    elif len(demo.promoted) < 2:
        demo.skip("rollback", f"only {len(demo.promoted)} version passed its gates: there is no earlier one")
    else:
        demo.alert_id = alert.id
        if alert.state == "open":
            with demo.platform.session() as session:
                alerts.acknowledge(session, alert.id, actor=ONCALL, via="demo")
        demo.say(f"alert {alert.id[:12]} ({alert.severity}): {alert.title}; acknowledged by {ONCALL}")
    generated = report.generate(demo.platform, since=cutoff - timedelta(hours=8), until=cutoff, slot=REPORT_SLOT,
                                actor=ACTOR)
    demo.say(f"report {generated.id[:12]}{' (made before)' if generated.existing else ''}: "
             f"{generated.summary.get('headline')}")
    if alert is not None and len(demo.promoted) >= 2:
        with demo.platform.session() as session:
            done = any(m.action == "rollback" for m in registry.alias_history(session, MODEL, PRODUCTION))
            if not done:
                started = time.perf_counter()
                move = registry.rollback(session, MODEL, PRODUCTION, actor=ONCALL, via="demo",
                                         reason=f"drift alert {alert.id}: {alert.title}"[:500])
                demo.say(f"rolled {PRODUCTION} back: {move.from_ref} → {move.to_ref} "
                         f"in {1000 * (time.perf_counter() - started):.0f} ms (one row)")
            else:
                demo.say(f"{PRODUCTION} was rolled back before: it serves {_production(demo)}")
        rest = incoming(demo)[demo.profile.rest_studies + demo.profile.cstore_studies:][:1]
        after = send_cstore(demo, [demo.incoming_root / r["image"] for r in rest]) if rest else []
        drain(demo, after)
        for job in after:
            demo.say(f"the next study (C-STORE): {describe_job(demo, job)}")
        demo.served_jobs += after
    demo.look("Monitoring dashboard: requests, predictions with mask contours, drift per signal",
              links.dashboard(serving))
    if demo.alert_id:
        demo.look("The drift alert, with links to the model, its run and the inputs", links.alert(demo.alert_id))
    demo.look("The monitoring report (HTML, histograms)", links.report(generated.id))
    demo.look(f"{MODEL}: alias history with the rollback", f"/ui/models/{MODEL}")
    demo.done()
