"""Code digests and cache keys: what a step's key covers, and what it ignores."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcycle.errors import UsageError
from medcycle.pipelines import keys


def test_code_files_expand_globs_folders_and_argv(tmp_path: Path) -> None:
    (tmp_path / "lib" / "sub").mkdir(parents=True)
    (tmp_path / "lib" / "a.py").write_text("a")
    (tmp_path / "lib" / "sub" / "b.py").write_text("b")
    (tmp_path / "lib" / "__pycache__").mkdir()
    (tmp_path / "lib" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "train.py").write_text("t")
    (tmp_path / "conf.yaml").write_text("c")
    assert keys.code_files(tmp_path, ["lib/**/*.py"]) == ["lib/a.py", "lib/sub/b.py"]
    assert keys.code_files(tmp_path, ["lib"]) == ["lib/a.py", "lib/sub/b.py"]  # a folder: every file, no caches
    argv = ["python", "train.py", "--config=conf.yaml", "-c", "x" * 5000, "y" * 300, "${MEDCYCLE_DATASET_X}"]
    assert keys.code_files(tmp_path, [], argv) == ["train.py"]
    with pytest.raises(UsageError, match="matches no file") as err:
        keys.code_files(tmp_path, ["lib/*.pyy"])
    assert "code folder" in (err.value.hint or "")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text("o")
    (tmp_path / "link.py").symlink_to(outside)
    with pytest.raises(UsageError, match="reaches outside the code folder"):
        keys.code_files(tmp_path, ["link.py"])


def test_the_cache_key_covers_every_input_and_nothing_else(tmp_path: Path) -> None:
    base = {"command": ["python", "t.py"], "params": {"lr": 0.1, "seed": 1}, "env": {"A": "1"},
            "environment": None, "code": "c" * 64, "datasets": {"cxr": "d" * 64},
            "inputs": {"prep.items": "e" * 64}, "outputs": {"model": "model.pt"}}
    key = keys.cache_key(**base)  # type: ignore[arg-type]
    assert len(key) == 64
    reordered = {**base, "params": {"seed": 1, "lr": 0.1}}
    assert keys.cache_key(**reordered) == key  # type: ignore[arg-type]
    changes = [("command", ["python", "t.py", "--x"]), ("params", {"lr": 0.2, "seed": 1}), ("env", {"A": "2"}),
               ("environment", "image@sha256:1"), ("code", "f" * 64), ("datasets", {"cxr": "0" * 64}),
               ("inputs", {"prep.items": "1" * 64}), ("outputs", {"model": "model.onnx"})]
    for field, value in changes:
        assert keys.cache_key(**{**base, field: value}) != key, field  # type: ignore[arg-type]
    (tmp_path / "a.py").write_text("1")
    first = keys.code_digest(keys.code_digests(tmp_path, ["a.py"]))
    (tmp_path / "a.py").write_text("2")
    assert keys.code_digest(keys.code_digests(tmp_path, ["a.py"])) != first
