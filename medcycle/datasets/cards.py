"""Dataset cards: generated from the database when a version is frozen, stored with it (JSON, Markdown, HTML).

The card follows *Datasheets for Datasets* (Gebru et al.): motivation, composition, collection process,
preprocessing, uses, distribution and maintenance, with the additions a medical-imaging dataset needs:
counts by modality, body part, source, scanner and year; each source's de-identification profile; the
label schema and class balance per split; the split policy; the leakage check; and the changes against
the previous version. Facts come from the catalog; the human fields (motivation, licence, uses, …) are
edited with ``medcycle dataset card edit`` and kept in the database, so a card can be re-rendered with the
current text (``live``) or shown exactly as frozen.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.catalog.tables import SeriesRow, SourceRow
from medcycle.datasets.items import chunks, get_dataset
from medcycle.datasets.labels import LabelSetInfo
from medcycle.datasets.manifest import Manifest
from medcycle.datasets.splits import LeakageReport, SplitPolicy, class_balance
from medcycle.datasets.tables import DatasetRow, DatasetVersionRow
from medcycle.errors import UsageError, ValidationFailed
from medcycle.store.base import utcnow

CARD_FORMAT = "medcycle.dataset-card/1"

#: The fields people write (the rest of the card is generated), with what each should say.
HUMAN_FIELDS: Mapping[str, str] = {
    "motivation": "Why the dataset was created, for which task, and who funded or asked for it.",
    "collection_process": "How the images were selected and acquired (inclusion/exclusion criteria, period).",
    "preprocessing": "Cleaning and preprocessing beyond de-identification; how labels were made.",
    "intended_uses": "Tasks the dataset is suited for.",
    "out_of_scope_uses": "Uses it must not be put to (e.g. clinical decisions, other populations).",
    "limitations": "Known biases, gaps and caveats (population, devices, label noise).",
    "licence": "Licence and terms of use of the dataset as a whole.",
    "maintenance": "Who maintains the dataset, how to report problems, how often it is updated.",
    "citation": "How to cite the dataset.",
}

#: The longest text one human field may hold: a few pages; a longer write-up belongs in a document linked here.
MAX_FIELD_CHARS = 20_000
#: The control characters a human field may hold (tab and line ends); any other is refused: a NUL cannot be
#: stored in a PostgreSQL text, and the others (escape sequences, bells, form feeds) would act on a terminal
#: that prints the card instead of being shown.
ALLOWED_CONTROLS = frozenset("\t\n\r")


def _control_at(text: str) -> int | None:
    """Where the first control character not in :data:`ALLOWED_CONTROLS` is in ``text``, or None."""
    for at, ch in enumerate(text):
        if (ch < " " or "\x7f" <= ch <= "\x9f") and ch not in ALLOWED_CONTROLS:
            return at
    return None


def check_fields(fields: Mapping[str, str | None]) -> None:
    """Refuse human field texts that are too long or hold control characters; names every field at fault.

    The texts are measured as :func:`edit_card` stores them (stripped); every path that writes them (the
    CLI, the REST API, the web form, the Python API) goes through here.

    Raises:
        ValidationFailed: one sentence per field at fault, with what to do in the hint.
    """
    too_long: list[str] = []
    controls: list[str] = []
    for key, value in fields.items():
        text = (value or "").strip()
        if len(text) > MAX_FIELD_CHARS:
            too_long.append(f"{key}: longer than {MAX_FIELD_CHARS:,} characters ({len(text):,})")
        at = _control_at(text)
        if at is not None:
            ch = text[at]
            name = " (NUL)" if ch == "\x00" else ""
            controls.append(f"{key}: control character U+{ord(ch):04X}{name} at character {at + 1}")
    if not too_long and not controls:
        return
    hints = ["Nothing was saved."]
    if too_long:
        hints.append(f"Shorten the text to at most {MAX_FIELD_CHARS:,} characters per field, or keep the full "
                     "write-up in a document and link it here.")
    if controls:
        hints.append("Remove the control character (often pasted from a PDF or a terminal); tabs and new "
                     "lines are kept.")
    raise ValidationFailed("; ".join(too_long + controls), hint=" ".join(hints),
                           fields=sorted({p.partition(":")[0] for p in too_long + controls}))


BREAKDOWNS: Mapping[str, tuple[str, ...]] = {
    "modality": ("modality",), "body_part": ("body_part",), "source": ("source",),
    "scanner": ("manufacturer", "model"), "year": ("year",),
}


_SERIES_FIELDS = ("body_part", "manufacturer", "model", "year")  # breakdown fields the manifest does not carry


def _series_fields(session: Session, series: set[str]) -> dict[str, tuple[Any, ...]]:
    """``_SERIES_FIELDS`` of each series, read in chunks by primary key."""
    cols = [getattr(SeriesRow, f) for f in _SERIES_FIELDS]
    out: dict[str, tuple[Any, ...]] = {}
    for part in chunks(sorted(series)):
        out.update((uid, tuple(rest)) for uid, *rest in session.execute(
            select(SeriesRow.uid, *cols).where(SeriesRow.uid.in_(part))))
    return out


def _null_first(value: Any) -> tuple[bool, Any]:
    return (value is not None, value)


def breakdowns(session: Session, manifest: Manifest) -> dict[str, list[dict[str, Any]]]:
    """Patients, studies, series, instances and bytes per value of each of :data:`BREAKDOWNS`, largest first.

    Counted from the manifest's items (which carry patient, study, series, source, modality and bytes),
    folded per series, and one read of the other series fields: a pass over the items and one over the
    series per breakdown, not one grouped join of the catalog per breakdown (five of them cost more than
    the rest of a freeze together).
    """
    per_series: dict[str, list[Any]] = {}  # series -> [patient, study, items, bytes, source, modality]
    for item in manifest.items:
        row = per_series.get(item.series)
        if row is None:
            per_series[item.series] = [item.patient, item.study, 1, item.bytes, item.source, item.modality]
        else:
            row[2] += 1
            row[3] += item.bytes
    extra = _series_fields(session, set(per_series))
    unknown = (None,) * len(_SERIES_FIELDS)
    names = ("source", "modality", *_SERIES_FIELDS)
    rows = [(r, (r[4], r[5], *extra.get(uid, unknown))) for uid, r in per_series.items()]
    out: dict[str, list[dict[str, Any]]] = {}
    for key, fields in BREAKDOWNS.items():
        at = [names.index(f) for f in fields]
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for r, known in rows:  # every field of a breakdown is a series field: one step per series
            g = groups.get(values := tuple(known[k] for k in at))
            if g is None:
                g = groups[values] = [set(), set(), 0, 0, 0]
            g[0].add(r[0])
            g[1].add(r[1])
            g[2] += 1
            g[3] += r[2]
            g[4] += r[3]
        ordered = sorted(groups.items(), key=lambda kv: (-kv[1][3], *map(_null_first, kv[0])))
        out[key] = [{"value": " ".join(str(v) for v in values if v is not None) or "(unknown)",
                     "patients": len(g[0]), "studies": len(g[1]), "series": g[2], "instances": g[3],
                     "bytes": int(g[4])} for values, g in ordered]
    return out


def _sources(session: Session, names: set[str]) -> list[dict[str, Any]]:
    rows = session.scalars(select(SourceRow).where(SourceRow.name.in_(sorted(names))).order_by(SourceRow.name))
    return [{"name": r.name, "description": r.description, "licence": r.licence, "consent_basis": r.consent_basis,
             "deid_profile": dict(r.deid_profile or {})} for r in rows]


def build_card(
    session: Session, ds: DatasetRow, version: DatasetVersionRow, manifest: Manifest,
    *, label_set: LabelSetInfo | None, leakage: LeakageReport, changes: Mapping[str, Any] | None,
    parent_seq: int | None,
) -> dict[str, Any]:
    """The card of a version being frozen with the items of ``manifest``."""
    policy = SplitPolicy.from_dict(version.split_policy)
    unlabeled = sum(1 for i in manifest.items if not i.labels)
    return {
        "format": CARD_FORMAT,
        "dataset": ds.name,
        "description": ds.description,
        "version": {"id": version.id, "seq": version.seq, "ref": f"{ds.name}@v{version.seq}",
                    "created_at": version.created_at.isoformat(), "created_by": version.created_by,
                    "message": version.message, "parent_seq": parent_seq},
        "human": {k: (ds.card_fields or {}).get(k) for k in HUMAN_FIELDS},
        "facts": {
            "totals": {"items": version.n_items, "patients": version.n_patients, "studies": version.n_studies,
                       "series": version.n_series, "bytes": version.bytes},
            "breakdowns": breakdowns(session, manifest),
            "sources": _sources(session, {i.source for i in manifest.items}),
            "labels": None if label_set is None else {
                "label_set": label_set.id, "level": label_set.level.value, "classes": list(label_set.classes),
                "origin": label_set.origin, "unlabeled_items": unlabeled},
            "class_balance": class_balance(manifest.items),
            "split_policy": version.split_policy,
            "split_policy_text": policy.describe(),
            "split_counts": version.split_counts,
            "leakage": leakage.to_dict(limit=20),
            "changes": dict(changes) if changes is not None else None,
        },
    }


def card_json_bytes(card: Mapping[str, Any]) -> bytes:
    return json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False).encode()


def edit_card(
    session: Session, name: str, fields: Mapping[str, str | None], *, actor: str = "system", via: str = "library"
) -> dict[str, str]:
    """Set (or, with an empty value, clear) human fields of a dataset's card; returns all of them.

    Raises:
        UsageError: a field is not one of :data:`HUMAN_FIELDS`.
        ValidationFailed: a text is longer than :data:`MAX_FIELD_CHARS` or holds a control character other
            than tab and line ends (:func:`check_fields`); nothing is saved.
    """
    unknown = sorted(set(fields) - set(HUMAN_FIELDS))
    if unknown:
        raise UsageError(f"unknown card field(s): {', '.join(unknown)}",
                         hint=f"Editable fields: {', '.join(HUMAN_FIELDS)}.")
    check_fields(fields)
    ds = get_dataset(session, name)
    current = dict(ds.card_fields or {})
    for key, value in fields.items():
        if value is None or not value.strip():
            current.pop(key, None)
        else:
            current[key] = value.strip()
    ds.card_fields = current
    ds.card_edited_at = ds.updated_at = utcnow()
    audit.record(session, actor, "dataset.card.edit", target_kind="dataset", target_id=name, via=via,
                 fields=sorted(fields))
    return current


def version_card(session: Session, row: DatasetVersionRow, *, live: bool = True) -> dict[str, Any]:
    """The card stored with a version; with ``live`` the human fields are today's text from the database."""
    card: dict[str, Any] = json.loads(json.dumps(row.card))
    if live:
        ds = session.get_one(DatasetRow, row.dataset_id)
        card["human"] = {k: (ds.card_fields or {}).get(k) for k in HUMAN_FIELDS}
        card["human_edited_at"] = ds.card_edited_at.isoformat() if ds.card_edited_at else None
    return card


