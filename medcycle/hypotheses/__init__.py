"""The hypothesis register (MISSION §1): is an idea feasible, and is it worth it?

A hypothesis carries answers to business and technical questions, ICE and RICE scores, the team's votes,
the HiPPO's call, a status (proposed → exploring → validated | killed, with the reason and its history)
and links to the runs and dataset versions that test it. Operations take a SQLAlchemy session, write an
audit event with every change, and live one per module::

    from medcycle.hypotheses import register, answers, scoring, votes, decisions, lifecycle, links
    from medcycle.hypotheses import ranking, detail
"""

from medcycle.hypotheses.vocabulary import (
    QUESTIONS,
    Confidence,
    Decision,
    LinkKind,
    SortKey,
    Status,
    Verdict,
    VoteValue,
)

__all__ = ["QUESTIONS", "Confidence", "Decision", "LinkKind", "SortKey", "Status", "Verdict", "VoteValue"]
