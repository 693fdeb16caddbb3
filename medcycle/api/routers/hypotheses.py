"""Hypotheses: the ranked register, one record, and every change to it (each writes an audit event).

Reading needs ``view``, creating and editing ``train``; anyone who may view may vote; closing and
reopening are for an admin or the hypothesis's owner. A hypothesis is addressed as ``H-7`` (or ``7``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from medcycle.api.deps import SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.hypotheses import answers, decisions, detail, lifecycle, links, ranking, register, scoring, votes
from medcycle.hypotheses.lookup import get_hypothesis
from medcycle.hypotheses.schemas import (
    AnswerIn,
    CloseIn,
    DecisionIn,
    HypothesisEdit,
    HypothesisIn,
    HypothesisOut,
    HypothesisSummaryOut,
    LinkIn,
    ScoreIn,
    StatusIn,
    VoteIn,
)
from medcycle.hypotheses.vocabulary import QUESTIONS

router = APIRouter(prefix="/v1/hypotheses", tags=["hypotheses"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Editor = Annotated[Principal, requires(Permission.TRAIN)]
VIA = "api"


def _out(session: SessionDep, ref: str | int) -> HypothesisOut:
    return HypothesisOut.of(detail.show(session, ref))


@router.get("", response_model=list[HypothesisSummaryOut])
def list_hypotheses(
    session: SessionDep,
    _: Viewer,
    sort: Annotated[str, Query(description="ice, rice or votes (highest first).")] = "ice",
    status_: Annotated[list[str] | None, Query(alias="status", description="Only these statuses.")] = None,
    project: str | None = None,
    owner: str | None = None,
) -> list[HypothesisSummaryOut]:
    ranked = ranking.rank(session, sort=sort, statuses=status_, project=project, owner=owner)
    return [HypothesisSummaryOut.of(s) for s in ranked]


@router.post("", response_model=HypothesisOut, status_code=status.HTTP_201_CREATED)
def create_hypothesis(body: HypothesisIn, session: SessionDep, principal: Editor) -> HypothesisOut:
    row = register.create(
        session,
        body.title,
        project=body.project,
        description=body.description,
        owner=body.owner,
        actor=principal.name,
        via=VIA,
    )
    return _out(session, row.id)


@router.get("/questions", response_model=list[dict[str, str]])
def list_questions(_: Viewer) -> list[dict[str, str]]:
    return [q.to_dict() for q in QUESTIONS]


@router.get("/{ref}", response_model=HypothesisOut)
def show_hypothesis(ref: str, session: SessionDep, _: Viewer) -> HypothesisOut:
    return _out(session, ref)


@router.patch("/{ref}", response_model=HypothesisOut)
def edit_hypothesis(ref: str, body: HypothesisEdit, session: SessionDep, principal: Editor) -> HypothesisOut:
    register.edit(
        session,
        ref,
        title=body.title,
        description=body.description,
        project=body.project,
        owner=body.owner,
        actor=principal.name,
        via=VIA,
    )
    return _out(session, ref)


@router.put("/{ref}/answers/{question}", response_model=HypothesisOut)
def answer_question(ref: str, question: str, body: AnswerIn, session: SessionDep, principal: Editor) -> HypothesisOut:
    answers.answer(
        session, ref, question, body.answer, confidence=body.confidence, notes=body.notes, actor=principal.name, via=VIA
    )
    return _out(session, ref)


@router.delete("/{ref}/answers/{question}", response_model=HypothesisOut)
def clear_answer(ref: str, question: str, session: SessionDep, principal: Editor) -> HypothesisOut:
    answers.clear_answer(session, ref, question, actor=principal.name, via=VIA)
    return _out(session, ref)


@router.post("/{ref}/scores", response_model=HypothesisOut)
def score_hypothesis(ref: str, body: ScoreIn, session: SessionDep, principal: Editor) -> HypothesisOut:
    ice = scoring.ice(body.ice.impact, body.ice.confidence, body.ice.ease) if body.ice else None
    rice = (
        scoring.rice(body.rice.reach, body.rice.impact, body.rice.confidence, body.rice.effort) if body.rice else None
    )
    scoring.score(session, ref, ice=ice, rice=rice, actor=principal.name, via=VIA)
    return _out(session, ref)


@router.put("/{ref}/vote", response_model=HypothesisOut)
def vote(ref: str, body: VoteIn, session: SessionDep, principal: Viewer) -> HypothesisOut:
    votes.vote(session, ref, body.value, comment=body.comment, actor=principal.name, via=VIA)
    return _out(session, ref)


@router.delete("/{ref}/vote", response_model=HypothesisOut)
def retract_vote(ref: str, session: SessionDep, principal: Viewer) -> HypothesisOut:
    votes.retract(session, ref, actor=principal.name, via=VIA)
    return _out(session, ref)


@router.post("/{ref}/decision", response_model=HypothesisOut)
def decide(ref: str, body: DecisionIn, session: SessionDep, principal: Editor) -> HypothesisOut:
    decisions.decide(session, ref, body.decision, by=body.by, note=body.note, actor=principal.name, via=VIA)
    return _out(session, ref)


@router.post("/{ref}/explore", response_model=HypothesisOut)
def explore(ref: str, body: StatusIn, session: SessionDep, principal: Editor) -> HypothesisOut:
    lifecycle.explore(session, ref, note=body.reason, actor=principal.name, via=VIA)
    return _out(session, ref)


@router.post("/{ref}/close", response_model=HypothesisOut)
def close(ref: str, body: CloseIn, session: SessionDep, principal: Viewer) -> HypothesisOut:
    lifecycle.require_closer(principal, get_hypothesis(session, ref))
    lifecycle.close(session, ref, body.verdict, body.reason, actor=principal.name, via=VIA)
    return _out(session, ref)


@router.post("/{ref}/reopen", response_model=HypothesisOut)
def reopen(ref: str, body: StatusIn, session: SessionDep, principal: Viewer) -> HypothesisOut:
    lifecycle.require_closer(principal, get_hypothesis(session, ref))
    lifecycle.reopen(session, ref, body.reason, actor=principal.name, via=VIA)
    return _out(session, ref)


@router.post("/{ref}/links", response_model=HypothesisOut, status_code=status.HTTP_201_CREATED)
def link(ref: str, body: LinkIn, session: SessionDep, principal: Editor, response: Response) -> HypothesisOut:
    _, created = links.link(session, ref, body.kind, body.target, note=body.note, actor=principal.name, via=VIA)
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(session, ref)


@router.delete("/{ref}/links", response_model=HypothesisOut)
def unlink(
    ref: str,
    session: SessionDep,
    principal: Editor,
    kind: Annotated[str, Query(description="run or dataset.")],
    target: Annotated[str, Query(description="The run id or NAME@TAG as linked.")],
) -> HypothesisOut:
    links.unlink(session, ref, kind, target, actor=principal.name, via=VIA)
    return _out(session, ref)
