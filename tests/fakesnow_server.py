"""fakesnow's server mode on loopback: the Snowflake emulator the Snowflake tests run against.

fakesnow (DuckDB underneath) speaks enough of Snowflake's HTTP protocol for the real
connector and dbt-snowflake; it is started as a subprocess so that its DuckDB and uvicorn
stay out of the test process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
PLATFORM_DETECTION = "SNOWFLAKE_DISABLE_PLATFORM_DETECTION"
"""Without it set to true the connector probes cloud metadata addresses when it connects."""


@dataclass(frozen=True)
class FakeSnow:
    host: str
    port: int

    def connect_args(self, *, database: str | None = None, schema: str | None = None) -> dict[str, object]:
        """What ``snowflake.connector.connect`` needs to reach this server."""
        args: dict[str, object] = {
            "account": "fakesnow", "user": "fake", "password": "snow",
            "host": self.host, "port": self.port, "protocol": "http",
        }  # fmt: skip
        if database:
            args["database"] = database
        if schema:
            args["schema"] = schema
        return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    # Any HTTP answer (fakesnow has no route at /, so 404) means uvicorn is serving.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextlib.contextmanager
def run_fakesnow(*, log: Path, timeout: float = 30.0) -> Iterator[FakeSnow]:
    """Start ``fakesnow -s`` on a free loopback port, wait until it answers, stop it after."""
    port = _free_port()
    env = {**os.environ, PLATFORM_DETECTION: "true"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "fakesnow"), "-s", "--host", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fakesnow did not start on port {port}:\n{log.read_text()}")
            time.sleep(0.1)
        yield FakeSnow("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
