"""Helpers for fixtures that need real services (PostgreSQL, Redis, S3, a browser).

A missing service skips the test with a loud reason — except under ``CI=true``, where it fails the
run: CI must really exercise every backend.
"""

from __future__ import annotations

import os
import socket
import time
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> NoReturn:
    message = f"SERVICE MISSING: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: integration tests must run, so this fails)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
