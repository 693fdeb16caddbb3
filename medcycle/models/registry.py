"""Register model versions with their lineage, move aliases (promote, rollback), record gate reports.

References: ``NAME`` (the latest version), ``NAME@vN`` / ``NAME@N`` (a version), ``NAME@ALIAS`` (what the
alias points at now). Promotion to an alias needs a passing gate report for that version (``medcycle
evaluate`` writes them) or ``force`` with a reason, which is audited as such. Rollback replays the alias's
moves as a stack (promote pushes, rollback pops) and points the alias at the version it held before: one
row update, so it takes milliseconds; the serving layer resolves the alias again on its next job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import Conflict, NotFound, UsageError, ValidationFailed
from medcycle.models.tables import AliasEventRow, AliasRow, GateReportRow, ModelRow, ModelVersionRow, PinnedCaseRow
from medcycle.objects.base import DIGEST_RE, ObjectStore
from medcycle.objects.refs import add_ref
from medcycle.store.base import new_id, utcnow

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
VERSION_RE = re.compile(r"^v?(\d{1,9})$")
RESERVED_ALIASES = frozenset({"latest"})
TARGET_KIND = "model"
REF_KIND = "model_version"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    id: str
    model: str
    version: int
    weights_digest: str
    weights_bytes: int | None
    run_id: str | None
    dataset_ref: str | None
    dataset_digest: str | None
    label_set: str | None
    commit: str | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    contract: dict[str, Any]
    card: dict[str, Any]
    aliases: tuple[str, ...]
    note: str | None
    created_by: str
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.model}@v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "ref": self.ref, "model": self.model, "version": self.version,
                "weights_digest": self.weights_digest, "weights_bytes": self.weights_bytes, "run_id": self.run_id,
                "dataset_ref": self.dataset_ref, "dataset_digest": self.dataset_digest, "label_set": self.label_set,
                "commit": self.commit, "metrics": self.metrics, "params": self.params, "contract": self.contract,
                "aliases": list(self.aliases), "note": self.note, "created_by": self.created_by,
                "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class AliasMove:
    model: str
    alias: str
    action: str
    from_ref: str | None
    to_ref: str | None
    reason: str | None
    by: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "alias": self.alias, "action": self.action, "from": self.from_ref,
                "to": self.to_ref, "reason": self.reason, "by": self.by, "at": self.at.isoformat()}


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a valid model name",
                         hint="Use 1-128 lower-case letters, digits, '.', '_' or '-', starting with a letter or "
                              "digit, e.g. chest-xr-nodules.")
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias) or alias in RESERVED_ALIASES or VERSION_RE.match(
            alias):
        raise UsageError(f"{alias!r} is not a valid alias",
                         hint="Use a lower-case word such as production, staging or canary (not 'latest' or vN).")
    return alias


def _aliases(session: Session, version_id: str) -> tuple[str, ...]:
    return tuple(session.scalars(select(AliasRow.alias).where(AliasRow.version_id == version_id)
                                 .order_by(AliasRow.alias)))


def info(session: Session, row: ModelVersionRow) -> VersionInfo:
    return VersionInfo(row.id, row.model, row.version, row.weights_digest, row.weights_bytes, row.run_id,
                       row.dataset_ref, row.dataset_digest, row.label_set, row.commit, dict(row.metrics or {}),
                       dict(row.params or {}), dict(row.contract or {}), dict(row.card or {}),
                       _aliases(session, row.id), row.note, row.created_by, row.created_at)


def _model(session: Session, name: str) -> ModelRow:
    row = session.get(ModelRow, check_name(name))
    if row is None:
        raise NotFound(f"no model named {name!r}", hint="See `medcycle model list`, or register one with "
                                                         "`medcycle model register NAME --run RUN`.")
    return row


def resolve(session: Session, ref: str) -> ModelVersionRow:
    """The version ``ref`` names (see the module docstring)."""
    if not isinstance(ref, str) or not ref.strip():
        raise UsageError("a model reference is empty", hint="Write NAME, NAME@vN or NAME@ALIAS.")
    name, at, which = ref.strip().partition("@")
    if at and not which.strip():
        raise UsageError(f"the model reference {ref.strip()[:80]!r} names nothing after '@'",
                         hint=f"Write {name}, {name}@vN or {name}@ALIAS (e.g. {name}@production).")
    _model(session, name)
    if not which or which == "latest":
        row = session.scalar(select(ModelVersionRow).where(ModelVersionRow.model == name)
                             .order_by(ModelVersionRow.version.desc()).limit(1))
        if row is None:
            raise NotFound(f"model {name!r} has no versions", hint=f"Register one: medcycle model register {name} "
                                                                    "--run RUN.")
        return row
    if m := VERSION_RE.match(which):
        row = session.scalar(select(ModelVersionRow).where(ModelVersionRow.model == name,
                                                           ModelVersionRow.version == int(m.group(1))))
        if row is None:
            raise NotFound(f"{name} has no version {which}", hint=f"See its versions: medcycle model show {name}.")
        return row
    alias = session.get(AliasRow, (name, which))
    if alias is None:
        raise NotFound(f"{name} has no alias {which!r}",
                       hint=f"Promote a version first: medcycle model promote {name}@vN --alias {which}.")
    version = session.get(ModelVersionRow, alias.version_id)
    assert version is not None  # RESTRICT foreign key
    return version


def run_lineage(session: Session, run_id: str, artifact: str = "model") -> dict[str, Any]:
    """What registering the run's model would record: weights digest, data, commit, final metrics, params."""
    return _from_run(session, run_id, artifact)


