"""How much readers agree: kappas and alpha for classes, Dice/IoU/HD95/ASSD for masks, matched F1 for boxes.

The maths is the libraries': Cohen's kappa from scikit-learn, Fleiss' kappa from statsmodels,
Krippendorff's alpha from ``krippendorff`` (here); Dice/IoU from SimpleITK's label-overlap filter and
surface distances from SimpleITK contours and a scipy k-d tree, to MONAI's definitions (tested equal to
``monai.metrics`` within 1e-4 mm; MONAI itself is not imported because it drags in torch and warns on
every call) in :mod:`.mask_agreement`; matched box F1 in :mod:`.box_agreement`. What these modules add is
the bookkeeping: who rated what, which items two readers share, the empty-mask policy (:mod:`.policy`)
and reader × reader matrices.

Surface distances follow MONAI: a mask's surface is its foreground voxels with a face-connected
background neighbour (outside the array counts as background); distances run between voxel centres in
mm (``spacing`` per array axis). HD95 is the larger of the two directed 95th percentiles (linear
interpolation, as ``torch.quantile``); ASSD is the mean of both directions' distances pooled.
SimpleITK's ``HausdorffDistanceImageFilter`` measures from every foreground voxel instead and averages
the two directed means, so its numbers differ; it is not used.

Undefined values are NaN ("N/A"): kappa when both readers gave one and the same category to every
shared item, alpha when the ratings show no variation, any pairwise value for two readers who share no
item.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed
from medcycle.labels import policy
from medcycle.labels.model import Annotation, Kind

MISSING = -1  # the code of "this reader did not rate this item"
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
E = TypeVar("E", bound=StrEnum)


class Weighting(StrEnum):
    """Cohen's kappa weights: disagreements cost the same, or grow with the distance between categories."""

    NONE = "none"
    LINEAR = "linear"
    QUADRATIC = "quadratic"


class Measurement(StrEnum):
    """Krippendorff's levels of measurement."""

    NOMINAL = "nominal"
    ORDINAL = "ordinal"
    INTERVAL = "interval"
    RATIO = "ratio"


