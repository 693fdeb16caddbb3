"""The run pages in-process: runs logged with the SDK into a SQLite platform, then the table (filters, columns,
order, pages, inline errors), a run's page, images, compare, and the experiment card with its conclusions
form and a post to a real local webhook server."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import event, insert

from medcycle.api.app import create_app
from medcycle.auth import audit, users
from medcycle.experiments.records import pack_points
from medcycle.experiments.sdk import start_run
from medcycle.experiments.tables import MetricChunkRow, MetricSeriesRow, ProjectRow, RunParamRow, RunRow
from medcycle.hypotheses import register
from medcycle.platform import Platform
from medcycle.store.base import new_id, utcnow
from tests.experiments.conftest import make_repo
from tests.experiments.datasets import frozen_version
from tests.experiments.webhook import chat_server
from tests.web.test_pages import parts

LOG_LINES = 1200  # × 50 characters: two pages of output


@dataclass(frozen=True)
class Runs:
    base: str  # baseline: lr 1e-3, adam, images, artifacts, a model, long output, resources
    big: str  # lr 1e-2, sgd, a different uncommitted change
    failed: str  # another project, failed
    hypothesis: str


def _volume(seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    vol = rng.normal(0, 1, (12, 32, 32)).astype(np.float32)
    mask = np.zeros(vol.shape, dtype=np.uint8)
    mask[5:8, 10:20, 12:22] = 1
    vol[mask == 1] += 4
    return vol, mask


def populate_runs(platform: Platform, tmp_path: Path, *, dataset: bool = True) -> Runs:
    """Three runs logged through ``start_run`` on ``platform`` (with capture of a dirty, pushed repository);
    the first two read a frozen dataset version unless ``dataset`` is False."""
    repo = make_repo(tmp_path / "code", remote=tmp_path / "remote.git")
    ref = frozen_version(platform, "nodules")[0] if dataset else None
    with platform.session() as s:
        hypothesis = f"H-{register.create(s, 'Flips lift Dice', project='lung').id}"
    common: dict[str, Any] = {"platform": platform, "journal_dir": tmp_path / "journals", "code_path": repo,
                              "flush_interval": 0.05, "resource_interval": 0.05}
    (repo / "train.py").write_text("lr = 0.001\nprint('training')\n# baseline tweak\n")
    with start_run("lung", name="baseline", hypothesis=hypothesis, dataset=ref, tags={"team": "chest"},
                   params={"lr": 0.001, "optimizer": "adam", "model": {"depth": 4}}, **common) as run:
        run.seed(7)
        for step in range(50):
            run.log_metric("train/loss", 1.0 / (step + 1), step=step)
            if step % 10 == 9:
                run.log_metric("val/dice", 0.5 + step / 200, step=step)
        for step in (10, 30, 49):
            run.log_image("val/case", np.outer(np.arange(16), np.ones(16)) * (step + 1) % 255, step=step)
        vol, mask = _volume(1)
        run.log_image("val/volume", vol, mask=mask, step=49)
        run.log_artifact(b'{"auc": 0.9}', "predictions.json")
        weights = tmp_path / "best.pt"
        weights.write_bytes(b"weights" * 100)
        run.log_model(weights, "best")
        for i in range(LOG_LINES):
            print(f"line {i:05d} " + "x" * 39)
        print("the very last line")
        base = run.id
    (repo / "train.py").write_text("lr = 0.01  # bigger step\nprint('training fast')\n")
    with start_run("lung", name="bigger-lr", hypothesis=hypothesis, dataset=ref,
                   params={"lr": 0.01, "optimizer": "sgd", "model": {"depth": 4}}, **common) as run:
        run.seed(7)
        for step in range(50):
            run.log_metric("train/loss", 2.0 / (step + 2), step=step)
            if step % 10 == 9:
                run.log_metric("val/dice", 0.6 + step / 200, step=step)
        big = run.id
    run = start_run("other", name="broken", params={"lr": 0.1}, capture=False,
                    **{k: v for k, v in common.items() if k != "code_path"})
    run.log_metric("train/loss", float("nan"), step=0)
    run.end("failed")  # diverged
    return Runs(base, big, run.id, hypothesis)


def login(client: TestClient, platform: Platform, name: str, role: str) -> TestClient:
    with platform.session() as s:
        users.create_user(s, name, role)
        token = users.create_token(s, name).secret
    assert client.post("/login", data={"token": token, "next": "/"}).status_code == 303
    return client


@pytest.fixture
def runs(sqlite_platform: Platform, tmp_path: Path) -> Runs:
    return populate_runs(sqlite_platform, tmp_path)


@pytest.fixture
def admin(sqlite_platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_platform), follow_redirects=False) as c:
        yield login(c, sqlite_platform, "ada", "admin")


@pytest.fixture
def viewer(sqlite_platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_platform), follow_redirects=False) as c:
        yield login(c, sqlite_platform, "vic", "viewer")


def json_block(html: str, name: str) -> Any:
    block = re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', html, re.S)
    assert block is not None, name
    return json.loads(block.group(1))


def row_names(html: str) -> list[str]:
    return re.findall(r'class="run-link">([^<]+)</a>', html)


def total(html: str) -> int:
    m = re.search(r'data-testid="total">([\d,]+)<', html)
    assert m is not None
    return int(m.group(1).replace(",", ""))


def headers(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'class="sort-link" href="[^"]*" title="Sort by ([^"]+)"', html)]


# -- the table --------------------------------------------------------------------------------------------
def test_runs_table_filters_columns_order_and_pages(admin: TestClient, runs: Runs) -> None:
    r = admin.get("/ui/runs")
    assert r.status_code == 200
    page = parts(r.text)
    assert page.h1 == "Runs" and page.title == "Runs · medcycle" and 'aria-current="page"' in r.text
    assert total(r.text) == 3 and row_names(r.text) == ["broken", "bigger-lr", "baseline"]  # newest first
    # Suggested columns: the first metrics, then the params that vary on the page.
    assert headers(r.text)[6:] == ["metrics.train/loss", "metrics.val/dice", "params.lr", "params.optimizer"]
    assert f'name="ids" value="{runs.base}"' in r.text and 'action="/ui/runs/compare"' in r.text

    def names(**params: Any) -> list[str]:
        got = admin.get("/ui/runs", params=params)
        assert got.status_code == 200, got.text
        return row_names(got.text)

    assert names(q="params.lr > 0.005 and metrics.val/dice > 0.8") == ["bigger-lr"]
    assert names(project="other") == ["broken"]
    assert names(status="failed") == ["broken"]
    assert names(hypothesis=runs.hypothesis, status="finished") == ["bigger-lr", "baseline"]
    assert names(q='tags.team == "chest"', project="lung") == ["baseline"]
    assert names(order="metrics.val/dice desc") == ["bigger-lr", "baseline", "broken"]  # missing values last
    assert names(order="params.lr asc") == ["baseline", "bigger-lr", "broken"]
    assert names(q="params.lr > 1", project="lung") == []

    chosen = admin.get("/ui/runs", params=[("col", "params.model.depth"), ("col", "tags.team"),
                                           ("col", "metrics.val/dice"), ("order", "metrics.val/dice desc")])
    assert headers(chosen.text)[6:] == ["params.model.depth", "tags.team", "metrics.val/dice"]
    assert 'aria-sort="descending"' in chosen.text
    # Links keep the chosen columns; sorting again flips the direction.
    assert ('href="/ui/runs?order=metrics.val%2Fdice+asc&amp;col=params.model.depth&amp;col=tags.team&amp;'
            'col=metrics.val%2Fdice"') in chosen.text
    assert re.search(r'<td class="num">0\.845</td>', chosen.text)  # bigger-lr's last val/dice

    paged = admin.get("/ui/runs", params={"size": "25", "page": "2"})
    assert paged.status_code == 200 and "No runs on this page" in paged.text
    nothing = admin.get("/ui/runs", params={"q": "metrics.val/dice > 5"})
    assert 'data-testid="no-match"' in nothing.text


@pytest.mark.parametrize(("params", "shown"), [
    ({"q": "params.lr = 1"}, "Use == to compare."),
    ({"q": "params.lr > 1e-3 and"}, "expected a field"),
    ({"q": 'metrics.val_dice > "high"'}, "compare it with numbers"),
    ({"status": "exploded"}, "is not a run status"),
    ({"order": "sideways"}, "cannot order by"),
])
def test_a_bad_filter_is_shown_inline(admin: TestClient, runs: Runs, params: dict[str, str], shown: str) -> None:
    r = admin.get("/ui/runs", params=params)
    assert r.status_code == 400
    assert parts(r.text).h1 == "Runs"  # the page itself, not an error page
    error = re.search(r'data-testid="filter-error">(.*?)</div>', r.text, re.S)
    assert error is not None and shown in unescape(error.group(1))
    assert 'aria-invalid="true"' in r.text and "Traceback" not in r.text
    if "q" in params:
        assert f'value="{escape(params["q"])}"' in r.text  # the text is kept for fixing


def test_a_bad_column_is_left_out_with_a_notice(admin: TestClient, runs: Runs) -> None:
    r = admin.get("/ui/runs", params=[("col", "nonsense"), ("col", "params.lr")])
    assert r.status_code == 200 and "&#39;nonsense&#39; is not a column; left out." in r.text
    assert headers(r.text)[6:] == ["params.lr"]


def test_an_empty_platform_says_how_to_start(admin: TestClient) -> None:
    r = admin.get("/ui/runs")
    assert r.status_code == 200 and 'data-testid="no-runs"' in r.text and "start_run" in r.text


def _bulk_runs(platform: Platform, n: int) -> None:
    """``n`` runs × 5 params × 3 metrics (one chunk each), inserted directly: setup for the timing test."""
    now = utcnow()
    with platform.session() as s:
        project = new_id()
        s.execute(insert(ProjectRow), [{"id": project, "name": "bulk", "created_by": "t", "created_at": now}])
        ids = [new_id() for _ in range(n)]
        s.execute(insert(RunRow), [
            {"id": rid, "project_id": project, "name": f"bulk-{i:05d}", "status": "finished", "hypothesis": None,
             "dataset_ref": None, "dataset_digest": None, "created_by": "t", "host": "h", "started_at": now,
             "ended_at": now, "updated_at": now, "applied_seq": 3, "seeded": True, "verdict": "not reproducible",
             "verdict_reasons": ["unpushed commit"], "log_bytes": 0} for i, rid in enumerate(ids)])
        s.execute(insert(RunParamRow), [{"run_id": rid, "key": f"p{k}", "value": str(i % 97 + k),
                                         "value_num": float(i % 97 + k)} for i, rid in enumerate(ids)
                                        for k in range(5)])
        data = pack_points([0, 1], [0.0, 1.0], [0.5, 0.25])
        s.execute(insert(MetricSeriesRow), [{"run_id": rid, "key": f"m{k}", "count": 2, "chunks": 1,
                                             "last_value": (i % 1000) / 1000, "last_step": 1, "last_time": 1.0,
                                             "min_value": 0.0, "max_value": 1.0}
                                            for i, rid in enumerate(ids) for k in range(3)])
        s.execute(insert(MetricChunkRow), [{"run_id": rid, "key": f"m{k}", "chunk": 0, "n": 2, "step_min": 0,
                                            "step_max": 1, "format": 1, "data": data}
                                           for rid in ids for k in range(3)])


def test_the_table_stays_fast_with_thousands_of_runs(admin: TestClient, sqlite_platform: Platform) -> None:
    _bulk_runs(sqlite_platform, 3000)
    assert admin.get("/ui/runs").status_code == 200  # the token's last-use stamp (once a minute) is not counted
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(sqlite_platform.engine, "before_cursor_execute", count)
    try:
        timings = {}
        for size in (25, 200):
            statements.clear()
            started = time.perf_counter()
            r = admin.get("/ui/runs", params=[("q", "params.p1 > 50 and metrics.m2 >= 0.1"), ("size", str(size)),
                                              ("order", "metrics.m0 desc"), ("col", "params.p3"),
                                              ("col", "metrics.m2")])
            timings[size] = (time.perf_counter() - started, len(statements))
            assert r.status_code == 200 and len(row_names(r.text)) == size
        expected = sum(1 for i in range(3000) if i % 97 + 1 > 50 and (i % 1000) / 1000 >= 0.1)
        assert total(r.text) == expected
    finally:
        event.remove(sqlite_platform.engine, "before_cursor_execute", count)
    # No per-row queries: 8× the rows, the same statements (listing, summaries, the controls, auth).
    assert timings[25][1] == timings[200][1] <= 20, timings
    assert timings[200][0] < 2.0, timings  # generous on a shared 2-core machine; typically ~0.1 s


# -- one run ----------------------------------------------------------------------------------------------
def test_run_page_shows_what_the_run_recorded(admin: TestClient, runs: Runs, sqlite_platform: Platform) -> None:
    r = admin.get(f"/ui/runs/{runs.base[:8]}")
    assert r.status_code == 200
    html = r.text
    assert parts(html).h1 == "baseline" and f'data-testid="run-id">{runs.base}<' in html
    assert re.search(r'<code>lr</code></td><td class="cell-value">0.001<', html)
    assert re.search(r'<code>team</code></td><td class="cell-value">chest<', html)
    git = re.search(r'data-testid="git">(.*?)</dl>', html, re.S)
    assert git is not None and "main" in git.group(1) and "dirty" in git.group(1) and "yes" in git.group(1)
    assert '<span class="diff-line diff-add">+# baseline tweak</span>' in html
    assert 'href="/v1/runs/' + runs.base + '/diff"' in html
    assert re.search(r'data-testid="seeds">7 ', html)
    verdict = re.search(r'data-testid="verdict">(.*?)</div>', html, re.S)
    assert verdict is not None and "dirty tree" in verdict.group(1) and "unseeded" not in verdict.group(1)
    assert "nodules@v1.0" in html and "digest <code" in html
    data = json_block(html, "run-data")
    metrics = {c["key"]: c for c in data["charts"]["metrics"]}
    assert list(metrics) == ["train/loss", "val/dice"]
    assert metrics["train/loss"]["x"] == list(range(50)) and metrics["train/loss"]["y"][1] == 0.5
    assert metrics["val/dice"]["x"] == [9, 19, 29, 39, 49]
    system = {c["key"] for c in data["charts"]["system"]}
    assert "system/process_cpu_percent" in system and "system/process_rss_mb" in system
    assert all(c["x"][0] > 1e9 for c in data["charts"]["system"])  # UNIX times: drawn over the clock
    images = data["images"]
    assert list(images) == ["val/case", "val/volume"]
    assert [e["step"] for e in images["val/case"]] == [10, 30, 49]
    assert images["val/volume"][0]["panels"][-1] == "MIP" and images["val/volume"][0]["mask"] is True
    assert 'type="range" min="0" max="2"' in html
    artifacts = re.search(r'data-testid="artifacts">(.*?)</table>', html, re.S)
    assert artifacts is not None and "predictions.json" in artifacts.group(1) and "kind-model" in artifacts.group(1)
    assert len(re.findall(r'href="/v1/objects/[0-9a-f]{64}" download=', artifacts.group(1))) == 2
    log = re.search(r'data-testid="log"(?: data-tail)?>(.*?)</pre>', html, re.S)
    assert log is not None and log.group(1).rstrip().endswith("the very last line")
    assert "line 00000" not in log.group(1) and "Page 1 of 2 from the end" in html and "data-tail" in html

    older = admin.get(f"/ui/runs/{runs.base}", params={"log_page": "2"})
    log = re.search(r'data-testid="log"(?: data-tail)?>(.*?)</pre>', older.text, re.S)
    assert log is not None and log.group(1).startswith("line 00000") and "the very last line" not in log.group(1)
    assert admin.get(f"/ui/runs/{runs.base}", params={"stream": "stderr"}).status_code == 200
    bad = admin.get(f"/ui/runs/{runs.base}", params={"stream": "stdin"})
    assert bad.status_code == 400 and "stdout, stderr or both" in bad.text
    missing = admin.get("/ui/runs/nothing-like-it")
    assert missing.status_code == 404 and "medcycle run list" in missing.text


def test_images_are_served_to_readers_and_audited(admin: TestClient, viewer: TestClient, runs: Runs,
                                                  sqlite_platform: Platform) -> None:
    entries = json_block(admin.get(f"/ui/runs/{runs.base}").text, "run-data")["images"]["val/case"]
    first, last = entries[0]["src"], entries[-1]["src"]
    r = admin.get(first)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG")
    assert admin.get(last).content != r.content  # each step its own image
    with sqlite_platform.session() as s:
        events = audit.query(s, action="image.view")
    assert [(e.actor, e.target_id, e.details["digest"]) for e in events][-1] == ("ada", runs.base, entries[0]["digest"])
    other = admin.get(f"/ui/runs/{runs.big}/images/{entries[0]['digest']}.png")
    assert other.status_code == 404  # not an image of that run
    page = viewer.get(f"/ui/runs/{runs.base}")
    assert page.status_code == 200 and 'data-testid="no-read-data"' in page.text
    assert json_block(page.text, "run-data")["images"] == {} and "/v1/objects/" not in page.text
    assert viewer.get(first).status_code == 403


# -- compare ----------------------------------------------------------------------------------------------
def test_compare_overlays_curves_and_shows_what_differs(admin: TestClient, runs: Runs) -> None:
    r = admin.get("/ui/runs/compare", params={"ids": f"{runs.base},{runs.big[:8]}"})
    assert r.status_code == 200, r.text
    assert parts(r.text).h1 == "Compare runs"
    data = json_block(r.text, "compare-data")
    assert [x["name"] for x in data["runs"]] == ["baseline", "bigger-lr"]
    curves = {c["key"]: c["series"] for c in data["curves"]}
    assert list(curves) == ["val/dice", "train/loss"]  # evaluation metrics first
    assert [s["run"] for s in curves["val/dice"]] == [0, 1]
    assert curves["val/dice"][1]["y"] == pytest.approx([0.645, 0.695, 0.745, 0.795, 0.845])
    dims = {d["label"]: d for d in data["parcoords"]["dimensions"]}
    assert dims["lr"]["values"] == [0.001, 0.01]
    assert dims["optimizer"]["ticktext"] == ["adam", "sgd"] and dims["optimizer"]["values"] == [0, 1]
    assert dims["val/dice"]["values"] == pytest.approx([0.745, 0.845]) and dims["val/dice"]["metric"]
    assert "model.depth" not in dims  # the same in both: no information on an axis
    table = re.search(r'data-testid="param-diff">(.*?)</table>', r.text, re.S)
    assert table is not None
    rows = {k: c for c, k in re.findall(r'<tr class="(differs|same)"><td><code>([^<]+)</code>', table.group(1))}
    assert rows == {"lr": "differs", "model.depth": "same", "optimizer": "differs"}
    context = re.search(r'data-testid="context-diff">(.*?)</table>', r.text, re.S)
    assert context is not None
    assert re.search(r'<tr class="same"><td>commit</td>', context.group(1))
    assert re.search(r'<tr class="differs"><td>diff</td>', context.group(1))
    code = re.search(r'data-testid="code-diff">(.*?)</div>', r.text, re.S)
    assert code is not None and "Same commit" in code.group(1)
    assert "diff-line diff-del\">-+# baseline tweak" in code.group(1)
    assert "diff-line diff-add\">++lr = 0.01  # bigger step" in code.group(1)

    again = admin.get("/ui/runs/compare", params=[("ids", runs.base), ("ids", runs.big), ("metric", "train/loss")])
    assert [c["key"] for c in json_block(again.text, "compare-data")["curves"]] == ["train/loss"]
    one = admin.get("/ui/runs/compare", params={"ids": runs.base})
    assert one.status_code == 400 and "choose at least two runs" in one.text and "Tick two or more" in one.text
    unknown = admin.get("/ui/runs/compare", params={"ids": f"{runs.base},{runs.big}", "metric": "nope"})
    assert unknown.status_code == 400 and "none of the runs logged" in unknown.text


# -- the experiment card ----------------------------------------------------------------------------------
def test_card_conclusions_are_saved_and_the_card_posted(admin: TestClient, viewer: TestClient, runs: Runs,
                                                        sqlite_platform: Platform) -> None:
    url = f"/ui/runs/{runs.base}/card"
    r = admin.get(url)
    assert r.status_code == 200 and parts(r.text).h1 == "Experiment card: baseline"
    assert 'data-testid="no-conclusions"' in r.text and f'href="/ui/hypotheses/{runs.hypothesis}"' not in r.text
    assert f'href="http://testserver/ui/hypotheses/{runs.hypothesis}"' in r.text

    saved = admin.post(url, data={"conclusions": "Flips help; lr 1e-3 is stable.", "key_metric": ["val/dice"]})
    assert saved.status_code == 303 and saved.headers["location"] == f"{url}?saved=1#conclusions"
    shown = admin.get(saved.headers["location"])
    assert 'data-testid="saved"' in shown.text
    assert re.search(r'data-testid="conclusions">Flips help; lr 1e-3 is stable\.</blockquote>', shown.text)
    metrics = re.search(r'data-testid="key-metrics">(.*?)</section>\s*</div>', shown.text, re.S)
    assert metrics is not None and "val/dice" in metrics.group(1) and "train/loss" not in metrics.group(1)
    run_page = admin.get(f"/ui/runs/{runs.base}").text
    assert "Flips help; lr 1e-3 is stable." in run_page and "card.conclusions" not in run_page  # not a plain tag
    listed = admin.get("/ui/runs", params={"q": 'tags."card.conclusions" is not null'})
    assert row_names(listed.text) == ["baseline"]

    too_long = admin.post(url, data={"conclusions": "y" * 1500})
    assert too_long.status_code == 400 and 'data-testid="card-error"' in too_long.text
    assert "y" * 1500 in too_long.text  # the draft is kept for shortening
    assert "Flips help; lr 1e-3 is stable." in admin.get(url).text  # and nothing changed

    denied = viewer.post(url, data={"conclusions": "mine"})
    assert denied.status_code == 403 and "may not train" in denied.text
    assert 'data-testid="conclusions-form"' not in viewer.get(url).text

    with chat_server() as chat:
        posted = admin.post(f"{url}/post", data={"url": chat.url, "format": "slack"})
        assert posted.status_code == 303 and "posted=slack" in posted.headers["location"]
        body = chat.received[0]["json"]
        assert body["blocks"][3]["text"]["text"].startswith("*Conclusions*\n> Flips help; lr 1e-3 is stable.")
        assert f"<http://testserver/ui/runs/{runs.base}|Open the run>" in body["blocks"][4]["elements"][0]["text"]
        note = admin.get(posted.headers["location"]).text
        assert re.search(r'data-testid="posted">Posted as slack to http://127\.0\.0\.1:\d+ \(HTTP 200\)', note)
        chat.status = 500
        failed = admin.post(f"{url}/post", data={"url": chat.url, "format": "json"})
    alert = re.search(r'data-testid="post-error">(.*?)</div>', failed.text, re.S)
    assert failed.status_code == 502 and alert is not None
    assert "answered 500" in alert.group(1) and "s3cr3t" not in alert.group(1)  # only the form keeps what was typed
    no_url = admin.post(f"{url}/post", data={"url": "", "format": "slack"})
    assert no_url.status_code == 400 and "chat_webhook_url" in no_url.text
    with sqlite_platform.session() as s:
        assert [e.outcome for e in audit.query(s, action="run.card.")] == ["error", "ok", "ok"]
