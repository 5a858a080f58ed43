"""The Heap client verifies TLS certificates: a self-signed server on loopback is refused."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from heap_dbt.errors import FatalAPIError
from heap_dbt.transport import AiohttpTransport

pytestmark = pytest.mark.integration

PACKAGE = Path(__file__).resolve().parents[2] / "heap_dbt"


@pytest.fixture
async def self_signed_server(tmp_path: Path) -> AsyncIterator[str]:
    """An https server on 127.0.0.1 whose certificate (valid for 127.0.0.1) no CA signed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def ok(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/track", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_certificate_no_ca_signed_is_refused_without_retrying(self_signed_server: str) -> None:
    async with AiohttpTransport(self_signed_server, concurrency=1, timeout=10) as transport:
        with pytest.raises(FatalAPIError, match=r"certificate verify failed.*install the CA"):
            await transport.post("/api/track", b"{}")


def test_no_code_turns_certificate_checks_off() -> None:
    off = re.compile(r"ssl\s*=\s*False|verify_ssl|CERT_NONE|check_hostname\s*=\s*False|_create_unverified")
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if off.search(line)
    ]
    assert found == []
