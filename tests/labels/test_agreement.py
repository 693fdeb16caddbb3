"""Agreement: kappas and alpha against worked examples, mask metrics against MONAI and SimpleITK, box F1."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from medcycle.errors import ValidationFailed
from medcycle.labels import policy
from medcycle.labels.agreement import (
    Ratings,
    cohen_kappa,
    fleiss_kappa,
    kappa_matrix,
    krippendorff_alpha,
    percent_agreement_matrix,
)
from medcycle.labels.box_agreement import Counts, box_agreement, box_matrix, match_boxes
from medcycle.labels.mask_agreement import mask_matrix, mask_metric, mask_scores, overlap
from medcycle.labels.model import Annotation, Box, Kind, Mask

# ---------------------------------------------------------------------------------------------- classes


def pairs_table(table: list[list[int]], categories: list[str]) -> Ratings:
    """Two readers' ratings from a confusion table (rows: reader a's category, columns: reader b's)."""
    rows: dict[str, dict[str, str | None]] = {"a": {}, "b": {}}
    n = 0
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            for _ in range(count):
                rows["a"][f"item{n}"] = categories[i]
                rows["b"][f"item{n}"] = categories[j]
                n += 1
    return Ratings.from_table(rows, categories)


def test_cohen_kappa_textbook_example() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> po = 0.7, pe = 0.5, kappa = 0.4
    ratings = pairs_table([[20, 5], [10, 15]], ["yes", "no"])
    assert cohen_kappa(ratings, "a", "b") == pytest.approx(0.4, abs=1e-12)


def test_weighted_kappa_hand_worked() -> None:
    # 15 items, 3 ordered categories, marginals 5/5/5 so every expected cell is 5/3; only adjacent disagreements.
    # unweighted: po = 11/15, pe = 1/3 -> 0.6; linear: 1 - 4 / (8 * 5/3) = 0.7; quadratic: 1 - 4 / (12 * 5/3) = 0.8
    ratings = pairs_table([[4, 1, 0], [1, 3, 1], [0, 1, 4]], ["low", "mid", "high"])
    assert cohen_kappa(ratings, "a", "b") == pytest.approx(0.6, abs=1e-12)
    assert cohen_kappa(ratings, "a", "b", weighting="linear") == pytest.approx(0.7, abs=1e-12)
    assert cohen_kappa(ratings, "a", "b", weighting="quadratic") == pytest.approx(0.8, abs=1e-12)
    # the weights follow the given category order: listing the categories differently changes them
    shuffled = Ratings.from_table({"a": dict(zip(ratings.items, [ratings.categories[c] for c in ratings.row("a")],
                                                 strict=True)),
                                   "b": dict(zip(ratings.items, [ratings.categories[c] for c in ratings.row("b")],
                                                 strict=True))}, ["mid", "low", "high"])
    assert cohen_kappa(shuffled, "a", "b", weighting="linear") != pytest.approx(0.7)


def test_fleiss_kappa_wikipedia_example() -> None:
    # Fleiss (1971) layout as on Wikipedia: 10 items, 14 raters, 5 categories; P = 0.378, Pe = 0.213, kappa = 0.210
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    categories = ["1", "2", "3", "4", "5"]
    table: dict[str, dict[str, str | None]] = {f"r{k}": {} for k in range(14)}
    for i, row in enumerate(counts):
        given = [categories[c] for c, n in enumerate(row) for _ in range(n)]
        for k, category in enumerate(given):
            table[f"r{k}"][f"item{i}"] = category
    assert fleiss_kappa(Ratings.from_table(table, categories)) == pytest.approx(0.2099, abs=1e-4)


def test_krippendorff_alpha_published_example_with_missing_values() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 observers x 12 units with missing data
    rows = {"A": "1 2 3 3 2 1 4 1 2 . . .", "B": "1 2 3 3 2 2 4 1 2 5 . 3",
            "C": ". 3 3 3 2 3 4 2 2 5 1 .", "D": "1 2 3 3 2 4 4 1 2 5 1 ."}
    table: dict[str, dict[str, str | None]] = {
        r: {f"u{i}": (None if v == "." else v) for i, v in enumerate(line.split())} for r, line in rows.items()}
    ratings = Ratings.from_table(table, ["1", "2", "3", "4", "5"])
    assert ratings.codes.tolist()[0][-3:] == [-1, -1, -1]
    assert round(krippendorff_alpha(ratings, "nominal"), 3) == 0.743
    assert round(krippendorff_alpha(ratings, "interval"), 3) == 0.849
    assert round(krippendorff_alpha(ratings, "ordinal"), 3) == 0.815
    assert round(krippendorff_alpha(ratings, "ratio"), 3) == 0.797


