"""The fields of the catalog's flattened instance view, as the filter language and listings see them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    Select,
    SQLColumnExpression,
)

from medcycle.catalog.tables import InstanceRow, PatientRow, SeriesRow, SourceRow, StudyRow

MAX_LENGTH = 65_536  # characters in one query
MAX_DEPTH = 64  # nesting of parentheses and "not"
MAX_LIMIT = 100_000  # rows in one page of results
MAX_LIST = 10_000  # values in one "in [...]" list
MAX_CONDITIONS = 256  # conditions in one query: SQLite refuses expressions nested deeper than 1,000 (about 490 here)
AnySelect = Select[*tuple[Any, ...]]


# -- fields -----------------------------------------------------------------------------------------
class FieldType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    DATE = "date"
    BOOLEAN = "boolean"


class Level(StrEnum):
    """The catalog table a field lives on (decides which joins a query needs)."""

    SOURCE = "source"
    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: FieldType
    level: Level
    description: str
    column: SQLColumnExpression[Any] = dataclasses.field(repr=False, compare=False)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type.value, "level": self.level.value, "description": self.description}


_S, _N, _D, _B = FieldType.STRING, FieldType.NUMBER, FieldType.DATE, FieldType.BOOLEAN
_SRC, _PAT, _STU, _SER, _INS = Level.SOURCE, Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE
_FIELD_LIST: tuple[Field, ...] = (
    Field("source", _S, _SRC, "name of the source (institution, device or feed)", SourceRow.name),
    Field("patient", _S, _PAT, "patient pseudonym", PatientRow.id),
    Field("study", _S, _STU, "pseudonymous StudyInstanceUID", StudyRow.uid),
    Field("series", _S, _SER, "pseudonymous SeriesInstanceUID", SeriesRow.uid),
    Field("instance", _S, _INS, "pseudonymous SOPInstanceUID", InstanceRow.uid),
    Field("digest", _S, _INS, "SHA-256 of the stored (de-identified) object", InstanceRow.digest),
    Field("modality", _S, _SER, "DICOM modality (CT, MR, CR, DX, ...)", SeriesRow.modality),
    Field("body_part", _S, _SER, "body part, normalised (chest, head, abdomen, ...)", SeriesRow.body_part),
    Field("body_part_raw", _S, _SER, "body part as recorded in the file", SeriesRow.body_part_raw),
    Field("laterality", _S, _SER, "L, R or B", SeriesRow.laterality),
    Field("view_position", _S, _SER, "view position (PA, AP, LAT, ...)", SeriesRow.view_position),
    Field("manufacturer", _S, _SER, "scanner manufacturer", SeriesRow.manufacturer),
    Field("model", _S, _SER, "scanner model name", SeriesRow.model),
    Field("year", _N, _SER, "year of the (shifted) study date", SeriesRow.year),
    Field("study_date", _D, _STU, "study date, shifted per patient (\"YYYY-MM-DD\")", StudyRow.study_date),
    Field("sex", _S, _PAT, "patient sex (M, F, O) where the de-identification profile keeps it", PatientRow.sex),
    Field("age_band", _S, _STU, "patient age band at the study, e.g. \"40-49\"", StudyRow.age_band),
    Field("slice_thickness", _N, _SER, "slice thickness in mm", SeriesRow.slice_thickness),
    Field("pixel_spacing", _N, _SER, "pixel spacing between rows in mm", SeriesRow.pixel_spacing_row),
    Field("kvp", _N, _SER, "peak kilovoltage", SeriesRow.kvp),
    Field("convolution_kernel", _S, _SER, "CT reconstruction kernel", SeriesRow.convolution_kernel),
    Field("field_strength", _N, _SER, "MR magnetic field strength in tesla", SeriesRow.field_strength),
    Field("image_type", _S, _SER, "DICOM ImageType, backslash-separated", SeriesRow.image_type),
    Field("photometric", _S, _INS, "photometric interpretation (MONOCHROME1, MONOCHROME2, RGB, ...)",
          InstanceRow.photometric),
    Field("bits_stored", _N, _INS, "bits stored per sample", InstanceRow.bits_stored),
    Field("rows", _N, _INS, "image rows (pixels)", InstanceRow.rows),
    Field("columns", _N, _INS, "image columns (pixels)", InstanceRow.columns),
    Field("frames", _N, _INS, "number of frames", InstanceRow.frames),
    Field("transfer_syntax", _S, _INS, "transfer syntax UID", InstanceRow.transfer_syntax),
    Field("format", _S, _INS, "file format: dicom, nifti, png or jpeg", InstanceRow.format),
    Field("bytes", _N, _INS, "size of the stored object in bytes", InstanceRow.bytes),
    Field("state", _S, _INS, "ok or quarantined", InstanceRow.state),
    Field("quarantined", _B, _INS, "true when the instance is quarantined", InstanceRow.state == "quarantined"),
    Field("p01", _N, _INS, "1st percentile of pixel values (after rescale)", InstanceRow.p01),
    Field("p05", _N, _INS, "5th percentile of pixel values", InstanceRow.p05),
    Field("p50", _N, _INS, "median pixel value", InstanceRow.p50),
    Field("p95", _N, _INS, "95th percentile of pixel values", InstanceRow.p95),
    Field("p99", _N, _INS, "99th percentile of pixel values", InstanceRow.p99),
    Field("mean", _N, _INS, "mean pixel value", InstanceRow.mean),
    Field("std", _N, _INS, "standard deviation of pixel values", InstanceRow.std),
    Field("saturated_fraction", _N, _INS, "fraction of pixels at the maximum value", InstanceRow.saturated_fraction),
    Field("air_fraction", _N, _INS, "fraction of pixels at the minimum (air/background) value",
          InstanceRow.air_fraction),
)
#: Every query field by name, in display order.
FIELDS: Mapping[str, Field] = MappingProxyType({f.name: f for f in _FIELD_LIST})
