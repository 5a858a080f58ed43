"""The Heap app_id never appears unmasked in anything heap-dbt prints or writes.

Every run uses one distinctive app_id and then searches stdout, stderr, the results file,
the run log (``heap-dbt history``) and every file in the project for it: after a
successful sync, a dry run (with its sample payload), syncs that Heap refuses (401, 400,
an error page that echoes the request body, a closed port), a configuration error, and
each of them again with ``--debug``. heap-dbt has no other credential: Heap's ingestion
API takes the app_id alone (no API key or token option exists).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from heap_dbt import heap
from heap_dbt.emulator import RunningEmulator
from tests.conftest import heap_dbt

pytestmark = pytest.mark.integration

SECRET = "8675309123457"
ACCOUNTS = "heap_accounts"  # 12 rows: a short bisection when every request is refused


class _EchoHeap(http.server.ThreadingHTTPServer):
    """A Heap that answers every request with ``status`` and an error page quoting the body."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _EchoHandler)


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    server: _EchoHeap

    def do_POST(self) -> None:  # the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.bodies.append(body)
        page = b"<html><body>Bad request, we got: " + body + b"</body></html>"
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def echo_heap(status: int) -> Iterator[_EchoHeap]:
    server = _EchoHeap(status)
    thread = threading.Thread(target=server.serve_forever, name="echo-heap", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def break_meta(project: Path) -> None:
    """A ConfigError: heap_users' key names a column the table does not have."""
    path = project / "target" / "manifest.json"
    manifest = json.loads(path.read_text())
    node = manifest["nodes"]["model.heap_demo.heap_users"]
    for meta in (node["config"]["meta"], node["meta"]):
        meta["heap"]["key"] = "no_such_column"
    path.write_text(json.dumps(manifest))


@dataclass(frozen=True)
class Run:
    id: str
    args: tuple[str, ...]
    heap: str = "emulator"
    """emulator, emulator-401, echo-400, echo-401 or closed-port"""
    exit_code: int = 0
    setup: Callable[[Path], None] | None = None
    app_id_flag: bool = False
    """Pass the app_id as --app-id instead of HEAP_APP_ID."""


RUNS = [
    Run("sync", ("sync",)),
    Run("sync-json", ("sync", "--json")),
    Run("sync-app-id-flag", ("sync", "--json"), app_id_flag=True),
    Run("dry-run", ("sync", "--dry-run")),
    Run("dry-run-json", ("sync", "--dry-run", "--json")),
    Run("heap-401", ("sync",), heap="emulator-401", exit_code=1),
    Run("error-page-echoes-body-400", ("sync", "-s", ACCOUNTS, "--json"), heap="echo-400", exit_code=1),
    Run("error-page-echoes-body-401", ("sync", "-s", ACCOUNTS), heap="echo-401", exit_code=1),
    Run("closed-port", ("sync", "-s", ACCOUNTS, "--max-attempts", "1"), heap="closed-port", exit_code=1),
    Run("config-error", ("sync",), exit_code=2, setup=break_meta),
    Run("config-error-app-id-flag", ("sync",), exit_code=2, setup=break_meta, app_id_flag=True),
]
RUNS += [
    Run(f"{r.id}-debug", (*r.args, "--debug"), r.heap, r.exit_code, r.setup, r.app_id_flag)
    for r in RUNS
    if r.id in ("sync", "dry-run", "error-page-echoes-body-400", "closed-port", "config-error-app-id-flag")
]


@pytest.mark.parametrize("run", RUNS, ids=[r.id for r in RUNS])
def test_the_app_id_is_never_printed_logged_or_written(
    run: Run, project: Path, emulator: RunningEmulator
) -> None:
    if run.setup is not None:
        run.setup(project)
    with contextlib.ExitStack() as stack:
        echo = None
        if run.heap.startswith("echo-"):
            echo = stack.enter_context(echo_heap(int(run.heap.removeprefix("echo-"))))
            url = f"http://127.0.0.1:{echo.server_address[1]}"
        elif run.heap == "closed-port":
            url = closed_port_url()
        else:
            url = emulator.url
            if run.heap == "emulator-401":
                emulator.emulator.configure(script=[401])
        args = (*run.args, "--app-id", SECRET) if run.app_id_flag else run.args
        app_id = None if run.app_id_flag else SECRET
        proc = heap_dbt(project, *args, base_url=url, app_id=app_id)
    history_json = heap_dbt(project, "history", "--json", app_id=SECRET)
    history = heap_dbt(project, "history", app_id=SECRET)

    assert proc.returncode == run.exit_code, proc.stderr
    assert (history_json.returncode, history.returncode) == (0, 0), history.stderr
    outputs = {
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "history --json": history_json.stdout + history_json.stderr,
        "history": history.stdout + history.stderr,
    }
    outputs |= {
        str(path.relative_to(project)): path.read_bytes().decode("utf-8", "replace")
        for path in sorted(project.rglob("*"))
        if path.is_file()
    }  # heap_sync_results.json, the DuckDB file with the state and run log, dbt's own files
    assert [name for name, text in outputs.items() if SECRET in text] == []
    if run.exit_code != 2:
        assert heap.mask_app_id(SECRET) in outputs["target/heap_sync_results.json"]
    # The search is not vacuous: the real value did go to Heap.
    if echo is not None:
        assert any(SECRET.encode() in body for body in echo.bodies)
        assert "we got" in proc.stdout  # the error page is reported, masked
    elif run.heap == "emulator" and run.exit_code == 0 and "--dry-run" not in run.args:
        assert SECRET in emulator.emulator.snapshot()["users"]
    if "--debug" in run.args and run.exit_code == 2:
        assert "Traceback" in proc.stderr