# -- rendering --------------------------------------------------------------------------------------
Block = tuple[str, Any]  # ("text", str) | ("missing", field) | ("table", (title, columns, rows)) | ("list", items)


def _human(card: Mapping[str, Any], key: str, title: str | None = None) -> list[Block]:
    text = (card.get("human") or {}).get(key)
    head: list[Block] = [("subtitle", title)] if title else []
    return [*head, ("text", text) if text else ("missing", key)]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _table(title: str, rows: list[dict[str, Any]]) -> Block:
    cols = ["value", "patients", "studies", "series", "instances", "size"]
    body = [[r["value"], r["patients"], r["studies"], r["series"], r["instances"], _size(r["bytes"])] for r in rows]
    return ("table", (title, cols, body))


def sections(card: Mapping[str, Any]) -> list[tuple[str, list[Block]]]:
    """The card laid out as Datasheets-for-Datasets sections (shared by the Markdown and HTML renderers)."""
    f = card["facts"]
    t = f["totals"]
    titles = {"modality": "By modality", "body_part": "By body part", "source": "By source",
              "scanner": "By scanner (manufacturer, model)", "year": "By year (shifted study date)"}
    composition: list[Block] = [
        ("text", f"{t['items']} images ({_size(t['bytes'])}) of {t['patients']} patients, {t['studies']} studies, "
                 f"{t['series']} series. Every identifier is a keyed pseudonym; no original identifier is stored."),
        *[_table(titles[k], rows) for k, rows in f["breakdowns"].items()],
    ]
    labels = f["labels"]
    if labels:
        composition.append(("list", [f"Label set `{labels['label_set'][:12]}` ({labels['level']}-level, "
                                     f"from {labels['origin'] or 'an import'})",
                                     f"Classes: {', '.join(labels['classes'])}",
                                     f"Images without a label: {labels['unlabeled_items']}"]))
    else:
        composition.append(("text", "No label set: the images are unlabeled."))
    balance = f["class_balance"]
    classes = sorted({c for per in balance.values() for c in per})
    composition.append(("table", ("Class balance per split (images)", ["split", *classes],
                                  [[s, *[per.get(c, 0) for c in classes]] for s, per in balance.items()])))
    composition.append(("text", f"Split policy: {f['split_policy_text']}."))
    composition.append(("table", ("Splits", ["split", "patients", "images", "size"],
                                  [[s, c["patients"], c["items"], _size(c["bytes"])]
                                   for s, c in f["split_counts"].items()])))
    leak = f["leakage"]
    composition.append(("text", "Leakage check: passed (no patient and no image in two splits)." if leak["ok"] else
                        f"Leakage check: FAILED: {leak['patients_in_several_splits']} patient(s) and "
                        f"{leak['images_in_several_splits']} image(s) appear in several splits."))
    sources = f["sources"]
    deid: list[Block] = [("text", "De-identification happens at ingest, before anything is stored "
                          "(DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile).")]
    for s in sources:
        options = [f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(s["deid_profile"].items())]
        deid.append(("subtitle", f"Source {s['name']}"))
        deid.append(("list", options or ["(no profile recorded)"]))
    deid.extend(_human(card, "preprocessing", "Other preprocessing and labelling"))
    collection: list[Block] = [*_human(card, "collection_process"), ("table", ("Sources", [
        "source", "description", "consent basis"], [[s["name"], s["description"] or "-", s["consent_basis"] or "-"]
                                                    for s in sources]))]
    distribution: list[Block] = [
        *_human(card, "licence", "Licence"),
        ("table", ("Source licences", ["source", "licence"], [[s["name"], s["licence"] or "-"] for s in sources])),
        ("text", f"Materialise it with `medcycle dataset pull {card['version']['ref']} --to DIR`."),
        *_human(card, "citation", "Citation"),
    ]
    ch = f["changes"]
    version = card["version"]
    history = ("This is the first version." if ch is None else
               f"Against v{version['parent_seq']}: {ch['added']} images added, {ch['removed']} removed, "
               f"{ch['relabeled']} relabeled, {ch['moved']} moved between splits"
               + (", new label set" if ch.get("label_set_changed") else "")
               + (", new split policy" if ch.get("split_policy_changed") else "") + ".")
    maintenance: list[Block] = [*_human(card, "maintenance"), ("text", history)]
    return [
        ("Motivation", [*([("text", card["description"])] if card.get("description") else []),
                        *_human(card, "motivation")]),
        ("Composition", composition),
        ("Collection process", collection),
        ("Preprocessing and de-identification", deid),
        ("Uses", [*_human(card, "intended_uses", "Intended uses"), *_human(card, "out_of_scope_uses", "Out of scope"),
                  *_human(card, "limitations", "Limitations")]),
        ("Distribution and licence", distribution),
        ("Maintenance and changes", maintenance),
    ]


