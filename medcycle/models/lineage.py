"""Lineage of a model version: data → labels → run → model → aliases → deployments (what serving did with it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medcycle.models.registry import alias_history, info, resolve


def of(session: Session, ref: str) -> dict[str, Any]:
    """The chain of records a version came from, each with its id and a short description."""
    row = resolve(session, ref)
    v = info(session, row)
    chain: list[dict[str, Any]] = []
    data_detail = None
    if row.dataset_digest:
        from medcycle.datasets.tables import DatasetRow, DatasetVersionRow

        version = session.get(DatasetVersionRow, row.dataset_digest)
        if version is not None:
            dataset = session.get(DatasetRow, version.dataset_id)
            data_detail = (f"{dataset.name if dataset else '?'} v{version.seq}: {version.n_items} items, "
                           f"{version.n_patients} patients")
    chain.append({"stage": "data", "id": row.dataset_digest, "ref": row.dataset_ref, "detail": data_detail})
    chain.append({"stage": "labels", "id": row.label_set, "detail": None})
    run_detail = None
    if row.run_id:
        from medcycle.experiments.tables import RunRow

        run = session.get(RunRow, row.run_id)
        if run is not None:
            run_detail = f"{run.name} ({run.status}, {run.verdict}); hypothesis {run.hypothesis or '-'}"
    chain.append({"stage": "run", "id": row.run_id, "commit": row.commit, "detail": run_detail})
    chain.append({"stage": "model", "id": v.ref, "weights": row.weights_digest,
                  "detail": f"weights {row.weights_digest[:12]}…"})
    moves = [m for m in alias_history(session, v.model) if v.ref in (m.from_ref, m.to_ref)]
    chain.append({"stage": "aliases", "id": ", ".join(v.aliases) or None,
                  "detail": "; ".join(f"{m.action} {m.alias} {'to' if m.to_ref == v.ref else 'away from'} it "
                                      f"({m.at:%Y-%m-%d %H:%M} by {m.by})" for m in moves[-5:]) or None,
                  "moves": [m.to_dict() for m in moves]})
    chain.append(_deployments(session, row.id, v.ref))
    return {"ref": v.ref, "chain": chain}


def _deployments(session: Session, version_id: str, ref: str) -> dict[str, Any]:
    """What the inference service did with this version: results it computed and the predictions it logged."""
    from medcycle.monitoring.tables import PredictionRow
    from medcycle.serving.tables import ServingResultRow

    results, first, last = session.execute(
        select(func.count(), func.min(ServingResultRow.created_at), func.max(ServingResultRow.created_at))
        .where(ServingResultRow.model_version_id == version_id)).one()
    by_source: dict[str | None, int] = {src: int(n) for src, n in session.execute(
        select(PredictionRow.source, func.count()).where(PredictionRow.model_version == ref)
        .group_by(PredictionRow.source))}
    served = sum(by_source.values())
    detail = None
    if results or served:
        sources = ", ".join(f"{src or 'unknown'} {n}" for src, n in sorted(by_source.items(), key=str))
        detail = (f"{results} results stored"
                  + (f", {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M}" if first and last else "")
                  + (f"; {served} predictions logged ({sources})" if served else ""))
    return {"stage": "deployments", "id": f"{results} results" if results else None, "detail": detail,
            "results": int(results), "predictions": {str(k): int(n) for k, n in by_source.items()},
            "first_at": first.isoformat() if first else None, "last_at": last.isoformat() if last else None}
