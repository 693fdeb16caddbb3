"""The Python a task runs with, how its argv is resolved, and (optionally) the container it runs in.

``current`` (the default) runs tasks with the agent's own interpreter. ``venv`` keeps one virtual environment
per package-freeze hash under ``WORKDIR/envs/<hash>``, reused by every task with that freeze: it is made with
``--system-site-packages`` and a ``.pth`` file that adds the agent's own site-packages behind its own, so
everything the agent has is importable without a copy, and only the packages whose pinned version the agent
lacks are installed into it (``pip install --no-deps``, from the index pip is configured with).

The first word of a task's command is resolved: ``python``/``python3`` → the environment's interpreter,
``medcycle`` → ``<interpreter> -m medcycle``; any other word is run as it is. ``${MEDCYCLE_...}`` in an
argument is replaced by the value the agent gives that variable (e.g. ``--to ${MEDCYCLE_DATASET_CXR}``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from medcycle.agents.errors import TaskSetupFailed
from medcycle.agents.workspace import file_lock
from medcycle.errors import UsageError
from medcycle.experiments.capture import package_freeze
from medcycle.objects.base import ObjectStore

READY = ".medcycle-ready"
PIP_TIMEOUT_S = 1800.0
_VAR_RE = re.compile(r"\$\{(MEDCYCLE_[A-Z0-9_]+)\}")


class EnvMode(StrEnum):
    CURRENT = "current"
    VENV = "venv"


@dataclass(frozen=True, slots=True)
class PythonEnv:
    """The interpreter a task runs with; ``prefix`` is set for a venv (it goes first on ``PATH``)."""

    python: str
    mode: str
    prefix: str | None = None
    key: str | None = None
    created: bool = False
    installed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "installed": list(self.installed)}


def _site_packages(prefix: Path) -> Path:
    purelib = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    return Path(purelib)


def _agent_site_dirs() -> list[str]:
    dirs = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _missing(wanted: bytes, have: bytes) -> list[str]:
    """pip requirements for the lines of freeze ``wanted`` that freeze ``have`` lacks.

    ``name==1.2 @ URL`` lines become ``name @ URL``; local ``file://`` installs are left out (the agent's own
    copy is used).
    """
    present = set(have.decode().splitlines())
    out = []
    for line in wanted.decode().splitlines():
        line = line.strip()
        if not line or line in present:
            continue
        if " @ " in line:
            pinned, url = line.split(" @ ", 1)
            if not url.startswith("file:"):
                out.append(f"{pinned.split('==')[0]} @ {url}")
        else:
            out.append(line)
    return out


def prepare_venv(root: Path, objects: ObjectStore, packages_hash: str | None, packages_digest: str | None) -> PythonEnv:
    """The venv for a package freeze under ``root`` (made once; later tasks with the same freeze reuse it).

    Raises:
        TaskSetupFailed: the venv cannot be made, or a package cannot be installed.
    """
    own, own_hash = package_freeze()
    key = packages_hash or own_hash
    folder = root / key[:16]
    python = folder / "bin" / "python"
    with file_lock(root / f"{key[:16]}.lock"):
        marker = folder / READY
        if marker.is_file():
            installed = tuple(json.loads(marker.read_text(encoding="utf-8")).get("installed", []))
            return PythonEnv(str(python), EnvMode.VENV.value, str(folder), key, False, installed)
        shutil.rmtree(folder, ignore_errors=True)  # a half-made one from an interrupted agent
        proc = subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(folder)],
                              capture_output=True, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise TaskSetupFailed(f"cannot create a virtual environment in {folder}: "
                                  f"{proc.stderr.decode(errors='replace').strip()[-500:]}",
                                  hint="Install the venv module (Debian: python3-venv) or use --env current.")
        site_dir = _site_packages(folder)
        site_dir.mkdir(parents=True, exist_ok=True)
        # addsitedir (not a bare path line) so the agent's own .pth files — editable installs — work too
        calls = "; ".join(f"site.addsitedir({d!r})" for d in _agent_site_dirs())
        (site_dir / "_medcycle_agent.pth").write_text(f"import site; {calls}\n", encoding="utf-8")
        missing: list[str] = []
        if packages_digest and packages_hash != own_hash:
            missing = _missing(objects.get(packages_digest), own)
        if missing:
            reqs = folder / "medcycle-requirements.txt"
            reqs.write_text("\n".join(missing) + "\n", encoding="utf-8")
            try:
                proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                       "--disable-pip-version-check", "--no-input", "-r", str(reqs)],
                                      capture_output=True, stdin=subprocess.DEVNULL, timeout=PIP_TIMEOUT_S,
                                      check=False)
            except subprocess.TimeoutExpired as exc:
                raise TaskSetupFailed("installing the task's packages took too long",
                                      hint="Check the package index, or use --env current.") from exc
            if proc.returncode != 0:
                said = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
                raise TaskSetupFailed(
                    f"cannot install {len(missing)} package(s) the task needs ({', '.join(missing[:5])}): "
                    f"{' / '.join(said[-2:])}",
                    hint="Make the package index reachable (pip's own config), install them for the agent, "
                         "or run the agent with --env current.")
        marker.write_text(json.dumps({"key": key, "installed": missing}), encoding="utf-8")
        return PythonEnv(str(python), EnvMode.VENV.value, str(folder), key, True, tuple(missing))


def prepare_env(mode: EnvMode, root: Path, objects: ObjectStore, packages_hash: str | None = None,
                packages_digest: str | None = None) -> PythonEnv:
    if mode is EnvMode.VENV:
        return prepare_venv(root, objects, packages_hash, packages_digest)
    return PythonEnv(sys.executable, EnvMode.CURRENT.value)


def expand(arg: str, env: Mapping[str, str]) -> str:
    """Replace ``${MEDCYCLE_X}`` by ``env["MEDCYCLE_X"]``; an unknown name is an error (never left as text)."""
    def value(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise TaskSetupFailed(f"the command names ${{{m.group(1)}}}, which this task does not set",
                                  hint="Datasets are MEDCYCLE_DATASET_<NAME> (pass --dataset NAME@TAG).")
        return env[m.group(1)]

    return _VAR_RE.sub(value, arg)


def resolve_argv(command: Sequence[str], python: str, env: Mapping[str, str], *,
                 container: bool = False) -> list[str]:
    """The argv to execute (see the module docstring); in a container ``python`` stays ``python``."""
    if not command:
        raise UsageError("the task has no command", hint="Give the command as an argv list.")
    head, rest = command[0], [expand(a, env) for a in command[1:]]
    interpreter = "python" if container else python
    if head in ("python", "python3"):
        return [interpreter, *rest]
    if head == "medcycle":
        return [interpreter, "-m", "medcycle", *rest]
    return [expand(head, env), *rest]


def docker_argv(image: str, argv: Sequence[str], *, name: str, tree: Path, cwd: Path, env: Mapping[str, str],
                mounts: Sequence[Path], gpus: str | None) -> list[str]:
    """The ``docker run`` command line of a task (untested here: these machines have no Docker engine).

    The tree, the dataset folders and the medcycle home are mounted at their own paths, so every path the
    agent hands over (``MEDCYCLE_DATASET_*``, ``MEDCYCLE_HOME``) means the same inside; the host network lets
    the SDK reach the same database. ``--init`` reaps the task's children; the container is named after the
    task so a cancel can ``docker kill`` it.
    """
    cmd = ["docker", "run", "--rm", "--init", "--name", name, "--network", "host", "-w", str(cwd),
           "-v", f"{tree}:{tree}"]
    for mount in dict.fromkeys(mounts):
        cmd += ["-v", f"{mount}:{mount}"]
    if gpus:
        cmd += ["--gpus", f'"device={gpus}"']
    for key in sorted(env):
        # CUDA_VISIBLE_DEVICES stays out: --gpus renumbers the devices inside the container from 0.
        if key.startswith(("MEDCYCLE_", "PYTHON", "OMP_", "MKL_", "CUBLAS_")):
            cmd += ["-e", f"{key}={env[key]}"]
    return [*cmd, image, *argv]


def describe(argv: Sequence[str]) -> str:
    return shlex.join(argv)