def _missing(card: Mapping[str, Any], key: str) -> str:
    return (f"Not documented yet: `medcycle dataset card edit {card['dataset']} "
            f"--field {key}=...` ({HUMAN_FIELDS[key]})")


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(card: Mapping[str, Any]) -> str:
    v = card["version"]
    out = [f"# Dataset card: {card['dataset']} v{v['seq']}", "",
           f"Version `{v['id']}`, frozen {v['created_at']} by {v['created_by']}."
           + (f" {v['message']}" if v.get("message") else ""), ""]
    for title, blocks in sections(card):
        out += [f"## {title}", ""]
        for kind, value in blocks:
            if kind == "text":
                out += [str(value), ""]
            elif kind == "missing":
                out += [f"_{_missing(card, value)}_", ""]
            elif kind == "subtitle":
                out += [f"### {value}", ""]
            elif kind == "list":
                out += [*(f"- {x}" for x in value), ""]
            elif kind == "table":
                name, cols, rows = value
                out += [f"**{name}**", ""]
                if not rows:
                    out += ["(none)", ""]
                    continue
                out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                out.append("")
    return "\n".join(out).rstrip() + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1f2933}"
        "table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #cbd2d9;padding:.25rem .6rem;"
        "text-align:left}th{background:#f0f4f8}.missing{color:#9a6700;font-style:italic}code{background:#f0f4f8}")


