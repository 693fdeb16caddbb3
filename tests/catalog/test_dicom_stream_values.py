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


@pytest.mark.parametrize("raw", [b"CT", b"ORIGINAL\\PRIMARY\\AXIAL ", b"0.7\\0.7", b"", b"  1 ", b"1.2.840.10008\0",
                                 b"x" * 70 + b"\\y", b"Caf\xe9"])
@pytest.mark.parametrize("vr", ["CS", "DS", "LO", "UI", "AE", "LT"])
def test_string_values_are_the_same_each_time_and_a_new_list_each_call(vr: str, raw: bytes) -> None:
    """Short ASCII values are converted once per process: a repeat gives what converting it again gives, never a
    list another caller has changed."""
    from medcycle.catalog.deid import quiet_pydicom
    from medcycle.catalog.dicom_stream import _strings_value, strings_value

    with quiet_pydicom():  # pydicom warns of a non-ASCII UID, as ingest reads files
        expected = _strings_value(vr, raw, ["latin_1"])
        first = strings_value(vr, raw, ["latin_1"])
        assert first == expected
        if isinstance(first, list):
            first.append("changed by a caller")
        again = strings_value(vr, raw, ["latin_1"])
    assert again == expected
    assert not isinstance(again, list) or again is not first