def test_perfect_agreement_scores_one() -> None:
    truth = ["a", "b", "c", "a", "b", "c", "c", "a"]
    ratings = Ratings.from_table({r: {f"i{k}": c for k, c in enumerate(truth)} for r in ("x", "y", "z")},
                                 ["a", "b", "c"])
    assert cohen_kappa(ratings, "x", "y") == pytest.approx(1.0)
    assert cohen_kappa(ratings, "x", "z", weighting="quadratic") == pytest.approx(1.0)
    assert fleiss_kappa(ratings) == pytest.approx(1.0)
    assert krippendorff_alpha(ratings) == pytest.approx(1.0)
    assert kappa_matrix(ratings).values == pytest.approx(np.ones((3, 3)))


def test_chance_agreement_is_near_zero() -> None:
    rng = np.random.default_rng(3)
    categories = ["a", "b", "c", "d"]
    table: dict[str, dict[str, str | None]] = {
        r: {f"i{k}": categories[int(rng.integers(4))] for k in range(3000)} for r in ("x", "y", "z")}
    ratings = Ratings.from_table(table, categories)
    assert abs(cohen_kappa(ratings, "x", "y")) < 0.04
    assert abs(cohen_kappa(ratings, "y", "z", weighting="linear")) < 0.04
    assert abs(fleiss_kappa(ratings)) < 0.03
    assert abs(krippendorff_alpha(ratings)) < 0.03


def test_ratings_from_annotations_and_their_errors() -> None:
    anns = [Annotation("img1", "benign", Kind.CLASS, reader="r1"), Annotation("img1", "malignant", Kind.CLASS,
                                                                             reader="r2"),
            Annotation("img2", "benign", Kind.CLASS, reader="r1"),
            Annotation("img2", "benign", Kind.BOX, Box(0, 0, 2, 2), reader="r3")]  # other kinds are skipped
    ratings = Ratings.from_annotations(anns, ["benign", "malignant"])
    assert ratings.readers == ("r1", "r2")
    assert ratings.items == ("img1", "img2")
    assert ratings.codes.tolist() == [[0, 0], [1, -1]]
    with pytest.raises(ValidationFailed, match="two classes") as err:
        Ratings.from_annotations([*anns, Annotation("img1", "malignant", Kind.CLASS, reader="r1")])
    assert err.value.hint and "present/absent" in err.value.hint
    with pytest.raises(ValidationFailed, match="no reader"):
        Ratings.from_annotations([Annotation("img1", "benign", Kind.CLASS)])
    with pytest.raises(ValidationFailed, match="not in the category list"):
        Ratings.from_annotations(anns, ["benign"])
    with pytest.raises(ValidationFailed, match="no class annotations"):
        Ratings.from_annotations(anns[3:])


def test_clear_errors_for_bad_requests() -> None:
    inferred = Ratings.from_table({"a": {"i": "x", "j": "y"}, "b": {"i": "x", "j": "x"}, "c": {"k": "y"}})
    assert not inferred.ordered
    with pytest.raises(ValidationFailed, match="unknown kappa weighting 'cubic'") as err:
        cohen_kappa(inferred, "a", "b", weighting="cubic")
    assert err.value.hint == "Use one of: none, linear, quadratic."
    with pytest.raises(ValidationFailed, match="category order"):
        cohen_kappa(inferred, "a", "b", weighting="linear")
    with pytest.raises(ValidationFailed, match="category order"):
        krippendorff_alpha(inferred, "ordinal")
    with pytest.raises(ValidationFailed, match="unknown level"):
        krippendorff_alpha(inferred, "fuzzy")
    with pytest.raises(ValidationFailed, match="no item in common"):
        cohen_kappa(inferred, "a", "c")
    with pytest.raises(ValidationFailed, match="no reader 'zz'"):
        cohen_kappa(inferred, "a", "zz")
    with pytest.raises(ValidationFailed, match="same number of ratings on every item; 1 item") as err:
        fleiss_kappa(inferred)  # item k has one rating, i and j two
    assert err.value.hint and "krippendorff_alpha" in err.value.hint
    with pytest.raises(ValidationFailed, match="no item was rated by two"):
        fleiss_kappa(Ratings.from_table({"a": {"i": "x"}, "b": {"j": "y"}}))
    with pytest.raises(ValidationFailed, match="at least two readers"):
        fleiss_kappa(Ratings.from_table({"a": {"i": "x"}}))
    with pytest.raises(ValidationFailed, match="numeric categories"):
        krippendorff_alpha(Ratings.from_table({"a": {"i": "x"}, "b": {"i": "y"}}, ["x", "y"]), "interval")
    with pytest.raises(ValidationFailed, match="no item was rated by two"):
        krippendorff_alpha(Ratings.from_table({"a": {"i": "x"}, "b": {"j": "y"}}, ["x", "y"]))


