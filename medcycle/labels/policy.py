"""What agreement means when there is nothing to compare: the empty-mask policy, in one place.

Readers often agree that an image shows nothing (no lesion, no box). Overlap and distance metrics are
0/0 there, and libraries disagree about what to return (MONAI gives NaN plus a warning, SimpleITK gives
a Dice of ``inf``). medcycle answers once, here, and every metric in :mod:`.agreement` and
:mod:`.consensus` asks this module:

=====================  ===========  ==================  =========================================
case                   Dice / IoU   HD95 / ASSD (mm)    detection precision / recall / F1
=====================  ===========  ==================  =========================================
both empty             1            0                   1 (no boxes on either side)
one empty              0            ``inf``             0 (the side with nothing scores 0)
=====================  ===========  ==================  =========================================

Why ``inf`` and not a finite sentinel such as the image diagonal: the diagonal depends on the field of
view (the same miss would score differently on a crop), it cannot be told apart from a real, large
distance, and averaged with real distances it yields a plausible but meaningless number. ``inf`` is
honest — "no surface to measure to" — and it propagates: a mean over cases that contains a one-empty
case is ``inf``, so such cases cannot be averaged away silently. Report them as a count next to the
median (or a mean over the cases where both masks are present) instead.

JSON has no ``inf`` or ``NaN``: :func:`json_number` writes ``inf`` as the string ``"inf"`` and NaN
(not applicable, e.g. two readers who share no item) as ``null``.
"""

from __future__ import annotations

import math

OVERLAP_BOTH_EMPTY = 1.0
OVERLAP_ONE_EMPTY = 0.0
DISTANCE_BOTH_EMPTY = 0.0
DISTANCE_ONE_EMPTY = math.inf


def empty_overlap(a_empty: bool, b_empty: bool) -> float | None:
    """Dice/IoU fixed by the policy, or ``None`` when both masks have foreground (compute it)."""
    if a_empty and b_empty:
        return OVERLAP_BOTH_EMPTY
    if a_empty or b_empty:
        return OVERLAP_ONE_EMPTY
    return None


def empty_distance(a_empty: bool, b_empty: bool) -> float | None:
    """HD95/ASSD fixed by the policy, or ``None`` when both masks have foreground (compute it)."""
    if a_empty and b_empty:
        return DISTANCE_BOTH_EMPTY
    if a_empty or b_empty:
        return DISTANCE_ONE_EMPTY
    return None


def ratio(hits: int, total: int, *, others: int) -> float:
    """``hits / total`` for precision or recall, with the same rule as masks when ``total`` is 0.

    ``others`` counts what the other side has that would make the answer non-trivial (for precision
    with no boxes found: the reference boxes missed). Nothing on either side is perfect agreement (1);
    nothing on this side while the other side has something is 0.
    """
    if total:
        return hits / total
    return OVERLAP_BOTH_EMPTY if others == 0 else OVERLAP_ONE_EMPTY


def f1(tp: int, fp: int, fn: int) -> float:
    """``2TP / (2TP + FP + FN)``; 1 when neither side has anything (both empty)."""
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else OVERLAP_BOTH_EMPTY


def json_number(value: float) -> float | str | None:
    """A metric value for JSON: NaN (not applicable) → ``None``, ±inf → ``"inf"``/``"-inf"``."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)