def _from_run(session: Session, run_id: str, artifact: str) -> dict[str, Any]:
    """Weights, data and code of a tracked run (the experiments layer)."""
    from medcycle.experiments.tables import ArtifactRow, CaptureRow, MetricSeriesRow, RunParamRow, RunRow

    run = session.get(RunRow, run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}", hint="See `medcycle run list`; give the run's id.")
    art = session.scalar(select(ArtifactRow).where(ArtifactRow.run_id == run_id, ArtifactRow.kind == "model",
                                                   ArtifactRow.name == artifact)
                         .order_by(ArtifactRow.seq.desc()).limit(1))
    if art is None or not art.digest:
        names = sorted(set(session.scalars(select(ArtifactRow.name).where(ArtifactRow.run_id == run_id,
                                                                          ArtifactRow.kind == "model"))))
        raise NotFound(f"run {run_id} logged no model named {artifact!r}",
                       hint=f"Its models: {', '.join(names)}." if names else
                       "Log one with run.log_model(model) or register a file with --weights.")
    capture = session.get(CaptureRow, run_id)
    metrics = {r.key: r.last_value for r in session.scalars(select(MetricSeriesRow).where(
        MetricSeriesRow.run_id == run_id)) if not r.key.startswith("system/") and r.last_value is not None}
    params = {r.key: (r.value_num if r.value_num is not None else r.value)
              for r in session.scalars(select(RunParamRow).where(RunParamRow.run_id == run_id))}
    label_set = None
    if run.dataset_digest:
        from medcycle.datasets.tables import DatasetVersionRow

        version = session.get(DatasetVersionRow, run.dataset_digest)
        label_set = version.label_set_id if version is not None else None
    return {"weights_digest": art.digest, "weights_bytes": art.size, "dataset_ref": run.dataset_ref,
            "dataset_digest": run.dataset_digest, "label_set": label_set,
            "commit": capture.commit if capture is not None else None, "metrics": metrics, "params": params}