def test_undefined_values_are_na_and_matrices_serialise() -> None:
    # a and b gave "x" to everything they share: kappa is 0/0 (N/A) though they agree; c shares nothing with d
    ratings = Ratings.from_table({"a": {"i": "x", "j": "x"}, "b": {"i": "x", "j": "x"},
                                  "c": {"k": "x", "l": "y"}, "d": {"m": "y"}}, ["x", "y"])
    assert math.isnan(cohen_kappa(ratings, "a", "b"))
    matrix = kappa_matrix(ratings)
    assert matrix.value("a", "b") is None
    assert matrix.value("c", "d") is None
    assert matrix.value("c", "c") == 1.0
    assert matrix.shared.tolist() == [[2, 2, 0, 0], [2, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]
    assert percent_agreement_matrix(ratings).value("a", "b") == 1.0
    data = json.loads(json.dumps(matrix.to_dict(), allow_nan=False))
    assert data["readers"] == ["a", "b", "c", "d"]
    assert data["values"][0][1] is None
    assert data["metric"] == "cohen_kappa"
    assert math.isnan(fleiss_kappa(Ratings.from_table({"a": {"i": "x"}, "b": {"i": "x"}}, ["x", "y"])))
    assert math.isnan(krippendorff_alpha(Ratings.from_table({"a": {"i": "x"}, "b": {"i": "x"}}, ["x", "y"])))


def test_kappa_matrix_matches_pairwise_kappa() -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(3, size=60)
    categories = ["0", "1", "2"]
    table: dict[str, dict[str, str | None]] = {}
    for r, noise in zip("pqrs", (0.1, 0.3, 0.5, 0.2), strict=True):
        flip = rng.random(60) < noise
        given = np.where(flip, rng.integers(3, size=60), truth)
        table[r] = {f"i{k}": categories[int(g)] for k, g in enumerate(given) if rng.random() > 0.1}
    ratings = Ratings.from_table(table, categories)
    matrix = kappa_matrix(ratings, "quadratic")
    assert matrix.metric == "cohen_kappa_quadratic"
    for a in "pqrs":
        for b in "pqrs":
            if a != b:
                assert matrix.value(a, b) == pytest.approx(cohen_kappa(ratings, a, b, weighting="quadratic"))
    assert matrix.value("p", "q") == matrix.value("q", "p")


# ---------------------------------------------------------------------------------------------- masks


def monai_reference(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], spacing: tuple[float, ...]) -> dict[str, float]:
    import torch
    from monai.metrics import DiceMetric, compute_average_surface_distance, compute_hausdorff_distance, compute_iou

    ta, tb = torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float()
    with warnings.catch_warnings():  # MONAI warns about empty masks and its own deprecations
        warnings.simplefilter("ignore")
        return {
            "dice": float(DiceMetric(include_background=True, ignore_empty=False)(ta, tb).item()),
            "iou": float(compute_iou(ta, tb, include_background=True, ignore_empty=False).item()),
            "hd95": float(compute_hausdorff_distance(ta, tb, include_background=True, percentile=95,
                                                     spacing=spacing).item()),
            "assd": float(compute_average_surface_distance(ta, tb, include_background=True, symmetric=True,
                                                           spacing=spacing).item()),
        }


def simpleitk_overlap(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> tuple[float, float]:
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(sitk.GetImageFromArray(a.astype(np.uint8)), sitk.GetImageFromArray(b.astype(np.uint8)))
    return f.GetDiceCoefficient(), f.GetJaccardCoefficient()


def blob(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    grid = np.indices(shape, dtype=np.float64)
    out = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        center = [rng.uniform(-2, s + 1) for s in shape]  # may touch or cross the border
        radii = [rng.uniform(1.0, s / 2.5) for s in shape]
        out |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True)) <= 1.0
    return out


