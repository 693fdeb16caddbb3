"""The format registry: every 2D format round-trips and is recognised by content; options, destinations
(file, folder, zip) and inputs (folder, zip, file, bytes) behave."""

from __future__ import annotations

import contextlib
import io
import random
import zipfile
from pathlib import Path

import pytest

from medcycle.errors import UsageError, ValidationFailed
from medcycle.labels import formats
from medcycle.labels.model import Kind

from .helpers import assert_same, keep, planar_set

# what each 2D format keeps of planar_set(): kinds, readers, scores, attributes, and the coordinate tolerance
KEPT = {
    "coco": (formats.FORMATS["coco"].kinds, False, True, True, 1e-9),
    "voc": (formats.FORMATS["voc"].kinds, False, False, True, 0.0),
    "yolo": (formats.FORMATS["yolo"].kinds, False, True, False, 1e-6),
    "cvat": (formats.FORMATS["cvat"].kinds, False, False, True, 0.0),
    "supervisely": (formats.FORMATS["supervisely"].kinds, True, False, True, 0.0),
    "labelstudio": (formats.FORMATS["labelstudio"].kinds, True, True, False, 1e-9),
}


@pytest.mark.parametrize("fmt", sorted(KEPT))
def test_every_2d_format_round_trips_and_is_detected(fmt: str, tmp_path: Path) -> None:
    kinds, readers, scores, attributes, tol = KEPT[fmt]
    original = keep(planar_set(), kinds, readers=readers, scores=scores, attributes=attributes)
    written = formats.write(original, fmt, tmp_path / "export.zip")
    assert formats.detect(written[0]) == fmt
    back = formats.read(written[0], images=original.images, **(
        {"classes": list(original.classes)} if fmt == "labelstudio" else {}))
    assert_same(original, back, tol=tol)


def test_destinations(tmp_path: Path) -> None:
    aset = keep(planar_set(), [Kind.BOX])
    [single] = formats.write(aset, "cvat", tmp_path / "a.xml")
    assert single == tmp_path / "a.xml" and single.read_bytes().startswith(b"<?xml")
    folder = formats.write(aset, "cvat", tmp_path / "dir")
    assert folder == [tmp_path / "dir/annotations.xml"]
    [archive] = formats.write(aset, "voc", tmp_path / "voc.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["chest1.xml", "classes.txt", "empty.xml",
                                                           "scans/chest2.xml"]
    assert not list(tmp_path.glob("**/*.tmp"))


def test_inputs_folder_zip_and_bytes(tmp_path: Path) -> None:
    aset = keep(planar_set(), [Kind.BOX], readers=False, scores=False)
    formats.write(aset, "voc", tmp_path / "voc")
    (tmp_path / "voc/.hidden.xml").write_text("<not xml")
    (tmp_path / "voc/__MACOSX").mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in (tmp_path / "voc").rglob("*.xml"):
            if not path.name.startswith("."):
                archive.write(path, path.relative_to(tmp_path / "voc").as_posix())
        archive.writestr("__MACOSX/._chest1.xml", b"\x00junk")
    from_folder = formats.read(tmp_path / "voc")
    from_zip = formats.read(buffer.getvalue(), classes=list(aset.classes))
    assert_same(aset, from_folder)
    assert_same(aset, from_zip)


def test_usage_errors() -> None:
    aset = keep(planar_set(), [Kind.BOX])
    with pytest.raises(UsageError, match="unknown labels format 'pascal'"):
        formats.encode(aset, "pascal")
    with pytest.raises(UsageError, match="format 'voc' takes no option 'rle_counts'") as err:
        formats.encode(aset, "voc", rle_counts="compressed")
    assert err.value.hint == "Its options: none."
    with pytest.raises(UsageError, match="format 'coco' takes no option 'colour'"):
        formats.read(b"{}", "coco", colour=1)
    with pytest.raises(ValidationFailed, match="upload: cannot tell which labels format this is"):
        formats.detect(b"hello world")
    with pytest.raises(ValidationFailed, match="no such file or folder"):
        formats.read("/nonexistent/export", "coco")
    with pytest.raises(ValidationFailed, match=r"broken.zip: is not a readable zip archive"):
        formats.read(b"PK\x03\x04garbage", "coco", name="broken.zip")


def test_detects_single_files_by_content() -> None:
    aset = planar_set()
    coco = formats.encode(keep(aset, formats.FORMATS["coco"].kinds), "coco")
    assert formats.detect(coco["annotations.json"]) == "coco"
    assert formats.detect(formats.encode(aset, "labelstudio")["tasks.json"]) == "labelstudio"
    assert formats.detect(formats.encode(aset, "cvat")["annotations.xml"]) == "cvat"
    assert formats.detect(formats.encode(keep(aset, [Kind.BOX]), "voc")["chest1.xml"]) == "voc"
    assert formats.detect(formats.encode(aset, "supervisely")["ds0/ann/chest1.png.json"]) == "supervisely"
    assert formats.detect(b"0 0.5 0.5 0.2 0.2\n") == "yolo"


@pytest.mark.parametrize("fmt", sorted(KEPT))
def test_damaged_exports_fail_only_with_validation_errors(fmt: str) -> None:
    """Truncated and byte-flipped exports either still read or raise ValidationFailed — never a crash."""
    rng = random.Random(fmt)
    original = keep(planar_set(), formats.FORMATS[fmt].kinds)
    files = formats.encode(original, fmt)
    name = max((n for n in files if not n.endswith((".txt", ".yaml")) or fmt == "yolo"), key=lambda n: len(files[n]))
    for trial in range(60):
        data = bytearray(files[name])
        if trial % 2:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(3):
                data[rng.randrange(len(data))] = rng.choice(b'0123456789-.,:;[]{}"<>/ ae\n')
        damaged = {**files, name: bytes(data)}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for n, d in damaged.items():
                archive.writestr(n, d)
        with contextlib.suppress(ValidationFailed):  # anything else fails the test
            formats.read(buffer.getvalue(), fmt, images=original.images)