def render_html(card: Mapping[str, Any]) -> str:
    e = html.escape
    v = card["version"]
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Dataset card: {e(card['dataset'])} v{v['seq']}</title><style>{_CSS}</style></head><body>",
           f"<h1>Dataset card: {e(card['dataset'])} v{v['seq']}</h1>",
           f"<p>Version <code>{e(v['id'])}</code>, frozen {e(v['created_at'])} by {e(v['created_by'])}."
           + (f" {e(v['message'])}" if v.get("message") else "") + "</p>"]
    for title, blocks in sections(card):
        out.append(f"<section><h2>{e(title)}</h2>")
        for kind, value in blocks:
            if kind == "text":
                out.append(f"<p>{e(str(value))}</p>")
            elif kind == "missing":
                out.append(f'<p class="missing">{e(_missing(card, value))}</p>')
            elif kind == "subtitle":
                out.append(f"<h3>{e(str(value))}</h3>")
            elif kind == "list":
                out.append("<ul>" + "".join(f"<li>{e(str(x))}</li>" for x in value) + "</ul>")
            elif kind == "table":
                name, cols, rows = value
                head = "".join(f"<th>{e(str(c))}</th>" for c in cols)
                body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                out.append(f"<table><caption>{e(name)}</caption><thead><tr>{head}</tr></thead>"
                           f"<tbody>{body or f'<tr><td colspan={len(cols)}>(none)</td></tr>'}</tbody></table>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render(card: Mapping[str, Any], fmt: str) -> str:
    if fmt == "md":
        return render_markdown(card)
    if fmt == "html":
        return render_html(card)
    if fmt == "json":
        return card_json_bytes(card).decode()
    raise UsageError(f"unknown card format {fmt!r}", hint="Choose md, html or json.")

