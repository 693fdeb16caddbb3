"""Model cards: JSON validated against ``card.schema.json`` (shipped here), rendered to Markdown and HTML.

A card is built from the registry (lineage, metrics, contract), the latest gate report (disaggregated
metrics with intervals, suite results), the training data's version and label provenance, the software
versions and the changes against the previous version; the fields only a person can write (intended and
out-of-scope use, limitations, ethical considerations, owners, licence) are set with :func:`edit` and kept in
the version's row. A card missing a required field fails :func:`validate` with the field named — and
promotion refuses a version whose card does not validate.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import UsageError, ValidationFailed
from medcycle.models.registry import TARGET_KIND, gate_reports, info, resolve
from medcycle.models.tables import ModelRow, ModelVersionRow

HUMAN_FIELDS = ("intended_use", "out_of_scope_use", "limitations", "ethical_considerations", "owners", "licence")
SOFTWARE = ("medcycle", "torch", "monai", "numpy", "pydicom", "scikit-learn", "SimpleITK", "highdicom")
DEFAULT_FACTORS = ("source", "manufacturer", "modality", "sex", "age_band")


@cache
def schema() -> dict[str, Any]:
    text = resources.files("medcycle.models").joinpath("card.schema.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def validate(card: dict[str, Any]) -> list[str]:
    """Problems with ``card`` against the schema, each naming the field (empty when it is valid)."""
    from jsonschema import Draft202012Validator

    problems = []
    for err in sorted(Draft202012Validator(schema()).iter_errors(card), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.path) or "(card)"
        problems.append(f"{where}: {err.message}")
    return problems


def _software(capture_packages: dict[str, str] | None) -> list[dict[str, str]]:
    out = []
    for name in SOFTWARE:
        version = (capture_packages or {}).get(name.lower())
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        out.append({"name": name, "version": version})
    return out


def _previous(session: Session, row: ModelVersionRow) -> ModelVersionRow | None:
    return session.scalar(select(ModelVersionRow).where(ModelVersionRow.model == row.model,
                                                        ModelVersionRow.version < row.version)
                          .order_by(ModelVersionRow.version.desc()).limit(1))


def _changes(prev: ModelVersionRow | None, row: ModelVersionRow) -> dict[str, Any]:
    if prev is None:
        return {"previous": None, "metrics": {}, "params": {}, "data_changed": None, "code_changed": None}
    metrics = {k: {"before": prev.metrics.get(k), "after": v,
                   "delta": (v - prev.metrics[k]) if isinstance(v, int | float) and isinstance(
                       prev.metrics.get(k), int | float) else None}
               for k, v in sorted(row.metrics.items()) if prev.metrics.get(k) != v}
    keys = sorted(set(prev.params) | set(row.params))
    params = {k: {"before": prev.params.get(k), "after": row.params.get(k)} for k in keys
              if prev.params.get(k) != row.params.get(k)}
    return {"previous": f"{prev.model}@v{prev.version}", "metrics": metrics, "params": params,
            "data_changed": prev.dataset_digest != row.dataset_digest, "code_changed": prev.commit != row.commit}


def _training_data(session: Session, row: ModelVersionRow) -> dict[str, Any]:
    data: dict[str, Any] = {"dataset_ref": row.dataset_ref, "dataset_digest": row.dataset_digest,
                            "label_set": row.label_set, "readers": None, "agreement": None,
                            "consensus_method": None, "summary": None}
    if row.dataset_digest:
        from medcycle.datasets.tables import DatasetVersionRow

        version = session.get(DatasetVersionRow, row.dataset_digest)
        if version is not None:
            data["summary"] = {"items": version.n_items, "patients": version.n_patients,
                               "studies": version.n_studies, "splits": version.split_counts}
            labels = (version.card or {}).get("labels") if isinstance(version.card, dict) else None
            if isinstance(labels, dict):
                data["readers"] = labels.get("readers")
                data["agreement"] = labels.get("agreement")
                data["consensus_method"] = labels.get("consensus_method")
    return data


def _suite(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The data of one suite of the latest gate report (None when the policy did not run it)."""
    suite = (summary.get("suites") or {}).get(name)
    return dict(suite) if isinstance(suite, dict) else None