def register(
    session: Session,
    objects: ObjectStore,
    name: str,
    *,
    run_id: str | None = None,
    artifact: str = "model",
    weights_digest: str | None = None,
    contract: dict[str, Any] | None = None,
    description: str | None = None,
    task: str | None = None,
    note: str | None = None,
    actor: str = "system",
    via: str = "library",
) -> VersionInfo:
    """Register a new version of ``name`` from a run's logged model (``run_id``) or stored weights."""
    check_name(name)
    if (run_id is None) == (weights_digest is None):
        raise UsageError("give either a run or a weights digest",
                         hint="medcycle model register NAME --run RUN (or --weights FILE).")
    if contract is not None and not isinstance(contract, dict):
        raise ValidationFailed("the input/output contract must be a JSON object",
                               hint='E.g. {"input": {"modality": ["CR"]}, "output": {"classes": ["nodule"]}}.')
    if run_id is not None:
        lineage = _from_run(session, run_id, artifact)
    else:
        assert weights_digest is not None
        if not DIGEST_RE.match(weights_digest):
            raise UsageError(f"{weights_digest!r} is not an object digest", hint="Give 64 hex characters.")
        lineage = {"weights_digest": weights_digest, "weights_bytes": None}
    try:
        lineage["weights_bytes"] = objects.stat(lineage["weights_digest"]).size
    except NotFound as exc:
        raise NotFound(f"the weights object {lineage['weights_digest'][:12]}… is not in the object store",
                       hint="Sync the run first (medcycle run sync) or store the file (medcycle store put).") from exc
    model = session.get(ModelRow, name)
    if model is None:
        model = ModelRow(name=name, description=description, task=task, created_by=actor, created_at=utcnow())
        session.add(model)
        session.flush()
    elif description or task:
        model.description = description or model.description
        model.task = task or model.task
    last = session.scalar(select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model == name)) or 0
    row = ModelVersionRow(id=new_id(), model=name, version=last + 1, run_id=run_id, contract=dict(contract or {}),
                          card={}, note=note, created_by=actor, created_at=utcnow(),
                          **{k: v for k, v in lineage.items()})
    session.add(row)
    session.flush()
    add_ref(session, row.weights_digest, REF_KIND, row.id, size=row.weights_bytes)
    audit.record(session, actor, "model.register", target_kind=TARGET_KIND, target_id=f"{name}@v{row.version}",
                 via=via, run=run_id, weights=row.weights_digest)
    return info(session, row)


def list_models(session: Session) -> list[dict[str, Any]]:
    out = []
    for model in session.scalars(select(ModelRow).order_by(ModelRow.name)):
        latest = session.scalar(select(ModelVersionRow).where(ModelVersionRow.model == model.name)
                                .order_by(ModelVersionRow.version.desc()).limit(1))
        aliases = {a.alias: a.version_id for a in session.scalars(select(AliasRow).where(
            AliasRow.model == model.name))}
        numbers = {v.id: v.version for v in session.scalars(select(ModelVersionRow).where(
            ModelVersionRow.id.in_(list(aliases.values()))))} if aliases else {}
        out.append({"name": model.name, "task": model.task, "description": model.description,
                    "versions": latest.version if latest else 0,
                    "latest": f"{model.name}@v{latest.version}" if latest else None,
                    "aliases": {a: f"{model.name}@v{numbers[v]}" for a, v in sorted(aliases.items())}})
    return out


def versions(session: Session, name: str) -> list[VersionInfo]:
    _model(session, name)
    rows = session.scalars(select(ModelVersionRow).where(ModelVersionRow.model == name)
                           .order_by(ModelVersionRow.version))
    return [info(session, r) for r in rows]


def record_gate_report(
    session: Session, ref: str, *, passed: bool, summary: dict[str, Any], policy: str | None = None,
    dataset_digest: str | None = None, report_digest: str | None = None, actor: str = "system",
    via: str = "library",
) -> str:
    """Store the outcome of a version's release gates; returns the report id."""
    version = resolve(session, ref)
    row = GateReportRow(id=new_id(), version_id=version.id, passed=bool(passed), policy=policy,
                        dataset_digest=dataset_digest, summary=summary, report_digest=report_digest,
                        created_by=actor, created_at=utcnow())
    session.add(row)
    if report_digest:
        add_ref(session, report_digest, "gate_report", row.id)
    audit.record(session, actor, "model.gate_report", target_kind=TARGET_KIND,
                 target_id=f"{version.model}@v{version.version}", via=via, passed=row.passed, policy=policy)
    session.flush()
    return row.id


