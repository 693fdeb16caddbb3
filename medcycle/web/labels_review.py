"""The review of one item: each reader's reading, the consensus and the adjudication, as layers to draw.

Colours are fixed per item, so the legend on the page and the PNG agree: readers in name order take
:data:`medcycle.web.labels_images.PALETTE` in turn, the consensus is yellow and drawn thicker, the senior's
own adjudicated labels white. A blinded reader's only layer is their own, in the first colour (the colour
would otherwise tell where they stand among readers they may not know of).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from medcycle.auth.roles import Principal
from medcycle.errors import NotFound, UsageError
from medcycle.labels import access, readers, store, tasks
from medcycle.labels.adjudication import AdjudicationInfo, get_adjudication
from medcycle.labels.item_agreement import item_agreement
from medcycle.labels.model import Annotation
from medcycle.labels.schemas import SchemaInfo
from medcycle.labels.tables import AssignmentRow, LabelSchemaRow, LabelTaskRow, TaskItemRow
from medcycle.objects.base import ObjectStore
from medcycle.web import labels_data as data
from medcycle.web import labels_images as images

CONSENSUS = "consensus"
ADJUDICATION = "adjudication"


@dataclass(frozen=True, slots=True)
class Reading:
    reader: str
    color: str
    state: str  # assigned / submitted
    annotations: tuple[Annotation, ...]
    seconds: float | None
    submitted_at: datetime | None
    agreement: float | None  # this reader's mean agreement with the others on this item


@dataclass(frozen=True, slots=True)
class ReviewContext:
    schema: SchemaInfo
    role: access.Role
    readings: tuple[Reading, ...]
    consensus: data.ConsensusView
    adjudication: AdjudicationInfo | None
    adjudicated: tuple[Annotation, ...]  # the senior's own labels, when they gave them
    item_state: str
    agreement: float | None
    metric: str | None
    may_adjudicate: bool
    why_not: str | None  # why the caller may not resolve an open adjudication
    consensus_color: str = images.CONSENSUS_COLOR
    adjudication_color: str = images.ADJUDICATION_COLOR

    @property
    def layer_param(self) -> str:
        """The layers drawn by default: every reader who submitted, then the consensus and the adjudication."""
        names = [r.reader for r in self.readings if r.state == "submitted"]
        if self.consensus.annotations:
            names.append(CONSENSUS)
        if self.adjudicated:
            names.append(ADJUDICATION)
        return ",".join(names)


def _blind(role: access.Role, row: LabelTaskRow) -> bool:
    return role is access.Role.READER and bool(row.blinded)


def layer_colors(session: Session, principal: Principal, row: LabelTaskRow, role: access.Role,
                 item: str) -> dict[str, str]:
    """``reader → colour`` for everything the caller may see of ``item``."""
    if _blind(role, row):
        return {principal.name: images.PALETTE[0]}
    return images.reader_colors(sorted(tasks.item_readers(session, row.id, item)))


def _schema(session: Session, row: LabelTaskRow) -> SchemaInfo:
    return SchemaInfo.of(session.get_one(LabelSchemaRow, row.schema_id))


def _adjudication(session: Session, row: LabelTaskRow, item: str) -> AdjudicationInfo | None:
    try:
        return get_adjudication(session, row.id, item)
    except NotFound:
        return None


def _adjudicated(session: Session, objects: ObjectStore, row: LabelTaskRow, item: str,
                 entry: AdjudicationInfo | None) -> tuple[Annotation, ...]:
    if entry is None or entry.decision != "new":
        return ()
    found = store.find(session, task_id=row.id, item=item, reader=entry.resolved_by, stage=store.Stage.ADJUDICATION)
    return tuple(store.load(objects, r) for r in found if r.id in entry.annotation_ids)


def review_context(session: Session, objects: ObjectStore, principal: Principal, row: LabelTaskRow,
                   role: access.Role, item: str) -> ReviewContext:
    """Everything the review page shows; the caller has passed :func:`medcycle.web.labels.check_review`."""
    schema = _schema(session, row)
    states = tasks.item_readers(session, row.id, item)
    submitted = tasks.readings(session, objects, row.id, item)
    scored = item_agreement(submitted, sorted(schema.kinds))
    colors = layer_colors(session, principal, row, role, item)
    out = []
    for reader in sorted(states):
        assignment = session.get_one(AssignmentRow, (row.id, item, reader))
        out.append(Reading(reader, colors[reader], states[reader], tuple(submitted.get(reader, ())),
                           assignment.seconds, assignment.submitted_at,
                           scored.by_reader.get(reader) if scored is not None else None))
    entry = _adjudication(session, row, item)
    item_row = session.get_one(TaskItemRow, (row.id, item))
    may, why = False, None
    if entry is not None and entry.state == "open":
        if principal.name in states:
            why = "You read this item, so another senior reader resolves it."
        elif not readers.is_senior(session, principal.name):
            why = (f"Only senior readers resolve adjudications: an admin can make you one with "
                   f"`medcycle labels reader set {principal.name} --senior`.")
        elif row.state != "open":
            why = "The task is closed."
        else:
            may = True
    return ReviewContext(schema, role, tuple(out), data.item_consensus(item, submitted, schema), entry,
                         _adjudicated(session, objects, row, item, entry), item_row.state, item_row.agreement,
                         item_row.metric, may, why)


def review_layers(session: Session, objects: ObjectStore, principal: Principal, row: LabelTaskRow,
                  role: access.Role, item: str, names: Sequence[str]) -> list[images.Layer]:
    """The layers ``names`` (readers, ``consensus``, ``adjudication``) the caller may see, ready to draw.

    Raises:
        LabelsHidden: a blinded reader asked for anything but their own layer.
        UsageError: a name that is neither a reader of the item nor a known layer.
    """
    if _blind(role, row):
        others = [n for n in names if n != principal.name]
        if others:
            raise access.LabelsHidden(f"{tasks.ref_of(row.id)} is blinded: {principal.name} may not see the labels "
                                      f"of {', '.join(others[:3])}", hint="Readers of a blinded task see only "
                                      "their own labels.")
    colors = layer_colors(session, principal, row, role, item)
    unknown = [n for n in names if n not in colors and n not in (CONSENSUS, ADJUDICATION)]
    if unknown:
        raise UsageError(f"no layer {unknown[0]!r} on item {item!r}",
                         hint=f"Choose from: {', '.join([*colors, CONSENSUS, ADJUDICATION])}.")
    layers: list[images.Layer] = []
    for name in names:
        if name == CONSENSUS:
            consensus = data.item_consensus(item, tasks.readings(session, objects, row.id, item), _schema(session, row))
            layers.append(images.Layer(name, images.CONSENSUS_COLOR, consensus.annotations, images.CONSENSUS_LINE))
        elif name == ADJUDICATION:
            adjudicated = _adjudicated(session, objects, row, item, _adjudication(session, row, item))
            layers.append(images.Layer(name, images.ADJUDICATION_COLOR, adjudicated))
        else:
            found = access.visible_annotations(session, principal, row, item, reader=name)
            layers.append(images.Layer(name, colors[name], tuple(store.load(objects, r) for r in found
                                                                  if r.stage is store.Stage.READ)))
    return layers
