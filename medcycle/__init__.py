"""medcycle: one platform for the whole life cycle of medical-imaging ML.

The public SDK is this module's ``__all__``; everything else is implementation. Importing medcycle
does no work: no settings are read, no engine is built, torch is not imported.
"""

from typing import TYPE_CHECKING, Any

from medcycle.errors import MedcycleError
from medcycle.platform import Platform
from medcycle.settings import Settings, load_settings

if TYPE_CHECKING:
    from medcycle.experiments.sdk import Run, start_run

__version__ = "0.1.0.dev0"

__all__ = ["MedcycleError", "Platform", "Run", "Settings", "__version__", "load_settings", "start_run"]

_LAZY = {"Run": "medcycle.experiments.sdk", "start_run": "medcycle.experiments.sdk"}


def __getattr__(name: str) -> Any:
    """``medcycle.start_run`` and ``medcycle.Run`` import the tracking SDK on first use, not at import."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medcycle' has no attribute {name!r}")
