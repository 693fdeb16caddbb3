"""DICOMweb (PS3.18) for inference: STOW-RS intake, QIDO-RS and WADO-RS over the results.

* ``POST /dicomweb/studies`` (and ``/dicomweb/studies/{study}``): ``multipart/related; type="application/dicom"``,
  one DICOM file per part → de-identified, stored, one inference job per study
  (:func:`medcycle.serving.stow.stow`); the answer is the PS3.18 Store Instances Response (DICOM JSON) with
  200 / 202 / 409, failures naming their part (also in ``Warning`` headers), and ``X-Medcycle-Jobs``.
  ``?model=NAME@ALIAS`` chooses the model (default: the deployed one, ``medcycle deploy``).
* ``GET /dicomweb/studies`` and ``/dicomweb/studies/{study}/series``: QIDO-RS over studies that have DICOM
  results (SEG, secondary capture), matched by the original StudyInstanceUID.
* ``GET /dicomweb/studies/{study}``, ``…/series/{series}`` and ``…/series/{series}/instances/{instance}``:
  WADO-RS — the result objects, re-identified for the PACS, as ``multipart/related; type="application/dicom"``.
* ``GET …/metadata`` at each of those three levels: WADO-RS metadata, a DICOM JSON array (PS3.18 F.2) of the
  same objects' attributes, re-identified; bulk data (pixel data, other binary values over 1 KiB) is left out.
* ``HEAD`` on each of those WADO-RS resources: the GET's status, Content-Type and Content-Length, no body (the
  length is counted without decoding or re-encoding pixel data).

Routes only parse and format; the work is in :mod:`medcycle.serving.stow` and :mod:`.dicom_results`. Reads
of results are audited (they carry the patient's identity again).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final

import pydicom
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from medcycle.api.deps import PlatformDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import PayloadTooLarge, UnsupportedMediaType, UsageError
from medcycle.platform import Platform
from medcycle.serving.dicom_results import (
    MAX_SUBMISSIONS,
    DicomResults,
    instance_attributes,
    series_attributes,
    study_attributes,
)
from medcycle.serving.multipart import (
    new_boundary,
    parse_content_type,
    read_related,
    related_length,
    write_related,
)
from medcycle.serving.stow import DICOM_MEDIA, StowPart, header_text, stow
from medcycle.serving.studies import DicomIntake

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
Writer = Annotated[Principal, requires(Permission.WRITE_DATA)]
Reader = Annotated[Principal, requires(Permission.READ_DATA)]
DICOM_JSON: Final = "application/dicom+json"
EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
BULK_BYTES: Final = 1024
PIXEL_TAGS: Final = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # float, double and plain pixel data
#: Study-level matching keys besides StudyInstanceUID: (keyword, tag, how it matches). ``exact``: single value
#: matching; ``wildcard``: ``*`` and ``?`` (case-insensitive, as most archives match names); ``date``: a date or a
#: range (``A-B``, ``A-``, ``-B``); ``any``: one of the study's modalities. An empty value matches every study.
STUDY_MATCHING: Final = (
    ("PatientID", "00100020", "exact"), ("PatientName", "00100010", "wildcard"),
    ("AccessionNumber", "00080050", "exact"), ("StudyID", "00200010", "exact"),
    ("StudyDate", "00080020", "date"), ("ReferringPhysicianName", "00080090", "wildcard"),
    ("ModalitiesInStudy", "00080061", "any"),
)
QIDO_KEYS: Final = {"studyinstanceuid", "0020000d", "limit", "offset", "includefield", "fuzzymatching"} | {
    name.lower() for keyword, tag, _ in STUDY_MATCHING for name in (keyword, tag)}
SERIES_KEYS: Final = {"seriesinstanceuid", "0020000e", "modality", "00080060", "limit", "offset", "includefield",
                      "fuzzymatching"}
INSTANCE_KEYS: Final = SERIES_KEYS | {"sopinstanceuid", "00080018", "sopclassuid", "00080016"}
DATE_RANGE_RE: Final = re.compile(r"\d{8}(-(\d{8})?)?|-\d{8}")  # YYYYMMDD, A-B, A-, -B (PS3.4 C.2.2.2.5)


class NotAcceptable(UsageError):
    code = "not_acceptable"
    http_status = 406


def _intake(request: Request, platform: Platform) -> DicomIntake:
    """One intake per app (it holds the de-identification key), made on first use."""
    cached = getattr(request.app.state, "dicom_intake", None)
    if not isinstance(cached, DicomIntake) or cached.platform is not platform:
        cached = DicomIntake(platform)
        request.app.state.dicom_intake = cached
    return cached


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + router.prefix


def _json(items: list[dict[str, Any]] | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
          ) -> Response:
    return Response(json.dumps(items), status_code=status, media_type=DICOM_JSON, headers=headers)


def _unsupported(params: Any, known: set[str]) -> list[str]:
    return sorted(k for k in params if k.lower() not in known)


def _matching(request: Request, *keys: str) -> str | None:
    """Every value the query gives a matching key (by keyword or tag, in any case), joined as one list: a key given
    more than once — how dicomweb-client and requests send a list — matches each of its values, not the last."""
    wanted = {k.lower() for k in keys}
    values = [v for k, v in request.query_params.multi_items() if k.lower() in wanted]
    return ",".join(values) if values else None


def _uids(value: str | None) -> list[str] | None:
    if value is None:
        return None
    uids = [u.strip() for u in value.replace("\\", ",").split(",") if u.strip()]
    return uids or None


# -- STOW-RS -------------------------------------------------------------------------------------------------
async def _store(request: Request, platform: Platform, principal: Principal, model: str | None,
                 study: str | None) -> Response:
    from medcycle.serving.config import load_serving_settings
    from medcycle.serving.deploy import default_model

    intake = _intake(request, platform)
    chosen = await run_in_threadpool(default_model, platform, model)
    cfg = load_serving_settings(platform.settings)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cfg.max_upload_bytes:  # refused before a byte of the body is read
        raise PayloadTooLarge(f"the request is {int(length)} bytes; at most {cfg.max_upload_bytes} are accepted",
                              hint="Send the study in several requests, or raise the serving setting "
                                   "max_upload_bytes.")
    parts = await read_related(request.stream(), request.headers.get("content-type"), part_type=DICOM_MEDIA,
                               max_part_bytes=cfg.max_upload_bytes, max_parts=cfg.max_files,
                               max_total_bytes=cfg.max_upload_bytes)
    try:
        inputs = [StowPart(p.index, p.content_type, p.read) for p in parts]
        outcome = await run_in_threadpool(stow, intake, inputs, model=chosen, study_uid=study)
    finally:
        for part in parts:
            part.close()
    await run_in_threadpool(audit.record_read, platform, principal, "dicomweb.store", target_kind="model",
                            target_id=chosen, via="api", instances=len(outcome.stored),
                            failures=len(outcome.failures), jobs=[s.job_id for s in outcome.studies])
    response = _json(outcome.response(_base(request)).to_json_dict(), outcome.http_status,
                     {"X-Medcycle-Jobs": ",".join(s.job_id for s in outcome.studies)})
    for warning in outcome.warnings():
        response.headers.append("Warning", warning)
    return response


@router.post("/studies", summary="STOW-RS: store instances for inference (one job per study)")
async def store_instances(request: Request, platform: PlatformDep, principal: Writer,
                          model: str | None = Query(None, description="NAME@ALIAS; default: the deployed model")
                          ) -> Response:
    return await _store(request, platform, principal, model, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study for inference")
async def store_study_instances(study: str, request: Request, platform: PlatformDep, principal: Writer,
                                model: str | None = Query(None)) -> Response:
    return await _store(request, platform, principal, model, study)


# -- QIDO-RS -------------------------------------------------------------------------------------------------
def _search_headers(unsupported: list[str]) -> dict[str, str] | None:
    if not unsupported:
        return None
    names = header_text(", ".join(unsupported))  # the client's own words, echoed: keep the header valid
    return {"Warning": f'299 medcycle "The following attributes are not supported for query: {names}"'}


def _study_filters(request: Request) -> list[tuple[str, str, list[str]]]:
    """The study-level matching keys the query gives (:data:`STUDY_MATCHING`) with their values; keys given only
    empty (universal matching) are left out.

    Raises:
        UsageError: a date key whose value is not a DICOM date (YYYYMMDD) or range of them (PS3.18 8.3.4: an
            invalid query parameter value is a 400, not an empty answer).
    """
    out = []
    for keyword, tag, how in STUDY_MATCHING:
        values = [v.strip() for v in (_matching(request, keyword, tag) or "").split(",") if v.strip()]
        if how == "date":
            bad = [v for v in values if not DATE_RANGE_RE.fullmatch(v)]
            if bad:
                raise UsageError(f"{keyword} {header_text(bad[0], 40)!r} is not a DICOM date or date range",
                                 hint=f"Give {keyword}=YYYYMMDD, or a range: YYYYMMDD-YYYYMMDD, YYYYMMDD- or "
                                      "-YYYYMMDD (PS3.4 C.2.2.2.5).")
        if values:
            out.append((keyword, how, values))
    return out


def _has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _wildcard(pattern: str, value: str, *, ignore_case: bool = True) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, value, flags=flags) is not None


def _single(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """Single value matching, or wildcard matching when the value has ``*`` or ``?`` (PS3.4 C.2.2.2.4: wildcards
    apply to every string VR a study is matched by here: PN, LO, SH, CS)."""
    if _has_wildcard(pattern):
        return _wildcard(pattern, value, ignore_case=ignore_case)
    return value.upper() == pattern.upper() if ignore_case else value == pattern


def _person_name(pattern: str, value: str) -> bool:
    """A person name matches as a whole or by one of its component groups (alphabetic, ideographic, phonetic):
    ``Yamada^Tarou`` finds ``Yamada^Tarou=山田^太郎``."""
    return any(_single(pattern, v, ignore_case=True) for v in (value, *value.split("=")))


def _in_range(spec: str, value: str) -> bool:
    if "-" not in spec:
        return value == spec
    low, _, high = spec.partition("-")
    return bool(value) and (not low or value >= low) and (not high or value <= high)


def _study_matches(attrs: Any, filters: list[tuple[str, str, list[str]]]) -> bool:
    for keyword, how, values in filters:
        if how == "any":
            have = [str(m) for m in (attrs.get(keyword) or [])]
            ok = any(_single(v, m, ignore_case=True) for v in values for m in have)
        else:
            value = str(attrs.get(keyword) or "")
            if how == "wildcard":
                ok = any(_person_name(v, value) for v in values)
            elif how == "date":
                ok = any(_in_range(v, value) for v in values)
            else:
                ok = any(_single(v, value) for v in values)
        if not ok:
            return False
    return True


def _modality_matches(kinds: list[str] | None, modality: str) -> bool:
    return kinds is None or any(_single(k, modality, ignore_case=True) for k in kinds)


@router.get("/studies", summary="QIDO-RS: studies with inference results")
async def search_studies(request: Request, platform: PlatformDep, principal: Reader,
                         StudyInstanceUID: str | None = Query(None),
                         limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> Response:
    results = DicomResults(_intake(request, platform))
    uids = _uids(_matching(request, "StudyInstanceUID", "0020000D"))
    filters = _study_filters(request)
    base = _base(request)
    if filters:  # matched on the re-identified attributes, each study's return address opened to read them
        every = await run_in_threadpool(results.studies, uids, limit=MAX_SUBMISSIONS, offset=0)
        studies = [s for s in every if _study_matches(study_attributes(s, base), filters)][offset:offset + limit]
    else:
        studies = await run_in_threadpool(results.studies, uids, limit=limit, offset=offset)
    await run_in_threadpool(audit.record_read, platform, principal, "dicomweb.search", target_kind="study",
                            target_id=None, via="api", studies=[s.study_key for s in studies],
                            keys=[k for k, _, _ in filters])
    return _json([study_attributes(s, base).to_json_dict() for s in studies],
                 headers=_search_headers(_unsupported(request.query_params, QIDO_KEYS)))


@router.get("/studies/{study}/series", summary="QIDO-RS: result series of a study")
async def search_series(study: str, request: Request, platform: PlatformDep, principal: Reader,
                        SeriesInstanceUID: str | None = Query(None),
                        Modality: str | None = Query(None),
                        limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> Response:
    results = DicomResults(_intake(request, platform))
    found = await run_in_threadpool(results.study, study)
    await run_in_threadpool(audit.record_read, platform, principal, "dicomweb.search", target_kind="study",
                            target_id=found.study_key, via="api")
    wanted = _uids(_matching(request, "SeriesInstanceUID", "0020000E"))
    kinds = _uids(_matching(request, "Modality", "00080060"))
    base = _base(request)
    out = [series_attributes(found, uid, items, base).to_json_dict() for uid, items in found.series().items()
           if (wanted is None or uid in wanted) and _modality_matches(kinds, items[0].modality)]
    return _json(out[offset:offset + limit], headers=_search_headers(_unsupported(request.query_params, SERIES_KEYS)))


async def _search_instances(request: Request, platform: Platform, principal: Principal, study: str,
                            series: str | None, limit: int, offset: int) -> Response:
    results = DicomResults(_intake(request, platform))
    found = await run_in_threadpool(results.study, study)
    await run_in_threadpool(audit.record_read, platform, principal, "dicomweb.search", target_kind="study",
                            target_id=found.study_key, via="api", series=series, level="instance")
    series_uids = [series] if series is not None else _uids(_matching(request, "SeriesInstanceUID", "0020000E"))
    sops = _uids(_matching(request, "SOPInstanceUID", "00080018"))
    classes = _uids(_matching(request, "SOPClassUID", "00080016"))
    kinds = _uids(_matching(request, "Modality", "00080060"))
    base = _base(request)
    out = [instance_attributes(found, item, base).to_json_dict() for item in found.instances
           if (series_uids is None or item.series_uid in series_uids) and (sops is None or item.sop_instance in sops)
           and (classes is None or item.sop_class in classes) and _modality_matches(kinds, item.modality)]
    return _json(out[offset:offset + limit],
                 headers=_search_headers(_unsupported(request.query_params, INSTANCE_KEYS)))


@router.get("/studies/{study}/instances", summary="QIDO-RS: result instances of a study")
async def search_study_instances(study: str, request: Request, platform: PlatformDep, principal: Reader,
                                 SeriesInstanceUID: str | None = Query(None), SOPInstanceUID: str | None = Query(None),
                                 SOPClassUID: str | None = Query(None), Modality: str | None = Query(None),
                                 limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> Response:
    return await _search_instances(request, platform, principal, study, None, limit, offset)


@router.get("/studies/{study}/series/{series}/instances", summary="QIDO-RS: result instances of one series")
async def search_series_instances(study: str, series: str, request: Request, platform: PlatformDep,
                                  principal: Reader, SOPInstanceUID: str | None = Query(None),
                                  SOPClassUID: str | None = Query(None),
                                  limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> Response:
    return await _search_instances(request, platform, principal, study, series, limit, offset)


# -- WADO-RS -------------------------------------------------------------------------------------------------
def _quality(params: dict[str, str]) -> float:
    """An Accept option's ``q`` (RFC 9110 12.4.2): 1 when absent; an unreadable one counts as 1 too."""
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return 1.0
    return q if 0.0 <= q <= 1.0 else 1.0


