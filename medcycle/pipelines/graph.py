"""The step graph: a stable topological order, the cycle that prevents one, dependants, and layers for drawing.

Graphs are given as ``{step: [steps it needs]}`` in declaration order; every function here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def topological_order(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Steps so that each comes after everything it needs; ties keep declaration order. ``None`` on a cycle."""
    remaining = {name: set(deps) for name, deps in needs.items()}
    order: list[str] = []
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        if not ready:
            return None
        for name in ready:
            del remaining[name]
            order.append(name)
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle as a path that returns to its start (``[a, b, a]``); empty when the graph has none."""
    colour: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        colour[node] = 1
        path.append(node)
        for dep in needs.get(node, ()):
            if colour.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in colour and dep in needs and (found := visit(dep)):
                return found
        path.pop()
        colour[node] = 2
        return []

    for name in needs:
        if name not in colour and (found := visit(name)):
            return found
    return []


def dependants(needs: Mapping[str, Sequence[str]], step: str) -> set[str]:
    """Every step that needs ``step``, directly or through others."""
    users: dict[str, set[str]] = {name: set() for name in needs}
    for name, deps in needs.items():
        for dep in deps:
            users.setdefault(dep, set()).add(name)
    out: set[str] = set()
    todo = [step]
    while todo:
        for user in users.get(todo.pop(), ()):
            if user not in out:
                out.add(user)
                todo.append(user)
    return out


def layers(needs: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Columns for drawing left to right: a step sits one column after the last step it needs.

    Within a column steps are ordered by the mean row of what they need (the barycentre heuristic), which
    keeps most edges from crossing; ties keep declaration order.
    """
    order = topological_order(needs)
    if order is None:
        raise ValueError("the graph has a cycle")
    depth: dict[str, int] = {}
    for name in order:
        depth[name] = 1 + max((depth[d] for d in needs[name]), default=-1)
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in needs:  # declaration order
        columns[depth[name]].append(name)
    row: dict[str, float] = {}
    for column in columns:
        index = {name: i for i, name in enumerate(column)}

        def centre(name: str, index: dict[str, int] = index) -> tuple[float, int]:
            deps = needs[name]
            mean = sum(row[d] for d in deps) / len(deps) if deps else float(index[name])
            return (mean, index[name])

        column.sort(key=centre)
        for i, name in enumerate(column):
            row[name] = float(i)
    return columns
