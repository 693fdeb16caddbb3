"""The words of the hypothesis register: statuses, verdicts, decisions, votes, link kinds, sort keys, and
the catalogue of business and technical questions every hypothesis is asked (MISSION §1).

Each is a :class:`~enum.StrEnum` whose values are what the CLI, the API and the database use; ``parse``
turns user input into a member with an error that lists the choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from medcycle.errors import UsageError

E = TypeVar("E", bound=StrEnum)


class Status(StrEnum):
    """Where a hypothesis stands. ``validated`` and ``killed`` are verdicts; ``reopen`` leaves them."""

    PROPOSED = "proposed"
    EXPLORING = "exploring"
    VALIDATED = "validated"
    KILLED = "killed"


class Verdict(StrEnum):
    """How a hypothesis is closed (each needs a reason)."""

    VALIDATED = "validated"
    KILLED = "killed"


class Decision(StrEnum):
    """The HiPPO's call (the highest-paid person's opinion), recorded beside the team's scores and votes."""

    GO = "go"
    NO_GO = "no-go"
    DEFER = "defer"


class VoteValue(StrEnum):
    UP = "up"
    DOWN = "down"


VOTE_POINTS: dict[VoteValue, int] = {VoteValue.UP: 1, VoteValue.DOWN: -1}


class LinkKind(StrEnum):
    """What a hypothesis links to: a tracked run (by id) or a dataset version (``NAME@TAG``)."""

    RUN = "run"
    DATASET = "dataset"


class SortKey(StrEnum):
    """How the register is ranked (highest first; see :func:`medcycle.hypotheses.ranking.rank`)."""

    ICE = "ice"
    RICE = "rice"
    VOTES = "votes"


class Confidence(StrEnum):
    """How sure the team is of an answer to one of the questions."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class QuestionGroup(StrEnum):
    BUSINESS = "business"
    TECHNICAL = "technical"


@dataclass(frozen=True, slots=True)
class Question:
    key: str
    group: QuestionGroup
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "group": self.group.value, "text": self.text}


QUESTIONS: tuple[Question, ...] = (
    Question("problem", QuestionGroup.BUSINESS, "Is it an important and common problem?"),
    Question("will_pay", QuestionGroup.BUSINESS, "Will the audience pay for a solution?"),
    Question("time_and_cost", QuestionGroup.BUSINESS, "Can we build it in reasonable time and at reasonable cost?"),
    Question("data_available", QuestionGroup.TECHNICAL, "Is the data available to us (own, partner, purchasable)?"),
    Question("public_data", QuestionGroup.TECHNICAL, "Is there public data for the task?"),
    Question("new_formats", QuestionGroup.TECHNICAL, "Does it need new data formats or new kinds of task?"),
    Question("expert_access", QuestionGroup.TECHNICAL, "Do we have access to expert doctors (labeling, review)?"),
    Question("baseline_quality", QuestionGroup.TECHNICAL, "What quality do baselines reach?"),
    Question("expert_quality", QuestionGroup.TECHNICAL, "What quality do recognised experts reach?"),
    Question("rollout_quality", QuestionGroup.TECHNICAL, "At what quality can rollout begin?"),
)
QUESTIONS_BY_KEY: dict[str, Question] = {q.key: q for q in QUESTIONS}


def parse(enum: type[E], value: str | E, what: str) -> E:
    """``value`` as a member of ``enum``; a :class:`UsageError` naming the choices otherwise."""
    if isinstance(value, enum):
        return value
    try:
        return enum(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise UsageError(f"{value!r} is not a {what}", hint=f"Choose one of: {choices}.") from None


def question(key: str) -> Question:
    """The catalogue entry for ``key``; a :class:`UsageError` listing the keys otherwise."""
    found = QUESTIONS_BY_KEY.get(key.strip().lower().replace("-", "_"))
    if found is None:
        raise UsageError(
            f"{key!r} is not one of the hypothesis questions",
            hint=f"Use one of: {', '.join(QUESTIONS_BY_KEY)} (see `medcycle hypothesis questions`).",
        )
    return found