def _accepted_syntaxes(header: str | None) -> list[str]:
    """The transfer syntaxes a WADO-RS ``Accept`` allows (``*``: any) for DICOM PS3.10 parts in multipart/related,
    most wanted first (by ``q``, then in the order given). Every option counts, not only the first: a PACS that
    lists the syntax it prefers before one it also takes gets the one it also takes. ``q=0`` rules an option out."""
    if not header or not header.strip():
        return ["*"]
    problems = []
    found: list[tuple[float, int, str]] = []
    for n, option in enumerate(header.split(",")):
        media, params = parse_content_type(option)
        q = _quality(params)
        if media in ("*/*", "multipart/*") or (
                media == "multipart/related" and params.get("type", DICOM_MEDIA).lower() in (DICOM_MEDIA, "*/*")):
            if q > 0:
                syntax = "*" if media != "multipart/related" else params.get("transfer-syntax", "*").strip() or "*"
                found.append((-q, n, syntax))
            continue
        problems.append(media or "an empty media type")
    if not found:
        raise NotAcceptable(f"cannot answer with {'; '.join(problems) or 'what q=0 leaves'}",
                            hint=f'Accept: multipart/related; type="{DICOM_MEDIA}" (transfer-syntax=* or '
                                 f'{EXPLICIT_LE}).')
    return [syntax for _, _, syntax in sorted(found)]


