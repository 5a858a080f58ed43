"""CLI helpers that need no project: the progress bar's on/off decision."""

from __future__ import annotations

import pytest

from heap_dbt.cli import _progress_bar


def test_no_progress_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert _progress_bar(True) is None


def test_progress_bar_when_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich's own override (TTY_COMPATIBLE=1) still turns the bar on in a pipe."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert _progress_bar(True) is not None
    assert _progress_bar(False) is None
