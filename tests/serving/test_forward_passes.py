"""Images per forward pass: passes of even sizes, the size a CPU runs fastest measured once at warm-up
(``forward_batch=0``), a fixed size, and the worker process keeping freed memory (no page faults per pass)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from medcycle.errors import ValidationFailed
from medcycle.platform import Platform
from medcycle.serving.predictor import TUNE_PASSES, CaseInput, Predictor, passes
from medcycle.training.data import read_file
from tests.serving.core_fixtures import CLS, SrvTemplate


@pytest.mark.parametrize(("n", "chunk", "sizes"), [
    (0, 4, []), (1, 4, [1]), (4, 4, [4]), (5, 4, [3, 2]), (10, 4, [4, 3, 3]), (16, 4, [4, 4, 4, 4]),
    (17, 16, [9, 8]), (3, 1, [1, 1, 1]), (7, 64, [7])])
def test_passes_are_as_few_as_the_chunk_allows_and_even(n: int, chunk: int, sizes: list[int]) -> None:
    got = passes(n, chunk)
    assert [b - a for a, b in got] == sizes
    assert [a for a, _ in got] == [sum(sizes[:k]) for k in range(len(sizes))]  # contiguous, in order


class Costly:
    """Stands in for a network whose pass of n images takes a + c·n³ seconds: per image a/n + c·n², least at
    n = cbrt(a / 2c) — a cost per image that falls with the pass size, then grows (as on a CPU)."""

    def __init__(self, real: Any, a: float, c: float) -> None:
        self.real, self.a, self.c = real, a, c
        self.sizes: list[int] = []

    def __call__(self, x: Any) -> Any:
        n = int(x.shape[0])
        self.sizes.append(n)
        time.sleep(self.a + self.c * n ** 3)
        return self.real(x)


def _cases(template: SrvTemplate, n: int) -> list[CaseInput]:
    return [CaseInput(read_file(template.radiographs[k % len(template.radiographs)])) for k in range(n)]


def test_the_pass_size_is_measured_once_at_warm_up_on_the_cpu(srv_platform: Platform,
                                                              srv_template: SrvTemplate) -> None:
    predictor = Predictor.load(srv_platform, CLS, max_batch=32, forward_batch=0)
    predictor.gate = None
    assert predictor.chunk == 32  # not measured yet
    # per image (besides the real network's): 1 → 13 ms, 2 → 7.2, 4 → 6.4, 8 → 14.4, 16 → 52, 32 → 205
    costly = Costly(predictor.model, a=0.0128, c=0.0002)
    predictor.model = costly
    predictor.warm()
    assert predictor.chunk == 4, predictor.tuning
    assert set(predictor.tuning) == {1, 2, 4, 8, 16}  # stopped after two sizes in a row grew by half
    assert predictor.tuning[4] < predictor.tuning[1]
    costly.sizes.clear()
    predictor.warm()  # measured once: a second warm-up only runs a pass of one input and one of the pass size
    assert costly.sizes == [1, 4]
    costly.sizes.clear()
    got = predictor.predict(_cases(srv_template, 10))
    assert costly.sizes == [4, 3, 3] and len(got) == 10 and all(g.status == "ok" for g in got)


class Linear:
    """Stands in for a network costing the same per image at every pass size (``b`` seconds an image). The real
    network runs once per input shape (the untimed first pass of each size) and its output is given again after
    that: its own time, which varies with the machine's load, would blur the costs these tests set."""

    def __init__(self, real: Any, b: float) -> None:
        self.real, self.b = real, b
        self.sizes: list[int] = []
        self.outputs: dict[tuple[int, ...], Any] = {}

    def __call__(self, x: Any) -> Any:
        self.sizes.append(int(x.shape[0]))
        shape = tuple(x.shape)
        out = self.outputs[shape] if shape in self.outputs else self.outputs.setdefault(shape, self.real(x))
        time.sleep(self.b * int(x.shape[0]))
        return out


@pytest.mark.parametrize(("dims", "warmed"), [(2, [1, 8]), (3, [1])])
def test_warm_up_runs_a_full_pass_of_a_2d_model_and_one_volume_of_a_3d_one(srv_platform: Platform, dims: int,
                                                                         warmed: list[int]) -> None:
    import torch

    predictor = Predictor.load(srv_platform, CLS, max_batch=8)  # a fixed pass of 8: nothing measured
    assert predictor.chunk == 8
    shapes: list[tuple[int, ...]] = []

    def network(x: Any) -> Any:
        shapes.append(tuple(x.shape))
        return torch.zeros((int(x.shape[0]), 2))

    predictor.model = network
    predictor.transform.dims = dims
    predictor.transform.size = (16, 16) if dims == 2 else (8, 8, 8)
    predictor.warm()
    # the memory of a pass of 8 images is taken before the first request; a pass of 8 volumes would ask for
    # memory no request does (a 3D batch holds as many volumes as max_batch's count of slices: one, mostly)
    assert [s[0] for s in shapes] == warmed
    assert all(s[1:] == (1, *predictor.transform.size) for s in shapes)


