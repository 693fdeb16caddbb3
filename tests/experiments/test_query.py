"""The run filter language (parsed by hand, typed, null-safe) over params, metrics and tags; listings; compare."""

from __future__ import annotations

import math

import pytest

from medcycle.errors import UsageError
from medcycle.experiments.compare import compare_runs
from medcycle.experiments.query import BoolOp, Field, Pred, list_runs, parse
from medcycle.platform import Platform
from tests.experiments.conftest import StartRun

RUNS = {  # name: (params, last metrics, tags)
    "a": ({"lr": 1e-2, "optimizer": "adam", "augment": True}, {"val_dice": 0.91, "val/auc": 0.95}, {"team": "chest"}),
    "b": ({"lr": 1e-4, "optimizer": "sgd", "augment": False}, {"val_dice": 0.85}, {"team": "chest"}),
    "c": ({"lr": "3e-3", "optimizer": "adam"}, {"val_dice": 0.70, "val/auc": 0.80}, {"team": "neuro"}),
    "d": ({"lr": 5e-3, "optimizer": "rmsprop", "model name": "densenet121"}, {"val_dice": math.nan}, {}),
}


@pytest.fixture
def populated(platform: Platform, track: StartRun) -> Platform:
    for name, (params, metrics, tags) in RUNS.items():
        run = track("chest" if name != "c" else "neuro", name=name, params=params, tags=tags)
        run.log_metrics({k: v - 0.1 for k, v in metrics.items()}, step=0)
        run.log_metrics(metrics, step=1)
        run.end("failed" if name == "d" else "finished")
    return platform


def names(platform: Platform, expr: str, **kwargs: object) -> list[str]:
    with platform.session() as s:
        return sorted(r.name for r in list_runs(s, expr, **kwargs).runs)  # type: ignore[arg-type]


def test_filters_over_params_metrics_and_tags(populated: Platform) -> None:
    p = populated
    assert names(p, 'params.lr > 1e-3 and metrics.val_dice > 0.8 and tags.team == "chest"') == ["a"]
    assert names(p, "params.lr > 1e-3") == ["a", "c", "d"]  # "3e-3" logged as text still counts as a number
    assert names(p, 'params.optimizer in ["adam", "sgd"]') == ["a", "b", "c"]
    assert names(p, 'params.optimizer not in ["adam"]') == ["b", "d"]
    assert names(p, "params.augment == true") == ["a"]
    assert names(p, 'params."model name" contains "DENSE"') == ["d"]
    assert names(p, "metrics.val/auc >= 0.8") == ["a", "c"]
    assert names(p, "metrics.val/auc is null") == ["b", "d"]
    assert names(p, "metrics.val_dice is null") == ["d"]  # a NaN last value reads as missing
    assert names(p, "min(metrics.val_dice) < 0.7") == ["c"]
    assert names(p, "max(metrics.val_dice) > 0.9") == ["a"]
    assert names(p, 'tags.team != "chest"') == ["c", "d"]  # a missing tag differs from every value
    assert names(p, 'not (tags.team == "chest")') == ["c", "d"]
    assert names(p, 'status == "failed" or project == "neuro"') == ["c", "d"]
    assert names(p, 'started >= "2000-01-01" and verdict == "not reproducible"') == ["a", "b", "c", "d"]
    assert names(p, "", project="neuro") == ["c"]
    with p.session() as s:
        ordered = list_runs(s, None, order="metrics.val_dice desc")
        assert [r.name for r in ordered.runs] == ["a", "b", "c", "d"]  # missing values last
        page = list_runs(s, "params.lr > 0", order="params.lr", limit=2, offset=1)
        assert (page.total, [r.name for r in page.runs]) == (4, ["c", "d"])
        assert list_runs(s, "params.lr > 0", limit=2, offset=10).total == 4  # past the end
        assert list_runs(s, "params.lr > 0", limit=0).total == 4
        assert list_runs(s, "params.lr > 1").total == 0
        row = ordered.runs[0]
        assert row.metrics == {"val/auc": 0.95, "val_dice": 0.91} and row.params["lr"] == "0.01"
        records = ordered.to_records()
        assert records[0]["metrics.val_dice"] == 0.91 and records[0]["tags.team"] == "chest"


def test_parser_builds_typed_trees() -> None:
    assert parse("") is None and parse(None) is None
    tree = parse('params.lr > 1e-3 and not (tags.team == "a" or metrics.x <= 2)')
    assert tree == BoolOp("and", (
        Pred(Field("params", "lr"), ">", (1e-3,)),
        BoolOp("not", (BoolOp("or", (Pred(Field("tags", "team"), "==", ("a",)),
                                     Pred(Field("metrics", "x"), "<=", (2.0,)))),)),
    ))
    assert parse("tags.fold == 3") == Pred(Field("tags", "fold"), "==", ("3",))
    assert parse("max(metrics.'val dice') > 1") == Pred(Field("metrics", "val dice", "max"), ">", (1.0,))


@pytest.mark.parametrize(("expr", "message"), [
    ("params.lr = 1", "unexpected character '='"),
    ("metrics.x > 'high'", "compare it with numbers"),
    ('tags.team > "a"', "orders numbers and dates only"),
    ("lr > 1", "expected a field"),
    ("params.lr >", "expected a value"),
    ('started > "yesterday"', "is not a date"),
    ("(params.lr > 1", "expected ')'"),
    ("params.lr > 1 params.x > 2", "unexpected"),
    ("params.lr is 1", "expected 'null'"),
    ("metrics.x contains 'a'", "'contains' needs a text field"),
    ("not " * 70 + "params.a == 1", "nesting deeper"),
    ('__import__("os").system("x")', "unexpected character"),
    ('__import__ == 1', "expected a field"),
])
def test_bad_filters_say_where_and_what(expr: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse(expr)
    assert message in err.value.message and "column" in err.value.message


def test_compare_shows_param_diff_and_final_metrics(populated: Platform) -> None:
    with populated.session() as s:
        result = compare_runs(s, ["a", "b"], populated.objects)
        with pytest.raises(UsageError):
            compare_runs(s, ["a"])
    assert result.differing_params == ["augment", "lr", "optimizer"]
    assert result.params["lr"] == ["0.01", "0.0001"]
    assert result.metrics["val_dice"] == [{"last": 0.91, "min": pytest.approx(0.81), "max": 0.91, "step": 1},
                                          {"last": 0.85, "min": pytest.approx(0.75), "max": 0.85, "step": 1}]
    assert result.metrics["val/auc"][1] is None
    assert [r["name"] for r in result.runs] == ["a", "b"]
    assert result.to_dict()["differing_params"] == result.differing_params
