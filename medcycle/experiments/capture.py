"""What a run records about where it came from: code, entry point, packages, platform, seeds, environment.

Everything here is read-only and bounded: git is asked with ``GIT_OPTIONAL_LOCKS=0`` (never takes the
repository's index lock), the uncommitted diff and the untracked-file list are size-capped, credentials
are stripped from remote URLs, only allow-listed environment variables are kept, and torch / nvidia-ml-py
are consulted only when they are importable. :func:`seed_everything` is the one call that seeds
``random``, NumPy and torch and switches on deterministic algorithms.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_DIFF_BYTES = 2 * 1024 * 1024
MAX_UNTRACKED = 1000
MAX_ENV_VALUE = 4096
GIT_TIMEOUT = 20.0
#: Environment variables recorded by default: they change numerics or placement, never hold secrets.
ENV_ALLOWLIST = (
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "CUBLAS_WORKSPACE_CONFIG",
    "PYTORCH_CUDA_ALLOC_CONF", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS", "PYTHONHASHSEED", "TF_DETERMINISTIC_OPS", "NCCL_DEBUG", "RANK", "LOCAL_RANK",
    "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "MEDCYCLE_HOME",
)
_CREDENTIALS_RE = re.compile(r"(?<=://)[^/@\s]+@")


@dataclass(frozen=True, slots=True)
class Capture:
    """The capture's JSON-able data and its two large parts (stored as objects)."""

    data: dict[str, Any]
    diff: bytes | None
    freeze: bytes
    packages_hash: str


# -- git --------------------------------------------------------------------------------------------
def _git(cwd: Path, *args: str, cap: int = 1024 * 1024) -> tuple[int, bytes, bool]:
    """Run git; returns exit status, at most ``cap`` bytes of stdout, and whether output was cut."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.Popen(["git", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, env=env)
    except OSError:
        return 127, b"", False
    assert proc.stdout is not None
    chunks: list[bytes] = []
    size, cut = 0, False
    while chunk := proc.stdout.read(65536):
        if size + len(chunk) > cap:
            chunks.append(chunk[:cap - size])
            cut = True
            proc.kill()
            break
        chunks.append(chunk)
        size += len(chunk)
    proc.stdout.close()
    try:
        code = proc.wait(GIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    return (0 if cut else code), b"".join(chunks), cut


def _text(cwd: Path, *args: str) -> str | None:
    code, out, _ = _git(cwd, *args)
    return out.decode(errors="replace").strip() if code == 0 else None


def strip_credentials(url: str) -> str:
    """``https://user:secret@host/x`` → ``https://host/x`` (remote URLs can carry tokens)."""
    return _CREDENTIALS_RE.sub("", url)


def git_info(path: Path, *, max_diff_bytes: int = MAX_DIFF_BYTES,
             max_untracked: int = MAX_UNTRACKED) -> tuple[dict[str, Any], bytes | None]:
    """Commit, branch, remotes, dirty flag, push state and untracked files of the repository at ``path``,
    and the uncommitted diff against HEAD (``git diff HEAD --binary``, so ``git apply`` restores it)."""
    start = path if path.is_dir() else path.parent
    root = _text(start, "rev-parse", "--show-toplevel")
    if root is None:
        return {"repository": False}, None
    top = Path(root)
    info: dict[str, Any] = {"repository": True, "root": str(top)}
    commit = _text(top, "rev-parse", "--verify", "HEAD")
    info["commit"] = commit
    branch = _text(top, "rev-parse", "--abbrev-ref", "HEAD")
    info["branch"] = None if branch in (None, "HEAD") else branch
    remotes: dict[str, str] = {}
    for name in (_text(top, "remote") or "").split():
        url = _text(top, "remote", "get-url", name)
        if url:
            remotes[name] = strip_credentials(url)
    info["remotes"] = remotes
    info["remote"] = remotes.get("origin") or next(iter(remotes.values()), None)
    if commit:
        on_remote = _text(top, "for-each-ref", "--contains", commit, "--format=%(refname)", "refs/remotes")
        info["pushed"] = bool(on_remote)
        info["pushed_to"] = (on_remote or "").split()[:20]
    else:
        info["pushed"] = False
    _, status, _ = _git(top, "status", "--porcelain=v1", "-z", "--untracked-files=all", cap=16 * 1024 * 1024)
    tracked, untracked = [], []
    entries = iter(status.decode(errors="replace").split("\0"))
    for entry in entries:
        if len(entry) < 4:
            continue
        if entry.startswith("?? "):
            untracked.append(entry[3:])
        else:
            tracked.append(entry[3:])
            if "R" in entry[:2] or "C" in entry[:2]:
                next(entries, None)  # a rename's or copy's source path follows as its own entry
    info["dirty"] = bool(tracked)
    info["changed_files"] = tracked[:max_untracked]
    info["untracked"] = untracked[:max_untracked]
    info["untracked_count"] = len(untracked)
    info["untracked_truncated"] = len(untracked) > max_untracked
    diff: bytes | None = None
    if tracked and commit:
        _, diff, cut = _git(top, "diff", "HEAD", "--binary", cap=max_diff_bytes)
        info["diff_bytes"] = len(diff)
        info["diff_truncated"] = cut
    return info, diff


# -- environment ------------------------------------------------------------------------------------
def _direct_url(path: Path) -> str | None:
    try:
        url = json.loads((path / "direct_url.json").read_text(encoding="utf-8")).get("url")
    except (OSError, ValueError, AttributeError):
        return None
    return strip_credentials(url) if isinstance(url, str) else None


