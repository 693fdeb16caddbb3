"""Model registry pages: models (``/ui/models``), one model's versions, aliases and history
(``/ui/models/NAME``), one version's lineage, card and gate reports (``/ui/models/NAME/vN``), the gate
reports of every model (``/ui/evaluation``) and the review gallery of one report
(``/ui/evaluation/REPORT/review``).

Reading needs ``view``; the promote and rollback forms need ``deploy`` and call the same library functions as
``medcycle model promote|rollback`` (audited, a forced promotion needs a reason). The gallery shows patient
pixels, so it needs ``read-data``; its verdict and pin buttons call the REST API
(``/v1/models/reports/REPORT/cases/...``: ``label`` to record a verdict, ``train`` to pin a case).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy import select
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import NotFound
from medcycle.models import cards, lineage, registry
from medcycle.models.tables import GateReportRow, ModelVersionRow
from medcycle.web.render import SECURITY_HEADERS, renderer

router = APIRouter(include_in_schema=False)
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Deployer = Annotated[Principal, requires(Permission.DEPLOY)]
VIA = "web"


def _card_html(card: dict[str, object]) -> Markup:
    from markdown_it import MarkdownIt

    # raw HTML in values is not rendered (html=False): the card's text is escaped by the renderer
    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(cards.markdown(card)))  # noqa: S704


@router.get("/ui/models")
def models_page(request: Request, session: SessionDep, principal: Viewer) -> Response:
    return renderer(request).render(request, "models.html", principal=principal, active="models",
                                    models=registry.list_models(session))


@router.get("/ui/models/{name}")
def model_page(request: Request, name: str, session: SessionDep, principal: Viewer) -> Response:
    versions = registry.versions(session, name)
    reports = {v.id: registry.gate_reports(session, v.ref) for v in versions}
    return renderer(request).render(
        request, "models_detail.html", principal=principal, active="models", name=name,
        versions=list(reversed(versions)), reports=reports, history=list(reversed(registry.alias_history(session,
                                                                                                        name))),
        pinned=registry.pinned_cases(session, name), can_deploy=principal.can(Permission.DEPLOY),
        aliases=sorted({a for v in versions for a in v.aliases}),
    )


@router.get("/ui/models/{name}/{version}")
def version_page(request: Request, name: str, version: str, session: SessionDep, principal: Viewer) -> Response:
    ref = f"{name}@{version}"
    v = registry.info(session, registry.resolve(session, ref))
    card = cards.build(session, v.ref)
    dataset_link = None
    if v.dataset_digest:
        from medcycle.datasets.tables import DatasetRow, DatasetVersionRow

        dv = session.get(DatasetVersionRow, v.dataset_digest)
        ds = session.get(DatasetRow, dv.dataset_id) if dv is not None else None
        if dv is not None and ds is not None:
            dataset_link = f"/ui/datasets/{ds.name}/v{dv.seq}"
    return renderer(request).render(
        request, "models_version.html", principal=principal, active="models", v=v,
        chain=lineage.of(session, v.ref)["chain"], card_html=_card_html(card), problems=cards.validate(card),
        reports=registry.gate_reports(session, v.ref), dataset_link=dataset_link,
        can_deploy=principal.can(Permission.DEPLOY),
    )


@router.get("/ui/models/{name}/{version}/reports/{report_id}")
def report_page(name: str, version: str, report_id: str, session: SessionDep, platform: PlatformDep,
                _: Viewer) -> Response:
    row = registry.resolve(session, f"{name}@{version}")
    report = session.get(GateReportRow, report_id)
    digest = (report.summary or {}).get("reports", {}).get("html") if report is not None else None
    if report is None or report.version_id != row.id or not digest:
        raise NotFound(f"no HTML report {report_id!r} for {name}@{version}",
                       hint="Reports are written by `medcycle evaluate`; see the version's page.")
    # the report is our own rendering (escaped Markdown): served under the usual headers
    return HTMLResponse(platform.objects.get(str(digest)).decode("utf-8"), headers=SECURITY_HEADERS)


@router.post("/ui/models/{name}/{version}/promote")
def promote_form(name: str, version: str, session: SessionDep, principal: Deployer,
                 alias: Annotated[str, Form(max_length=64)] = "production",
                 reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
    registry.promote(session, f"{name}@{version}", alias.strip() or "production", actor=principal.name, via=VIA,
                     force_reason=reason if reason.strip() else None)
    return RedirectResponse(f"/ui/models/{name}#history", status_code=303)


@router.post("/ui/models/{name}/rollback")
def rollback_form(name: str, session: SessionDep, principal: Deployer,
                  alias: Annotated[str, Form(max_length=64)] = "production",
                  reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
    registry.rollback(session, name, alias.strip() or "production", actor=principal.name, via=VIA,
                      reason=reason.strip() or None)
    return RedirectResponse(f"/ui/models/{name}#history", status_code=303)


Reader = Annotated[Principal, requires(Permission.READ_DATA)]


@router.get("/ui/evaluation/{report_id}/review")
def review_page(request: Request, report_id: str, session: SessionDep, platform: PlatformDep, principal: Reader,
                sort: Annotated[str | None, Query(max_length=32)] = None) -> Response:
    from medcycle.auth import audit
    from medcycle.evaluation.gallery import metric_names
    from medcycle.models import reviews

    review = reviews.load(session, platform.objects, report_id)
    metric, cases = reviews.ordered(review, sort)
    # the previews are patient pixels: the read is audited before the page goes out (fail-closed)
    audit.record_read(platform, principal, "evaluation.review.read", target_kind="gate_report", target_id=report_id,
                      via=VIA, model=review.ref, cases=len(cases))
    done = reviews.verdicts(session, report_id)
    pins = reviews.pinned(session, review.model)
    counts: dict[str, int] = {}
    for row in done.values():
        counts[row.verdict] = counts.get(row.verdict, 0) + 1
    return renderer(request).render(
        request, "evaluation_review.html", principal=principal, active="evaluation", review=review, cases=cases,
        metric=metric, metrics=metric_names(review.segmentation), verdicts=done, pins=pins, counts=counts,
        can_review=principal.can(Permission.LABEL), can_pin=principal.can(Permission.TRAIN),
        choices=VERDICT_LABELS)


VERDICT_LABELS = (("ok", "OK"), ("model_error", "Model error"), ("label_error", "Label error"), ("unsure", "Unsure"))


@router.get("/ui/evaluation/{report_id}/preview/{digest}.png")
def review_preview(report_id: str, digest: str, session: SessionDep, platform: PlatformDep, _: Reader) -> Response:
    from medcycle.models import reviews

    review = reviews.load(session, platform.objects, report_id)
    if not any(c.get("preview") == digest for c in review.cases):
        raise NotFound(f"no preview {digest[:12]}… in report {report_id}", hint="Open the gallery again.")
    return Response(platform.objects.get(digest), media_type="image/png",
                    headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"})


@router.get("/ui/evaluation")
def evaluation_page(request: Request, session: SessionDep, principal: Viewer) -> Response:
    rows = session.execute(
        select(GateReportRow, ModelVersionRow).join(ModelVersionRow, ModelVersionRow.id == GateReportRow.version_id)
        .order_by(GateReportRow.created_at.desc()).limit(200)).all()
    reports = [{"ref": f"{v.model}@v{v.version}", "model": v.model, "version": v.version, "id": r.id,
                "passed": r.passed, "policy": r.policy, "at": r.created_at, "by": r.created_by,
                "gates": (r.summary or {}).get("gates", []), "has_html": bool((r.summary or {}).get("reports")),
                "has_gallery": bool(((r.summary or {}).get("reports") or {}).get("cases"))}
               for r, v in rows]
    return renderer(request).render(request, "evaluation.html", principal=principal, active="evaluation",
                                    reports=reports)
