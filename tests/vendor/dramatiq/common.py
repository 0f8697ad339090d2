"""What the vendored tests import from dramatiq's own `tests/common.py`, written for this run
(dramatiq's also sets up RabbitMQ credentials, which nothing here uses)."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from dramatiq import Worker


@contextmanager
def worker(*args: Any, **kwargs: Any) -> Iterator[Worker]:
    """A started worker, stopped on leaving."""
    started = Worker(*args, **kwargs)
    try:
        started.start()
        yield started
    finally:
        started.stop()


skip_on_windows = pytest.mark.skipif(platform.system() == "Windows",
                                     reason="test skipped on Windows")
skip_on_pypy = pytest.mark.skipif(platform.python_implementation() == "PyPy",
                                  reason="Time limits are not supported under PyPy.")
