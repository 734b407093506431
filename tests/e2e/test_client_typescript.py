"""The TypeScript client (clients/typescript) against real parts: a server process, workers,
the fake LangFlow, and a second server with TLS and API keys required.

Runs `npm ci` (when node_modules is missing), `npm run build`, the package's node:test
suite (its live tests read SPARK_ADDRESS and friends) and the quickstart example, twice.
Skipped when node or npm is missing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spark_grpc.demo.fake_sources import FakeSources
from tests.support import ServerProcess, WorkerProcess, start_server_process

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "typescript"
NODE, NPM = shutil.which("node"), shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason="node and npm (Node 20+) are needed for the TypeScript client",
)


def _node_major() -> int:
    out = subprocess.run([NODE or "node", "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().lstrip("v").split(".")[0])


async def run(*cmd: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Runs cmd in clients/typescript without blocking the event loop (the fake LangFlow
    is served by this process's loop); returns stdout + stderr, failing on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=CLIENT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{text}"
    return text


@pytest.fixture(scope="module")
async def built() -> None:
    if _node_major() < 20:
        pytest.skip("the TypeScript client needs Node 20 or newer")
    if not (CLIENT / "node_modules" / ".bin" / "tsc").exists():
        await run(NPM or "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", timeout=600)
    await run(NPM or "npm", "run", "build")


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost that is its own CA, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spark ts test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def secured(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A server with TLS and API keys required, on the same database; yields its env for
    the client: address, CA and a write key."""
    tmp = tmp_path_factory.mktemp("ts-secured")
    cert, key = _self_signed(tmp)
    env = {
        **server_env,
        "SPARK_AUTH_MODE": "required",
        "SPARK_REFLECTION_PUBLIC": "false",
        "SPARK_TLS_CERT_FILE": str(cert),
        "SPARK_TLS_KEY_FILE": str(key),
    }
    api_key = (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "spark_grpc",
                "keys",
                "create",
                "--name",
                "ts",
                "--scope",
                "write",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    proc: ServerProcess = start_server_process(env, tmp)
    try:
        yield {"address": f"https://{proc.address}", "ca": str(cert), "api_key": api_key}
    finally:
        proc.stop()


async def test_node_test_suite(
    built: None,
    server: ServerProcess,
    workers: WorkerProcess,
    fake: FakeSources,
    secured: dict[str, str],
) -> None:
    """Unit tests of the thin layer, then the live ones: the quickstart flow, NOT_FOUND,
    INVALID_ARGUMENT with field violations, UNAUTHENTICATED, DEADLINE_EXCEEDED, and
    WatchTask / WatchTasks resumed after a cut connection."""
    out = await run(
        NPM or "npm",
        "test",
        env={
            "SPARK_ADDRESS": f"http://{server.address}",
            "SPARK_DEMO_SOURCE_URL": fake.url("langflow"),
            "SPARK_SECURED_ADDRESS": secured["address"],
            "SPARK_SECURED_TLS_CA": secured["ca"],
            "SPARK_SECURED_API_KEY": secured["api_key"],
        },
    )
    assert "# fail 0" in out, out
    assert "# skipped 0" in out, out  # every live test ran
    for name in (
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "UNAUTHENTICATED",
        "DEADLINE_EXCEEDED",
        "resumes",
    ):
        assert any(line.startswith("ok ") and name in line for line in out.splitlines()), out


def _assert_quickstart(out: str) -> None:
    lines = out.splitlines()
    assert any("state -> PENDING" in line for line in lines), out
    assert any("output " in line for line in lines), out
    assert any("state RUNNING -> SUCCEEDED" in line for line in lines), out
    assert 'result   SUCCEEDED "Hello from TypeScript"' in out, out
    assert any(line.startswith("schedule ") for line in lines), out


async def test_quickstart_plaintext_twice(
    built: None, server: ServerProcess, workers: WorkerProcess, fake: FakeSources
) -> None:
    """The example on plaintext loopback; a second run finds its source (ALREADY_EXISTS)."""
    env = {
        "SPARK_ADDRESS": f"http://{server.address}",
        "SPARK_DEMO_SOURCE_URL": fake.url("langflow"),
    }
    first = await run(NODE or "node", "dist/examples/quickstart.js", env=env, timeout=120)
    _assert_quickstart(first)
    second = await run(NODE or "node", "dist/examples/quickstart.js", env=env, timeout=120)
    _assert_quickstart(second)
    source_line = next(line for line in first.splitlines() if line.startswith("source "))
    assert source_line in second, "the second run reuses the source"


async def test_quickstart_tls_and_api_key(
    built: None, secured: dict[str, str], workers: WorkerProcess, fake: FakeSources
) -> None:
    """The example with TLS (a bare host:port plus a CA means https) and an API key."""
    out = await run(
        NODE or "node",
        "dist/examples/quickstart.js",
        env={
            "SPARK_ADDRESS": secured["address"].removeprefix("https://"),
            "SPARK_TLS_CA": secured["ca"],
            "SPARK_API_KEY": secured["api_key"],
            "SPARK_DEMO_SOURCE_URL": fake.url("langflow"),
        },
        timeout=120,
    )
    assert out.startswith("connected to https://") and "with an API key" in out, out
    _assert_quickstart(out)