def choose(kind: type[E], value: str, what: str) -> E:
    """``value`` as a member of ``kind``, or a clear error listing the choices."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise ValidationFailed(f"unknown {what} {value!r}", hint=f"Use one of: {choices}.") from None


# ---------------------------------------------------------------------------------------------- classes


@dataclass(frozen=True, slots=True, eq=False)
class Ratings:
    """Who gave which category to which item: a readers × items table of category codes.

    ``codes[r, i]`` indexes ``categories`` (``MISSING`` where reader ``r`` did not rate item ``i``).
    ``ordered`` says whether the category order was given (and may be used by weighted kappa and
    ordinal/interval alpha) or only inferred from first use.
    """

    readers: tuple[str, ...]
    items: tuple[str, ...]
    categories: tuple[str, ...]
    codes: IntArray
    ordered: bool = True

    def __post_init__(self) -> None:
        codes = np.asarray(self.codes, dtype=np.int64)
        if codes.shape != (len(self.readers), len(self.items)):
            raise ValidationFailed(f"ratings table is {codes.shape}, expected {len(self.readers)} readers "
                                   f"× {len(self.items)} items", hint="Give one row per reader, one column per item.")
        if len(set(self.readers)) != len(self.readers) or len(set(self.categories)) != len(self.categories):
            raise ValidationFailed("a reader or a category is listed twice", hint="Name each reader and class once.")
        if codes.size and (codes.min() < MISSING or codes.max() >= len(self.categories)):
            raise ValidationFailed("a rating code is outside the category list",
                                   hint=f"Use 0..{len(self.categories) - 1}, or {MISSING} for not rated.")
        codes = codes.copy()
        codes.flags.writeable = False
        object.__setattr__(self, "codes", codes)

    @classmethod
    def from_table(cls, table: Mapping[str, Mapping[str, str | None]],
                   categories: Sequence[str] | None = None) -> Ratings:
        """From ``{reader: {item: category}}``; ``None`` or a missing item means not rated."""
        readers = tuple(table)
        items = tuple(dict.fromkeys(item for row in table.values() for item in row))
        used = [c for row in table.values() for c in row.values() if c is not None]
        cats = tuple(categories) if categories is not None else tuple(dict.fromkeys(used))
        index = {c: k for k, c in enumerate(cats)}
        unknown = sorted({c for c in used if c not in index})
        if unknown:
            raise ValidationFailed(f"categories not in the category list: {', '.join(unknown[:5])}",
                                   hint=f"Add them to categories ({', '.join(cats)}).")
        codes = np.full((len(readers), len(items)), MISSING, dtype=np.int64)
        column = {item: i for i, item in enumerate(items)}
        for r, row in enumerate(table.values()):
            for item, category in row.items():
                if category is not None:
                    codes[r, column[item]] = index[category]
        return cls(readers, items, cats, codes, ordered=categories is not None)

    @classmethod
    def from_annotations(cls, annotations: Iterable[Annotation], categories: Sequence[str] | None = None) -> Ratings:
        """From class annotations (other kinds are skipped); one class per reader and image."""
        table: dict[str, dict[str, str | None]] = defaultdict(dict)
        for a in annotations:
            if a.kind != Kind.CLASS:
                continue
            reader = _reader_of(a)
            given = table[reader].get(a.image)
            if given is not None and given != a.label:
                raise ValidationFailed(f"reader {reader!r} gave image {a.image!r} two classes ({given}, {a.label})",
                                       hint="Kappa and alpha need one class per reader and item; for multi-label "
                                            "classes compare each class as present/absent.")
            table[reader][a.image] = a.label
        if not table:
            raise ValidationFailed("no class annotations to compare", hint="Give class (image-level) annotations.")
        return cls.from_table(dict(sorted(table.items())), categories)

    def row(self, reader: str) -> IntArray:
        try:
            row: IntArray = self.codes[self.readers.index(reader)]
            return row
        except ValueError:
            raise ValidationFailed(f"no reader {reader!r} in these ratings",
                                   hint=f"Readers: {', '.join(self.readers)}.") from None

    def shared(self, a: str, b: str) -> tuple[IntArray, IntArray]:
        """The codes of readers ``a`` and ``b`` on the items both rated."""
        x, y = self.row(a), self.row(b)
        both = (x != MISSING) & (y != MISSING)
        return x[both], y[both]


def _reader_of(a: Annotation) -> str:
    if not a.reader:
        raise ValidationFailed(f"an annotation on {a.image!r} has no reader",
                               hint="Agreement compares readers: set each annotation's reader.")
    return a.reader


def _need_order(ratings: Ratings, what: str) -> None:
    if not ratings.ordered:
        raise ValidationFailed(f"{what} needs the category order, which was only inferred from first use",
                               hint="Pass categories=[...] in order (e.g. the schema's class list).")


def _need_readers(n: int) -> None:
    if n < 2:
        raise ValidationFailed(f"agreement needs at least two readers, got {n}", hint="Add another reader's labels.")


def _kappa(x: IntArray, y: IntArray, n_categories: int, weighting: Weighting) -> float:
    from sklearn.metrics import cohen_kappa_score

    if len(x) == 0 or len(np.union1d(x, y)) == 1:
        return math.nan  # nothing shared, or chance agreement is 1 (kappa = 0/0)
    weights = None if weighting is Weighting.NONE else weighting.value
    return float(cohen_kappa_score(x, y, labels=np.arange(n_categories), weights=weights))


def cohen_kappa(ratings: Ratings, a: str, b: str, weighting: str = Weighting.NONE) -> float:
    """Cohen's kappa of readers ``a`` and ``b`` on the items both rated (weights use the category order)."""
    w = choose(Weighting, weighting, "kappa weighting")
    if w is not Weighting.NONE:
        _need_order(ratings, f"{w.value}-weighted kappa")
    x, y = ratings.shared(a, b)
    if len(x) == 0:
        raise ValidationFailed(f"readers {a!r} and {b!r} rated no item in common",
                               hint="Kappa compares the same items; assign overlapping items.")
    return _kappa(x, y, len(ratings.categories), w)


