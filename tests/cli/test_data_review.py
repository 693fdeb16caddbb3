"""`medcycle data query` and quarantined instances: they can be listed for review."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydicom.data
import pytest

from medcycle.cli.errors import run
from medcycle.cli.main import app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", db_url)
    return tmp_path / "home"


def test_query_can_list_quarantined_instances(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`data query 'quarantined == true'` answered 0 instances with no word why, and the CLI had no way to list
    quarantined instances for their review (REST has include_quarantined)."""
    us = pydicom.data.get_testdata_file("US1_UNCR.dcm")  # modality US: quarantined
    assert run(app, ["init"]) == 0
    assert run(app, ["data", "ingest", str(us), "--source", "echo"]) == 0
    capsys.readouterr()
    assert run(app, ["data", "query", "quarantined == true", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["total"] == 0 and "--include-quarantined" in out.err
    assert run(app, ["data", "query", "quarantined == true", "--include-quarantined", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 1
