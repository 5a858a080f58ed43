"""A counting HTTP sink in its own process: answers 200 to every POST and counts records, bytes, requests.

Run it as ``python -m benchmarks.sink``; it prints ``PORT <n>`` on its first stdout line.
It speaks just enough HTTP/1.1 (Content-Length bodies, keep-alive) on a raw asyncio
protocol to stay cheap: a record is one top-level ``"properties":`` key, which every
Heap user, account and event record has exactly once, so counting is one ``bytes.count``
per body. ``--parse`` counts with orjson instead, to cross-check. ``GET /stats`` returns
``{"records", "bytes", "requests", "cpu_s"}`` since the last ``POST /reset``; ``cpu_s`` is
the sink's own CPU time, so a benchmark can show the sink was not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

RECORD_MARK = b'"properties":'
ARRAYS = ("users", "accounts", "events")
_MAX_HEAD = 64 * 1024
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy


@dataclass
class Counters:
    records: int = 0
    byte_count: int = 0
    requests: int = 0
    cpu_started: float = field(default_factory=time.process_time)

    def reset(self) -> None:
        self.records = self.byte_count = self.requests = 0
        self.cpu_started = time.process_time()

    def as_json(self) -> bytes:
        cpu = round(time.process_time() - self.cpu_started, 4)
        return json.dumps(
            {"records": self.records, "bytes": self.byte_count, "requests": self.requests, "cpu_s": cpu}
        ).encode()


def count_records(body: bytes | bytearray, *, parse: bool) -> int:
    """How many Heap records ``body`` holds: a bulk body's array, or one single record."""
    if not parse:
        return body.count(RECORD_MARK)
    import orjson

    doc = orjson.loads(body)
    for name in ARRAYS:
        if isinstance(doc.get(name), list):
            return len(doc[name])
    return 1 if "properties" in doc else 0


def _response(status: str, body: bytes = b"", *, close: bool) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


class SinkProtocol(asyncio.Protocol):
    """One connection: parse request heads, gather Content-Length bodies, answer at once."""

    def __init__(self, counters: Counters, *, parse: bool) -> None:
        self.counters = counters
        self.parse = parse
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and self._handle_one():
            pass

    def _handle_one(self) -> bool:
        """Answer the request at the head of the buffer if it is complete; False to wait for more."""
        assert self.transport is not None
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_HEAD:
                self._finish(_response("431 Request Header Fields Too Large", close=True), close=True)
            return False
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        method, target, version = [*lines[0].split(" "), "", ""][:3]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._finish(_response("411 Length Required", close=True), close=True)
            return False
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < end + 4 + length:
            return False
        body = self.buffer[end + 4 : end + 4 + length]
        del self.buffer[: end + 4 + length]
        connection = headers.get("connection", "").lower()
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        path = target.split("?", 1)[0]
        if method == "GET" and path == "/stats":
            answer = _response("200 OK", self.counters.as_json(), close=close)
        elif method == "POST" and path == "/reset":
            self.counters.reset()
            answer = _response("200 OK", b"{}", close=close)
        elif method == "POST":
            self.counters.requests += 1
            self.counters.byte_count += length
            self.counters.records += count_records(body, parse=self.parse)
            answer = _response("200 OK", close=close)
        else:
            answer = _response("404 Not Found", close=close)
        self._finish(answer, close=close)
        return not close

    def _finish(self, answer: bytes, *, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(answer)
        if close:
            self.transport.close()
            self.transport = None


async def serve(*, host: str, port: int, parse: bool) -> None:
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(counters, parse=parse), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"PORT {bound}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as PORT <n>).")
    parser.add_argument(
        "--parse", action="store_true", help="Count records with orjson instead of bytes.count."
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host=args.host, port=args.port, parse=args.parse))


@dataclass(frozen=True)
class SinkStats:
    records: int
    byte_count: int
    requests: int
    cpu_s: float


class SinkProcess:
    """Starts the sink as a child process and talks to its control endpoints."""

    def __init__(self, *, parse: bool = False) -> None:
        self._cmd = [sys.executable, "-m", "benchmarks.sink", *(["--parse"] if parse else [])]
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> SinkProcess:
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        self._proc = subprocess.Popen(self._cmd, cwd=root, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line.startswith("PORT "):
            self._stop()
            raise RuntimeError(f"The sink did not start (said {line!r}).")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def _call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, method=method, data=b"" if method == "POST" else None
        )
        with _OPENER.open(request, timeout=10) as response:
            return json.load(response)

    def reset(self) -> None:
        self._call("POST", "/reset")

    def stats(self) -> SinkStats:
        raw = self._call("GET", "/stats")
        return SinkStats(raw["records"], raw["bytes"], raw["requests"], float(raw["cpu_s"]))


if __name__ == "__main__":
    main()
