"""medcycle: one platform for the whole life cycle of medical-imaging ML.

The public SDK is this module's ``__all__``; everything else is implementation. Importing medcycle
does no work: no settings are read, no engine is built, torch is not imported.
"""

from medcycle.errors import MedcycleError
from medcycle.platform import Platform
from medcycle.settings import Settings, load_settings

__version__ = "0.1.0.dev0"

__all__ = ["MedcycleError", "Platform", "Settings", "__version__", "load_settings"]
