"""Pipeline files: what is valid, and errors that name the file, the step and the field, with hints."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcycle.errors import UsageError, ValidationFailed
from medcycle.pipelines import graph, references
from medcycle.pipelines.references import BadReference, OutputRef, ParamRef
from medcycle.pipelines.spec import PipelineSpecError, dataset_env, load_pipeline, parse_param_overrides, parse_pipeline
from tests.pipelines.conftest import write_project


def problems(text: str, tmp_path: Path, **kwargs: object) -> PipelineSpecError:
    with pytest.raises(PipelineSpecError) as err:
        parse_pipeline(text, source="p.yaml", base=tmp_path, **kwargs)  # type: ignore[arg-type]
    return err.value


def test_the_sample_pipeline_parses_into_a_topological_order(tmp_path: Path) -> None:
    root = write_project(tmp_path / "code")
    spec = load_pipeline(root / "pipeline.yaml")
    assert spec.name == "demo" and spec.code_root == root.resolve() and spec.source == str(root / "pipeline.yaml")
    assert [s.name for s in spec.steps] == ["prepare", "report", "train", "evaluate"]
    train, evaluate = spec.step("train"), spec.step("evaluate")
    assert train.needs == ("prepare",) and train.param_refs == ("lr",)
    assert evaluate.needs == ("prepare", "train")
    assert evaluate.outputs == {"metrics.json": "metrics.json"}  # a list of paths: the path is the key
    assert train.output_refs == (OutputRef("prepare", "prepared"),)
    # a step sees (and its key covers) the pipeline params it references plus its own — not the others
    assert spec.step_params(train) == {"lr": 0.1, "seed": 7}
    assert spec.step_params(spec.step("prepare")) == {}
    assert spec.step_params(spec.step("report")) == {"title": "weekly"}
    overridden = load_pipeline(root / "pipeline.yaml", params={"lr": 0.5})
    assert overridden.step_params(overridden.step("train"))["lr"] == 0.5
    assert spec.to_dict()["steps"][2]["needs"] == ["prepare"]


def test_a_cycle_is_reported_as_a_path(tmp_path: Path) -> None:
    text = """
pipeline: loop
steps:
  - name: a
    command: [python, a.py, "${{ steps.c.outputs.x }}"]
    outputs: {x: a.txt}
  - name: b
    command: [python, b.py, "${{ steps.a.outputs.x }}"]
    outputs: {x: b.txt}
  - name: c
    command: [python, c.py]
    needs: [b]
    outputs: {x: c.txt}
"""
    err = problems(text, tmp_path)
    assert "p.yaml: step 'a': steps form a cycle: a → c → b → a" in err.message
    assert err.hint is not None and "remove one of these references" in err.hint
    assert isinstance(err, ValidationFailed) and err.http_status == 422


def test_unknown_keys_get_a_did_you_mean(tmp_path: Path) -> None:
    text = """
pipeline: p
stepz: []
steps:
  - name: train
    comand: [python, train.py]
    inputs: {file: [a.py]}
"""
    err = problems(text, tmp_path)
    wheres = [p.where for p in err.problems]
    texts = [p.text for p in err.problems]
    assert "pipeline file" in wheres and "unknown field 'stepz'" in texts
    comand = next(p for p in err.problems if p.text == "unknown field 'comand'")
    assert comand.where == "step 'train'" and "Did you mean 'command'?" in (comand.hint or "")
    assert any(p.where == "step 'train' field 'inputs'" and p.text == "unknown field 'file'"
               and "Did you mean 'files'?" in (p.hint or "") for p in err.problems)
    assert any(p.where == "step 'train' field 'command'" and p.text == "is required" for p in err.problems)
    assert err.message.startswith("p.yaml has 4 problems:")
    assert err.details["problems"][0]["where"] and err.details["source"] == "p.yaml"


def test_bad_references_name_the_step_field_and_candidates(tmp_path: Path) -> None:
    text = """
pipeline: p
params: {epochs: 3}
steps:
  - name: train
    command: [python, train.py, "${params.epoch}"]
    outputs: {model: model.pt}
  - name: evaluate
    command: [python, eval.py, "${{ steps.trian.outputs.model }}", "${{ steps.train.outputs.modle }}",
              "${{ steps.train.model }}", "${MEDCYCLE_DATASET_CXR}"]
    env: {X: "${{ steps.evaluate.outputs.m }}"}
    outputs: {m: m.json}
"""
    err = problems(text, tmp_path)
    found = {(p.where, p.text): p.hint for p in err.problems}
    assert "Did you mean 'epochs'?" in (found[("step 'train' field 'command[2]'", "refers to unknown param 'epoch'")]
                                        or "")
    assert "Did you mean 'train'?" in (found[("step 'evaluate' field 'command[2]'",
                                              "refers to unknown step 'trian'")] or "")
    assert "Did you mean 'model'?" in (found[("step 'evaluate' field 'command[3]'",
                                              "step 'train' declares no output 'modle'")] or "")
    assert ("step 'evaluate' field 'command[4]'", "${{ steps.train.model }} is not a reference medcycle understands") \
        in found
    assert ("step 'evaluate' field 'command[5]'", "${MEDCYCLE_DATASET_CXR} names no dataset of this step") in found
    assert ("step 'evaluate' field 'env 'X''", "refers to its own output 'm'") in found


def test_duplicate_names_and_duplicate_yaml_keys(tmp_path: Path) -> None:
    dup_steps = """
