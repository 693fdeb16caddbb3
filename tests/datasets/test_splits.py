"""Patient-level splits (property-based), stratification, stability across versions, leakage checks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcycle.datasets.splits import (
    SplitKind,
    SplitPolicy,
    Stratify,
    assign_splits,
    check_leakage,
    class_balance,
    folds_policy,
    parse_stratify,
    ratios_policy,
)
from medcycle.errors import UsageError


@dataclass(frozen=True)
class Item:
    uid: str
    patient: str
    digest: str
    source: str = "a"
    labels: tuple[str, ...] = ()
    split: str | None = None


def with_splits(items: list[Item], assignment: dict[str, str]) -> list[Item]:
    return [Item(i.uid, i.patient, i.digest, i.source, i.labels, assignment.get(i.patient)) for i in items]


item_lists = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 5), st.sampled_from(["a", "b", "c"]),
              st.sampled_from([(), ("normal",), ("pneumonia",), ("normal", "effusion")]), st.integers(0, 400)),
    min_size=1, max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(rows=item_lists, seed=st.integers(0, 2**31), strat=st.sampled_from(["", "label", "source", "label,source"]),
       ratios=st.sampled_from(["train=0.7,val=0.15,test=0.15", "train=0.8,test=0.2", "a=1,b=1,c=1,d=97"]))
def test_no_patient_and_no_image_is_ever_in_two_splits(
    rows: list[tuple[int, int, str, tuple[str, ...], int]], seed: int, strat: str, ratios: str
) -> None:
    total = sum(float(p.split("=")[1]) for p in ratios.split(","))
    spec = ",".join(f"{p.split('=')[0]}={float(p.split('=')[1]) / total}" for p in ratios.split(","))
    policy = ratios_policy(spec, stratify=parse_stratify(strat), seed=seed)
    # digests are drawn from a small pool, so images are often shared across patients (must not leak either)
    items = [Item(f"u{n}", f"p{p}", f"d{d}", src, labs) for n, (p, _study, src, labs, d) in enumerate(rows)]
    assignment = assign_splits(items, policy)
    assert set(assignment) == {i.patient for i in items}
    assert set(assignment.values()) <= set(policy.names)
    report = check_leakage(with_splits(items, assignment))
    assert report.ok, report.to_dict()


def test_fractions_are_met_per_stratum_and_overall() -> None:
    items = [Item(f"u{p}-{k}", f"p{p}", f"d{p}-{k}", "ab"[p % 2], ("pos",) if p % 5 == 0 else ("neg",))
             for p in range(1000) for k in range(3)]
    policy = ratios_policy("train=0.7,val=0.15,test=0.15", stratify=(Stratify.LABEL, Stratify.SOURCE), seed=1)
    assignment = assign_splits(items, policy)
    counts = Counter(assignment.values())
    assert counts == {"train": 700, "val": 150, "test": 150}
    pos = Counter(assignment[f"p{p}"] for p in range(0, 1000, 5))
    assert abs(pos["train"] - 140) <= 1 and abs(pos["val"] - 30) <= 1 and abs(pos["test"] - 30) <= 1
    balance = class_balance(with_splits(items, assignment))
    assert balance["train"]["pos"] == 3 * pos["train"]


def test_small_strata_still_spread_over_the_splits() -> None:
    # 60 singleton strata: a per-stratum rounding would put every patient in train
    items = [Item(f"u{p}", f"p{p}", f"d{p}", "a", (f"class-{p}",)) for p in range(60)]
    assignment = assign_splits(items, ratios_policy("train=0.5,test=0.5", stratify=(Stratify.LABEL,)))
    assert Counter(assignment.values()) == {"train": 30, "test": 30}


def test_seeded_and_deterministic() -> None:
    items = [Item(f"u{p}", f"p{p}", f"d{p}") for p in range(200)]
    a = assign_splits(items, ratios_policy("train=0.8,test=0.2", seed=3))
    assert a == assign_splits(list(reversed(items)), ratios_policy("train=0.8,test=0.2", seed=3))
    assert a != assign_splits(items, ratios_policy("train=0.8,test=0.2", seed=4))


def test_earlier_patients_keep_their_split_when_data_is_added() -> None:
    policy = ratios_policy("train=0.6,val=0.2,test=0.2", seed=9)
    old = [Item(f"u{p}", f"p{p}", f"d{p}") for p in range(100)]
    first = assign_splits(old, policy)
    new = old + [Item(f"u{p}", f"p{p}", f"d{p}") for p in range(100, 150)]
    second = assign_splits(new, policy, previous=first)
    assert all(second[p] == s for p, s in first.items())
    assert Counter(second.values()) == {"train": 90, "val": 30, "test": 30}


def test_patients_sharing_an_image_go_to_the_same_split() -> None:
    items = [Item(f"u{p}", f"p{p}", "same" if p in (3, 77) else f"d{p}") for p in range(100)]
    for seed in range(20):
        a = assign_splits(items, ratios_policy("train=0.5,test=0.5", seed=seed))
        assert a["p3"] == a["p77"]


def test_folds() -> None:
    policy = folds_policy(5, seed=2)
    assert policy.kind is SplitKind.FOLDS and policy.names == tuple(f"fold-{i}" for i in range(5))
    a = assign_splits([Item(f"u{p}", f"p{p}", f"d{p}") for p in range(50)], policy)
    assert Counter(a.values()) == {f"fold-{i}": 10 for i in range(5)}
    assert SplitPolicy.from_dict(policy.to_dict()) == policy


def test_leakage_check_reports_planted_leaks() -> None:
    items = [
        Item("u1", "p1", "d1", split="train"), Item("u2", "p1", "d2", split="test"),  # patient leak
        Item("u3", "p2", "d3", split="train"), Item("u4", "p3", "d3", split="val"),  # image leak
        Item("u5", "p4", "d5", split="val"), Item("u6", "p4", "d5", split="val"),  # duplicate, not a leak
    ]
    report = check_leakage(items)
    assert not report.ok
    assert report.patients == {"p1": ["test", "train"]}
    assert report.images == {"d3": ["train", "val"]}
    assert report.duplicate_images == 1
    assert report.to_dict()["patients_in_several_splits"] == 1


@pytest.mark.parametrize("spec", ["train=0.7,val=0.2", "train=0.5", "train=x,test=1", "Train=0.5,test=0.5",
                                  "train=0,test=1", "train=0.5,train=0.5", "train"])
def test_bad_split_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        ratios_policy(spec)


def test_percentages_and_stratify_parsing() -> None:
    assert ratios_policy("train=70,val=15,test=15").splits == (("train", 0.7), ("val", 0.15), ("test", 0.15))
    assert parse_stratify("label, source") == (Stratify.LABEL, Stratify.SOURCE)
    with pytest.raises(UsageError):
        parse_stratify("age")
    with pytest.raises(UsageError):
        folds_policy(1)