Array = np.ndarray[Any, Any]


def random_pair(rng: np.random.Generator, k: int) -> tuple[Array, Array, tuple[float, ...]]:
    ndim = 2 if k % 2 else 3
    shape = tuple(int(s) for s in rng.integers(16, 41, ndim)) if ndim == 2 else tuple(
        int(s) for s in rng.integers(8, 21, ndim))
    spacing = (1.0,) * ndim if k % 3 == 0 else tuple(float(s) for s in rng.uniform(0.3, 3.0, ndim))
    a = blob(rng, shape)
    style = k % 4
    if style == 0:  # a second reader close to the first: shifted and dilated/eroded
        b = np.roll(a, int(rng.integers(-2, 3)), axis=int(rng.integers(ndim)))
        b = ndimage.binary_dilation(b) if rng.random() < 0.5 else ndimage.binary_erosion(b)
    elif style == 1:  # speckle noise on top of a blob
        b = blob(rng, shape) ^ (rng.random(shape) < 0.05)
    else:
        b = blob(rng, shape)
    if k % 10 == 0:
        a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    elif k % 10 in (3, 7):
        (a if k % 10 == 3 else b)[...] = False
    return a.astype(np.uint8), b.astype(np.uint8), spacing


def test_mask_metric_parity_with_monai_and_simpleitk() -> None:
    rng = np.random.default_rng(20240601)
    seen = {"both_empty": 0, "one_empty": 0, "compared": 0, "anisotropic_3d": 0, "2d": 0}
    for k in range(210):
        a, b, spacing = random_pair(rng, k)
        ours = mask_scores(Mask(a, spacing), Mask(b, spacing))
        ref = monai_reference(a, b, spacing)
        assert ours.dice == pytest.approx(ref["dice"], abs=1e-6), k
        assert ours.iou == pytest.approx(ref["iou"], abs=1e-6), k
        empty_a, empty_b = not a.any(), not b.any()
        if empty_a and empty_b:
            # policy: 1/1/0/0. MONAI: Dice/IoU 1 (ignore_empty=False), distances NaN; SimpleITK: Dice inf
            seen["both_empty"] += 1
            assert (ours.dice, ours.iou, ours.hd95, ours.assd) == (1.0, 1.0, 0.0, 0.0)
            assert math.isnan(ref["hd95"]) and math.isnan(ref["assd"])
            continue
        sitk_dice, sitk_iou = simpleitk_overlap(a, b)
        assert ours.dice == pytest.approx(sitk_dice, abs=1e-6), k
        assert ours.iou == pytest.approx(sitk_iou, abs=1e-6), k
        if empty_a or empty_b:
            # policy: 0/0/inf/inf. MONAI agrees on ASSD (inf) and gives NaN for HD95
            seen["one_empty"] += 1
            assert (ours.dice, ours.iou, ours.hd95, ours.assd) == (0.0, 0.0, math.inf, math.inf)
            assert ref["assd"] == math.inf
            continue
        seen["compared"] += 1
        seen["anisotropic_3d"] += a.ndim == 3 and len(set(spacing)) > 1
        seen["2d"] += a.ndim == 2
        assert ours.hd95 == pytest.approx(ref["hd95"], abs=1e-4), (k, ours, ref)
        assert ours.assd == pytest.approx(ref["assd"], abs=1e-4), (k, ours, ref)
    assert seen["compared"] >= 120 and seen["both_empty"] >= 20 and seen["one_empty"] >= 40, seen
    assert seen["anisotropic_3d"] >= 40 and seen["2d"] >= 60, seen


def test_surface_distance_uses_spacing_in_array_order() -> None:
    # single voxels: the surface is the voxel itself, so HD95 = ASSD = their distance in mm
    a, b = np.zeros((10, 12), np.uint8), np.zeros((10, 12), np.uint8)
    a[2, 3], b[5, 7] = 1, 1
    scores = mask_scores(Mask(a, (0.5, 2.0)), Mask(b, (0.5, 2.0)))
    assert scores.hd95 == pytest.approx(math.hypot(3 * 0.5, 4 * 2.0))
    assert scores.assd == pytest.approx(math.hypot(3 * 0.5, 4 * 2.0))
    v, w = np.zeros((6, 5, 5), np.uint8), np.zeros((6, 5, 5), np.uint8)
    v[1, 2, 3], w[4, 2, 3] = 1, 1
    assert mask_metric(Mask(v, (3.0, 1.0, 1.0)), Mask(w, (3.0, 1.0, 1.0)), "hd95") == pytest.approx(9.0)
    assert mask_metric(Mask(v), Mask(w), "assd") == pytest.approx(3.0)  # no spacing: pixel units


