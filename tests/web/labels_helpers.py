"""Set-up shared by the labels page tests, in-process (tests/web) and in Chromium (tests/browser): phantom images
ingested into the catalog, the label schemas they use, users with tokens, logged-in clients, and the app with the
labels pages."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.api.app import create_app
from medcycle.auth import users
from medcycle.catalog.ingest import ingest
from medcycle.catalog.tables import SeriesRow
from medcycle.platform import Platform
from medcycle.testing.dicom import FakePatient, write_ct_series, write_radiograph
from medcycle.web import labels as labels_pages

FINDINGS_SCHEMA = """\
name: findings
level: series
kinds: [box]
classes:
  - nodule
  - name: normal
    kinds: [class]
  - name: abnormal
    kinds: [class]
"""
OUTLINES_SCHEMA = """\
name: outlines
level: series
kinds: [polygon, mask]
classes:
  - lesion
  - name: nodule
    kinds: [box]
  - name: normal
    kinds: [class]
"""


def make_app(platform: Platform) -> FastAPI:
    """The app as ``medcycle.web.mount_web`` will build it: our pages go before the stage placeholder at /ui/labels."""
    app = create_app(platform)
    if "/ui/labels/queue" not in {getattr(r, "path", "") for r in app.routes}:
        before = len(app.router.routes)
        app.include_router(labels_pages.router)
        ours = app.router.routes[before:]
        del app.router.routes[before:]
        app.router.routes[0:0] = ours
    return app


def ingest_phantoms(platform: Platform, folder: Path, *, slices: int | None, ct_size: int = 64, ct_seed: int = 0,
                    radiographs: int = 0, dx_size: int = 96, first_patient: int = 1, source: str = "phantoms") -> None:
    """Write a CT series of ``slices`` slices (none when ``None``) and ``radiographs`` radiographs into ``folder``,
    then ingest them all as ``source``. The radiographs belong to patients MRN-``first_patient``, MRN-(next)…;
    MRN-1's is stored as MONOCHROME1, patient N's (N > 1) drawn with seed N."""
    if slices is not None:
        write_ct_series(folder / "ct", slices=slices, size=ct_size, seed=ct_seed)
    for n in range(first_patient, first_patient + radiographs):
        patient = FakePatient(patient_id=f"MRN-{n}")
        if n == 1:
            write_radiograph(folder / f"dx{n}.dcm", patient, size=dx_size, monochrome1=True)
        else:
            write_radiograph(folder / f"dx{n}.dcm", patient, size=dx_size, seed=n)
    assert ingest(platform, [folder], source=source).ingested == (slices or 0) + radiographs


def ct_series(session: Session) -> str:
    """The uid of the one CT series in the catalog."""
    return str(session.scalars(select(SeriesRow.uid).where(SeriesRow.modality == "CT")).one())


def create_users(session: Session, roles: Mapping[str, str]) -> dict[str, str]:
    """Create each user with its role; return their API tokens by name."""
    tokens = {}
    for name, role in roles.items():
        users.create_user(session, name, role)
        tokens[name] = users.create_token(session, name).secret
    return tokens


def logged_in(stack: ExitStack, app: FastAPI, tokens: Mapping[str, str]) -> dict[str, TestClient]:
    """A client per user, logged in through the login form (a web session), closed with ``stack``."""
    clients = {}
    for name, token in tokens.items():
        client = stack.enter_context(TestClient(app, follow_redirects=False))
        assert client.post("/login", data={"token": token, "next": "/"}).status_code == 303
        clients[name] = client
    return clients
