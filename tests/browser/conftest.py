"""Browser fixtures, imported once for every browser test module (one Chromium per session).

``live_server`` comes from the root plugin (``medcycle.testing.plugin``) and is shared with API tests.
"""

from medcycle.testing.browser import browser, console_errors, page

__all__ = ["browser", "console_errors", "page"]
