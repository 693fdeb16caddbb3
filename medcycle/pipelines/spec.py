"""Pipeline files: YAML read with a safe loader, validated into frozen dataclasses. Data only, never code.

::

    pipeline: cxr-baseline
    params: {epochs: 3}
    steps:
      - name: train
        command: [python, train.py, --epochs, "${params.epochs}", --out, model.json]
        inputs:
          datasets: [cxr@latest]
          files: [lib/*.py]
        outputs: {model: model.json}
      - name: evaluate
        command: [python, evaluate.py, "${{ steps.train.outputs.model }}"]
        outputs: {metrics: metrics.json}

Every problem found is reported at once, each naming the file, the step and the field, with a hint
(unknown keys get a "did you mean"). A step needs the steps whose outputs it references (and any listed
under ``needs``); cycles, unknown steps, outputs or params, and duplicate names are errors. The only
expressions are the references of :mod:`medcycle.pipelines.references`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcycle.errors import UsageError, ValidationFailed
from medcycle.pipelines import graph
from medcycle.pipelines.references import BadReference, OutputRef, ParamRef, Ref, env_names, references

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
PIPELINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
OUTPUT_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
INPUTS_DIR = "inputs"  # other steps' outputs are placed under inputs/STEP/PATH in a step's work folder

PIPELINE_KEYS = ("pipeline", "description", "project", "params", "environment", "code", "steps")
STEP_KEYS = ("name", "description", "command", "needs", "inputs", "outputs", "env", "environment", "cache",
             "timeout")
INPUT_KEYS = ("datasets", "files", "params")
SPEC_FORMAT = "medcycle.pipeline/1"
DATASET_ENV_PREFIX = "MEDCYCLE_DATASET_"


def dataset_env(name: str) -> str:
    """The variable holding a pulled dataset's folder, as agents name it: ``demo-xr`` → ``MEDCYCLE_DATASET_DEMO_XR``."""
    return DATASET_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


@dataclass(frozen=True, slots=True)
class Problem:
    where: str
    text: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.text}" if self.where else self.text

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "problem": self.text, "hint": self.hint}


class PipelineSpecError(ValidationFailed):
    """A pipeline file is not valid; ``details["problems"]`` lists every problem found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        first = problems[0]
        if len(problems) == 1:
            message = f"{source}: {first}"
        else:
            message = f"{source} has {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
        hint = first.hint or "See docs/pipelines.md for the file format."
        super().__init__(message, hint=hint, source=source, problems=[p.to_dict() for p in problems])
        self.problems = problems


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step, validated. ``needs`` holds every step it depends on (referenced or listed), in file order."""

    name: str
    command: tuple[str, ...]
    outputs: dict[str, str]  # key -> path relative to the step's work folder
    needs: tuple[str, ...] = ()
    listed_needs: tuple[str, ...] = ()  # under ``needs:``: all their outputs are inputs
    datasets: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # the step's own
    env: dict[str, str] = field(default_factory=dict)
    environment: str | None = None
    cache: bool = True
    timeout_s: float | None = None
    description: str | None = None
    output_refs: tuple[OutputRef, ...] = ()
    param_refs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "command": list(self.command),
            "needs": list(self.needs), "listed_needs": list(self.listed_needs), "datasets": list(self.datasets),
            "files": list(self.files), "params": self.params, "outputs": self.outputs, "env": self.env,
            "environment": self.environment, "cache": self.cache, "timeout_s": self.timeout_s,
        }


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """A validated pipeline: steps in a topological order (file order where the graph allows)."""

    name: str
    steps: tuple[StepSpec, ...]
    params: dict[str, Any] = field(default_factory=dict)
    project: str | None = None
    description: str | None = None
    environment: str | None = None
    code_root: Path = Path()
    source: str = "<string>"

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise UsageError(f"pipeline {self.name!r} has no step {name!r}",
                         hint=f"Its steps are: {', '.join(s.name for s in self.steps)}.")

    @property
    def needs(self) -> dict[str, list[str]]:
        return {s.name: list(s.needs) for s in self.steps}

    def step_params(self, step: StepSpec) -> dict[str, Any]:
        """What a step sees as its params (and what its cache key covers): the pipeline params it references,
        then its own (which win). A pipeline param a step does not reference never re-runs it."""
        out = {name: self.params[name] for name in step.param_refs if name in self.params}
        out.update(step.params)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"format": SPEC_FORMAT, "pipeline": self.name, "project": self.project,
                "description": self.description, "params": self.params, "environment": self.environment,
                "steps": [s.to_dict() for s in self.steps]}


