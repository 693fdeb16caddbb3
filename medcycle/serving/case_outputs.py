"""The output files of one predicted case: NIfTI mask, PNG overlay, DICOM SEG and secondary capture."""

from __future__ import annotations

from medcycle.errors import UsageError
from medcycle.serving import outputs as out
from medcycle.serving.decode import DecodedCase
from medcycle.serving.predictor import Prediction, Predictor
from medcycle.serving.schemas import OutputKind, Params


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
    try:
        if pred.mask is not None and params.wants(OutputKind.NIFTI):
            files.append(out.Output(OutputKind.NIFTI, out.nifti_mask(pred.mask, case.affine, case.spacing)))
        rgb = None
        if params.wants(OutputKind.PNG) or (case.datasets and params.wants(OutputKind.SC)):
            rgb = out.overlay_rgb(case.pixels, pred.mask, caption, image=image)
        if rgb is not None and params.wants(OutputKind.PNG):
            files.append(out.Output(OutputKind.PNG, out.png(rgb)))
        if pred.mask is not None and params.wants(OutputKind.SEG) and case.datasets:
            if case.grid is None:
                problems.append("seg: the series has no regular grid (multi-frame, uneven or missing geometry)")
            else:
                files.append(out.Output(OutputKind.SEG, out.dicom_seg(
                    case.datasets, pred.mask, predictor.classes, model=version.model,
                    version=f"v{version.version}", key=case_key)))
        if rgb is not None and case.datasets and params.wants(OutputKind.SC):
            k = out.slice_of_interest(case.pixels, pred.mask, image)
            ref_ds = case.datasets[min(k, len(case.datasets) - 1)]
            files.append(out.Output(OutputKind.SC, out.dicom_sc(
                ref_ds, rgb, model=version.model, version=f"v{version.version}", key=case_key,
                description="segmentation" if pred.mask is not None else "classification")))
    except UsageError as exc:
        problems.append(exc.message)
    return files, problems