def test_tied_pass_sizes_keep_the_largest_and_each_size_is_timed_several_times(srv_platform: Platform) -> None:
    predictor = Predictor.load(srv_platform, CLS, max_batch=8, forward_batch=0)
    linear = Linear(predictor.model, b=0.006)
    predictor.model = linear
    assert predictor.tune() == 8, predictor.tuning  # 1, 2, 4 and 8 cost the same an image: fewer passes win
    assert set(predictor.tuning) == {1, 2, 4, 8}
    for n in (1, 2, 4, 8):  # one untimed pass, then at least one timed pass in each of TUNE_PASSES sweeps
        assert linear.sizes.count(n) >= 1 + TUNE_PASSES
    first_sweep = linear.sizes.index(8)
    assert {1, 2, 4} <= set(linear.sizes[first_sweep:])  # swept again, not timed in a row


def test_a_sweep_that_would_overrun_the_budget_is_not_run_in_part(srv_platform: Platform) -> None:
    """Timed in part, small sizes would get more timings than large ones, and look faster for that alone."""
    predictor = Predictor.load(srv_platform, CLS, max_batch=8, forward_batch=0)
    linear = Linear(predictor.model, b=0.02)  # one sweep: 1 + 2 + 4 + 8 images at 20 ms, about 0.35 s
    predictor.model = linear
    predictor.tune(budget_s=1.2)  # a third sweep can never fit: the sleeps alone add up to more
    # each sweep times a size in one run of passes in a row: count the runs of each size
    runs = {n: sum(1 for k, m in enumerate(linear.sizes) if m == n and (k == 0 or linear.sizes[k - 1] != n))
            for n in (1, 2, 4, 8)}
    assert len(set(runs.values())) == 1 and runs[1] in (1, 2), linear.sizes


class Disturbed(Linear):
    """:class:`Linear`, three times slower while passes of 2 are first timed (another process busy then)."""

    def __call__(self, x: Any) -> Any:
        disturbed = int(x.shape[0]) == 2 and 4 not in self.sizes
        out = super().__call__(x)
        if disturbed:
            time.sleep(2 * self.b * int(x.shape[0]))
        return out


def test_a_size_timed_while_another_process_was_busy_does_not_decide(srv_platform: Platform) -> None:
    predictor = Predictor.load(srv_platform, CLS, max_batch=8, forward_batch=0)
    disturbed = Disturbed(predictor.model, b=0.006)
    predictor.model = disturbed
    assert predictor.tune() == 8, predictor.tuning  # the larger sizes were still tried, size 2 timed again
    assert predictor.tuning[2] < 1.5 * predictor.tuning[1]


def test_a_fixed_pass_size_gives_the_results_of_one_pass(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    cases = _cases(srv_template, 5)
    whole = Predictor.load(srv_platform, CLS, max_batch=16)  # forward_batch None: one pass of the batch
    fixed = Predictor.load(srv_platform, CLS, max_batch=16, forward_batch=2)
    for p in (whole, fixed):
        p.gate = None
    counted = Costly(fixed.model, a=0.0, c=0.0)
    fixed.model = counted
    fixed.warm()  # a positive size is kept: nothing is measured
    assert fixed.chunk == 2 and fixed.tuning == {}
    counted.sizes.clear()
    one, split = whole.predict(cases), fixed.predict(cases)
    assert counted.sizes == [2, 2, 1]
    for a, b in zip(one, split, strict=True):
        assert a.status == b.status == "ok"
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(a.embedding), np.asarray(b.embedding), rtol=1e-4, atol=1e-5)
    assert Predictor.load(srv_platform, CLS, max_batch=4, forward_batch=64).chunk == 4  # never above the batch
    with pytest.raises(ValidationFailed, match="forward_batch -1"):
        Predictor.load(srv_platform, CLS, forward_batch=-1)


FAULTS = """
import json, resource, sys
import numpy as np
from medcycle.serving.cpu import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(64 << 20, dtype=np.uint8)  # the first time, pages are new either way
before = faults()
for _ in range(20):
    a = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB: above glibc's largest mmap threshold
    del a
print(json.dumps({"kept": kept, "faults": faults() - before}))
"""


def test_a_worker_keeps_freed_memory_instead_of_faulting_in_new_pages() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("keep_freed_memory tunes glibc's malloc; this C library is not glibc")
    out = {}
    for mode in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, timeout=120,
                              check=True)
        out[mode] = json.loads(done.stdout)
    assert out["keep"]["kept"] is True
    # by default each allocation is a fresh mapping, faulted in again (page by page, or by huge pages where numpy
    # asks for them); kept, the freed block is reused and nothing is faulted in
    assert out["default"]["faults"] >= 20
    assert out["keep"]["faults"] * 10 < out["default"]["faults"]
