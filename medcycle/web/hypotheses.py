"""Hypothesis pages: the ranked register (``/ui/hypotheses``) and one hypothesis (``/ui/hypotheses/H-7``).

Both need ``view``. The detail page carries the one change open to every viewer, a vote (a form that posts
back here with the SameSite session cookie); other changes are made with ``medcycle hypothesis`` or the API.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from starlette.responses import Response

from medcycle.api.deps import SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.hypotheses import detail, ranking, votes
from medcycle.hypotheses.inputs import parse_ref, ref_of
from medcycle.hypotheses.lifecycle import CLOSED
from medcycle.hypotheses.scoring import format_score
from medcycle.hypotheses.tables import HypothesisRow
from medcycle.hypotheses.vocabulary import QUESTIONS, QuestionGroup, SortKey, Status, parse
from medcycle.web.render import renderer

router = APIRouter(prefix="/ui/hypotheses", include_in_schema=False)
Viewer = Annotated[Principal, requires(Permission.VIEW)]

STATUS_CLASS = {
    Status.PROPOSED.value: "state-queued",
    Status.EXPLORING.value: "state-running",
    Status.VALIDATED.value: "status-ok",
    Status.KILLED.value: "status-bad",
}
DECISION_CLASS = {"go": "status-ok", "no-go": "status-bad", "defer": "badge-warn"}
SORT_LABELS = {SortKey.ICE: "ICE", SortKey.RICE: "RICE", SortKey.VOTES: "votes"}


def _url(**params: str | None) -> str:
    query = urlencode({k: v for k, v in params.items() if v})
    return f"/ui/hypotheses?{query}" if query else "/ui/hypotheses"


@router.get("")
def register_page(
    request: Request,
    session: SessionDep,
    principal: Viewer,
    sort: Annotated[str, Query(max_length=16)] = SortKey.ICE.value,
    status: Annotated[str, Query(max_length=16)] = "",
    project: Annotated[str, Query(max_length=128)] = "",
) -> Response:
    key = parse(SortKey, sort, "sort key")
    chosen = parse(Status, status, "status").value if status else ""
    ranked = ranking.rank(session, sort=key, statuses=[chosen] if chosen else None, project=project or None)
    projects = sorted(set(session.scalars(select(HypothesisRow.project).distinct())))
    return renderer(request).render(
        request, "hypotheses.html", principal=principal, active="hypotheses",
        ranked=ranked, sort=key.value, sort_label=SORT_LABELS[key], status=chosen, project=project,
        projects=projects, statuses=[s.value for s in Status],
        sort_links={k.value: _url(sort=k.value, status=chosen, project=project) for k in SortKey},
        status_links={s: _url(sort=key.value, status=s, project=project) for s in ["", *[v.value for v in Status]]},
        clear_link=_url(sort=key.value),
        status_class=STATUS_CLASS, decision_class=DECISION_CLASS, score=format_score, n_questions=len(QUESTIONS),
        can_add=principal.can(Permission.TRAIN),
    )


@router.get("/{ref}")
def hypothesis_page(request: Request, ref: str, session: SessionDep, principal: Viewer) -> Response:
    record = detail.show(session, ref)
    mine = next((v for v in record.votes if v.voter == principal.name), None)
    groups = [(g.value, [a for a in record.answers if a.question.group == g]) for g in QuestionGroup]
    return renderer(request).render(
        request, "hypotheses_detail.html", principal=principal, active="hypotheses",
        h=record, s=record.summary, groups=groups, my_vote=mine, closed=record.summary.status in CLOSED,
        status_class=STATUS_CLASS, decision_class=DECISION_CLASS, score=format_score,
        may_close=principal.can(Permission.ADMIN) or principal.name == record.summary.owner,
        may_edit=principal.can(Permission.TRAIN),
    )


@router.post("/{ref}/vote")
def vote_form(
    ref: str,
    session: SessionDep,
    principal: Viewer,
    value: Annotated[str, Form(max_length=8)] = "",
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    if value == "retract":
        votes.retract(session, ref, actor=principal.name, via="web")
    else:
        votes.vote(session, ref, value, comment=comment, actor=principal.name, via="web")
    return RedirectResponse(f"/ui/hypotheses/{ref_of(parse_ref(ref))}#votes", status_code=303)
