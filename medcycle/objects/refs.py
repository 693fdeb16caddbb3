"""Record which rows use which objects, so garbage collection never deletes a used object."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.orm import Session

from medcycle.objects.base import check_digest
from medcycle.objects.tables import ObjectRefRow
from medcycle.store.base import utcnow


def add_ref(session: Session, digest: str, owner_kind: str, owner_id: str, *, size: int | None = None) -> None:
    """Mark ``digest`` as used by ``(owner_kind, owner_id)``; adding the same reference twice is a no-op."""
    check_digest(digest)
    exists = session.scalar(
        select(ObjectRefRow.seq).where(
            ObjectRefRow.digest == digest, ObjectRefRow.owner_kind == owner_kind, ObjectRefRow.owner_id == owner_id
        )
    )
    if exists is None:
        session.add(
            ObjectRefRow(digest=digest, owner_kind=owner_kind, owner_id=owner_id, size=size, created_at=utcnow())
        )
        session.flush()


def add_refs(session: Session, digests: Iterable[str], owner_kind: str, owner_id: str) -> None:
    """:func:`add_ref` for several objects of one owner in one statement (existing references are kept)."""
    unique = list(dict.fromkeys(digests))
    if not unique:
        return
    for digest in unique:
        check_digest(digest)
    table: Table = ObjectRefRow.__table__  # type: ignore[assignment]
    now = utcnow()
    values = [{"digest": d, "owner_kind": owner_kind, "owner_id": owner_id, "size": None, "created_at": now}
              for d in unique]
    conn = session.connection()  # a Core statement: straight on the transaction's connection
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["digest", "owner_kind", "owner_id"]), values)


def remove_refs(session: Session, owner_kind: str, owner_id: str) -> int:
    result = session.execute(
        delete(ObjectRefRow).where(ObjectRefRow.owner_kind == owner_kind, ObjectRefRow.owner_id == owner_id)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def referenced_digests(session: Session) -> set[str]:
    return set(session.scalars(select(ObjectRefRow.digest).distinct()))


def refs_of(session: Session, digests: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    wanted = list(digests)
    out: dict[str, list[tuple[str, str]]] = {d: [] for d in wanted}
    if not wanted:
        return out
    for row in session.scalars(select(ObjectRefRow).where(ObjectRefRow.digest.in_(wanted))):
        out[row.digest].append((row.owner_kind, row.owner_id))
    return out