def build(session: Session, ref: str) -> dict[str, Any]:
    """The card of a version as the registry knows it now (not yet stored)."""
    row = resolve(session, ref)
    model = session.get(ModelRow, row.model)
    assert model is not None
    v = info(session, row)
    human = dict(row.card or {}).get("human", {})
    reports = gate_reports(session, ref)
    latest = reports[0] if reports else None
    summary = dict(latest.summary or {}) if latest else {}
    packages = None
    if row.run_id:
        from medcycle.experiments.tables import CaptureRow

        capture = session.get(CaptureRow, row.run_id)
        if capture is not None and isinstance(capture.data.get("packages"), dict):
            packages = {str(k).lower(): str(val) for k, val in capture.data["packages"].items()}
    card: dict[str, Any] = {
        "schema_version": 1,
        "model_details": {"name": row.model, "version": row.version, "ref": v.ref, "task": model.task,
                          "description": model.description, "weights_digest": row.weights_digest,
                          "run_id": row.run_id, "commit": row.commit, "created_at": row.created_at.isoformat(),
                          "created_by": row.created_by, "owners": list(human.get("owners") or []),
                          "licence": human.get("licence"), "aliases": list(v.aliases)},
        "contract": row.contract or {},
        "factors": list(summary.get("factors") or DEFAULT_FACTORS),
        "metrics": dict(row.metrics or {}),
        "evaluation": {"gate_passed": latest.passed if latest else None, "policy": latest.policy if latest else None,
                       "dataset_digest": latest.dataset_digest if latest else None,
                       "disaggregated": summary.get("disaggregated", {}), "suites": summary.get("suites", {}),
                       "reproducibility": _suite(summary, "reproducibility"), "load": _suite(summary, "load")},
        "training_data": _training_data(session, row),
        "software": _software(packages),
        "changes": _changes(_previous(session, row), row),
    }
    for key in ("intended_use", "out_of_scope_use", "limitations", "ethical_considerations"):
        if human.get(key) is not None:
            card[key] = human[key]
    return card


def edit(session: Session, ref: str, values: dict[str, Any], *, actor: str = "system", via: str = "library"
         ) -> dict[str, Any]:
    """Set the human fields of a version's card; returns them."""
    unknown = sorted(set(values) - set(HUMAN_FIELDS))
    if unknown:
        raise UsageError(f"not a field people edit: {', '.join(unknown)}",
                         hint=f"Editable fields: {', '.join(HUMAN_FIELDS)}; the rest comes from the registry.")
    row = resolve(session, ref)
    card = dict(row.card or {})
    human = dict(card.get("human", {}))
    for key, value in values.items():
        if key == "owners":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValidationFailed("owners must be a list of names", hint="E.g. owners=alice,bob.")
        elif value is not None and not isinstance(value, str):
            raise ValidationFailed(f"{key} must be text", hint=f"E.g. {key}='…'.")
        human[key] = value.strip() if isinstance(value, str) else value
    card["human"] = human
    row.card = card
    audit.record(session, actor, "model.card.edit", target_kind=TARGET_KIND, target_id=f"{row.model}@v{row.version}",
                 via=via, fields=sorted(values))
    session.flush()
    return human


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict) and "value" in value:
        low, high = value.get("ci_low"), value.get("ci_high")
        text = _fmt(value["value"])
        return f"{text} ({_fmt(low)}–{_fmt(high)})" if low is not None and high is not None else text
    return "—" if value is None else str(value)


