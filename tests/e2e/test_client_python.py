"""The Python client (clients/python) against real parts: a server process, workers, a
scheduler, the fake LangFlow (and a slow one), a second server with TLS and API keys
required, and a third whose PostgreSQL and Redis are down.

The repository's venv has neither betterproto2 nor grpclib, so the client runs in its own
venv, clients/python/.venv-test (pinned clients/python/requirements-test.txt plus the
client installed editable), made once and reused until those pins or the client's
pyproject change. In it: the quickstart example, twice (re-runs reuse what exists), and
the client's own tests (clients/python/tests: errors and their details, TLS + API key,
deadlines, streams resumed after a cut connection, the ``spark`` command line). Skipped
only when that venv cannot be made (no network and no pip cache).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spark_grpc.demo.fake_sources import FakeSources, run_fake_sources
from tests.support import (
    ServerProcess,
    WorkerProcess,
    start_scheduler_process,
    start_server_process,
)

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
VENV = CLIENT / ".venv-test"
STAMP = VENV / ".requirements-sha256"


def _venv_key() -> str:
    digest = hashlib.sha256()
    for name in ("requirements-test.txt", "pyproject.toml"):
        digest.update((CLIENT / name).read_bytes())
    return digest.hexdigest()


def _make_venv() -> Path:
    """clients/python/.venv-test with the client installed; its python."""
    python = VENV / "bin" / "python"
    key = _venv_key()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == key:
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for cmd in (
        [sys.executable, "-m", "venv", str(VENV)],
        [*pip, "--no-deps", "-r", str(CLIENT / "requirements-test.txt")],
        [*pip, "--no-deps", "-e", str(CLIENT)],
    ):
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    STAMP.write_text(key)
    return python


@pytest.fixture(scope="module")
async def client_python() -> Path:
    try:
        return await asyncio.to_thread(_make_venv)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or ""
        pytest.skip(f"cannot create the Python client venv {VENV}: {err} {detail[-500:]}")


async def run(*cmd: str | Path, env: dict[str, str], timeout: float = 120) -> str:
    """Runs cmd in clients/python without blocking the event loop (the fake sources are
    served by this process's loop); returns stdout + stderr, failing on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, cmd),
        cwd=CLIENT,
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            **env,
            "PYTHONUNBUFFERED": "1",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[bytes] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            lines.append(line)
        await proc.wait()

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        printed = b"".join(lines).decode(errors="replace")
        raise AssertionError(
            f"{cmd} was killed after {timeout} s; it printed:\n{printed}"
        ) from None
    out = b"".join(lines)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{text}"
    return text


def _pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca_and_server_cert(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1 / localhost: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spark python client test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    for path, data in zip(paths, (_pem(ca), _pem(cert), _pem(key)), strict=True):
        path.write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def secured(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A server with TLS and API keys required, on the same database; yields the client's
    variables for it: address, CA file, a write key and a read key."""
    tmp = tmp_path_factory.mktemp("py-secured")
    ca, cert, key = _ca_and_server_cert(tmp)
    env = {
        **server_env,
        "SPARK_AUTH_MODE": "required",
        "SPARK_REFLECTION_PUBLIC": "false",
        "SPARK_TLS_CERT_FILE": str(cert),
        "SPARK_TLS_KEY_FILE": str(key),
    }

    def create_key(scope: str) -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "spark_grpc",
                "keys",
                "create",
                "--name",
                "py",
                "--scope",
                scope,
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.strip().splitlines()[-1]

    write_key, read_key = create_key("write"), create_key("read")
    proc = start_server_process(env, tmp)
    try:
        yield {
            "SPARK_SECURED_ADDRESS": proc.address,
            "SPARK_SECURED_TLS_CA": str(ca),
            "SPARK_SECURED_API_KEY": write_key,
            "SPARK_SECURED_READ_API_KEY": read_key,
        }
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def scheduler(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A scheduler process on the session's database and Redis (what `spark status` shows)."""
    proc = start_scheduler_process(server_env, tmp_path_factory.mktemp("py-scheduler"))
    try:
        yield {"SPARK_SCHEDULER_PID": str(proc.process.pid)}
    finally:
        proc.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server_without_backends(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A server whose PostgreSQL and Redis are not there (nothing listens on their ports)."""
    env = {
        **server_env,
        "SPARK_DATABASE_URL": f"postgresql+asyncpg://spark:spark@127.0.0.1:{_closed_port()}/spark",
        "SPARK_REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0",
    }
    proc = start_server_process(env, tmp_path_factory.mktemp("py-down"))
    try:
        yield {"SPARK_DOWN_ADDRESS": proc.address}
    finally:
        proc.stop()


@pytest.fixture(scope="module")
async def slow_fake() -> AsyncIterator[FakeSources]:
    """A second fake LangFlow that answers every request after a second: deadlines pass,
    and a run's stream stays open long enough to be cut mid-way."""
    async with run_fake_sources() as slow:
        slow.state.configure("langflow", delay_s=1.0)
        yield slow


async def test_quickstart_example_runs_a_workflow_to_the_end_twice(
    client_python: Path,
    server: ServerProcess,
    workers: WorkerProcess,
    fake: FakeSources,
    secured: dict[str, str],
) -> None:
    env = {"SPARK_ADDRESS": server.address, "SPARK_DEMO_SOURCE_URL": fake.url("langflow")}
    first = await run(client_python, "examples/quickstart.py", env=env)
    assert "SUCCEEDED" in first and "'Hello from Python'" in first, first
    assert "output  " in first, first  # the streamed tokens
    again = await run(client_python, "examples/quickstart.py", env=env)
    assert "(created: False)" in again, again
    source_line = next(line for line in first.splitlines() if line.startswith("source"))
    assert source_line in again, again  # ALREADY_EXISTS -> found with ListSources
    # With TLS and an API key, as a deployed server wants.
    tls_env = {
        **env,
        "SPARK_ADDRESS": secured["SPARK_SECURED_ADDRESS"],
        "SPARK_TLS_CA": secured["SPARK_SECURED_TLS_CA"],
        "SPARK_API_KEY": secured["SPARK_SECURED_API_KEY"],
    }
    assert "SUCCEEDED" in await run(client_python, "examples/quickstart.py", env=tls_env)


async def test_client_suite_errors_deadlines_and_resumed_streams(
    client_python: Path,
    server: ServerProcess,
    workers: WorkerProcess,
    fake: FakeSources,
    slow_fake: FakeSources,
    secured: dict[str, str],
    scheduler: dict[str, str],
    server_without_backends: dict[str, str],
) -> None:
    env = {
        "SPARK_ADDRESS": server.address,
        "SPARK_DEMO_SOURCE_URL": fake.url("langflow"),
        "SPARK_SLOW_SOURCE_URL": slow_fake.url("langflow"),
        **secured,
        **scheduler,
        **server_without_backends,
    }
    out = await run(client_python, "-m", "pytest", "-v", "-p", "no:cacheprovider", env=env)
    assert " passed" in out and "skipped" not in out, out
