"""ICE and RICE without a database: the formulas, the ranges, and errors that list every problem."""

from __future__ import annotations

import math

import pytest

from medcycle.errors import UsageError, ValidationFailed
from medcycle.hypotheses import scoring
from medcycle.hypotheses.inputs import parse_ref, ref_of
from medcycle.hypotheses.vocabulary import Decision, SortKey, parse, question


def test_ice_is_the_product_of_three_whole_numbers() -> None:
    assert scoring.ice(8, 5, 6).score == 240
    assert scoring.ice(1, 1, 1).score == 1 and scoring.ice(10, 10, 10).score == 1000
    assert scoring.ice(7.0, 2, 3) == scoring.Ice(7, 2, 3)  # 7.0 is a whole number


@pytest.mark.parametrize(("args", "fragment"), [
    ((0, 5, 5), "impact 0 is not a whole number from 1 to 10"),
    ((5, 11, 5), "confidence 11"),
    ((5, 5, 5.5), "ease 5.5"),
    ((None, 5, 5), "impact is missing"),
    ((math.nan, 5, 5), "impact nan"),
    ((True, 5, 5), "impact True"),
])
def test_ice_rejects_out_of_range_with_a_hint(args: tuple[float, float, float], fragment: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        scoring.ice(*args)
    assert fragment in err.value.message
    assert "1 to 10" in (err.value.hint or "") and err.value.http_status == 422 and err.value.exit_code == 2


def test_ice_reports_every_problem_at_once() -> None:
    with pytest.raises(ValidationFailed) as err:
        scoring.ice(0, None, 11)
    assert len(err.value.details["problems"]) == 3


def test_rice_follows_intercom() -> None:
    r = scoring.rice(400, 2, 80, 3)
    assert r.score == pytest.approx(400 * 2 * 0.8 / 3)
    assert scoring.rice(0, 0.25, 100, 0.5).score == 0


@pytest.mark.parametrize(("args", "fragment"), [
    ((-1, 1, 50, 1), "reach -1 is negative"),
    ((10, 1.5, 50, 1), "impact 1.5 is not on the scale (0.25 minimal, 0.5 low, 1 medium, 2 high, 3 massive)"),
    ((10, 1, 0, 1), "confidence 0 is not a percentage from 1 to 100"),
    ((10, 1, 0.8, 1), "confidence 0.8 looks like a fraction"),
    ((10, 1, 120, 1), "confidence 120"),
    ((10, 1, 50, 0), "effort 0 is not above 0"),
    ((10, 1, 50, math.inf), "effort inf is not a finite number"),
    ((10, 1, 50, None), "effort is missing"),
])
def test_rice_rejects_bad_values(args: tuple[float, float, float, float], fragment: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        scoring.rice(*args)
    assert fragment in err.value.message
    assert "80 for 80%" in (err.value.hint or "")


def test_format_score() -> None:
    assert [scoring.format_score(v) for v in (None, 240.0, 213.333, 4.2666, 0.0)] == ["-", "240", "213.3", "4.27", "0"]


def test_references_and_vocabulary() -> None:
    assert parse_ref("H-7") == parse_ref("h7") == parse_ref(" 7 ") == parse_ref(7) == 7
    assert ref_of(7) == "H-7"
    for bad in ("H-0", "x", "H--1", "", "7.5"):
        with pytest.raises(UsageError, match="not a hypothesis reference"):
            parse_ref(bad)
    assert parse(Decision, "No-Go", "decision") == Decision.NO_GO
    with pytest.raises(UsageError) as err:
        parse(SortKey, "age", "sort key")
    assert err.value.hint == "Choose one of: ice, rice, votes."
    assert question("data-available").key == "data_available"
    with pytest.raises(UsageError, match="not one of the hypothesis questions"):
        question("budget")
