"""The only expressions a pipeline file may hold: references, replaced by plain string substitution.

Two kinds exist, and nothing else is ever evaluated::

    ${{ steps.NAME.outputs.KEY }}   the path, in the step's work folder, where that output is placed
    ${params.NAME}                  a parameter's value (also written ${{ params.NAME }})

``${MEDCYCLE_...}`` is left as it is: the executor replaces it when the step runs (as an agent does), e.g.
``${MEDCYCLE_DATASET_CXR}`` is the folder the step's dataset ``cxr`` was pulled to. ``$${`` stands for a
literal ``${``. Any other ``${...}`` is an error, found when the file is read, so a typo never reaches a
running step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# ${{ ... }} or ${ ... }, or the escape $${
_TOKEN = re.compile(r"\$\$\{|\$\{\{(?P<long>.*?)\}\}|\$\{(?P<short>[^{}]*)\}")
_STEP_REF = re.compile(r"^steps\.(?P<step>[^.\s]+)\.outputs\.(?P<key>\S+)$")
_PARAM_REF = re.compile(r"^params\.(?P<param>\S+)$")
ENV_VAR = re.compile(r"\$\{(MEDCYCLE_[A-Z0-9_]+)\}")  # the same form agents expand in a task's argv

FORMS = "${{ steps.NAME.outputs.KEY }} or ${params.NAME} (write $${ for a literal ${)"


class BadReference(ValueError):
    """A malformed reference; the spec parser turns it into a problem that names the file, step and field."""


@dataclass(frozen=True, slots=True)
class OutputRef:
    """``${{ steps.STEP.outputs.KEY }}``."""

    step: str
    key: str

    def __str__(self) -> str:
        return f"steps.{self.step}.outputs.{self.key}"


@dataclass(frozen=True, slots=True)
class ParamRef:
    """``${params.NAME}``."""

    name: str

    def __str__(self) -> str:
        return f"params.{self.name}"


Ref = OutputRef | ParamRef


def parse(text: str) -> list[str | Ref]:
    """Split ``text`` into literal pieces and references; raises for anything that looks like a bad one."""
    pieces: list[str | Ref] = []
    pos = 0
    literal: list[str] = []
    for match in _TOKEN.finditer(text):
        literal.append(text[pos:match.start()])
        pos = match.end()
        if match.group(0) == "$${":
            literal.append("${")
            continue
        if ENV_VAR.fullmatch(match.group(0)):
            literal.append(match.group(0))
            continue
        body = (match.group("long") if match.group("long") is not None else match.group("short")).strip()
        ref = _ref(body, match.group(0))
        if literal:
            pieces.append("".join(literal))
            literal = []
        pieces.append(ref)
    rest = text[pos:]
    if "${" in ENV_VAR.sub("", rest):
        raise BadReference(f"unclosed or malformed reference in {text!r}")
    literal.append(rest)
    tail = "".join(literal)
    if tail:
        pieces.append(tail)
    return pieces


def _ref(body: str, raw: str) -> Ref:
    if m := _STEP_REF.match(body):
        return OutputRef(m.group("step"), m.group("key"))
    if m := _PARAM_REF.match(body):
        return ParamRef(m.group("param"))
    raise BadReference(f"{raw} is not a reference medcycle understands")


def env_names(text: str) -> list[str]:
    """The ``MEDCYCLE_*`` variables ``text`` names as ``${MEDCYCLE_...}``."""
    return ENV_VAR.findall(text)


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """``${MEDCYCLE_X}`` replaced by ``env["MEDCYCLE_X"]``; a name ``env`` lacks raises :class:`KeyError`."""
    return ENV_VAR.sub(lambda m: env[m.group(1)], text)


def references(text: str) -> list[Ref]:
    return [p for p in parse(text) if not isinstance(p, str)]


def param_text(value: Any) -> str:
    """How a parameter value reads inside a command: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def render(text: str, resolve: Callable[[Ref], str]) -> str:
    """``text`` with every reference replaced by ``resolve(ref)`` (plain substitution, nothing evaluated)."""
    return "".join(p if isinstance(p, str) else resolve(p) for p in parse(text))
