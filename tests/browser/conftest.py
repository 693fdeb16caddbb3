"""Browser tests share the suite-wide fixtures ``browser``, ``page`` and ``console_errors`` (tests/conftest.py)
and ``live_server`` from the root plugin (``medcycle.testing.plugin``)."""
