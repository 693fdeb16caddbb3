pytest_plugins = ["medcycle.testing.plugin"]

# One definition of the browser fixtures for the whole suite: two session-scoped Playwright instances in one
# process (one per conftest that imported them) cannot run side by side.
from medcycle.testing.browser import browser, console_errors, page  # noqa: E402, F401

# The demo's home, made once per session by the real CLI: the demo's own test and the guides' examples start from it.
from tests.demo_home import demo_home  # noqa: E402, F401
