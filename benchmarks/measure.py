"""Run a command as a child process and measure its wall time, CPU seconds and peak RSS.

The command is started by a small launcher process, which reaps it with ``os.wait4`` and
reports that rusage, so nothing polls and nothing else is counted. The launcher is there
because Linux carries the spawning process's RSS high-water mark into a child across
``fork``/``vfork`` and ``exec`` (``ru_maxrss`` is at least the parent's peak): spawned
straight from this harness, which runs DuckDB over the whole table for the limit, a
sync's "peak RSS" would be the harness's. The launcher is a bare Python (about 10 MB), so
that is all a measured peak can inherit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# argv: the command as JSON, and the file to write [exit code, wall s, user s, sys s, ru_maxrss] to.
_LAUNCHER = """\
import json, os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(json.loads(sys.argv[1]))
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - started
report = [os.waitstatus_to_exitcode(status), wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss]
with open(sys.argv[2], "w") as f:
    json.dump(report, f)
"""


@dataclass(frozen=True)
class ProcessRun:
    """One measured child process, from exec to exit."""

    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def run_measured(
    cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float | None = None
) -> ProcessRun:
    """Run ``cmd`` to completion and measure it; it is killed after ``timeout`` seconds."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="heap-dbt-measure-") as tmp,
    ):
        report_path = Path(tmp) / "rusage.json"
        started = time.perf_counter()
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-c", _LAUNCHER, json.dumps(list(cmd)), str(report_path)],
            cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,  # its own process group, so a timeout kills the command too
        )  # fmt: skip
        killer = threading.Timer(timeout, os.killpg, (launcher.pid, signal.SIGKILL)) if timeout else None
        if killer is not None:
            killer.start()
        try:
            launcher.wait()
        finally:
            if killer is not None:
                killer.cancel()
        outer_wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        if not report_path.exists():  # killed, or the launcher itself failed
            return ProcessRun(launcher.returncode or -1, outer_wall, 0.0, 0.0, 0.0, stdout, stderr)
        code, wall, user, system, maxrss = json.loads(report_path.read_text())
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    rss_bytes = maxrss if sys.platform == "darwin" else maxrss * 1024
    return ProcessRun(
        returncode=int(code),
        wall_s=float(wall),
        user_s=float(user),
        sys_s=float(system),
        peak_rss_mb=rss_bytes / 2**20,
        stdout=stdout,
        stderr=stderr,
    )
