"""Pydantic shapes of the hypotheses API. Values are checked by the library, so the API and the CLI
give the same errors; these models only fix the JSON shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from medcycle.hypotheses.detail import Detail
from medcycle.hypotheses.ranking import Summary


class HypothesisIn(BaseModel):
    title: str = Field(examples=["Detect pneumothorax on chest X-rays in the ER"])
    project: str = Field(examples=["chest-xr"])
    description: str | None = None
    owner: str | None = Field(default=None, description="A user name; defaults to the caller.")


class HypothesisEdit(BaseModel):
    title: str | None = None
    project: str | None = None
    description: str | None = Field(default=None, description="An empty string clears it.")
    owner: str | None = None


class AnswerIn(BaseModel):
    answer: str
    confidence: str | None = Field(default=None, examples=["medium"], description="low, medium or high.")
    notes: str | None = None


class IceIn(BaseModel):
    impact: float | None = Field(default=None, examples=[8])
    confidence: float | None = Field(default=None, examples=[5])
    ease: float | None = Field(default=None, examples=[6])


class RiceIn(BaseModel):
    reach: float | None = Field(default=None, examples=[400])
    impact: float | None = Field(default=None, examples=[2], description="0.25, 0.5, 1, 2 or 3.")
    confidence: float | None = Field(default=None, examples=[80], description="Percent.")
    effort: float | None = Field(default=None, examples=[3], description="Person-months.")


class ScoreIn(BaseModel):
    ice: IceIn | None = None
    rice: RiceIn | None = None


class VoteIn(BaseModel):
    value: str = Field(examples=["up"], description="up or down.")
    comment: str | None = None


class DecisionIn(BaseModel):
    decision: str = Field(examples=["go"], description="go, no-go or defer.")
    note: str | None = None
    by: str | None = Field(default=None, description="Who made the call; defaults to the caller.")


class StatusIn(BaseModel):
    reason: str | None = None


class CloseIn(BaseModel):
    verdict: str = Field(examples=["killed"], description="validated or killed.")
    reason: str = Field(examples=["Too few positive studies in any source we can get."])


class LinkIn(BaseModel):
    kind: str = Field(examples=["dataset"], description="run or dataset.")
    target: str = Field(examples=["chest-xr@v1.0"], description="A run id, or NAME@TAG of a dataset version.")
    note: str | None = None


class LinkOut(BaseModel):
    kind: str
    target: str
    digest: str | None
    note: str | None
    by: str
    at: datetime
    created: bool = False


class HypothesisSummaryOut(BaseModel):
    rank: int
    id: int
    ref: str
    title: str
    project: str
    owner: str
    status: str
    status_reason: str | None
    ice: float | None
    rice: float | None
    votes: dict[str, int]
    decision: dict[str, Any] | None
    answered: int
    questions: int
    links: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, summary: Summary) -> HypothesisSummaryOut:
        return cls.model_validate(summary.to_dict())


class HypothesisOut(BaseModel):
    id: int
    ref: str
    title: str
    project: str
    owner: str
    status: str
    status_reason: str | None
    description: str | None
    created_by: str
    ice: float | None
    rice: float | None
    scores: dict[str, dict[str, Any] | None]
    votes: dict[str, Any]
    decision: dict[str, Any] | None
    answered: int
    questions: int
    answers: list[dict[str, Any]]
    history: list[dict[str, Any]]
    links: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, detail: Detail) -> HypothesisOut:
        return cls.model_validate(detail.to_dict())