def _head(media_type: str, length: int) -> Response:
    """A ``HEAD`` answer: the GET's Content-Type and Content-Length, no body."""
    return Response(None, media_type=media_type, headers={"Content-Length": str(length)})


async def _retrieve(request: Request, platform: Platform, principal: Principal, study: str,
                    series: str | None, instance: str | None = None) -> Response:
    """WADO-RS retrieve; for ``HEAD``, the same checks and headers, with the length counted, not the body built."""
    head = request.method == "HEAD"
    syntaxes = _accepted_syntaxes(request.headers.get("accept"))
    results = DicomResults(_intake(request, platform))
    items: list[bytes] = []
    if head:
        found, chosen, sizes = await run_in_threadpool(results.sizes, study, series, instance)
    else:
        found, chosen, items = await run_in_threadpool(results.retrieve, study, series, instance)
    stored = {i.transfer_syntax for i in chosen}
    if not any(s == "*" or stored == {s} for s in syntaxes):
        raise NotAcceptable(f"cannot answer in transfer syntax {', '.join(syntaxes)}: the results are stored in "
                            f"{', '.join(sorted(stored))} and are not transcoded",
                            hint="Ask for transfer-syntax=* (or the stored syntax).")
    extra: dict[str, Any] = {"instance": instance} if instance is not None else {}
    if head:
        extra["head"] = True
    await run_in_threadpool(audit.record_read, platform, principal, "dicomweb.retrieve", target_kind="study",
                            target_id=found.study_key, via="api", series=series, instances=len(chosen), **extra)
    boundary = new_boundary()
    media_type = f'multipart/related; type="{DICOM_MEDIA}"; boundary={boundary}'
    if head:
        return _head(media_type, related_length(sizes, boundary, DICOM_MEDIA))
    return Response(write_related(items, boundary, DICOM_MEDIA), media_type=media_type)


