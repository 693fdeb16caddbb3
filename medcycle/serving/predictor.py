"""``Predictor``: one model version, loaded by digest, run as training ran it — OOD gate first.

``Predictor.load(platform, "nodules@production")`` resolves the alias once (the version it found is named in
every prediction), rebuilds the network from the version's weights digest and training config
(:func:`medcycle.evaluation.predict.load`), and assembles the OOD gate:

* header rules from serving settings (``header_rules``), else the version's contract ``header_rules``;
* the image-statistics detector of the version's OOD gate object (``ood_gate_digest``), else of its latest
  passing gate report (``medcycle evaluate`` fits and calibrates it in the OOD suite).

``predict(batch)`` is pure given the loaded model: cases the gate refuses get the reasons and no finding; the
others are preprocessed by the training's own evaluation transform, batched through the network (in chunks
of :attr:`~Predictor.chunk` images), and postprocessed (:mod:`medcycle.serving.postprocess`).

The chunk is the images per forward pass. A GPU wants the largest batch it is given; a CPU need not: past a
size the activations outgrow its caches, and where freed memory goes back to the system (see
:func:`medcycle.serving.cpu.keep_freed_memory`) every pass faults in fresh pages (MONAI's DenseNet121 at 224 × 224
on one thread of the development VM: about 98 ms an image in passes of 4, 124 ms in passes of 16 and 166 ms in
passes of 32 with memory given back; 93–111 ms for every size with it kept). Which size is cheapest depends on
the CPU and the network, so ``forward_batch=0`` (the serving default) measures it once, on the CPU, when the
predictor is warmed:
:meth:`Predictor.tune` times passes of 1, 2, 4, … images up to ``max_batch`` and keeps the size with the least
time per image. A predictor from :meth:`Predictor.load` measures once per machine and version: the first worker to
warm it measures while the others wait, and they (and workers started later) read what it found
(:mod:`medcycle.serving.tuning`). On CUDA, or with ``forward_batch=None``, the chunk is ``max_batch``; a positive
``forward_batch`` fixes it.

Each accepted case also gets its ``embedding`` for the drift monitor: the input of the layer the contract
names (``embedding_layer``), else of the network's last weighted layer (the head), taken by a forward
pre-hook (:class:`medcycle.monitoring.embeddings.FeatureTap`) during the same forward pass, pooled over
space, averaged over the case's images, as float32 — the features the drift reference was captured with.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from medcycle.errors import MedcycleError, ValidationFailed
from medcycle.evaluation.ood import Decision, HeaderRules, ImageStatsDetector, OODGate
from medcycle.serving import postprocess
from medcycle.serving.schemas import Params

if TYPE_CHECKING:
    import torch

    from medcycle.evaluation.predict import Loaded
    from medcycle.models.registry import VersionInfo
    from medcycle.platform import Platform
    from medcycle.serving.preprocess import EvalTransform

log = logging.getLogger(__name__)
#: Sweeps over the pass sizes :meth:`Predictor.tune` times, keeping each size's best (after one untimed pass).
TUNE_PASSES = 3
#: Sizes whose best time per image is within this fraction of the least count as tied: the larger is kept.
TUNE_TIE = 0.05
F32 = NDArray[np.float32]


@dataclass
class CaseInput:
    """One case to predict: ``pixels`` as the training readers give them (``(rows, cols)`` or
    ``(slices, rows, cols)``), the DICOM ``header`` for the header rules (None: not DICOM), the voxel
    ``spacing`` ``(slice, row, col)`` in mm for areas and volumes, the request's ``params``, and
    ``grid_problem``: why a DICOM series' slices are not an evenly spaced stack (a gap, a slice given twice), or
    None — a 3D model cannot take such a series as a volume."""

    pixels: F32
    header: Any = None
    spacing: tuple[float, float, float] | None = None
    params: Params = field(default_factory=Params)
    grid_problem: str | None = None


@dataclass
class Prediction:
    """The outcome for one case. ``status``: ``ok``, ``refused`` (OOD gate) or ``invalid`` (cannot run)."""

    status: str
    images: int
    ood: Decision | None = None
    probabilities: list[list[float]] = field(default_factory=list)  # per image (classification)
    finding: dict[str, Any] | None = None
    mask: NDArray[np.uint8] | None = None  # segmentation, on the input's grid
    measurements: dict[str, Any] | None = None
    error: str | None = None
    embedding: F32 | None = None  # penultimate features (monitoring), averaged over the case's images

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "images": self.images,
                               "ood": self.ood.to_dict() if self.ood is not None else None,
                               "finding": self.finding}
        if self.probabilities:
            out["probabilities"] = [{c: round(p, 6) for c, p in zip(classes, row, strict=True)}
                                    for row in self.probabilities]
        if self.measurements is not None:
            out["mask"] = self.measurements
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Prepared:
    """A case made ready for the network by :meth:`Predictor.prepare`: the gate's decision, the network
    inputs, or — refused or invalid — its final ``outcome``."""

    predictor: Predictor
    decision: Decision
    tensors: list[torch.Tensor]
    outcome: Prediction | None


def resolve_device(choice: str) -> torch.device:
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise ValidationFailed(f"{choice!r} is not a device", hint="Use cpu, cuda, cuda:N or auto.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValidationFailed(f"device {choice} is not available here", hint="Use cpu or auto.")
    return device


def passes(n: int, chunk: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the forward passes for ``n`` images at most ``chunk`` a pass: as few passes as that
    allows, of sizes differing by at most one (10 images at 4 a pass: 4, 3, 3 — not 4, 4, 2, whose small last
    pass costs more an image)."""
    if n <= 0:
        return []
    count = -(-n // max(1, chunk))
    base, extra = divmod(n, count)
    out, start = [], 0
    for k in range(count):
        stop = start + base + (1 if k < extra else 0)
        out.append((start, stop))
        start = stop
    return out


class Predictor:
    """A loaded model version with its preprocessing and OOD gate (see the module docstring)."""

    def __init__(self, loaded: Loaded, *, requested: str | None = None, gate: OODGate | None = None,
                 device: str = "cpu", max_batch: int = 64, forward_batch: int | None = None,
                 embeddings: bool = True) -> None:
        from medcycle.monitoring.embeddings import FeatureTap, embedding_layer
        from medcycle.serving.preprocess import EvalTransform

        self.loaded = loaded
        self.version: VersionInfo = loaded.version
        self.requested = requested or loaded.version.ref
        self.config = loaded.config
        self.classes = list(loaded.classes)
        self.gate = gate
        self.device = resolve_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.max_batch = max(1, int(max_batch))
        if forward_batch is not None and forward_batch < 0:
            raise ValidationFailed(f"forward_batch {forward_batch} is negative",
                                   hint="Use 0 (measured at warm-up on the CPU) or a number of images.")
        #: images per forward pass (see the module docstring); :meth:`tune` may change it once
        self.chunk = min(self.max_batch, forward_batch or self.max_batch)
        self._tune = forward_batch == 0 and self.device.type == "cpu" and self.max_batch > 1
        #: what :meth:`tune` measured: images per pass → milliseconds per image
        self.tuning: dict[int, float] = {}
        #: where the measured pass size is shared with this machine's other workers (:mod:`.tuning`); None: not
        self.tuning_dir: Path | None = None
        self.transform: EvalTransform = EvalTransform(loaded.config, len(loaded.classes))
        self.tap: FeatureTap | None = None
        if embeddings:
            try:
                self.tap = FeatureTap(self.model, layer=embedding_layer(self.model, self.version.contract),
                                      outputs=False)
            except MedcycleError as exc:  # serving goes on; the drift monitor just gets no embeddings
                log.warning("%s: no embeddings for monitoring: %s", self.version.ref, exc.message)

    @property
    def ref(self) -> str:
        """The version that predicts, ``NAME@vN``."""
        return self.version.ref

    @property
    def task(self) -> str:
        return self.config.task.value

    @classmethod
    def load(cls, platform: Platform, model_ref: str, *, header_rules: Mapping[str, Any] | None = None,
             device: str = "cpu", max_batch: int = 64, forward_batch: int | None = None) -> Predictor:
        """Resolve ``model_ref`` (``NAME``, ``NAME@vN``, ``NAME@ALIAS``) now and load that version by digest."""
        from medcycle.evaluation.predict import load
        from medcycle.models.registry import info, resolve

        with platform.session(write=False) as session:
            version = info(session, resolve(session, model_ref))
        loaded = load(platform, version.ref)  # pinned to the version, whatever the alias does meanwhile
        if loaded.version.weights_digest != version.weights_digest:  # pragma: no cover - versions are immutable
            raise ValidationFailed(f"{version.ref} changed while loading", hint="Retry.")
        gate = gate_for(platform, version, header_rules)
        predictor = cls(loaded, requested=model_ref, gate=gate, device=device, max_batch=max_batch,
                        forward_batch=forward_batch)
        predictor.tuning_dir = platform.settings.resolved_cache_dir / "serving"
        return predictor

    def warm(self) -> None:
        """Forward passes on empty inputs before the first request: one of a single input (kernels), then, for a 2D
        model, one of :attr:`chunk` inputs, the size requests will be run in (the memory a full pass needs: for
        DenseNet121 at 16 images of 224 × 224 on the CPU some hundreds of MiB, which the first requests' passes
        would otherwise fault in at several times a pass's cost). The first time with ``forward_batch=0`` on the
        CPU, :meth:`tune` comes between the two — once per machine where :attr:`tuning_dir` is set (:meth:`load`
        sets it): the first worker to warm this version measures (running every size, the full pass is then not
        needed), the others read what it found."""
        import torch

        with torch.inference_mode():
            self.model(torch.zeros((1, 1, *self.transform.size), device=self.device))
        measured = False
        if self._tune:
            self._tune = False
            if self.tuning_dir is None:
                self.tune()
                measured = True
            else:
                measured = self._tune_shared(self.tuning_dir)
        # a 3D model's passes hold as many volumes as fit max_batch's count of slices (one, mostly): a pass of
        # ``chunk`` volumes would ask for memory no request does
        if not measured and self.chunk > 1 and self.transform.dims == 2:
            with torch.inference_mode():
                self.model(torch.zeros((self.chunk, 1, *self.transform.size), device=self.device))

    def _tune_shared(self, folder: Path) -> bool:
        """:meth:`tune` through :func:`medcycle.serving.tuning.shared`; whether it was measured here (not read)."""
        from medcycle.serving import tuning

        def measure() -> tuning.Measured:
            self.tune()
            return tuning.Measured(self.chunk, dict(self.tuning))

        fields = {"weights": self.version.weights_digest, "size": list(self.transform.size),
                  "max_batch": self.max_batch, "device": str(self.device), "embeddings": self.tap is not None}
        got = tuning.shared(folder, fields, self.max_batch, measure)
        if got.shared:
            self.chunk, self.tuning = got.chunk, dict(got.tuning)
            log.info("%s: %d images per forward pass on %s, as measured on this machine at %s (ms per image by "
                     "pass size: %s)", self.ref, self.chunk, self.device, got.measured_at, self.tuning)
        return not got.shared

    def tune(self, *, budget_s: float = 20.0) -> int:
        """Set :attr:`chunk` to the images per forward pass that cost the least time per image here, and return it.

        Sizes 1, 2, 4, … up to ``max_batch`` (and ``max_batch`` itself) are timed on random inputs of the
        network's size, in :data:`TUNE_PASSES` sweeps over the sizes: in each, the best of passes adding up to at
        least 50 ms; a size's time is its best over the sweeps (a first pass of each size — allocations, kernel
        selection — is not timed). Sweeping again, rather than timing one size several times in a row, spreads
        each size's passes over the whole measurement, so another process busy for a second (a second worker
        warming up beside this one) slows every size alike instead of one. The first sweep stops after two sizes
        in a row cost half as much again an image as the best so far (larger ones only grow from there; one such
        size may be a moment's disturbance) or at one that would overrun ``budget_s``; a later sweep is run
        whole or not at all (within ``budget_s``), so that every size kept is the best of as many timings — a
        size timed more often would look faster for that alone. The largest size within :data:`TUNE_TIE` of the
        best is kept: fewer, larger passes where timings cannot tell the sizes apart.
        """
        import time

        import torch

        sizes = sorted({*(1 << k for k in range(self.max_batch.bit_length()) if 1 << k <= self.max_batch),
                        self.max_batch})
        generator = torch.Generator().manual_seed(0)
        started = time.perf_counter()
        per_image: dict[int, float] = {}
        inputs: dict[int, torch.Tensor] = {}

        def timed(n: int) -> float:
            """The best time per image of passes of ``n`` adding up to at least 50 ms."""
            best, spent = float("inf"), 0.0
            while spent < 0.05:
                t0 = time.perf_counter()
                self.model(inputs[n])
                took = time.perf_counter() - t0
                best, spent = min(best, took), spent + took
            return best / n

        over = 0  # sizes in a row costing half as much again an image as the best
        with torch.inference_mode():
            for n in sizes:  # the first sweep: which sizes are worth timing
                expect = (1 + TUNE_PASSES) * n * min(per_image.values(), default=0.0)
                if per_image and time.perf_counter() - started + expect > budget_s:
                    break
                inputs[n] = torch.rand((n, 1, *self.transform.size), generator=generator).to(self.device)
                self.model(inputs[n])
                per_image[n] = timed(n)
                over = over + 1 if per_image[n] > 1.5 * min(per_image.values()) else 0
                if over == 2:
                    break
            for _ in range(TUNE_PASSES - 1):  # a sweep is run whole or not at all: every size timed as often
                sweep = sum(max(0.05, n * t) for n, t in per_image.items())
                if time.perf_counter() - started + sweep > budget_s:
                    break
                for n in per_image:
                    per_image[n] = min(per_image[n], timed(n))
            inputs.clear()
        least = min(per_image.values())
        self.chunk = max(n for n, t in per_image.items() if t <= (1 + TUNE_TIE) * least)
        self.tuning = {n: round(1000 * t, 2) for n, t in per_image.items()}
        log.info("%s: %d images per forward pass on %s (ms per image by pass size: %s)", self.ref, self.chunk,
                 self.device, self.tuning)
        return self.chunk

    # -- prediction --------------------------------------------------------------------------------------
    def check(self, case: CaseInput) -> Decision:
        """The OOD gate's decision on ``case`` (accepted when there is no gate)."""
        if self.gate is None:
            return Decision(True, None, (), {})
        # pixels come from the training readers: MONOCHROME1 is already inverted
        return self.gate.check(header=case.header, pixels=case.pixels, monochrome1=False)

    def forward(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Network outputs (on the CPU) of preprocessed inputs ``(1, *size)``, in chunks of :attr:`chunk`."""
        return self.forward_features(tensors)[0]

    def forward_features(self, tensors: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], F32 | None]:
        """:meth:`forward`, and each input's penultimate features ``(n, d)`` from the same passes (None
        without a tap, or when the hooked layer did not run once per input)."""
        import torch

        out: list[torch.Tensor] = []
        tap = self.tap
        with torch.inference_mode(), tap if tap is not None else nullcontext():
            if tap is not None:
                tap.take()
            for start, stop in passes(len(tensors), self.chunk):
                x = torch.stack(list(tensors[start:stop])).to(self.device)
                out.extend(self.model(x).float().cpu())
        if tap is None:
            return out, None
        features = tap.take()
        if features.ndim != 2 or len(features) != len(out):
            return out, None
        return out, features.astype(np.float32)

    def prepare(self, case: CaseInput) -> Prepared:
        """The OOD gate's decision on ``case`` and, when accepted, its network inputs (thread-safe: a worker
        prepares the next batch's cases while the current batch computes)."""
        images = 1 if case.pixels.ndim == 2 else int(case.pixels.shape[0])
        try:
            decision = self.check(case)
        except MedcycleError as exc:  # the gate cannot even describe the image
            decision = Decision(False, "input", (exc.message,), {})
            return Prepared(self, decision, [], Prediction("invalid", images, decision, error=exc.message))
        if not decision.ok:
            return Prepared(self, decision, [], Prediction("refused", images, decision))
        if self.transform.dims == 3 and case.pixels.ndim == 3 and case.grid_problem is not None:
            # stacked as if evenly spaced, a series with a gap or a slice twice is no volume: its mask and volumes
            # would be wrong where nothing says so
            error = (f"a 3D model needs evenly spaced slices: {case.grid_problem}; send the complete series, "
                     "each slice once")
            return Prepared(self, decision, [], Prediction("invalid", images, decision, error=error))
        try:
            units = self.transform.units(case.pixels)
            tensors = [self.transform(u) for u in units]
        except MedcycleError as exc:
            return Prepared(self, decision, [], Prediction("invalid", images, decision, error=exc.message))
        return Prepared(self, decision, tensors, None)

    def predict(self, batch: Sequence[CaseInput], prepared: Sequence[Prepared | None] | None = None
                ) -> list[Prediction]:
        """One :class:`Prediction` per case, in order; all accepted cases' images share the forward passes.
        ``prepared``: what :meth:`prepare` made of the cases already (None, or one not made by this predictor:
        prepared now)."""
        results: list[Prediction | None] = [None] * len(batch)
        tensors: list[torch.Tensor] = []
        owners: list[int] = []
        decisions: list[Decision] = []
        for i, case in enumerate(batch):
            ready = prepared[i] if prepared is not None and i < len(prepared) else None
            if ready is None or ready.predictor is not self:
                ready = self.prepare(case)
            decisions.append(ready.decision)
            if ready.outcome is not None:
                results[i] = ready.outcome
                continue
            tensors.extend(ready.tensors)
            owners.extend([i] * len(ready.tensors))
        outputs, features = self.forward_features(tensors) if tensors else ([], None)
        per_case: dict[int, list[torch.Tensor]] = {}
        rows: dict[int, list[int]] = {}
        for k, (owner, output) in enumerate(zip(owners, outputs, strict=True)):
            per_case.setdefault(owner, []).append(output)
            rows.setdefault(owner, []).append(k)
        for i, logits in per_case.items():
            done = self._post(batch[i], decisions[i], logits)
            if features is not None:
                done.embedding = features[rows[i]].mean(axis=0, dtype=np.float64).astype(np.float32)
            results[i] = done
        done_all = [r for r in results if r is not None]
        assert len(done_all) == len(batch)
        return done_all

    def _post(self, case: CaseInput, decision: Decision, logits: list[torch.Tensor]) -> Prediction:
        import torch

        images = 1 if case.pixels.ndim == 2 else int(case.pixels.shape[0])
        if not all(bool(torch.isfinite(x).all()) for x in logits):
            # a NaN probability was stored as a negative finding, and a NaN mask logit as a class
            error = "the network gave outputs that are not finite numbers on this case's images"
            return Prediction("invalid", images, decision, error=error)
        if not self.config.task.segmentation:
            probs = [torch.softmax(x, dim=0).tolist() for x in logits]
            finding = postprocess.classification_finding(probs, self.classes, case.params.threshold)
            return Prediction("ok", images, decision, probabilities=probs, finding=finding)
        if self.transform.dims == 3:
            mask = postprocess.mask_from_logits(logits[0], case.pixels.shape)
        else:
            planes = case.pixels.shape[-2:]
            mask = np.stack([postprocess.mask_from_logits(x, planes) for x in logits])
            if case.pixels.ndim == 2:
                mask = mask[0]
        measurements = postprocess.measure_mask(mask, self.classes, case.spacing)
        finding = {"found": measurements["found"], "components": measurements["components"],
                   "classes": [c for c, v in measurements["classes"].items() if v["voxels"]]}
        return Prediction("ok", images, decision, finding=finding, mask=mask, measurements=measurements)


# -- the OOD gate of a version --------------------------------------------------------------------------------
def gate_for(platform: Platform, version: VersionInfo, header_rules: Mapping[str, Any] | None = None
             ) -> OODGate | None:
    """Header rules (given, else the version contract's) and the version's image-statistics detector."""
    header: HeaderRules | None = None
    if header_rules:
        header = HeaderRules.from_dict(header_rules, where=f"header rules for {version.model}")
    elif isinstance(version.contract.get("header_rules"), Mapping):
        header = HeaderRules.from_dict(version.contract["header_rules"], where=f"contract of {version.ref}")
    stored = _stored_gate(platform, version)
    image = _report_detector(platform, version)
    if stored is not None:
        header = header or stored.header
        image = stored.image or image
    if header is None and image is None:
        return None
    return OODGate(header, image)


def _stored_gate(platform: Platform, version: VersionInfo) -> OODGate | None:
    from medcycle.models.tables import ModelVersionRow

    with platform.session(write=False) as session:
        row = session.get(ModelVersionRow, version.id)
        digest = row.ood_gate_digest if row is not None else None
    if not digest:
        return None
    return OODGate.from_dict(json.loads(platform.objects.get(digest)))


def _report_detector(platform: Platform, version: VersionInfo) -> ImageStatsDetector | None:
    """The detector of the OOD suite of the version's latest passing gate report (summary, else its JSON)."""
    from sqlalchemy import select

    from medcycle.models.tables import GateReportRow

    with platform.session(write=False) as session:
        report = session.scalar(select(GateReportRow).where(GateReportRow.version_id == version.id,
                                                            GateReportRow.passed.is_(True))
                                .order_by(GateReportRow.created_at.desc()).limit(1))
        if report is None:
            return None
        summary, digest = dict(report.summary or {}), report.report_digest
    suite = (summary.get("suites") or {}).get("ood") or {}
    data = suite.get("detector") if isinstance(suite, Mapping) else None
    if data is None and digest:
        try:
            body = json.loads(platform.objects.get(digest))
        except (MedcycleError, ValueError) as exc:
            log.warning("gate report of %s unreadable: %s", version.ref, exc)
            return None
        for gate in body.get("gates", []):
            if isinstance(gate, Mapping) and gate.get("name") == "ood":
                data = (gate.get("data") or {}).get("detector")
    return ImageStatsDetector.from_dict(data) if isinstance(data, Mapping) else None
