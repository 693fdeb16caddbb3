"""Reviewing an evaluation's cases: verdicts (ok, model error, label error, unsure) and pins into the
regression suite, both audited.

The cases are the ones ``medcycle evaluate`` stored with its gate report (previews and per-case metrics:
:mod:`medcycle.evaluation.gallery`). A verdict is kept per report and case (:class:`CaseReviewRow`); pinning
calls :func:`medcycle.models.registry.pin_case` so every later ``evaluate`` with ``regression: true`` judges
the case: a classification case must get its true class (or the class the reviewer gives when the label was
wrong), a segmentation case must reach a minimum Dice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import NotFound, UsageError
from medcycle.evaluation.gallery import VERDICTS, default_metric, metric_names, worst_first
from medcycle.models.registry import TARGET_KIND, pin_case
from medcycle.models.tables import CaseReviewRow, GateReportRow, ModelVersionRow, PinnedCaseRow
from medcycle.objects.base import ObjectStore
from medcycle.store.base import utcnow

MAX_NOTE = 2000
DEFAULT_MIN_DICE = "0.5"


@dataclass
class ReviewSet:
    """The cases of one gate report with their verdicts and pins."""

    report: GateReportRow
    model: str
    version: int
    segmentation: bool
    cases: list[dict[str, Any]]

    @property
    def ref(self) -> str:
        return f"{self.model}@v{self.version}"

    def case(self, key: str) -> dict[str, Any]:
        for c in self.cases:
            if c["key"] == key:
                return c
        raise NotFound(f"case {key!r} is not in the gallery of report {self.report.id}",
                       hint="Only the cases `medcycle evaluate` drew (policy gallery.limit) can be reviewed.")


def load(session: Session, objects: ObjectStore, report_id: str) -> ReviewSet:
    """The gallery of gate report ``report_id``."""
    report = session.get(GateReportRow, report_id)
    if report is None:
        raise NotFound(f"no gate report {report_id!r}", hint="See the reports: /ui/evaluation or "
                                                              "`medcycle model show NAME@vN`.")
    version = session.get(ModelVersionRow, report.version_id)
    assert version is not None  # CASCADE foreign key
    digest = ((report.summary or {}).get("reports") or {}).get("cases")
    if not digest:
        raise NotFound(f"gate report {report_id} has no review gallery",
                       hint="Evaluate again with a policy whose gallery.limit is above 0 (the default is 200).")
    data = json.loads(objects.get(str(digest)))
    return ReviewSet(report, version.model, version.version, bool(data.get("segmentation")), list(data["cases"]))


def verdicts(session: Session, report_id: str) -> dict[str, CaseReviewRow]:
    return {r.case_key: r for r in session.scalars(select(CaseReviewRow).where(CaseReviewRow.report_id == report_id))}


def pinned(session: Session, model: str) -> dict[str, PinnedCaseRow]:
    return {r.case_key: r for r in session.scalars(select(PinnedCaseRow).where(PinnedCaseRow.model == model))}


def ordered(review: ReviewSet, metric: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The cases worst first by ``metric`` (default: Dice for segmentation, error for classification)."""
    name = metric or default_metric(review.segmentation)
    if name not in metric_names(review.segmentation):
        raise UsageError(f"{name!r} is not a per-case metric of this evaluation",
                         hint=f"Sort by {', '.join(metric_names(review.segmentation))}.")
    return name, worst_first(review.cases, name)


def record_verdict(session: Session, objects: ObjectStore, report_id: str, case_key: str, verdict: str,
                   note: str | None = None, *, actor: str = "system", via: str = "library") -> CaseReviewRow:
    """Set (or change) the verdict on one case of a report's gallery."""
    if verdict not in VERDICTS:
        raise UsageError(f"{verdict!r} is not a verdict", hint=f"Choose one of {', '.join(VERDICTS)}.")
    text = (note or "").strip() or None
    if text is not None and len(text) > MAX_NOTE:
        raise UsageError(f"the note has {len(text)} characters (at most {MAX_NOTE})", hint="Shorten it.")
    review = load(session, objects, report_id)
    review.case(case_key)
    row = session.get(CaseReviewRow, (report_id, case_key))
    before = row.verdict if row is not None else None
    if row is None:
        row = CaseReviewRow(report_id=report_id, case_key=case_key, model=review.model, verdict=verdict, note=text,
                            reviewer=actor, reviewed_at=utcnow())
        session.add(row)
    else:
        row.verdict, row.note, row.reviewer, row.reviewed_at = verdict, text, actor, utcnow()
    audit.record(session, actor, "model.case_review", target_kind=TARGET_KIND, target_id=review.ref, via=via,
                 report=report_id, case=case_key, verdict=verdict, before=before, note=text)
    session.flush()
    return row


def pin_from_review(session: Session, objects: ObjectStore, report_id: str, case_key: str, *,
                    expected: str | None = None, reason: str | None = None, actor: str = "system",
                    via: str = "library") -> PinnedCaseRow:
    """Pin a reviewed case into the model's regression suite (see the module docstring for ``expected``)."""
    review = load(session, objects, report_id)
    case = review.case(case_key)
    want = (expected or "").strip()
    if not want:
        want = DEFAULT_MIN_DICE if review.segmentation else str(case.get("truth") or "")
    if review.segmentation:
        try:
            value = float(want)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{want!r} is not a minimum Dice", hint="A segmentation case pins a Dice in [0, 1], "
                                                                     "e.g. 0.7.")
    why = (reason or "").strip() or f"pinned from review of {review.ref} (report {report_id})"
    return pin_case(session, review.model, case_key, want, reason=why, from_ref=review.ref, actor=actor, via=via)
