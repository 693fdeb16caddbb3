"""The model registry over REST: list, versions, cards, gate reports, promote, rollback, history, lineage.

Reading needs ``view``; registering and editing cards ``train``; promoting and rolling back ``deploy``. A
version is addressed as ``NAME@vN`` or ``NAME@ALIAS`` in the path (``/v1/models/chest-xr/versions/v3``).

The review gallery of a gate report: ``GET /v1/models/reports/REPORT/cases`` (``browse``: case keys and
per-case metrics, worst first), ``PUT .../cases/KEY/verdict`` (``label``) and ``POST .../cases/KEY/pin``
(``train``; pins the case into the model's regression suite). The two writes refuse a browser request sent
from another site (``Sec-Fetch-Site`` / ``Origin``), as the web forms do.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import PermissionDenied
from medcycle.models import cards, lineage, registry, reviews

router = APIRouter(prefix="/v1/models", tags=["models"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Trainer = Annotated[Principal, requires(Permission.TRAIN)]
Deployer = Annotated[Principal, requires(Permission.DEPLOY)]
Browser = Annotated[Principal, requires(Permission.BROWSE)]
Labeller = Annotated[Principal, requires(Permission.LABEL)]
VIA = "api"


class RegisterIn(BaseModel):
    run_id: str | None = None
    artifact: str = "model"
    weights_digest: str | None = None
    contract: dict[str, Any] | None = None
    task: str | None = None
    description: str | None = None
    note: str | None = None


class PromoteIn(BaseModel):
    alias: str = "production"
    report_id: str | None = None
    force_reason: str | None = Field(None, description="Skip the gates for this reason (audited).")


class RollbackIn(BaseModel):
    alias: str = "production"
    reason: str | None = None


class GateReportIn(BaseModel):
    passed: bool
    summary: dict[str, Any] = Field(default_factory=dict)
    policy: str | None = None
    dataset_digest: str | None = None


class VerdictIn(BaseModel):
    verdict: str = Field(description="ok, model_error, label_error or unsure")
    note: str | None = Field(None, max_length=2000)


class PinIn(BaseModel):
    expected: str | None = Field(None, max_length=128, description="The class to expect (default: the case's "
                                 "truth) or, for segmentation, the minimum Dice (default 0.5).")
    reason: str | None = Field(None, max_length=2000)


def _same_site(request: Request) -> None:
    """Refuse a write a browser made from another site's page (the session cookie would otherwise ride along)."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None:
        forged = site not in {"same-origin", "none"}
    elif origin is not None:
        forged = origin == "null" or urlsplit(origin).netloc != request.headers.get("host", request.url.netloc)
    else:
        forged = False  # not a browser: nothing to forge with
    if forged:
        raise PermissionDenied("this request was sent from another site",
                               hint=f"Use the review gallery on this server ({request.url.netloc}).")


def _ref(name: str, version: str) -> str:
    return f"{name}@{version}"


@router.get("/reports/{report_id}/cases")
def review_cases(report_id: str, session: SessionDep, platform: PlatformDep, _: Browser,
                 sort: Annotated[str | None, Query(max_length=32)] = None) -> dict[str, Any]:
    review = reviews.load(session, platform.objects, report_id)
    metric, cases = reviews.ordered(review, sort)
    done = reviews.verdicts(session, report_id)
    pins = reviews.pinned(session, review.model)
    rows = []
    for c in cases:
        v, pin = done.get(c["key"]), pins.get(c["key"])
        rows.append({**c, "verdict": {"verdict": v.verdict, "note": v.note, "reviewer": v.reviewer,
                                      "at": v.reviewed_at.isoformat()} if v else None,
                     "pinned": {"expected": pin.expected, "by": pin.pinned_by} if pin else None})
    return {"report": report_id, "model": review.ref, "segmentation": review.segmentation, "sort": metric,
            "cases": rows}


@router.put("/reports/{report_id}/cases/{case_key:path}/verdict")
def put_verdict(report_id: str, case_key: str, body: VerdictIn, request: Request, session: SessionDep,
                platform: PlatformDep, principal: Labeller) -> dict[str, Any]:
    _same_site(request)
    row = reviews.record_verdict(session, platform.objects, report_id, case_key, body.verdict, body.note,
                                 actor=principal.name, via=VIA)
    return {"report": report_id, "case": case_key, "verdict": row.verdict, "note": row.note,
            "reviewer": row.reviewer, "at": row.reviewed_at.isoformat()}