def markdown(card: dict[str, Any]) -> str:
    d = card.get("model_details", {})
    lines = [f"# Model card: {d.get('ref', '?')}", ""]
    problems = validate(card)
    if problems:
        lines += ["> **Incomplete card** — " + "; ".join(problems), ""]
    lines += [f"* **Task**: {_fmt(d.get('task'))}", f"* **Weights**: `{d.get('weights_digest', '?')}`",
              f"* **Run**: {_fmt(d.get('run_id'))} · **commit** {_fmt(d.get('commit'))}",
              f"* **Registered** {d.get('created_at', '?')} by {d.get('created_by', '?')}",
              f"* **Aliases**: {', '.join(d.get('aliases') or []) or '—'}",
              f"* **Owners**: {', '.join(d.get('owners') or []) or '—'} · **licence** {_fmt(d.get('licence'))}", ""]
    for key, title in (("intended_use", "Intended use"), ("out_of_scope_use", "Out-of-scope use"),
                       ("limitations", "Limitations"), ("ethical_considerations", "Ethical considerations")):
        lines += [f"## {title}", "", card.get(key) or "_not written yet_", ""]
    lines += ["## Input and output", "", "```json", json.dumps(card.get("contract", {}), indent=2), "```", ""]
    lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(card.get("metrics", {}).items())] or ["| — | — |"]
    ev = card.get("evaluation", {})
    gates = f"Release gates passed: {_fmt(ev.get('gate_passed'))} (policy {_fmt(ev.get('policy'))})"
    lines += ["", "## Evaluation", "", gates, ""]
    for factor, groups in (ev.get("disaggregated") or {}).items():
        lines += [f"### By {factor}", "", "| group | metric | value (95% CI) |", "|---|---|---|"]
        for group, metrics in groups.items():
            lines += [f"| {group} | {m} | {_fmt(v)} |" for m, v in metrics.items()]
        lines.append("")
    for suite, result in (ev.get("suites") or {}).items():
        lines += [f"* **{suite}**: {_fmt(result.get('passed') if isinstance(result, dict) else result)}"]
    rep = ev.get("reproducibility")
    if isinstance(rep, dict):
        lines += ["", "### Reproducibility", ""]
        same = rep.get("same_seed")
        if isinstance(same, dict):
            lines.append(f"* Retrained with seed {_fmt(rep.get('seed'))}: identical weights "
                         f"{_fmt(same.get('identical_weights'))}, identical metrics "
                         f"{_fmt(same.get('identical_metrics'))}")
        for name, sp in (rep.get("spread") or {}).items():
            seeds = ", ".join(str(r.get("seed")) for r in rep.get("seeds") or [])
            lines.append(f"* {name} across seeds {seeds}: {_fmt(sp.get('min'))}–{_fmt(sp.get('max'))} "
                         f"(spread {_fmt(sp.get('spread'))})")
    load = ev.get("load")
    if isinstance(load, dict):
        lines += ["", "### Load", "", f"* {_fmt(load.get('requests'))} cases in batches of {_fmt(load.get('batch'))}: "
                  f"p50 {_fmt(load.get('p50_ms'))} ms, p99 {_fmt(load.get('p99_ms'))} ms, "
                  f"{_fmt(load.get('throughput'))} cases/s"]
    td = card.get("training_data", {})
    lines += ["", "## Training data", "", f"* Dataset {_fmt(td.get('dataset_ref'))} "
              f"(`{_fmt(td.get('dataset_digest'))}`), label set {_fmt(td.get('label_set'))}",
              f"* Readers: {_fmt(td.get('readers'))}; agreement {_fmt(td.get('agreement'))}; consensus "
              f"{_fmt(td.get('consensus_method'))}", f"* Summary: {_fmt(td.get('summary'))}", ""]
    lines += ["## Software", "", *(f"* {s['name']} {s['version']}" for s in card.get("software", [])), ""]
    ch = card.get("changes", {})
    lines += ["## Changes", "", f"Previous version: {_fmt(ch.get('previous'))}; data changed "
              f"{_fmt(ch.get('data_changed'))}; code changed {_fmt(ch.get('code_changed'))}", ""]
    for k, delta in (ch.get("metrics") or {}).items():
        lines.append(f"* {k}: {_fmt(delta.get('before'))} → {_fmt(delta.get('after'))}")
    for k, delta in (ch.get("params") or {}).items():
        lines.append(f"* param {k}: {_fmt(delta.get('before'))} → {_fmt(delta.get('after'))}")
    return "\n".join(lines).rstrip() + "\n"


def to_html(card: dict[str, Any]) -> str:
    """A self-contained HTML page of the card (its Markdown rendered, raw HTML in values escaped)."""
    from markdown_it import MarkdownIt

    title = html.escape(str(card.get("model_details", {}).get("ref", "model")))
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown(card))
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Model card: {title}</title>"
            "<style>body{font:14px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style></head>"
            f"<body>{body}</body></html>")
