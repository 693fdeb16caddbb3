"""The main job (`make run` → `medcycle demo`) runs end to end, and a second run adds nothing."""

from __future__ import annotations

import io

from rich.console import Console

from medcycle.auth.users import authenticate
from medcycle.catalog.summary import summarize
from medcycle.datasets import versions
from medcycle.demo import run_demo
from medcycle.platform import Platform


def test_demo_runs_twice(sqlite_platform: Platform) -> None:
    out = io.StringIO()
    token = run_demo(sqlite_platform, Console(file=out, width=120))
    text = out.getvalue()
    for step in ("Ingest DICOM", "What data do we have", "versioned dataset", "Where to look"):
        assert step in text
    assert "LEAKS" not in text
    with sqlite_platform.session() as s:
        assert authenticate(s, token).role.value == "admin"
        first = summarize(s).to_dict()["totals"]
        assert [tuple(v.tags) for v in versions.log(s, "chest-ct")] == [("v1",)]
    assert first["instances"] >= 80
    run_demo(sqlite_platform, Console(file=io.StringIO(), width=120))
    with sqlite_platform.session() as s:
        assert summarize(s).to_dict()["totals"] == first
        assert len(versions.log(s, "chest-ct")) == 1
    assert (sqlite_platform.settings.home / "pulls" / "chest-ct-v1" / "manifest.csv").is_file()
