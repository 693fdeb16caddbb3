"""References that keep objects alive: ``store gc`` deletes only objects no row references."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, utcnow


class ObjectRefRow(Base):
    __tablename__ = "object_refs"
    __table_args__ = (
        UniqueConstraint("digest", "owner_kind", "owner_id", name="uq_object_refs_owner"),
        Index("ix_object_refs_digest", "digest"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64))
    owner_kind: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str] = mapped_column(String(256))
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