def gate_reports(session: Session, ref: str) -> list[GateReportRow]:
    version = resolve(session, ref)
    return list(session.scalars(select(GateReportRow).where(GateReportRow.version_id == version.id)
                                .order_by(GateReportRow.created_at.desc())))


def _ref_of(session: Session, version_id: str | None) -> str | None:
    if version_id is None:
        return None
    row = session.get(ModelVersionRow, version_id)
    return f"{row.model}@v{row.version}" if row is not None else version_id


def _move(session: Session, model: str, alias: str, action: str, to: ModelVersionRow | None, *, actor: str,
          reason: str | None = None, report_id: str | None = None, via: str) -> AliasMove:
    current = session.get(AliasRow, (model, alias), with_for_update=True)
    before = current.version_id if current is not None else None
    now = utcnow()
    if to is None:
        if current is not None:
            session.delete(current)
    elif current is None:
        session.add(AliasRow(model=model, alias=alias, version_id=to.id, updated_by=actor, updated_at=now))
    else:
        current.version_id, current.updated_by, current.updated_at = to.id, actor, now
    session.add(AliasEventRow(model=model, alias=alias, action=action, from_version_id=before,
                              to_version_id=to.id if to else None, report_id=report_id, reason=reason, by=actor,
                              at=now))
    session.flush()
    move = AliasMove(model, alias, action, _ref_of(session, before), _ref_of(session, to.id if to else None),
                     reason, actor, now)
    details: dict[str, Any] = {"from": move.from_ref, "to": move.to_ref, "reason": reason, "report": report_id}
    audit.record(session, actor, f"model.{action}", target_kind=TARGET_KIND, target_id=f"{model}@{alias}", via=via,
                 **details)
    return move


def promote(
    session: Session, ref: str, alias: str = "production", *, actor: str = "system", report_id: str | None = None,
    force_reason: str | None = None, via: str = "library",
) -> AliasMove:
    """Point ``alias`` at the version ``ref`` names; needs a passing gate report unless forced with a reason."""
    check_alias(alias)
    version = resolve(session, ref)
    target = f"{version.model}@v{version.version}"
    reason = (force_reason or "").strip() or None
    if force_reason is not None and reason is None:
        raise UsageError("a forced promotion needs a reason", hint='Add --reason "why the gates are skipped".')
    report: GateReportRow | None = None
    if report_id is not None:
        report = session.get(GateReportRow, report_id)
        if report is None or report.version_id != version.id:
            raise NotFound(f"no gate report {report_id!r} for {target}",
                           hint=f"See its reports: medcycle model show {target}.")
    else:
        report = session.scalar(select(GateReportRow).where(GateReportRow.version_id == version.id)
                                .order_by(GateReportRow.created_at.desc()).limit(1))
    if reason is None:
        if report is None:
            raise Conflict(f"{target} has no gate report: it cannot be promoted to {alias}",
                           hint=f"Run `medcycle evaluate {target} --on DATASET@TAG --policy FILE`, or promote with "
                                "--force --reason TEXT (audited).")
        if not report.passed:
            raise Conflict(f"{target} failed its release gates (report {report.id}): it cannot be promoted",
                           hint="Fix what failed and evaluate again, or --force --reason TEXT (audited).")
        from medcycle.models.cards import build, validate

        problems = validate(build(session, target))
        if problems:
            raise Conflict(f"the model card of {target} is incomplete: {'; '.join(problems[:3])}",
                           hint=f"Fill it in: medcycle model card {target} --set intended_use='…' "
                                "--set out_of_scope_use='…' (or --force --reason TEXT, audited).")
    current = session.get(AliasRow, (version.model, alias))
    if current is not None and current.version_id == version.id:
        raise Conflict(f"{alias} already points at {target}", hint="Nothing to do.")
    return _move(session, version.model, alias, "force" if reason else "promote", version, actor=actor,
                 reason=reason, report_id=report.id if report is not None else None, via=via)


