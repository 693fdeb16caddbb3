"""Numeric values read from the bytes are pydicom's, at the standard sizes of their VRs."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.values import convert_value

from medcycle.catalog.dicom_stream import Fallback, value_of

SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8}


@pytest.mark.parametrize("vr", sorted(SIZES))
@pytest.mark.parametrize("little", [True, False])
def test_numbers_are_read_as_pydicom_reads_them(vr: str, little: bool) -> None:
    rng = np.random.default_rng([len(vr), ord(vr[0]), little])
    for count in (1, 2, 5):
        raw = rng.integers(0, 256, count * SIZES[vr]).astype(np.uint8).tobytes()
        ours = value_of(vr, raw, little, None)
        theirs = convert_value(vr, RawDataElement(BaseTag(0x00181000), vr, len(raw), raw, 0, False, little), None)
        expected = list(theirs) if count > 1 else theirs
        assert repr(ours) == repr(expected)  # repr: NaN equals itself
    assert value_of(vr, b"", little, None) is None


def test_a_number_of_a_wrong_length_needs_pydicom() -> None:
    with pytest.raises(Fallback):
        value_of("UL", struct.pack("<L", 7) + b"\x00\x00", True, None)
    assert value_of("UL", struct.pack("<L", 70000), True, None) == 70000
    assert value_of("SL", struct.pack(">l", -5), False, None) == -5
