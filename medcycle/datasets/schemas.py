"""Pydantic shapes of the datasets API (request bodies and responses)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from medcycle.datasets.items import DatasetInfo, ItemChange
from medcycle.datasets.labels import LabelSetInfo
from medcycle.datasets.versions import VersionInfo


class DatasetIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, examples=["chest-xr-pneumonia"])
    description: str | None = None
    query: str | None = Field(default=None, examples=['modality in ["CR", "DX"] and body_part == "chest"'])
    uids: list[str] = Field(default_factory=list, description="Instance, series or study uids.")


class ItemsIn(BaseModel):
    query: str | None = None
    uids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one(self) -> ItemsIn:
        if self.query is None and not self.uids:
            raise ValueError("give a query or uids")
        return self


class FreezeIn(BaseModel):
    tag: str | None = None
    split: str | dict[str, float] | None = Field(default=None, examples=["train=0.7,val=0.15,test=0.15"])
    folds: int | None = Field(default=None, ge=2, le=100)
    stratify: list[str] = Field(default_factory=list, examples=[["label", "source"]])
    seed: int = 0
    resplit: bool = False
    message: str | None = None


class CardEditIn(BaseModel):
    fields: dict[str, str | None] = Field(examples=[{"licence": "CC-BY-NC-4.0", "motivation": "Triage of …"}])


class DatasetOut(BaseModel):
    name: str
    description: str | None
    items: int
    versions: int
    label_set: str | None
    latest_version: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    card_fields: dict[str, str]

    @classmethod
    def of(cls, info: DatasetInfo) -> DatasetOut:
        return cls.model_validate(info.to_dict())


class ItemChangeOut(BaseModel):
    dataset: str
    matched: int
    changed: int
    unchanged: int
    items: int

    @classmethod
    def of(cls, change: ItemChange) -> ItemChangeOut:
        return cls.model_validate(change.to_dict())


class LabelSetOut(BaseModel):
    id: str
    level: str
    classes: list[str]
    n_targets: int
    n_labels: int
    origin: str | None
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, info: LabelSetInfo) -> LabelSetOut:
        return cls.model_validate(info.to_dict())


class VersionOut(BaseModel):
    id: str
    dataset: str
    seq: int
    tags: list[str]
    parent: str | None
    label_set: str | None
    split_policy: dict[str, Any]
    items: int
    patients: int
    studies: int
    series: int
    bytes: int
    split_counts: dict[str, Any]
    leakage: dict[str, Any]
    message: str | None
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, info: VersionInfo) -> VersionOut:
        return cls.model_validate(info.to_dict())


class FreezeOut(BaseModel):
    version: VersionOut
    created: bool
    leakage: dict[str, Any]
    changes: dict[str, Any] | None
    warnings: list[str]