pipeline: p
steps:
  - {name: a, command: [x]}
  - {name: a, command: [y]}
"""
    err = problems(dup_steps, tmp_path)
    assert err.problems[0].where == "step 'a'" and "duplicate step name (also step 1)" in err.problems[0].text
    dup_keys = "pipeline: p\nsteps:\n  - name: a\n    command: [x]\n    command: [y]\n"
    err = problems(dup_keys, tmp_path)
    assert "line 5" in err.problems[0].where and "duplicate key 'command' (first at line 4)" in err.problems[0].text


def test_values_are_checked(tmp_path: Path) -> None:
    text = """
pipeline: "bad name!"
params: {when: 2024-01-01, ok: [1, 2]}
steps:
  - name: 1st
    command: [x]
  - name: s
    command: "python train.py"
    outputs: {o: /etc/passwd, p: ../up.txt, q: inputs/x.txt}
    inputs: {datasets: ["no such@"], files: [../secret.py]}
    env: {MEDCYCLE_HOME: /x, "bad name": y}
    cache: maybe
    timeout: -1
"""
    err = problems(text, tmp_path)
    text_of = {p.text for p in err.problems}
    assert "'bad name!' is not a valid pipeline name" in text_of
    assert "value of type date is not plain data" in text_of
    assert "field 'name': '1st' is not a valid step name" in text_of
    assert "must be a non-empty list (argv)" in text_of
    assert "'/etc/passwd' is not a relative path inside the work folder" in text_of
    assert "'../up.txt' is not a relative path inside the work folder" in text_of
    assert "inputs/ is where other steps' outputs are placed" in text_of
    assert "'../secret.py' is not a path inside the code folder" in text_of
    assert "MEDCYCLE_* variables are set by medcycle" in text_of
    assert "'bad name' is not a valid environment variable name" in text_of
    assert "must be true or false" in text_of and "must be a positive number of seconds" in text_of
    assert any("not a valid dataset name" in t for t in text_of)


def test_unknown_param_override_and_missing_file(tmp_path: Path) -> None:
    root = write_project(tmp_path / "code")
    with pytest.raises(PipelineSpecError) as err:
        load_pipeline(root / "pipeline.yaml", params={"lrr": 1})
    assert err.value.problems[0].where == "param 'lrr'" and "Did you mean 'lr'?" in (err.value.hint or "")
    with pytest.raises(UsageError, match="does not exist"):
        load_pipeline(tmp_path / "nope.yaml")
    assert parse_param_overrides(["lr=0.5", "name=abc", "flags=[1,2]"]) == {"lr": 0.5, "name": "abc", "flags": [1, 2]}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_param_overrides(["novalue"])


def test_yaml_syntax_errors_and_non_mappings(tmp_path: Path) -> None:
    err = problems("pipeline: p\nsteps: [\n", tmp_path)
    assert err.message.startswith("p.yaml: line ") and "not valid YAML" in err.message
    err = problems("- just\n- a list\n", tmp_path)
    assert "must be a YAML mapping" in err.message
    # no code evaluation: python tags are refused by the safe loader
    err = problems("pipeline: !!python/object/apply:os.system [echo hi]\nsteps: []\n", tmp_path)
    assert "not valid YAML" in err.message


def test_references_are_plain_substitution() -> None:
    text = "--in=${{ steps.a.outputs.x.json }}/${params.lr}:${{params.n}} $${literal} ${MEDCYCLE_DATASET_CXR}"
    assert references.references(text) == [OutputRef("a", "x.json"), ParamRef("lr"), ParamRef("n")]
    out = references.render(text, lambda r: f"<{r}>")
    assert out == "--in=<steps.a.outputs.x.json>/<params.lr>:<params.n> ${literal} ${MEDCYCLE_DATASET_CXR}"
    assert references.param_text(0.001) == "0.001" and references.param_text(True) == "true"
    assert references.param_text({"b": 1, "a": [1]}) == '{"a":[1],"b":1}'
    for bad in ("${ unclosed", "${{ os.system('x') }}", "${lower}"):
        with pytest.raises(BadReference):
            references.parse(bad)
    assert references.expand_env("${MEDCYCLE_X}/a", {"MEDCYCLE_X": "/d"}) == "/d/a"
    assert dataset_env("demo-xr.v2") == "MEDCYCLE_DATASET_DEMO_XR_V2"


def test_graph_helpers() -> None:
    needs = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}
    assert graph.topological_order(needs) == ["a", "e", "b", "c", "d"]
    assert graph.dependants(needs, "b") == {"d"} and graph.dependants(needs, "a") == {"b", "c", "d"}
    assert graph.layers(needs) == [["a", "e"], ["b", "c"], ["d"]]
    cyclic = {"a": ["b"], "b": ["a"]}
    assert graph.topological_order(cyclic) is None and graph.find_cycle(cyclic) == ["a", "b", "a"]
    with pytest.raises(ValueError, match="cycle"):
        graph.layers(cyclic)

