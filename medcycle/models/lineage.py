"""Lineage of a model version: data → labels → run → model → aliases (and deployments, once serving exists)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from medcycle.models.registry import info, resolve


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
    chain.append({"stage": "aliases", "id": ", ".join(v.aliases) or None, "detail": None})
    return {"ref": v.ref, "chain": chain}