# -- loading ----------------------------------------------------------------------------------------
def _loader() -> type:
    import yaml  # type: ignore[import-untyped,unused-ignore]

    class UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
        """``yaml.SafeLoader`` (plain data, no tags that build objects) that also refuses duplicate keys,
        which the stock loader silently resolves to the last one."""

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value",
                                                        key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return dict(loader.construct_pairs(node, deep=deep))

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeyLoader


def read_yaml(text: str, source: str) -> Any:
    """Plain data from YAML text; syntax errors name the file and line."""
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise UsageError("reading pipeline files needs PyYAML", hint="`pip install pyyaml`.") from None
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - the loader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PipelineSpecError(source, [Problem(where, f"not valid YAML: {problem}",
                                                 "Fix the YAML syntax at that position.")]) from None


def load_pipeline(path: Path | str, *, params: Mapping[str, Any] | None = None) -> PipelineSpec:
    """Read and validate a pipeline file; ``params`` override its declared params (unknown ones are errors)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"pipeline file {path} does not exist", hint="Check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read pipeline file {path}: {exc}", hint="Give a UTF-8 YAML file.") from None
    return parse_pipeline(text, source=str(path), base=path.resolve().parent, params=params)


def parse_pipeline(text: str, *, source: str = "<string>", base: Path | None = None,
                   params: Mapping[str, Any] | None = None) -> PipelineSpec:
    """Validate pipeline YAML ``text``; ``base`` is the folder relative paths start from (default: cwd)."""
    data = read_yaml(text, source)
    return _Validator(source, (base or Path.cwd()).resolve()).pipeline(data, dict(params or {}))


def parse_param_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=5", "name=abc"]`` as params: values as JSON when they parse, else as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"param {item!r} is not KEY=VALUE", hint="e.g. --param epochs=5")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


# -- validation -------------------------------------------------------------------------------------
def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _plain(value: Any) -> bool:
    """JSON data with finite numbers: what params may hold (YAML dates and the like are refused)."""
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def check_relative(path: str) -> str | None:
    """The normalised form of a relative path inside a work folder, or ``None`` when it would leave it."""
    if not path or path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        return None
    norm = posixpath.normpath(path.replace("\\", "/"))
    if norm in {".", ".."} or norm.startswith("../"):
        return None
    return norm


class _Validator:
    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base
        self.problems: list[Problem] = []

    def bad(self, where: str, text: str, hint: str | None = None) -> None:
        self.problems.append(Problem(where, text, hint))

    def unknown_keys(self, data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in data:
            if key not in allowed:
                self.bad(where, f"unknown field {key!r}",
                         f"Allowed fields: {', '.join(allowed)}.{_did_you_mean(str(key), allowed)}")

    def text(self, value: Any, where: str, *, required: bool = False) -> str | None:
        if value is None and not required:
            return None
        if isinstance(value, str) and value.strip():
            return value
        self.bad(where, "must be a non-empty string" if value is not None else "is required")
        return None

    def pipeline(self, data: Any, overrides: dict[str, Any]) -> PipelineSpec:
        if not isinstance(data, dict):
            raise PipelineSpecError(self.source, [Problem("", "must be a YAML mapping with 'pipeline' and 'steps'",
                                                          "See docs/pipelines.md for an example.")])
        self.unknown_keys(data, PIPELINE_KEYS, "pipeline file")
        name = self.text(data.get("pipeline"), "field 'pipeline'", required=True) or "?"
        if name != "?" and not PIPELINE_RE.match(name):
            self.bad("field 'pipeline'", f"{name!r} is not a valid pipeline name",
                     "Use letters, digits, '.', '_' or '-' (up to 128 characters).")
        project = self.text(data.get("project"), "field 'project'")
        description = self.text(data.get("description"), "field 'description'")
        environment = self.text(data.get("environment"), "field 'environment'")
        code = self.text(data.get("code"), "field 'code'") or "."
        code_root = (self.base / code).resolve()
        if not code_root.is_dir():
            self.bad("field 'code'", f"code folder {code_root} does not exist",
                     "'code' is a folder relative to the pipeline file (default: the file's folder).")
        params = self.params(data.get("params"), "field 'params'")
        for key, value in overrides.items():
            if key not in params:
                self.bad(f"param {key!r}", "is not declared in the pipeline's params",
                         f"Declared params: {', '.join(params) or 'none'}.{_did_you_mean(key, list(params))}")
            elif not _plain(value):
                self.bad(f"param {key!r}", "must be plain data (string, number, boolean, list, mapping)")
            else:
                params[key] = value
        raw_steps = data.get("steps")
        steps: list[StepSpec] = []
        if not isinstance(raw_steps, list) or not raw_steps:
            self.bad("field 'steps'", "is required: a non-empty list of steps",
                     "Write steps as a list: `steps: [{name: train, command: [python, train.py]}]`.")
        else:
            steps = self.steps(raw_steps, params)
        if self.problems:
            raise PipelineSpecError(self.source, self.problems)
        return PipelineSpec(name=name, steps=tuple(steps), params=params, project=project, description=description,
                            environment=environment, code_root=code_root, source=self.source)

    def params(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(where, "must be a mapping of name: value")
            return {}
        out: dict[str, Any] = {}
        for key, v in value.items():
            if not isinstance(key, str) or not PARAM_RE.match(key):
                self.bad(where, f"param name {key!r} is not valid",
                         "Use letters, digits and '_' (not starting with a digit), up to 64.")
            elif not _plain(v):
                self.bad(f"{where} {key!r}", f"value of type {type(v).__name__} is not plain data",
                         "Quote it to make it a string (YAML reads 2024-01-01 as a date).")
            else:
                out[key] = v
        return out

    def steps(self, raw_steps: list[Any], params: dict[str, Any]) -> list[StepSpec]:
        parsed: list[tuple[StepSpec, str]] = []
        names: dict[str, int] = {}
        for i, raw in enumerate(raw_steps):
            where = f"step {i + 1}"
            if not isinstance(raw, dict):
                self.bad(where, "must be a mapping with at least 'name' and 'command'")
                continue
            name = raw.get("name")
            if isinstance(name, str) and NAME_RE.match(name):
                where = f"step {name!r}"
                if name in names:
                    self.bad(where, f"duplicate step name (also step {names[name] + 1})",
                             "Give every step its own name.")
                    continue
                names[name] = i
            else:
                self.bad(where, f"field 'name': {name!r} is not a valid step name" if name is not None
                         else "field 'name' is required",
                         "Start with a letter; then letters, digits, '_' or '-' (up to 64).")
                continue
            step = self.step(raw, name, where)
            if step is not None:
                parsed.append((step, where))
        if self.problems:
            return []
        by_name = {s.name: s for s, _ in parsed}
        checked = [self.link(s, where, by_name, params) for s, where in parsed]
        if self.problems:
            return []
        needs = {s.name: list(s.needs) for s in checked}
        order = graph.topological_order(needs)
        if order is None:
            cycle = graph.find_cycle(needs)
            self.bad(f"step {cycle[0]!r}", "steps form a cycle: " + " → ".join(cycle),
                     "A step cannot need itself, directly or through others; remove one of these references.")
            return []
        final = {s.name: s for s in checked}
        return [final[n] for n in order]

    def step(self, raw: dict[str, Any], name: str, where: str) -> StepSpec | None:
        before = len(self.problems)
        self.unknown_keys(raw, STEP_KEYS, where)
        command = self.command(raw.get("command"), where)
        inputs = raw.get("inputs") or {}
        if not isinstance(inputs, dict):
            self.bad(f"{where} field 'inputs'", "must be a mapping with datasets, files and/or params")
            inputs = {}
        self.unknown_keys(inputs, INPUT_KEYS, f"{where} field 'inputs'")
        datasets = self.datasets(inputs.get("datasets"), f"{where} field 'inputs.datasets'")
        files = self.files(inputs.get("files"), f"{where} field 'inputs.files'")
        params = self.params(inputs.get("params"), f"{where} field 'inputs.params'")
        outputs = self.outputs(raw.get("outputs"), f"{where} field 'outputs'")
        env = self.env(raw.get("env"), f"{where} field 'env'")
        listed = self.names(raw.get("needs"), f"{where} field 'needs'")
        cache = raw.get("cache", True)
        if not isinstance(cache, bool):
            self.bad(f"{where} field 'cache'", "must be true or false")
        timeout = raw.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                    or not math.isfinite(timeout) or timeout <= 0):
            self.bad(f"{where} field 'timeout'", "must be a positive number of seconds")
        environment = self.text(raw.get("environment"), f"{where} field 'environment'")
        description = self.text(raw.get("description"), f"{where} field 'description'")
        if len(self.problems) > before:
            return None
        return StepSpec(name=name, command=tuple(command), outputs=outputs, listed_needs=tuple(listed),
                        datasets=tuple(datasets), files=tuple(files), params=params, env=env,
                        environment=environment, cache=bool(cache), description=description,
                        timeout_s=float(timeout) if timeout is not None else None)

    def command(self, value: Any, where: str) -> list[str]:
        where = f"{where} field 'command'"
        if value is None:
            self.bad(where, "is required", "Give the command as an argv list, e.g. [python, train.py].")
            return []
        if not isinstance(value, list) or not value:
            self.bad(where, "must be a non-empty list (argv)",
                     "Write it as a list, e.g. [python, train.py, --epochs, 3]; no shell is involved.")
            return []
        out: list[str] = []
        for i, arg in enumerate(value):
            if isinstance(arg, str):
                out.append(arg)
            elif isinstance(arg, int | float) and not isinstance(arg, bool):
                out.append(str(arg))
            else:
                self.bad(f"{where}[{i}]", f"must be a string or a number, not {type(arg).__name__}",
                         "Quote it to pass it as text.")
        return out

    def datasets(self, value: Any, where: str) -> list[str]:
        from medcycle.datasets.versions import split_ref

        if value is None:
            return []
        if not isinstance(value, list):
            self.bad(where, "must be a list of dataset versions (NAME@TAG)")
            return []
        out: list[str] = []
        seen: set[str] = set()
        for i, ref in enumerate(value):
            if not isinstance(ref, str):
                self.bad(f"{where}[{i}]", "must be a dataset version such as cxr@v1.0")
                continue
            try:
                name, _ = split_ref(ref)
            except UsageError as exc:
                self.bad(f"{where}[{i}]", exc.message, exc.hint)
                continue
            if name in seen:
                self.bad(f"{where}[{i}]", f"dataset {name!r} is listed twice", "List each dataset once per step.")
            seen.add(name)
            out.append(ref)
        return out

    def files(self, value: Any, where: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.bad(where, "must be a list of paths or globs relative to the code folder")
            return []
        out: list[str] = []
        for i, pattern in enumerate(value):
            norm = check_relative(pattern) if isinstance(pattern, str) else None
            if norm is None:
                self.bad(f"{where}[{i}]", f"{pattern!r} is not a path inside the code folder",
                         "Give paths or globs relative to the code folder, e.g. src/*.py or configs/**/*.yaml.")
            else:
                out.append(norm)
        return out

    def outputs(self, value: Any, where: str) -> dict[str, str]:
        if value is None:
            return {}
        if isinstance(value, list):
            pairs = [(v, v) for v in value]
        elif isinstance(value, dict):
            pairs = list(value.items())
        else:
            self.bad(where, "must be a mapping of key: path (or a list of paths)")
            return {}
        out: dict[str, str] = {}
        paths: set[str] = set()
        for key, path in pairs:
            norm = check_relative(path) if isinstance(path, str) else None
            if not isinstance(key, str) or not OUTPUT_KEY_RE.match(key.replace("/", "_")):
                self.bad(where, f"output key {key!r} is not valid", "Use letters, digits, '.', '_' or '-'.")
            elif norm is None:
                self.bad(f"{where} {key!r}", f"{path!r} is not a relative path inside the work folder",
                         "Outputs are files the command writes, relative to its working folder.")
            elif norm == INPUTS_DIR or norm.startswith(INPUTS_DIR + "/"):
                self.bad(f"{where} {key!r}", f"{INPUTS_DIR}/ is where other steps' outputs are placed",
                         "Write outputs somewhere else, e.g. out/model.json.")
            elif norm in paths:
                self.bad(f"{where} {key!r}", f"path {norm!r} is declared twice")
            else:
                paths.add(norm)
                out[key] = norm
        return out

    def env(self, value: Any, where: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(where, "must be a mapping of NAME: value")
            return {}
        out: dict[str, str] = {}
        for key, v in value.items():
            if not isinstance(key, str) or not ENV_RE.match(key):
                self.bad(where, f"{key!r} is not a valid environment variable name")
            elif key.upper().startswith("MEDCYCLE_"):
                self.bad(f"{where} {key!r}", "MEDCYCLE_* variables are set by medcycle",
                         "Pass settings as params instead.")
            elif isinstance(v, bool) or not isinstance(v, str | int | float):
                self.bad(f"{where} {key!r}", "value must be a string or a number")
            else:
                out[key] = str(v)
        return out

    def names(self, value: Any, where: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(where, "must be a list of step names")
            return []
        return list(dict.fromkeys(value))

    def link(self, step: StepSpec, where: str, by_name: dict[str, StepSpec], params: dict[str, Any]) -> StepSpec:
        """Check the step's references and needs against the other steps; fill in ``needs``."""
        steps = list(by_name)
        refs: list[tuple[str, Ref]] = []
        texts = [(f"command[{i}]", arg) for i, arg in enumerate(step.command)]
        texts += [(f"env {k!r}", v) for k, v in step.env.items()]
        dataset_vars = {dataset_env(ref.partition("@")[0]) for ref in step.datasets}
        for field_name, text in texts:
            try:
                refs += [(field_name, r) for r in references(text)]
            except BadReference as exc:
                self.bad(f"{where} field '{field_name}'", str(exc),
                         "Write ${{ steps.NAME.outputs.KEY }} or ${params.NAME}; $${ is a literal ${.")
            for var in env_names(text):
                if var.startswith(DATASET_ENV_PREFIX) and var not in dataset_vars:
                    self.bad(f"{where} field '{field_name}'", f"${{{var}}} names no dataset of this step",
                             "List the dataset under inputs.datasets; its folder is "
                             + (", ".join(f"${{{v}}}" for v in sorted(dataset_vars)) or "MEDCYCLE_DATASET_<NAME>")
                             + ".")
        output_refs: list[OutputRef] = []
        param_refs: list[str] = []
        for field_name, ref in refs:
            at = f"{where} field '{field_name}'"
            if isinstance(ref, ParamRef):
                if ref.name not in params and ref.name not in step.params:
                    known = sorted({*params, *step.params})
                    self.bad(at, f"refers to unknown param {ref.name!r}",
                             f"Declared params: {', '.join(known) or 'none'}.{_did_you_mean(ref.name, known)}")
                elif ref.name not in param_refs:
                    param_refs.append(ref.name)
            elif ref.step == step.name:
                self.bad(at, f"refers to its own output {ref.key!r}", "A step cannot read what it writes.")
            elif ref.step not in by_name:
                self.bad(at, f"refers to unknown step {ref.step!r}",
                         f"Steps are: {', '.join(steps)}.{_did_you_mean(ref.step, steps)}")
            elif ref.key not in by_name[ref.step].outputs:
                keys = list(by_name[ref.step].outputs)
                self.bad(at, f"step {ref.step!r} declares no output {ref.key!r}",
                         f"Its outputs are: {', '.join(keys) or 'none'}.{_did_you_mean(ref.key, keys)}")
            elif ref not in output_refs:
                output_refs.append(ref)
        for name in step.listed_needs:
            if name == step.name:
                self.bad(f"{where} field 'needs'", "a step cannot need itself")
            elif name not in by_name:
                self.bad(f"{where} field 'needs'", f"unknown step {name!r}",
                         f"Steps are: {', '.join(steps)}.{_did_you_mean(name, steps)}")
        wanted = {r.step for r in output_refs} | set(step.listed_needs)
        needs = tuple(n for n in steps if n in wanted)
        return dataclasses.replace(step, needs=needs, output_refs=tuple(output_refs), param_refs=tuple(param_refs))