def _drop_bulk(ds: pydicom.Dataset) -> pydicom.Dataset:
    """``ds`` without its bulk data: pixel data, and binary values (OB, OW, UN, …) over :data:`BULK_BYTES`, in
    sequences too. Smaller binary values stay, as InlineBinary (PS3.18 F.2.7)."""
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value:
                _drop_bulk(item)
        elif int(elem.tag) in PIXEL_TAGS or (isinstance(elem.value, bytes | bytearray)
                                             and len(elem.value) > BULK_BYTES):
            del ds[elem.tag]
    return ds


def _accepts_json(header: str | None) -> None:
    """Refuses an ``Accept`` that allows no DICOM JSON (metadata is answered in DICOM JSON only)."""
    if not header or not header.strip():
        return
    problems = []
    for option in header.split(","):
        media, params = parse_content_type(option)
        if media in (DICOM_JSON, "application/json", "application/*", "*/*") and _quality(params) > 0:
            return
        problems.append(media or "an empty media type")
    raise NotAcceptable(f"cannot answer metadata with {'; '.join(problems)}",
                        hint=f"Accept: {DICOM_JSON} (metadata is not offered as XML or multipart).")


async def _metadata(request: Request, platform: Platform, principal: Principal, study: str,
                    series: str | None = None, instance: str | None = None) -> Response:
    _accepts_json(request.headers.get("accept"))
    results = DicomResults(_intake(request, platform))
    found, chosen = await run_in_threadpool(results.select, study, series, instance)
    datasets = await run_in_threadpool(results.datasets, found, chosen, pixels=False)
    out = [_drop_bulk(ds).to_json_dict(bulk_data_threshold=BULK_BYTES) for ds in datasets]
    extra = {"head": True} if request.method == "HEAD" else {}
    await run_in_threadpool(audit.record_read, platform, principal, "dicomweb.retrieve", target_kind="study",
                            target_id=found.study_key, via="api", series=series, instance=instance,
                            instances=len(out), metadata=True, **extra)
    response = _json(out)
    if request.method == "HEAD":  # the pixel data was never read: the JSON is cheap, its length is exact
        return _head(DICOM_JSON, len(response.body))
    return response


