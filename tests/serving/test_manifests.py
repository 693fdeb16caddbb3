"""Packaging checked offline: Dockerfiles (hadolint), Kubernetes manifests (kubernetes-validate, kustomize), the
Helm chart (helm's linter through helm-sdkpy) and the compose file — and that they agree with the code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CHART = DEPLOY / "helm" / "medcycle"
DOCKERFILES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.cuda"]
BIN = Path(sys.executable).parent


def run(*argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False)


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in documents(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return containers[0]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint_at_style_level(dockerfile: Path) -> None:
    result = run(BIN / "hadolint", "--failure-threshold", "style", "--no-color", dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (dockerfile.parent / f"{dockerfile.name}.dockerignore").is_file()  # only the package goes in


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install foo\n")
    result = run(BIN / "hadolint", "--no-color", bad)
    assert result.returncode != 0 and "DL3006" in result.stdout and "DL3013" in result.stdout


def test_plain_manifests_validate_against_the_kubernetes_schema() -> None:
    files = [p for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]
    result = run(BIN / "kubernetes-validate", "--strict", "--quiet", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {kind for kind, _ in k8s_objects()}
    assert {"Deployment", "Service", "ConfigMap", "Job", "PersistentVolumeClaim", "ServiceAccount"} <= kinds


def test_kubernetes_validate_refuses_a_broken_manifest(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: two}\n")
    assert run(BIN / "kubernetes-validate", "--strict", "--quiet", bad).returncode != 0


def test_the_kustomization_builds_and_its_output_validates(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (needed for `kubectl kustomize`)")
    built = run(kubectl, "kustomize", K8S)
    assert built.returncode == 0, built.stderr
    out = tmp_path / "rendered.yaml"
    out.write_text(built.stdout)
    result = run(BIN / "kubernetes-validate", "--strict", "--quiet", out)
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = [d for d in yaml.safe_load_all(built.stdout) if d]
    for doc in rendered:
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector["app.kubernetes.io/instance"] == "medcycle"
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()


def test_the_manifests_run_what_the_code_provides() -> None:
    from medcycle.api.app import create_app
    from medcycle.serving.deploy import DeploymentSpec

    objects = k8s_objects()
    api = container(objects[("Deployment", "medcycle-api")])
    assert api["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = container(objects[("Deployment", "medcycle-worker")])
    assert worker["command"][-2:] == ["-m", "medcycle.serving.routing"]
    assert objects[("Deployment", "medcycle-worker")]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    agent = container(objects[("Deployment", "medcycle-agent")])
    assert agent["args"][:2] == ["agent", "start"] and "--queue=training" in agent["args"]
    from medcycle.cli.main import app as cli_app
    from medcycle.cli.reference import render

    reference = render(cli_app).split("## `medcycle agent start`")[1].split("\n## ")[0]
    for arg in agent["args"][2:]:  # every option the manifests pass exists on `medcycle agent start`
        assert f"`{arg.split('=')[0]}" in reference or f", {arg.split('=')[0]} " in reference, arg
    scp = container(objects[("Deployment", "medcycle-scp")])
    assert scp["args"][0] == "serve-scp" and "--port=11112" in scp["args"]
    spec = DeploymentSpec.from_dict(json.loads(objects[("ConfigMap", "medcycle-config")]["data"]["deployment.json"]))
    assert spec.model == "chest@production" and spec.workers == 2  # the workers can read it
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert "/var/lib/medcycle/serving/deploy/deployment.json" in mounts  # where deploy_dir(home) looks

    import tempfile

    from medcycle.platform import Platform
    from medcycle.testing.platform import make_settings

    with tempfile.TemporaryDirectory() as tmp, Platform(make_settings(Path(tmp))) as platform:
        paths = set(create_app(platform, migrate=False, web=False).openapi()["paths"])
    assert {"/livez", "/readyz", "/metrics"} <= paths
    secrets = {e["valueFrom"]["secretKeyRef"]["key"] for e in api["env"] if "valueFrom" in e}
    example = documents(K8S / "secret.example.yaml")[0]["stringData"]
    assert secrets <= set(example) and "deid-key" in example


def test_the_chart_defaults_match_the_plain_manifests() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    objects = k8s_objects()
    config = objects[("ConfigMap", "medcycle-config")]["data"]
    assert {k: str(v) for k, v in values["config"].items()} == {k: v for k, v in config.items()
                                                               if k != "deployment.json"}
    assert json.loads(config["deployment.json"])["model"] == values["deployment"]["model"]
    assert objects[("Deployment", "medcycle-api")]["spec"]["replicas"] == values["api"]["replicas"]
    assert objects[("Deployment", "medcycle-worker")]["spec"]["replicas"] == values["worker"]["replicas"]
    assert objects[("Deployment", "medcycle-agent")]["spec"]["replicas"] == values["agent"]["replicas"]
    agent_args = container(objects[("Deployment", "medcycle-agent")])["args"]
    assert f"--queue={values['agent']['queue']}" in agent_args
    assert container(objects[("Deployment", "medcycle-api")])["image"] == (
        f"{values['image']['repository']}:{values['image']['tag']}")
    assert chart["appVersion"] == values["image"]["tag"]
    templates = {p.name for p in (CHART / "templates").iterdir()}
    assert {"api.yaml", "worker.yaml", "agent.yaml", "scp.yaml", "configmap.yaml", "migrate-job.yaml",
                          "hpa.yaml"} <= templates


def helm_python() -> Path | None:
    for candidate in (os.environ.get("MEDCYCLE_HELM_PYTHON"), str(ROOT / ".venv" / "helm" / "bin" / "python")):
        if candidate and Path(candidate).is_file() and run(candidate, "-c", "import helm_sdkpy").returncode == 0:
            return Path(candidate)
    return None


LINT = """
import asyncio, json, sys
import helm_sdkpy
result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(sys.argv[1]))
print(json.dumps([m["Severity"] for m in result.get("Messages") or []]))
"""


def test_the_chart_passes_helm_lint(tmp_path: Path) -> None:
    python = helm_python()
    if python is None:
        pytest.skip("helm-sdkpy is not installed: python3.12 -m venv .venv/helm && .venv/helm/bin/pip install "
                    "helm-sdkpy (or set MEDCYCLE_HELM_PYTHON)")
    result = run(python, "-c", LINT, CHART)
    assert result.returncode == 0, result.stderr
    assert max(json.loads(result.stdout), default=0) < 2  # helm: 1 info, 2 warning, 3 error
    broken = tmp_path / "medcycle"
    shutil.copytree(CHART, broken)
    with (broken / "templates" / "api.yaml").open("a") as fh:
        fh.write("\n{{ .Values.missing.deeper }}\n")
    assert max(json.loads(run(python, "-c", LINT, broken).stdout)) == 3  # the linter renders the templates


def test_the_compose_file_is_consistent() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "worker", "scp", "migrate", "postgres", "redis", "s3"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in compose["volumes"], f"{name}: undeclared volume {source}"
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"]
    assert "--appendonly" in services["redis"]["command"]  # the queue survives a Redis restart
    assert services["worker"]["command"] == ["python", "-m", "medcycle.serving.routing"]
    assert services["api"]["command"][0] == "serve" and services["scp"]["command"][0] == "serve-scp"
    assert (DEPLOY / "medcycle.env.example").is_file()
