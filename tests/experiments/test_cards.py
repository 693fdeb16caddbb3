"""Experiment cards: built from logged runs, conclusions stored as tags, posted to a real local webhook server,
and the REST endpoints and CLI command over them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from medcycle.api.errors import install_error_handlers
from medcycle.api.routers import run_cards
from medcycle.auth import audit, users
from medcycle.cli.context import CliState
from medcycle.cli.errors import run as run_cli
from medcycle.cli.run_card import card as card_command
from medcycle.errors import UsageError
from medcycle.experiments import cards
from medcycle.experiments.query import list_runs
from medcycle.experiments.sdk import Run
from medcycle.hypotheses import register
from medcycle.platform import Platform
from medcycle.testing.platform import make_settings
from tests.experiments.conftest import StartRun
from tests.experiments.datasets import frozen_version
from tests.experiments.webhook import chat_server


def logged_run(track: StartRun, platform: Platform, **kwargs: object) -> Run:
    """A finished run testing a registered hypothesis, with params, evaluation and training metrics and
    resource samples."""
    with platform.session() as s:
        hypothesis = register.create(s, "Augmentation lifts Dice on small nodules", project="lung").id
    with track("lung", name="aug-on", hypothesis=f"H-{hypothesis}", params={"lr": 0.001, "aug": {"flip": True}},
               **kwargs) as run:
        run.seed(3)
        for step in range(20):
            run.log_metrics({"train/loss": 1.0 / (step + 1), "system/cpu_percent": 50.0 + step}, step=step)
        run.log_metrics({"val/dice": 0.71, "val/auc": 0.9}, step=19)
        run.log_metric("val/dice", 0.82, step=20)
    return run


def test_card_of_a_logged_run(track: StartRun, platform: Platform) -> None:
    ref, digest = frozen_version(platform)
    run = logged_run(track, platform, dataset=ref)
    with platform.session() as s:
        card = cards.build_card(s, run.id[:8], base_url="https://mc.example.org/")
    assert card.run_id == run.id and card.name == "aug-on" and card.status == "finished"
    assert [m.key for m in card.key_metrics] == ["val/auc", "val/dice", "train/loss"]  # evaluation first, no system/*
    dice = card.key_metrics[1]
    assert (dice.last, dice.min, dice.max, dice.step, dice.count) == (0.82, 0.71, 0.82, 20, 2)
    assert card.params == [("aug.flip", "true"), ("lr", "0.001")] and card.params_total == 2
    assert card.verdict == "not reproducible" and card.verdict_reasons == ["no code capture"]
    assert card.dataset is not None and card.dataset.detail == digest and card.dataset.label == ref
    assert card.dataset.url == "https://mc.example.org/ui/datasets/cxr/v1"
    assert card.hypothesis is not None and card.hypothesis.detail == "proposed"
    href = card.hypothesis.ref
    assert card.hypothesis.label == f"{href} Augmentation lifts Dice on small nodules"
    assert card.hypothesis.url == f"https://mc.example.org/ui/hypotheses/{href}"
    assert card.links == {"run": f"https://mc.example.org/ui/runs/{run.id}",
                          "card": f"https://mc.example.org/ui/runs/{run.id}/card",
                          "dataset": card.dataset.url, "hypothesis": card.hypothesis.url}
    assert card.conclusions is None
    markdown = card.to_markdown()
    assert "# Experiment card: aug-on" in markdown and "- val/dice: 0.82 (min 0.71, max 0.82, step 20)" in markdown
    assert "None written yet." in markdown
    as_json = json.loads(json.dumps(card.to_dict()))
    assert as_json["key_metrics"][1]["key"] == "val/dice" and as_json["dataset"]["ref"] == ref


def test_a_free_text_hypothesis_and_no_dataset(track: StartRun, platform: Platform) -> None:
    with track("p", name="plain", hypothesis="better aug?") as run:
        run.log_metric("loss", 0.5)
    with platform.session() as s:
        card = cards.build_card(s, run.id)
    assert card.hypothesis == cards.Linked("better aug?", "better aug?", None)
    assert card.dataset is None and card.links == {"run": f"/ui/runs/{run.id}", "card": f"/ui/runs/{run.id}/card"}
    assert [m.key for m in card.key_metrics] == ["loss"]


def test_conclusions_are_tags_that_filter_and_are_audited(track: StartRun, platform: Platform) -> None:
    run = logged_run(track, platform)
    text = "Dice +0.11 with flips.\r\nNext: try elastic deformation.  "
    with platform.session() as s:
        stored = cards.set_conclusions(s, run.id, text, actor="ada", key_metrics=["val/dice", "train/loss"], via="web")
    assert stored is not None and stored.text == "Dice +0.11 with flips.\nNext: try elastic deformation."
    with platform.session() as s:
        card = cards.build_card(s, run.id)
        listed = list_runs(s, 'tags."card.conclusions" contains "elastic"')
        events = audit.query(s, action="run.card.edit")
    assert card.conclusions is not None and card.conclusions.text == stored.text and card.conclusions.by == "ada"
    assert card.conclusions.at is not None and card.key_metrics_chosen
    assert [m.key for m in card.key_metrics] == ["val/dice", "train/loss"]
    assert [r.id for r in listed.runs] == [run.id]
    assert [(e.actor, e.target_id, e.via) for e in events] == [("ada", run.id, "web")]
    with platform.session() as s:  # cleared: the tags go, the chosen metrics stay unless given
        assert cards.set_conclusions(s, run.id, "   ", actor="bob") is None
    with platform.session() as s:
        card = cards.build_card(s, run.id)
        assert card.conclusions is None and card.key_metrics_chosen
        assert list_runs(s, 'tags."card.conclusions" is not null').total == 0
        cards.set_conclusions(s, run.id, "ok", actor="bob", key_metrics=[])
    with platform.session() as s:
        assert not cards.build_card(s, run.id).key_metrics_chosen


@pytest.mark.parametrize(("text", "metrics", "message"), [
    ("x" * (cards.MAX_CONCLUSIONS + 1), None, "1025 characters long"),
    ("bell \x07", None, "control character"),
    ("fine", ["val/nothing"], "has no metric 'val/nothing'"),
    ("fine", [f"k{i}" for i in range(cards.MAX_KEY_METRICS + 1)], "at most 20"),
])
def test_bad_conclusions_are_refused_with_a_hint(track: StartRun, platform: Platform, text: str,
                                                 metrics: list[str] | None, message: str) -> None:
    run = logged_run(track, platform)
    with platform.session() as s, pytest.raises(UsageError, match=message) as caught:
        cards.set_conclusions(s, run.id, text, actor="ada", key_metrics=metrics)
    assert caught.value.hint
    with platform.session() as s:
        assert cards.build_card(s, run.id).conclusions is None


def test_exactly_the_limit_is_stored(track: StartRun, platform: Platform) -> None:
    run = logged_run(track, platform)
    text = "é" * cards.MAX_CONCLUSIONS  # characters, not bytes
    with platform.session() as s:
        cards.set_conclusions(s, run.id, text, actor="ada")
    with platform.session() as s:
        card = cards.build_card(s, run.id)
    assert card.conclusions is not None and card.conclusions.text == text


# -- posting ----------------------------------------------------------------------------------------------
def _card(track: StartRun, sqlite_platform: Platform) -> cards.ExperimentCard:
    run = logged_run(track, sqlite_platform)
    with sqlite_platform.session() as s:
        cards.set_conclusions(s, run.id, "Flips help <a lot> & cost nothing.", actor="ada")
    with sqlite_platform.session() as s:
        return cards.build_card(s, run.id, base_url="https://mc.example.org")


@pytest.fixture
def track_sqlite(sqlite_platform: Platform, tmp_path: Path) -> Iterator[StartRun]:
    started: list[Run] = []

    def start(project: str = "proj", **kwargs: object) -> Run:
        from medcycle.experiments.sdk import start_run

        options: dict[str, Any] = {"platform": sqlite_platform, "journal_dir": tmp_path / "journals",
                                      "resources": False, "capture_output": False, "capture": False,
                                      "flush_interval": 0.05}
        options.update(kwargs)
        run = start_run(project, **options)
        started.append(run)
        return run

    yield start
    for run in started:
        if not run.ended:
            run.end()


def test_post_slack_blocks_to_a_local_webhook(track_sqlite: StartRun, sqlite_platform: Platform) -> None:
    card = _card(track_sqlite, sqlite_platform)
    with chat_server() as chat:
        result = cards.post_card(card, chat.url)
    assert result.status == 200 and result.format == "slack" and result.target == chat.url.rsplit("/services", 1)[0]
    assert "s3cr3t" not in json.dumps(result.to_dict())
    (got,) = chat.received
    assert got["path"] == "/services/T000/B000/s3cr3t-token"
    assert got["headers"]["Content-Type"] == "application/json"
    body = got["json"]
    assert body["text"].startswith("aug-on (lung): finished, not reproducible; val/auc 0.9")
    assert body["text"].endswith(f"https://mc.example.org/ui/runs/{card.run_id}")
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "section", "context"]
    assert body["blocks"][0]["text"] == {"type": "plain_text", "text": "Experiment card: aug-on"}
    fields = [f["text"] for f in body["blocks"][1]["fields"]]
    assert "*Hypothesis*\n<https://mc.example.org/ui/hypotheses/H-1|H-1 Augmentation lifts Dice on small nodules>" \
        in fields
    assert "• `val/dice` *0.82*" in body["blocks"][2]["text"]["text"]
    assert body["blocks"][3]["text"]["text"] == "*Conclusions*\n> Flips help &lt;a lot&gt; &amp; cost nothing. — ada"
    assert f"<https://mc.example.org/ui/runs/{card.run_id}|Open the run>" in body["blocks"][4]["elements"][0]["text"]


def test_post_generic_json(track_sqlite: StartRun, sqlite_platform: Platform) -> None:
    card = _card(track_sqlite, sqlite_platform)
    with chat_server() as chat:
        chat.status, chat.body = 204, b""
        result = cards.post_card(card, chat.url, format="json")
    assert result.status == 204
    body = chat.received[0]["json"]
    assert body["type"] == "medcycle.experiment_card" and body["version"] == 1
    assert body["card"]["conclusions"]["text"] == "Flips help <a lot> & cost nothing."
    assert body["card"]["key_metrics"][0] == {"key": "val/auc", "last": 0.9, "min": 0.9, "max": 0.9, "step": 19,
                                              "count": 1}


@pytest.mark.parametrize(("status", "said", "hint"), [
    (500, "boom", "post again later"),
    (404, "no_service", "revoked"),
    (302, "", "do not redirect"),
])
def test_a_refusing_webhook_is_a_clear_error(track_sqlite: StartRun, sqlite_platform: Platform, status: int,
                                             said: str, hint: str) -> None:
    card = _card(track_sqlite, sqlite_platform)
    with chat_server() as chat:
        chat.status, chat.body = status, said.encode()
        with pytest.raises(cards.WebhookFailed) as caught:
            cards.post_card(card, chat.url)
    error = caught.value
    assert f"answered {status}" in error.message and said in error.message and hint in (error.hint or "")
    assert "s3cr3t" not in error.message and "s3cr3t" not in str(error.details)
    assert error.http_status == 502 and error.exit_code == 9 and error.details["status"] == status


def test_a_slow_or_absent_webhook_is_a_clear_error(track_sqlite: StartRun, sqlite_platform: Platform) -> None:
    card = _card(track_sqlite, sqlite_platform)
    with chat_server() as chat:
        chat.delay = 1.0
        with pytest.raises(cards.WebhookFailed, match=r"did not answer within 0\.2 s") as slow:
            cards.post_card(card, chat.url, timeout=0.2)
        closed = chat.url
    assert "s3cr3t" not in slow.value.message and slow.value.hint
    with pytest.raises(cards.WebhookFailed, match=r"could not reach the chat webhook at http://127\.0\.0\.1") as gone:
        cards.post_card(card, closed, timeout=2)
    assert "s3cr3t" not in gone.value.message
    with pytest.raises(UsageError, match="http:// or https://"):
        cards.post_card(card, "ftp://example.org/hook")
    with pytest.raises(UsageError, match="not a card format"):
        cards.post_card(card, "https://example.org/hook", format="teams")


def test_webhook_from_arguments_or_settings(tmp_path: Path) -> None:
    assert cards.resolve_webhook(SimpleNamespace(), " https://a.example/x ") == "https://a.example/x"
    configured = SimpleNamespace(chat_webhook_url=SecretStr("https://hooks.example/T/B/x"))
    assert cards.resolve_webhook(configured, None) == "https://hooks.example/T/B/x"
    assert cards.resolve_webhook(configured, "https://other.example/y") == "https://other.example/y"
    with pytest.raises(UsageError, match="none is configured") as caught:
        cards.resolve_webhook(make_settings(tmp_path / "home"), "")
    assert "chat_webhook_url" in (caught.value.hint or "")
    assert cards.default_base_url(SimpleNamespace(public_url="https://mc.example.org/", host="h", port=1)) == \
        "https://mc.example.org"
    assert cards.default_base_url(SimpleNamespace(public_url=None, host="10.0.0.5", port=9000)) == \
        "http://10.0.0.5:9000"


# -- REST -------------------------------------------------------------------------------------------------
@pytest.fixture
def api(sqlite_platform: Platform) -> Iterator[TestClient]:
    # As the lead will wire it: the card router next to the runs router (in medcycle.api.app.ROUTERS).
    app = FastAPI()
    app.state.platform = sqlite_platform
    install_error_handlers(app)
    app.include_router(run_cards.router)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def bearer(platform: Platform, name: str, role: str) -> dict[str, str]:
    with platform.session() as s:
        users.create_user(s, name, role)
        return {"Authorization": f"Bearer {users.create_token(s, name).secret}"}


def test_rest_card_edit_and_post(api: TestClient, track_sqlite: StartRun, sqlite_platform: Platform) -> None:
    run = logged_run(track_sqlite, sqlite_platform)
    viewer, engineer = bearer(sqlite_platform, "vi", "viewer"), bearer(sqlite_platform, "eng", "ml-engineer")
    shown = api.get(f"/v1/runs/{run.id[:8]}/card", headers=viewer)
    assert shown.status_code == 200 and shown.json()["links"]["run"] == f"http://testserver/ui/runs/{run.id}"
    md = api.get(f"/v1/runs/{run.id}/card?format=markdown", headers=viewer)
    assert md.headers["content-type"].startswith("text/markdown") and md.text.startswith("# Experiment card: aug-on")
    assert api.get(f"/v1/runs/{run.id}/card?format=slack", headers=viewer).json()["blocks"][0]["type"] == "header"
    denied = api.put(f"/v1/runs/{run.id}/card", json={"conclusions": "mine"}, headers=viewer)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    saved = api.put(f"/v1/runs/{run.id}/card", json={"conclusions": "Works.", "key_metrics": ["val/dice"]},
                    headers=engineer)
    assert saved.status_code == 200
    assert saved.json()["conclusions"]["text"] == "Works." and saved.json()["conclusions"]["by"] == "eng"
    assert [m["key"] for m in saved.json()["key_metrics"]] == ["val/dice"]
    too_long = api.put(f"/v1/runs/{run.id}/card", json={"conclusions": "x" * 2000}, headers=engineer)
    assert too_long.status_code == 400 and "1024" in too_long.json()["error"]["message"]
    with chat_server() as chat:
        posted = api.post(f"/v1/runs/{run.id}/card/post", json={"url": chat.url, "format": "json"}, headers=engineer)
        assert posted.status_code == 200 and posted.json()["status"] == 200
        assert chat.received[0]["json"]["card"]["conclusions"]["text"] == "Works."
        chat.status = 503
        failed = api.post(f"/v1/runs/{run.id}/card/post", json={"url": chat.url}, headers=engineer)
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "webhook_failed"
    assert "s3cr3t" not in failed.text
    none = api.post(f"/v1/runs/{run.id}/card/post", json={}, headers=engineer)
    assert none.status_code == 400 and "chat_webhook_url" in none.json()["error"]["hint"]
    with sqlite_platform.session() as s:
        events = [(e.outcome, e.details.get("status"), e.details["webhook"]) for e in
                  audit.query(s, action="run.card.post")]
    host = chat.url.rsplit("/services", 1)[0]
    assert events == [("error", None, host), ("ok", 200, host)]  # newest first; never the secret path


# -- CLI --------------------------------------------------------------------------------------------------
root = typer.Typer()
runs_app = typer.Typer()
runs_app.command("card")(card_command)  # as the lead registers it in medcycle.cli.runs
root.add_typer(runs_app, name="run")


@root.callback()
def _root(ctx: typer.Context) -> None:
    ctx.obj = CliState()
    ctx.call_on_close(ctx.obj.close)


def test_cli_card_writes_conclusions_and_posts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    for key in [k for k in os.environ if k.startswith("MEDCYCLE_")]:
        monkeypatch.delenv(key)
    for key, value in {"MEDCYCLE_HOME": str(home), "MEDCYCLE_ENVIRONMENT": "test", "MEDCYCLE_SECRET_KEY": "x" * 40,
                       "MEDCYCLE_PUBLIC_URL": "https://mc.example.org"}.items():
        monkeypatch.setenv(key, value)
    platform = Platform(make_settings(home, public_url="https://mc.example.org"))
    platform.init()
    from medcycle.experiments.sdk import start_run

    with start_run("cli", name="r1", platform=platform, capture=False, resources=False, capture_output=False,
                   journal_dir=tmp_path / "j") as run:
        run.log_metric("val/dice", 0.8)
    platform.close()
    capsys.readouterr()
    with chat_server() as chat:
        code = run_cli(root, ["run", "card", "r1", "--conclusions", "Good enough.", "--key-metric", "val/dice",
                              "--post", "--url", chat.url, "--format", "json", "--json"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert chat.received[0]["json"]["card"]["conclusions"]["text"] == "Good enough."
    printed = json.loads(out)
    assert printed["card"]["links"]["card"] == f"https://mc.example.org/ui/runs/{run.id}/card"
    assert printed["posted"]["status"] == 200
    code = run_cli(root, ["run", "card", "r1"])
    captured = capsys.readouterr()
    assert code == 0 and "Good enough." in captured.out and "- val/dice: 0.8" in captured.out
    code = run_cli(root, ["run", "card", "r1", "--post"])
    captured = capsys.readouterr()
    assert code == 2 and "chat_webhook_url" in captured.err