@router.get("/studies/{study}", summary="WADO-RS: every result object of a study")
async def retrieve_study(study: str, request: Request, platform: PlatformDep, principal: Reader) -> Response:
    return await _retrieve(request, platform, principal, study, None)


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: the result objects of one series")
async def retrieve_series(study: str, series: str, request: Request, platform: PlatformDep,
                          principal: Reader) -> Response:
    return await _retrieve(request, platform, principal, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}", summary="WADO-RS: one result object")
async def retrieve_instance(study: str, series: str, instance: str, request: Request, platform: PlatformDep,
                            principal: Reader) -> Response:
    return await _retrieve(request, platform, principal, study, series, instance)


@router.get("/studies/{study}/metadata", summary="WADO-RS: metadata (DICOM JSON) of a study's result objects")
async def retrieve_study_metadata(study: str, request: Request, platform: PlatformDep,
                                  principal: Reader) -> Response:
    return await _metadata(request, platform, principal, study)


@router.get("/studies/{study}/series/{series}/metadata",
            summary="WADO-RS: metadata (DICOM JSON) of one result series")
async def retrieve_series_metadata(study: str, series: str, request: Request, platform: PlatformDep,
                                   principal: Reader) -> Response:
    return await _metadata(request, platform, principal, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata",
            summary="WADO-RS: metadata (DICOM JSON) of one result object")