@router.post("/reports/{report_id}/cases/{case_key:path}/pin", status_code=status.HTTP_201_CREATED)
def pin_reviewed_case(report_id: str, case_key: str, body: PinIn, request: Request, session: SessionDep,
                      platform: PlatformDep, principal: Trainer) -> dict[str, Any]:
    _same_site(request)
    row = reviews.pin_from_review(session, platform.objects, report_id, case_key, expected=body.expected,
                                  reason=body.reason, actor=principal.name, via=VIA)
    return {"model": row.model, "case": row.case_key, "expected": row.expected, "reason": row.reason,
            "pinned_by": row.pinned_by}


@router.get("")
def list_models(session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    return registry.list_models(session)


@router.post("/{name}/versions", status_code=status.HTTP_201_CREATED)
def register_version(name: str, body: RegisterIn, session: SessionDep, platform: PlatformDep,
                     principal: Trainer) -> dict[str, Any]:
    v = registry.register(session, platform.objects, name, run_id=body.run_id, artifact=body.artifact,
                          weights_digest=body.weights_digest, contract=body.contract, task=body.task,
                          description=body.description, note=body.note, actor=principal.name, via=VIA)
    return v.to_dict()


@router.get("/{name}/versions")
def list_versions(name: str, session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    return [v.to_dict() for v in registry.versions(session, name)]


@router.get("/{name}/versions/{version}")
def show_version(name: str, version: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    ref = _ref(name, version)
    out = registry.info(session, registry.resolve(session, ref)).to_dict()
    out["gate_reports"] = [{"id": r.id, "passed": r.passed, "policy": r.policy, "summary": r.summary,
                            "created_at": r.created_at.isoformat()} for r in registry.gate_reports(session, ref)]
    return out


@router.get("/{name}/versions/{version}/card", response_model=None)
def card(name: str, version: str, session: SessionDep, _: Viewer,
         format_: Annotated[str, Query(alias="format", pattern="^(json|md|html)$")] = "json") -> Any:
    data = cards.build(session, _ref(name, version))
    if format_ == "md":
        return Response(cards.markdown(data), media_type="text/markdown; charset=utf-8")
    if format_ == "html":
        return Response(cards.to_html(data), media_type="text/html; charset=utf-8")
    return {"card": data, "problems": cards.validate(data)}


@router.patch("/{name}/versions/{version}/card")
def edit_card(name: str, version: str, body: dict[str, Any], session: SessionDep,
              principal: Trainer) -> dict[str, Any]:
    ref = _ref(name, version)
    cards.edit(session, ref, body, actor=principal.name, via=VIA)
    data = cards.build(session, ref)
    return {"card": data, "problems": cards.validate(data)}


@router.post("/{name}/versions/{version}/gate-reports", status_code=status.HTTP_201_CREATED)
def add_gate_report(name: str, version: str, body: GateReportIn, session: SessionDep,
                    principal: Trainer) -> dict[str, Any]:
    report_id = registry.record_gate_report(session, _ref(name, version), passed=body.passed, summary=body.summary,
                                            policy=body.policy, dataset_digest=body.dataset_digest,
                                            actor=principal.name, via=VIA)
    return {"id": report_id, "passed": body.passed}


@router.post("/{name}/versions/{version}/promote")
def promote(name: str, version: str, body: PromoteIn, session: SessionDep, principal: Deployer) -> dict[str, Any]:
    return registry.promote(session, _ref(name, version), body.alias, report_id=body.report_id,
                            force_reason=body.force_reason, actor=principal.name, via=VIA).to_dict()


@router.post("/{name}/rollback")
def rollback(name: str, body: RollbackIn, session: SessionDep, principal: Deployer) -> dict[str, Any]:
    return registry.rollback(session, name, body.alias, reason=body.reason, actor=principal.name, via=VIA).to_dict()


@router.get("/{name}/history")
def history(name: str, session: SessionDep, _: Viewer, alias: str | None = None) -> list[dict[str, Any]]:
    return [m.to_dict() for m in registry.alias_history(session, name, alias)]


@router.get("/{name}/versions/{version}/lineage")
def version_lineage(name: str, version: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    return lineage.of(session, _ref(name, version))