def test_empty_mask_policy() -> None:
    empty, full = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    full[2:5, 2:5] = 1
    both = mask_scores(Mask(empty), Mask(empty))
    assert (both.dice, both.iou, both.hd95, both.assd) == (policy.OVERLAP_BOTH_EMPTY, 1.0, 0.0, 0.0)
    one = mask_scores(Mask(full), Mask(empty))
    assert (one.dice, one.iou, one.hd95, one.assd) == (0.0, 0.0, math.inf, math.inf)
    assert one.to_dict() == {"dice": 0.0, "iou": 0.0, "hd95": "inf", "assd": "inf"}
    assert mask_scores(Mask(full), Mask(full)).to_dict() == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0}


def test_mask_geometry_errors() -> None:
    a = Mask(np.ones((4, 4), np.uint8), (1.0, 1.0))
    with pytest.raises(ValidationFailed, match="shapes"):
        overlap(a, Mask(np.ones((4, 5), np.uint8), (1.0, 1.0)))
    with pytest.raises(ValidationFailed, match="different spacings") as err:
        overlap(a, Mask(np.ones((4, 4), np.uint8), (1.0, 0.5)))
    assert err.value.hint and "resample" in err.value.hint
    with pytest.raises(ValidationFailed, match="has a spacing and the other has none"):
        mask_scores(a, Mask(np.ones((4, 4), np.uint8)))
    with pytest.raises(ValidationFailed, match="different positions"):
        overlap(Mask(np.ones((4, 4), np.uint8), z=1), Mask(np.ones((4, 4), np.uint8), z=2))
    with pytest.raises(ValidationFailed, match="unknown mask metric"):
        mask_metric(a, a, "volume")
    assert overlap(a, Mask(np.ones((4, 4), np.uint8), (1.0 + 1e-9, 1.0))) == (1.0, 1.0)  # float noise is fine


def square(x0: int, y0: int, size: int, shape: tuple[int, int] = (20, 20)) -> Mask:
    arr = np.zeros(shape, np.uint8)
    arr[y0:y0 + size, x0:x0 + size] = 1
    return Mask(arr, (0.5, 0.5))


def test_mask_matrix_over_shared_images_with_empty_readings() -> None:
    anns = [Annotation("i1", "lesion", Kind.MASK, square(2, 2, 6), reader="a"),
            Annotation("i1", "lesion", Kind.MASK, square(2, 2, 6), reader="b"),
            Annotation("i2", "lesion", Kind.MASK, square(5, 5, 4), reader="a"),
            Annotation("i2", "lesion", Kind.MASK, square(5, 5, 2), reader="b"),
            Annotation("i2", "cyst", Kind.MASK, square(0, 0, 3), reader="c"),  # another label: ignored
            Annotation("i3", "lesion", Kind.MASK, square(1, 1, 3), reader="d")]
    # without read: c drew no lesion, so c read nothing; d shares no image with anyone
    plain = mask_matrix(anns, "lesion")
    assert plain.readers == ("a", "b", "d")
    assert plain.value("a", "b") == pytest.approx((1.0 + 2 * 4 / (16 + 4)) / 2)
    assert plain.value("a", "d") is None
    # with read: c read i1 and i2 and saw nothing; b also read i4, as did c (both empty there)
    read = {"a": ["i1", "i2"], "b": ["i1", "i2", "i4"], "c": ["i1", "i2", "i4"], "d": ["i3"]}
    dice = mask_matrix(anns, "lesion", read=read)
    assert dice.value("a", "c") == 0.0
    assert dice.value("b", "c") == pytest.approx((0 + 0 + 1) / 3)
    assert dice.shared[dice.readers.index("b"), dice.readers.index("c")] == 3
    hd = mask_matrix(anns, "lesion", metric="hd95", read=read, aggregate="median")
    assert hd.value("b", "c") == math.inf
    assert hd.value("a", "a") == 0.0
    assert json.loads(json.dumps(hd.to_dict(), allow_nan=False))["values"][1][2] == "inf"
    with pytest.raises(ValidationFailed, match="not listed as read"):
        mask_matrix(anns, "lesion", read={**read, "a": ["i1"]})
    with pytest.raises(ValidationFailed, match="not in read"):
        mask_matrix(anns, "lesion", read={"a": ["i1", "i2"]})
    with pytest.raises(ValidationFailed, match="unknown aggregate"):
        mask_matrix(anns, "lesion", aggregate="max")
    with pytest.raises(ValidationFailed, match="at least two readers"):
        mask_matrix(anns[:1], "lesion")