async def retrieve_instance_metadata(study: str, series: str, instance: str, request: Request,
                                     platform: PlatformDep, principal: Reader) -> Response:
    return await _metadata(request, platform, principal, study, series, instance)


# -- HEAD on every WADO-RS resource: the GET's status, Content-Type and Content-Length, no body (PS3.18 8.2: a client
# may learn whether a resource exists and how large it is). The GET's endpoint answers it (it looks at the method);
# a route of its own, so each has its own OpenAPI operation.
for _path, _endpoint, _what in (
    ("/studies/{study}", retrieve_study, "a study's result objects exist, and their size"),
    ("/studies/{study}/series/{series}", retrieve_series, "one result series"),
    ("/studies/{study}/series/{series}/instances/{instance}", retrieve_instance, "one result object"),
    ("/studies/{study}/metadata", retrieve_study_metadata, "a study's metadata"),
    ("/studies/{study}/series/{series}/metadata", retrieve_series_metadata, "one result series' metadata"),
    ("/studies/{study}/series/{series}/instances/{instance}/metadata", retrieve_instance_metadata,
     "one result object's metadata"),
):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], summary=f"WADO-RS HEAD: {_what}",
                         name=_endpoint.__name__.replace("retrieve_", "head_", 1))


__all__ = ["NotAcceptable", "UnsupportedMediaType", "router"]
