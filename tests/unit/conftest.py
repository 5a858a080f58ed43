"""Fixtures the unit tests of several modules share."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common default umask, so that only heap-dbt's own care makes a file private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)