def alias_history(session: Session, name: str, alias: str | None = None) -> list[AliasMove]:
    _model(session, name)
    query = select(AliasEventRow).where(AliasEventRow.model == name)
    if alias is not None:
        query = query.where(AliasEventRow.alias == check_alias(alias))
    return [AliasMove(e.model, e.alias, e.action, _ref_of(session, e.from_version_id),
                      _ref_of(session, e.to_version_id), e.reason, e.by, e.at)
            for e in session.scalars(query.order_by(AliasEventRow.seq))]


def _stack(session: Session, name: str, alias: str) -> list[str]:
    """The versions the alias held, as a stack: promote/force push, rollback pops, remove empties."""
    stack: list[str] = []
    for e in session.scalars(select(AliasEventRow).where(AliasEventRow.model == name, AliasEventRow.alias == alias)
                             .order_by(AliasEventRow.seq)):
        if e.action == "rollback":
            if stack:
                stack.pop()
        elif e.action == "remove":
            stack.clear()
        elif e.to_version_id is not None:
            stack.append(e.to_version_id)
    return stack


def rollback(session: Session, name: str, alias: str = "production", *, actor: str = "system",
             reason: str | None = None, via: str = "library") -> AliasMove:
    """Point ``alias`` back at the version it held before its last promotion."""
    _model(session, name)
    check_alias(alias)
    if session.get(AliasRow, (name, alias)) is None:
        raise NotFound(f"{name} has no alias {alias!r}", hint=f"See `medcycle model show {name}`.")
    stack = _stack(session, name, alias)
    if len(stack) < 2:
        raise Conflict(f"{name}@{alias} has no earlier version to roll back to",
                       hint=f"See its history: medcycle model history {name} --alias {alias}.")
    previous = session.get(ModelVersionRow, stack[-2])
    assert previous is not None
    return _move(session, name, alias, "rollback", previous, actor=actor, reason=reason, via=via)


def pin_case(session: Session, name: str, case_key: str, expected: str, *, reason: str | None = None,
             from_ref: str | None = None, actor: str = "system", via: str = "library") -> PinnedCaseRow:
    """Pin a case into the model's regression suite: every later evaluation must get ``expected`` on it."""
    _model(session, name)
    key, want = (case_key or "").strip(), (expected or "").strip()
    if not key or len(key) > 128 or not want or len(want) > 128:
        raise UsageError("a pinned case needs a case key and the expected answer (1-128 characters each)",
                         hint="E.g. medcycle model pin nodules 1.2.826… --expect lesion --reason 'missed by v3'.")
    version_id = resolve(session, from_ref).id if from_ref else None
    row = session.get(PinnedCaseRow, (name, key))
    if row is None:
        row = PinnedCaseRow(model=name, case_key=key, expected=want, reason=reason, from_version_id=version_id,
                            pinned_by=actor, pinned_at=utcnow())
        session.add(row)
    else:
        row.expected, row.reason, row.pinned_by, row.pinned_at = want, reason, actor, utcnow()
    audit.record(session, actor, "model.pin", target_kind=TARGET_KIND, target_id=name, via=via, case=key,
                 expected=want)
    session.flush()
    return row


def unpin_case(session: Session, name: str, case_key: str, *, actor: str = "system", via: str = "library") -> None:
    row = session.get(PinnedCaseRow, (check_name(name), case_key))
    if row is None:
        raise NotFound(f"{name} has no pinned case {case_key!r}", hint=f"See them: medcycle model pinned {name}.")
    session.delete(row)
    audit.record(session, actor, "model.unpin", target_kind=TARGET_KIND, target_id=name, via=via, case=case_key)


def pinned_cases(session: Session, name: str) -> list[PinnedCaseRow]:
    _model(session, name)
    return list(session.scalars(select(PinnedCaseRow).where(PinnedCaseRow.model == name)
                                .order_by(PinnedCaseRow.pinned_at, PinnedCaseRow.case_key)))
