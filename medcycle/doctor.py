"""What ``medcycle doctor`` reports: versions, backends in use and reachable, ML stack and GPUs."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform as pyplatform
import shutil
import subprocess
from typing import Any

from medcycle import __version__
from medcycle.platform import Platform

PACKAGES = ("sqlalchemy", "alembic", "fastapi", "pydantic", "typer", "redis", "psycopg", "boto3", "torch", "monai")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_report(*, import_torch: bool = True) -> dict[str, Any]:
    """GPUs seen by nvidia-smi and by torch (torch is imported only here, never at package import)."""
    out: dict[str, Any] = {"nvidia_smi": None, "torch_cuda": None, "devices": []}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            res = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
            out["nvidia_smi"] = res.stdout.strip() or res.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            out["nvidia_smi"] = f"failed: {exc}"
    if import_torch and importlib.util.find_spec("torch") is not None:
        import torch

        out["torch_cuda"] = bool(torch.cuda.is_available())
        if out["torch_cuda"]:
            out["cuda_version"] = torch.version.cuda
            out["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out


def diagnose(platform: Platform, *, check_gpu: bool = True) -> dict[str, Any]:
    health = platform.health()
    return {
        "medcycle": __version__,
        "python": pyplatform.python_version(),
        "os": f"{pyplatform.system()} {pyplatform.release()} ({pyplatform.machine()})",
        "home": str(platform.settings.home),
        "environment": platform.settings.environment.value,
        "packages": {name: _version(name) for name in PACKAGES},
        "backends": [h.to_dict() for h in health],
        "ok": all(h.ok for h in health),
        "ml": {
            "torch": _version("torch"),
            "monai": _version("monai"),
            **(gpu_report() if check_gpu else {}),
        },
    }
