"""Pipeline pages: the runs (``/ui/pipelines``) and one run (``/ui/pipelines/RUN``) with its graph.

The graph is drawn on the server as inline SVG (no script): steps in columns by dependency depth, each box
coloured by its state — cached (a cache hit), running, succeeded, failed, skipped, pending — and linked to
the step's row below, which links the tracked run (``/ui/runs/RUN``), the log and the outputs (objects by
digest). A running pipeline's page refreshes itself every few seconds until the run ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from medcycle.api.deps import SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.pipelines import graph
from medcycle.pipelines.state import RunDetail, RunStatus, StepInfo, StepState, get_run, list_runs
from medcycle.web.nav import BY_KEY
from medcycle.web.render import renderer

router = APIRouter(prefix="/ui/pipelines", include_in_schema=False)
Viewer = Annotated[Principal, requires(Permission.VIEW)]

STATE_CLASS = {
    StepState.PENDING.value: "state-queued", StepState.RUNNING.value: "state-running",
    StepState.CACHED.value: "state-cached", StepState.SUCCEEDED.value: "state-succeeded",
    StepState.FAILED.value: "state-failed", StepState.SKIPPED.value: "state-cancelled",
}
RUN_CLASS = {RunStatus.RUNNING.value: "state-running", RunStatus.SUCCEEDED.value: "status-ok",
             RunStatus.FAILED.value: "status-bad"}
REFRESH_S = 3
ACTIVE = "pipelines" if "pipelines" in BY_KEY else "experiments"  # the nav entry to highlight

# Box geometry of the drawing, in SVG user units.
NODE_W, NODE_H = 176, 58
GAP_X, GAP_Y, MARGIN = 72, 26, 16
LANE = 28  # the band above the boxes that edges spanning several columns run along


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    state: str
    label: str  # the line under the name: "cache hit", "12.3 s", the reason it was skipped
    x: float
    y: float

    @property
    def cx_out(self) -> float:
        return self.x + NODE_W

    @property
    def cy(self) -> float:
        return self.y + NODE_H / 2


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    path: str  # SVG path data
    state: str  # the source's state: an edge out of a failed step is drawn as broken


@dataclass(frozen=True, slots=True)
class Drawing:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float


def _label(step: StepInfo) -> str:
    if step.state is StepState.CACHED:
        return "cache hit"
    if step.state is StepState.SKIPPED:
        return "skipped"
    if step.seconds is not None and step.state in (StepState.SUCCEEDED, StepState.FAILED):
        return f"{step.seconds:.1f} s"
    return step.state.value


def draw(detail: RunDetail) -> Drawing:
    """Lay the run's steps out left to right by dependency depth (see :func:`medcycle.pipelines.graph.layers`).

    An edge between neighbouring columns is one curve; an edge that spans columns runs along a lane above
    the boxes, so it never passes behind a step it does not touch.
    """
    steps = {s.name: s for s in detail.steps}
    needs = {s.name: [n for n in s.needs if n in steps] for s in sorted(detail.steps, key=lambda s: s.position)}
    columns = graph.layers(needs)
    column_of = {name: i for i, column in enumerate(columns) for name in column}
    long_edges = any(column_of[t] - column_of[s] > 1 for t, deps in needs.items() for s in deps)
    top = MARGIN + (LANE if long_edges else 0)
    tallest = max((len(c) for c in columns), default=0)
    body = tallest * NODE_H + max(tallest - 1, 0) * GAP_Y
    height = top + body + MARGIN
    nodes: dict[str, Node] = {}
    for i, column in enumerate(columns):
        column_h = len(column) * NODE_H + (len(column) - 1) * GAP_Y
        first = top + (body - column_h) / 2
        for j, name in enumerate(column):
            step = steps[name]
            nodes[name] = Node(name, step.state.value, _label(step), MARGIN + i * (NODE_W + GAP_X),
                               first + j * (NODE_H + GAP_Y))
    edges = []
    for target, deps in needs.items():
        for source in deps:
            a, b = nodes[source], nodes[target]
            x0, y0, x1, y1 = a.cx_out, a.cy, b.x - 6, b.cy
            if column_of[target] - column_of[source] > 1:
                lane, bend = MARGIN + LANE / 2, GAP_X / 2
                path = (f"M{x0:.1f},{y0:.1f} C{x0 + bend:.1f},{y0:.1f} {x0 + bend:.1f},{lane:.1f} "
                        f"{x0 + GAP_X:.1f},{lane:.1f} L{x1 - GAP_X:.1f},{lane:.1f} "
                        f"C{x1 - bend:.1f},{lane:.1f} {x1 - bend:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
            else:
                mid = (x0 + x1) / 2
                path = f"M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"
            edges.append(Edge(source, target, path, steps[source].state.value))
    width = MARGIN * 2 + len(columns) * NODE_W + max(len(columns) - 1, 0) * GAP_X
    return Drawing([nodes[s.name] for s in detail.steps], edges, width, height)


@router.get("")
def runs_page(
    request: Request,
    session: SessionDep,
    principal: Viewer,
    pipeline: Annotated[str, Query(max_length=128)] = "",
) -> Response:
    runs = list_runs(session, pipeline=pipeline or None, limit=200)
    return renderer(request).render(
        request, "pipelines.html", principal=principal, active=ACTIVE, runs=runs, pipeline=pipeline,
        run_class=RUN_CLASS, states=[s.value for s in StepState], state_class=STATE_CLASS,
    )


@router.get("/{run}")
def run_page(request: Request, run: str, session: SessionDep, principal: Viewer) -> Response:
    detail = get_run(session, run)
    running = detail.run.status is RunStatus.RUNNING
    return renderer(request).render(
        request, "pipelines_run.html", principal=principal, active=ACTIVE, d=detail, r=detail.run,
        drawing=draw(detail), node_w=NODE_W, node_h=NODE_H, state_class=STATE_CLASS, run_class=RUN_CLASS,
        states=[s.value for s in StepState], can_read=principal.can(Permission.READ_DATA),
        headers={"Refresh": str(REFRESH_S)} if running else None,
    )
