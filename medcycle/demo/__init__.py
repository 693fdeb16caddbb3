"""The main job run by ``make run`` (``medcycle demo``): the whole life cycle on embedded defaults.

Demo data and real DICOM in, de-identified → what we have → dataset v1 with box labels → a labeling task read
by simulated readers of different skill → agreement and STAPLE consensus → dataset v2 with masks, checked by a
pipeline → a hypothesis → two training runs on the CPU that name it → evaluation with release gates → the models
registered with their cards and promoted → deployed → studies sent over REST and DICOM C-STORE → predictions →
a monitoring report and an injected drift alert → a rollback → the object store checked.

Each stage prints what it did and where to look in the UI; the closing table lists every page. Every stage
looks for what it would make first, so a second run adds nothing (and says so). ``profile="quick"`` runs the
same cycle on smaller images with shorter training (the tests use it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from sqlalchemy import select

from medcycle.demo.context import PROFILES, Demo, Profile, profile_of
from medcycle.platform import Platform

__all__ = ["PROFILES", "Profile", "run_demo"]

Stage = Callable[[Demo], None]


def _admin_token(platform: Platform, created: str | None) -> str:
    """A login token for an admin: the one ``init`` just made, else a fresh one (earlier demo tokens revoked)."""
    from medcycle.auth import users
    from medcycle.auth.tables import UserRow

    if created is not None:
        return created
    with platform.session() as session:
        admin = session.scalar(select(UserRow).where(UserRow.role == "admin", UserRow.disabled.is_(False)))
        name = admin.name if admin is not None else users.create_user(session, "demo-admin", "admin").name
        for row, _ in users.list_tokens(session, name):
            if row.name == "demo" and row.revoked_at is None:
                users.revoke_token(session, row.id)
        return users.create_token(session, name, name="demo").secret


def _stages() -> list[Stage]:
    from medcycle.demo import data, labeling, modeling, monitoring, pipeline, serving

    return [data.generate_and_ingest, data.summary, data.dataset_v1,
            labeling.labeling_task, labeling.agreement_and_consensus, labeling.dataset_v2, pipeline.check_pipeline,
            modeling.hypothesis, modeling.train, modeling.evaluate_and_release,
            serving.deploy_and_serve, monitoring.report_drift_and_rollback, _fsck]


def _fsck(demo: Demo) -> None:
    from medcycle.objects.maintenance import fsck

    demo.begin("Check the object store (fsck re-hashes every object)")
    with demo.platform.session(write=False) as session:
        check = fsck(demo.platform.objects, session)
    demo.say(f"checked {check.checked} objects: "
             f"{'all intact' if check.ok else f'{len(check.corrupt)} corrupt, {len(check.missing)} missing'}")
    demo.look("Object store", "/ui/admin/store")
    demo.done()


def run_demo(platform: Platform, console: Console, *, profile: str | Profile = "full") -> str:
    """Run the whole cycle on ``platform`` and return an admin token for the UI."""
    demo = Demo(platform, console, profile_of(profile))
    demo.begin("Initialise the home on embedded defaults")
    result = platform.init()
    demo.token = _admin_token(platform, result.admin_token)
    demo.say(f"home {result.home}; database {result.database}, schema {result.schema_revision}; "
             f"profile {demo.profile.name}")
    try:
        for stage in _stages():
            stage(demo)
        _where_to_look(demo)
    finally:
        demo.close()
    return demo.token


def _probe(demo: Demo, path: str) -> str:
    """How the page answers now (a GET through the app, logged in): "ok", or what is wrong with it."""
    try:
        response = demo.http().get(path)
    except Exception as exc:  # noqa: BLE001 - a page that fails is reported, not fatal to the demo
        return f"fails: {type(exc).__name__}"
    if response.status_code == 200:
        return "placeholder: the page is not built yet" if "<h2>Not built yet</h2>" in response.text else "ok"
    if response.status_code == 404 and "/ui/" in path:
        return "page not mounted in this build"
    return f"HTTP {response.status_code}"


def _where_to_look(demo: Demo) -> None:
    demo.begin("Where to look (every page checked just now through the app)")
    out = demo.console

    def line(text: str) -> None:
        out.print(f"   {text}", highlight=False, soft_wrap=True)

    line(f"UI: {escape(demo.url)}/  (log in with the admin token)")
    for stage, label, path in demo.looks:
        state = _probe(demo, path)
        colour = "dim" if state == "ok" else "yellow"
        line(f"{escape(label)}: {escape(demo.url + path)}  [{colour}](stage {stage}, {escape(state)})[/]")
    line(f"API docs: {escape(demo.url)}/docs")
    for missing in demo.missing:
        line(f"[yellow]left out[/] {escape(missing)}")
    line(f"the whole cycle took {time.monotonic() - demo.started:.0f} s (profile {demo.profile.name})")