def fleiss_kappa(ratings: Ratings) -> float:
    """Fleiss' kappa over the items rated; every rated item needs the same number of ratings (≥ 2)."""
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

    _need_readers(len(ratings.readers))
    rated = ratings.codes != MISSING
    per_item = rated.sum(axis=0)
    used = per_item > 0
    most = int(per_item.max(initial=0))
    if most < 2:
        raise ValidationFailed("no item was rated by two readers",
                               hint="Fleiss' kappa compares readers on shared items.")
    short = [ratings.items[i] for i in np.flatnonzero(used & (per_item < most))]
    if short:
        raise ValidationFailed(f"Fleiss' kappa needs the same number of ratings on every item; {len(short)} item(s) "
                               f"have fewer than {most}: {', '.join(short[:5])}",
                               hint="Use krippendorff_alpha, which allows missing ratings.")
    table = np.stack([np.bincount(ratings.codes[rated[:, i], i], minlength=len(ratings.categories))
                      for i in np.flatnonzero(used)])
    if np.count_nonzero(table.sum(axis=0)) == 1:
        return math.nan  # every rating in one category: chance agreement is 1
    return float(statsmodels_fleiss(table, method="fleiss"))


def krippendorff_alpha(ratings: Ratings, level: str = Measurement.NOMINAL) -> float:
    """Krippendorff's alpha; missing ratings allowed. Interval/ratio levels need numeric category names."""
    import krippendorff

    m = choose(Measurement, level, "level of measurement")
    _need_readers(len(ratings.readers))
    values = np.arange(len(ratings.categories), dtype=np.float64)
    if m is not Measurement.NOMINAL:
        _need_order(ratings, f"{m.value} alpha")
    if m in (Measurement.INTERVAL, Measurement.RATIO):
        try:
            values = np.array([float(c) for c in ratings.categories])
        except ValueError:
            raise ValidationFailed(f"{m.value} alpha needs numeric categories, got {', '.join(ratings.categories)}",
                                   hint="Use ordinal alpha for ordered classes without numeric values.") from None
    data = np.where(ratings.codes == MISSING, np.nan, values[np.maximum(ratings.codes, 0)])
    pairable = (ratings.codes != MISSING).sum(axis=0) >= 2
    if not pairable.any():
        raise ValidationFailed("no item was rated by two readers", hint="Alpha compares readers on shared items.")
    if len(np.unique(data[:, pairable][~np.isnan(data[:, pairable])])) == 1:
        return math.nan  # no variation at all: expected disagreement is 0
    return float(krippendorff.alpha(reliability_data=data, value_domain=np.unique(values),
                                    level_of_measurement=m.value))


# ---------------------------------------------------------------------------------------------- matrices