def package_freeze() -> tuple[bytes, str]:
    """``name==version`` of every installed distribution (sorted; direct URLs kept) and its SHA-256.

    Read from the ``*.dist-info``/``*.egg-info`` folder names on ``sys.path`` (their names carry the
    normalised name and version), which is ten times faster than parsing every METADATA file; the first
    folder of a name wins, as for imports.
    """
    seen: dict[str, str] = {}
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                names = sorted(e.name for e in it if e.name.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
        for folder in names:
            stem = folder.rsplit(".", 1)[0]
            name, _, rest = stem.partition("-")
            version = rest.split("-")[0]
            key = name.lower().replace("_", "-").replace(".", "-")
            if not version or key in seen:
                continue
            line = f"{key}=={version}"
            url = _direct_url(Path(entry or ".") / folder) if folder.endswith(".dist-info") else None
            seen[key] = f"{line} @ {url}" if url else line
    text = ("\n".join(sorted(seen.values())) + "\n").encode()
    return text, hashlib.sha256(text).hexdigest()


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


_VERSION_LINE = re.compile(r"^(__version__|cuda|hip|git_version)\s*(?::[^=]*)?=\s*'([^']*)'", re.M)


def _torch_version_file() -> dict[str, Any] | None:
    """torch's version facts read as text from ``torch/version.py`` (never executed, torch never imported)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    found = dict(_VERSION_LINE.findall(text))
    return {"version": found.get("__version__"), "cuda": found.get("cuda"), "hip": found.get("hip"),
            "imported": False}


def _torch_info() -> dict[str, Any] | None:
    """torch facts: from the live module when the program imported torch, else from its version file
    (importing torch here would cost seconds)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return _torch_version_file()
    info: dict[str, Any] = {"version": getattr(torch, "__version__", None), "imported": True}
    try:
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as exc:  # noqa: BLE001 - a broken CUDA setup must not stop the run; it is recorded
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def gpu_info() -> list[dict[str, Any]] | None:
    """GPUs through NVML (nvidia-ml-py), when it is installed and a driver answers."""
    if importlib.util.find_spec("pynvml") is None:
        return None
    try:
        pynvml: Any = importlib.import_module("pynvml")
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: no GPU facts
        return None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                        "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                        "driver": driver.decode() if isinstance(driver, bytes) else driver})
        return out
    except Exception as exc:  # noqa: BLE001 - partial NVML support
        return [{"error": f"{type(exc).__name__}: {exc}"}]
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def system_info() -> dict[str, Any]:
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "os": {"system": platform.system(), "release": platform.release(), "platform": platform.platform()},
        "host": socket.gethostname(),
        "cpu": {"model": _cpu_model(), "logical_cores": os.cpu_count(), "machine": platform.machine()},
        "memory_bytes": _memory_bytes(),
        "torch": _torch_info(),
        "gpus": gpu_info(),
    }


def entry_point(repo_root: str | None = None) -> dict[str, Any]:
    argv = list(sys.argv)
    script = Path(argv[0]).resolve() if argv and argv[0] not in ("", "-c", "-m") else None
    relative = None
    if script is not None and repo_root:
        try:
            relative = str(script.relative_to(repo_root))
        except ValueError:
            relative = None
    return {"argv": argv, "orig_argv": list(getattr(sys, "orig_argv", argv)), "script": str(script) if script else None,
            "script_in_repo": relative, "cwd": os.getcwd(), "pid": os.getpid()}


def env_vars(extra: Iterable[str] = ()) -> dict[str, str]:
    names = dict.fromkeys([*ENV_ALLOWLIST, *extra])
    return {n: os.environ[n][:MAX_ENV_VALUE] for n in names if n in os.environ}


def default_code_path() -> Path:
    """Where the program's code lives: the entry script's folder, else the working directory."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and argv0 not in ("-c", "-m") and Path(argv0).exists():
        return Path(argv0).resolve().parent
    return Path.cwd()


def collect(code_path: Path | None = None, *, env_allowlist: Iterable[str] = (),
            max_diff_bytes: int = MAX_DIFF_BYTES) -> Capture:
    """Everything :mod:`medcycle.experiments.capture` records, in one call (a few hundred milliseconds)."""
    git, diff = git_info(code_path or default_code_path(), max_diff_bytes=max_diff_bytes)
    freeze, packages_hash = package_freeze()
    data = {
        "git": git,
        "entry": entry_point(git.get("root")),
        "system": system_info(),
        "packages": {"count": freeze.count(b"\n"), "hash": packages_hash},
        "env": env_vars(env_allowlist),
    }
    return Capture(data=data, diff=diff, freeze=freeze, packages_hash=packages_hash)


# -- seeds ------------------------------------------------------------------------------------------
def seed_everything(seed: int, *, deterministic: bool = True) -> dict[str, Any]:
    """Seed ``random``, NumPy and torch (when installed) and, if ``deterministic``, ask torch for
    deterministic algorithms (``warn_only``), deterministic cuDNN and a fixed cuBLAS workspace.

    Returns what was done, as recorded in the run's capture.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        from medcycle.errors import UsageError

        raise UsageError(f"seed {seed!r} is not a whole number in [0, 2**32)", hint="Pass e.g. run.seed(42).")
    random.seed(seed)
    done: dict[str, Any] = {"seed": seed, "random": True, "numpy": False, "torch": False,
                            "deterministic": deterministic, "pythonhashseed": os.environ.get("PYTHONHASHSEED")}
    if importlib.util.find_spec("numpy") is not None:
        import numpy as np

        np.random.seed(seed)
        done["numpy"] = True
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        done["torch"] = True
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            done["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    return done
