"""docs/evaluation.md: every policy example parses, every policy key is documented, the Python examples run
and print what the page says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from medcycle.evaluation.policy import TOP_KEYS, parse

DOC = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_policy_examples_parse_and_cover_every_key() -> None:
    policies = [b for b in blocks("yaml") if "metrics" in b or "split:" in b]
    assert len(policies) >= 2
    seen: set[str] = set()
    for text in policies:
        data = yaml.safe_load(text)
        parse(data, "docs")
        seen |= set(data)
    assert seen == TOP_KEYS


@pytest.mark.parametrize("module", ["medcycle.evaluation.surface", "medcycle.evaluation.detection"])
def test_python_examples_run_and_match_their_comments(module: str) -> None:
    (code,) = [b for b in blocks("python") if f"from {module} import" in b]
    namespace: dict[str, object] = {}
    lines = code.strip().splitlines()
    exec("\n".join(line for line in lines if not line.startswith(("case_metrics(", "froc(", "average_precision(",
                                                                   "evaluate_detection("))), namespace)
    if module.endswith("surface"):
        got = eval("case_metrics(pred_mask, true_mask, spacing=(0.7, 0.7), tolerance=1.0)", namespace)
        assert {k: round(v, 2) for k, v in got.items()} == {"dice": 0.85, "hd95": 2.1, "asd": 1.05, "nsd": 0.5}
    else:
        got = eval("froc(images)", namespace)
        assert got["sens@0.125"] == 0.5 and got["sens@8"] == 1.0 and round(got["cpm"], 3) == 0.786
        ap = eval("average_precision(images)", namespace)
        assert 0 < ap["map"] < ap["ap50"] <= 1
        est = eval('evaluate_detection(images, factors={"source": ["a", "b"]}, resamples=200, min_group=1)',
                   namespace)
        assert set(est["overall"]) == {"froc", "map", "ap50"} and set(est["groups"]["source"]) == {"a", "b"}