@dataclass(frozen=True, slots=True, eq=False)
class ReaderMatrix:
    """A symmetric reader × reader table of one metric; NaN where two readers share no item.

    ``shared[i, j]`` counts the items both readers rated (the diagonal: items each rated), so a value
    can be read with its support. The diagonal holds the metric's value for perfect agreement.
    """

    metric: str
    readers: tuple[str, ...]
    values: FloatArray
    shared: IntArray

    def value(self, a: str, b: str) -> float | None:
        """The value for readers ``a`` and ``b``; ``None`` when not applicable."""
        try:
            i, j = self.readers.index(a), self.readers.index(b)
        except ValueError:
            raise ValidationFailed(f"no reader {a!r} or {b!r} in this matrix",
                                   hint=f"Readers: {', '.join(self.readers)}.") from None
        v = float(self.values[i, j])
        return None if math.isnan(v) else v

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``null`` for N/A and ``"inf"`` for infinite distances (see :mod:`.policy`)."""
        return {"metric": self.metric, "readers": list(self.readers),
                "values": [[policy.json_number(float(v)) for v in row] for row in self.values],
                "shared": self.shared.tolist()}


def pairwise(metric: str, readers: Sequence[str], support: Callable[[str, str], int],
             compare: Callable[[str, str], float], perfect: float) -> ReaderMatrix:
    """Fill a :class:`ReaderMatrix` from ``support(a, b)`` (shared items) and ``compare(a, b)``."""
    _need_readers(len(readers))
    n = len(readers)
    values = np.full((n, n), math.nan)
    shared = np.zeros((n, n), dtype=np.int64)
    for i, a in enumerate(readers):
        for j in range(i, n):
            b = readers[j]
            shared[i, j] = shared[j, i] = support(a, b)
            if shared[i, j]:
                values[i, j] = values[j, i] = perfect if i == j else compare(a, b)
    return ReaderMatrix(metric, tuple(readers), values, shared)


def kappa_matrix(ratings: Ratings, weighting: str = Weighting.NONE) -> ReaderMatrix:
    """Pairwise Cohen's kappa of every two readers."""
    w = choose(Weighting, weighting, "kappa weighting")
    if w is not Weighting.NONE:
        _need_order(ratings, f"{w.value}-weighted kappa")
    k = len(ratings.categories)
    name = "cohen_kappa" if w is Weighting.NONE else f"cohen_kappa_{w.value}"
    return pairwise(name, ratings.readers, lambda a, b: len(ratings.shared(a, b)[0]),
                    lambda a, b: _kappa(*ratings.shared(a, b), k, w), 1.0)


def percent_agreement_matrix(ratings: Ratings) -> ReaderMatrix:
    """Pairwise share of shared items given the same category (shown next to kappa where kappa is N/A)."""
    def agree(a: str, b: str) -> float:
        x, y = ratings.shared(a, b)
        return float(np.mean(x == y))

    return pairwise("percent_agreement", ratings.readers, lambda a, b: len(ratings.shared(a, b)[0]), agree, 1.0)


@dataclass(frozen=True, slots=True)
class Readings:
    """Which images each reader read, and their annotations of one kind there (by reader, then image).

    Without an explicit ``read`` mapping a reader counts as having read only the images they annotated
    (with this kind); with it, a read image without an annotation is an empty reading — the reader saw
    nothing — which is what makes the empty-mask policy reachable.
    """

    read: dict[str, frozenset[str]]
    found: dict[str, dict[str, list[Annotation]]]

    @property
    def readers(self) -> tuple[str, ...]:
        return tuple(sorted(self.read))

    def shared(self, a: str, b: str) -> list[str]:
        return sorted(self.read[a] & self.read[b])

    @classmethod
    def of(cls, annotations: Iterable[Annotation], kind: Kind, *, label: str | None = None,
           read: Mapping[str, Iterable[str]] | None = None) -> Readings:
        found: dict[str, dict[str, list[Annotation]]] = defaultdict(lambda: defaultdict(list))
        for a in annotations:
            if a.kind == kind and (label is None or a.label == label):
                found[_reader_of(a)][a.image].append(a)
        seen = {r: frozenset(images) for r, images in found.items()}
        if read is not None:
            extra = sorted(set(seen) - set(read))
            if extra:
                raise ValidationFailed(f"readers with annotations but not in read: {', '.join(extra[:5])}",
                                       hint="List every reader's read images, or leave read out.")
            for r, images in read.items():
                missing = sorted(seen.get(r, frozenset()) - set(images))
                if missing:
                    raise ValidationFailed(f"reader {r!r} annotated images not listed as read: "
                                           f"{', '.join(missing[:5])}", hint="Add them to the reader's read images.")
            seen = {r: frozenset(images) for r, images in read.items()}
        return cls(seen, {r: dict(by_image) for r, by_image in found.items()})

    def on(self, reader: str, image: str) -> list[Annotation]:
        return self.found.get(reader, {}).get(image, [])
