"""The output files of one predicted case: NIfTI mask, PNG overlay, DICOM SEG and secondary capture."""

from __future__ import annotations

import logging
from collections.abc import Callable

from medcycle.errors import UsageError
from medcycle.serving import outputs as out
from medcycle.serving.decode import DecodedCase
from medcycle.serving.predictor import Prediction, Predictor
from medcycle.serving.schemas import OutputKind, Params

log = logging.getLogger(__name__)


def case_outputs(case: DecodedCase, pred: Prediction, predictor: Predictor, key: str, params: Params
                 ) -> tuple[list[out.Output], list[str]]:
    """The output files a job asked for (``params.outputs``) of one predicted case, and the problems that kept
    any from being made (named in the result, not failing it)."""
    if pred.status != "ok":
        return [], []
    version = predictor.version
    ref = version.ref
    files: list[out.Output] = []
    problems: list[str] = []
    finding = pred.finding or {}
    image = finding.get("image")
    if pred.mask is not None:
        found = ", ".join(finding.get("classes") or []) or "nothing found"
        caption = f"{found} ({finding.get('components', 0)} components) | {ref}"
    else:
        caption = f"{finding.get('class')} {float(finding.get('score') or 0):.2f} | {ref}"
    case_key = f"{key}:{case.index}"

    def make(kind: OutputKind, build: Callable[[], bytes]) -> None:
        """One output; a problem making it is named and the others are still made (a SEG that cannot be made
        — no Frame of Reference — used to take the secondary capture after it down with it). An unexpected
        error of a library on this case's data is named too rather than raised: raised, it failed the whole
        batch, and every redelivery batched the same jobs again until all of them were dead-lettered."""
        try:
            files.append(out.Output(kind, build()))
        except UsageError as exc:
            problems.append(exc.message)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - see above; logged with its type only (its text may quote data)
            log.warning("the %s output of a case could not be made: %s", kind.value, type(exc).__name__)
            problems.append(f"the {kind.value} output could not be made ({type(exc).__name__})")

    if pred.mask is not None and params.wants(OutputKind.NIFTI):
        mask = pred.mask
        make(OutputKind.NIFTI, lambda: out.nifti_mask(mask, case.affine, case.spacing))
        if files and files[-1].kind is OutputKind.NIFTI and case.datasets and case.grid is None and case.images > 1:
            # the mask is right voxel for voxel, but a diagonal affine does not say where the slices lie
            problems.append("nifti: the mask is on a diagonal of the pixel spacing, not placed in patient space "
                            f"({case.grid_problem or 'the series has no regular grid'})")
    rgb = None
    if params.wants(OutputKind.PNG) or (case.datasets and params.wants(OutputKind.SC)):
        try:
            rgb = out.overlay_rgb(case.pixels, pred.mask, caption, image=image)
        except UsageError as exc:
            problems.append(exc.message)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - as in make()
            log.warning("the overlay of a case could not be made: %s", type(exc).__name__)
            problems.append(f"the overlay (png, sc) could not be made ({type(exc).__name__})")
    if rgb is not None and params.wants(OutputKind.PNG):
        overlay = rgb
        make(OutputKind.PNG, lambda: out.png(overlay))
    if pred.mask is not None and params.wants(OutputKind.SEG) and case.datasets:
        if case.grid is None:
            problems.append("seg: the series has no regular grid: "
                            f"{case.grid_problem or 'multi-frame, uneven or missing geometry'}")
        else:
            mask = pred.mask
            make(OutputKind.SEG, lambda: out.dicom_seg(case.datasets, mask, predictor.classes, model=version.model,
                                                       version=f"v{version.version}", key=case_key))
    if rgb is not None and case.datasets and params.wants(OutputKind.SC):
        k = out.slice_of_interest(case.pixels, pred.mask, image)
        ref_ds = case.datasets[min(k, len(case.datasets) - 1)]
        overlay = rgb
        make(OutputKind.SC, lambda: out.dicom_sc(
            ref_ds, overlay, model=version.model, version=f"v{version.version}", key=case_key,
            description="segmentation" if pred.mask is not None else "classification"))
    return files, problems