# ---------------------------------------------------------------------------------------------- boxes


def test_hungarian_matching_beats_greedy() -> None:
    r1, r2 = Box(0, 0, 10, 10), Box(4, 0, 14, 10)
    a1, a2 = Box(1, 0, 11, 10), Box(-2, 0, 8, 10)  # a1 fits r1 best (0.82) but r2 too (0.54); a2 only r1 (0.67)
    match = match_boxes([a1, a2], [r1, r2], 0.5)
    assert sorted((i, j) for i, j, _ in match.pairs) == [(0, 1), (1, 0)]  # greedy would match a1-r1 and stop
    assert match.counts == Counts(2, 0, 0)
    assert match_boxes([a1, a2], [r1, r2], 0.7).counts == Counts(1, 1, 1)


def test_box_agreement_counts_per_class_and_image() -> None:
    ref = [Annotation("i1", "nodule", Kind.BOX, Box(0, 0, 10, 10), reader="r"),
           Annotation("i1", "nodule", Kind.BOX, Box(20, 20, 30, 30), reader="r"),
           Annotation("i1", "mass", Kind.BOX, Box(40, 40, 50, 50), reader="r"),
           Annotation("i2", "nodule", Kind.BOX, Box(0, 0, 10, 10, z=3), reader="r")]
    found = [Annotation("i1", "nodule", Kind.BOX, Box(1, 1, 11, 11), reader="f"),
             Annotation("i1", "nodule", Kind.BOX, Box(40, 40, 50, 50), reader="f"),  # right place, wrong class
             Annotation("i2", "nodule", Kind.BOX, Box(0, 0, 10, 10, z=4), reader="f"),  # wrong slice
             Annotation("i2", "nodule", Kind.CLASS, reader="f")]  # not a box: skipped
    score = box_agreement(found, ref, iou_threshold=0.5)
    assert score.total == Counts(tp=1, fp=2, fn=3)
    assert score.total.precision == pytest.approx(1 / 3)
    assert score.total.recall == pytest.approx(1 / 4)
    assert score.total.f1 == pytest.approx(2 / (2 + 2 + 3))
    assert score.per_class["mass"] == Counts(0, 0, 1)
    assert score.per_image["i2"] == Counts(0, 1, 1)
    assert score.to_dict()["per_class"]["nodule"]["tp"] == 1
    only = box_agreement(found, ref, images=["i2", "i9"])
    assert only.per_image == {"i2": Counts(0, 1, 1), "i9": Counts()}
    assert only.per_image["i9"].f1 == 1.0  # nothing on either side: agreement


def test_detection_policy_when_one_side_is_empty() -> None:
    assert Counts().precision == Counts().recall == Counts().f1 == 1.0
    assert Counts(fn=2).precision == 0.0 and Counts(fn=2).recall == 0.0
    assert Counts(fp=1).recall == 0.0 and Counts(fp=1).f1 == 0.0


def test_box_matrix_with_reads() -> None:
    anns = [Annotation("i1", "n", Kind.BOX, Box(0, 0, 10, 10), reader="a"),
            Annotation("i1", "n", Kind.BOX, Box(0, 0, 10, 11), reader="b"),
            Annotation("i2", "n", Kind.BOX, Box(5, 5, 9, 9), reader="a")]
    assert box_matrix(anns).value("a", "b") == 1.0  # b drew nothing on i2, so without read i2 is not shared
    matrix = box_matrix(anns, read={"a": ["i1", "i2"], "b": ["i1", "i2"]})
    assert matrix.value("a", "b") == pytest.approx(2 * 1 / (2 + 1))
    assert matrix.shared.tolist() == [[2, 2], [2, 2]]
    with pytest.raises(ValidationFailed, match="outside"):
        box_matrix(anns, iou_threshold=0)
