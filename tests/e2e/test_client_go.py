"""The Go client (clients/go) against real parts: a server process, workers, the fake
LangFlow, and a second server with keys required and TLS. Runs its `go test ./...` (the
example flow, NOT_FOUND, INVALID_ARGUMENT with field violations, UNAUTHENTICATED, deadline
exceeded, streams resumed after a cancelled or lost connection) and its example, which must
survive a server restart mid-run.

Needs the Go toolchain; the first run downloads the client's modules from the Go module
proxy into the default module cache, later runs use the default build cache.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spark_grpc._gen.spark.v1 import task_service_pb2 as ts
from spark_grpc.demo.fake_sources import FakeSources
from tests.support import (
    ServerProcess,
    Stubs,
    WorkerProcess,
    start_server_process,
)

GO = shutil.which("go")
CLIENT = Path(__file__).resolve().parents[2] / "clients" / "go"

pytestmark = pytest.mark.skipif(
    GO is None, reason="the Go toolchain (`go`, 1.26 or newer) is not installed"
)


async def run(args: list[str], env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """Runs a command in clients/go without blocking the event loop (the fake source
    answers from it) and returns its exit code and its output, stderr included."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=CLIENT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = await proc.communicate()
        raise AssertionError(f"{args} timed out:\n{out.decode(errors='replace')}") from None
    return proc.returncode or 0, out.decode(errors="replace")


def create_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "spark_grpc", "keys", "create", "--name", "go", "--scope", "write"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


def write_tls(directory: Path) -> None:
    """A CA (ca.pem) and a server certificate for localhost / 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)

    def cert(
        name: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spark go test CA")])
    (directory / "ca.pem").write_bytes(cert("spark go test CA", ca_key, ca_name, ca_key, True))
    (directory / "server.pem").write_bytes(cert("localhost", server_key, ca_name, ca_key, False))
    (directory / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


async def test_go_client_tests(
    server: ServerProcess,
    workers: WorkerProcess,
    fake: FakeSources,
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    write_tls(tmp_path)
    secured_env = {
        **server_env,
        "SPARK_AUTH_MODE": "required",
        "SPARK_REFLECTION_PUBLIC": "false",
        "SPARK_TLS_CERT_FILE": str(tmp_path / "server.pem"),
        "SPARK_TLS_KEY_FILE": str(tmp_path / "server.key"),
    }
    key = await asyncio.to_thread(create_key, secured_env)
    secured = await asyncio.to_thread(start_server_process, secured_env, tmp_path)
    try:
        env = {
            "SPARK_ADDRESS": server.address,
            "SPARK_DEMO_SOURCE_URL": fake.url("langflow"),
            "SPARK_SECURED_ADDRESS": secured.address,
            "SPARK_SECURED_API_KEY": key,
            "SPARK_SECURED_TLS_CA": str(tmp_path / "ca.pem"),
        }
        assert GO is not None
        # -p 1: the packages share the fake source, whose behaviour some tests change.
        code, out = await run([GO, "test", "-p", "1", "-count=1", "-v", "./..."], env)
    finally:
        await asyncio.to_thread(secured.stop)
    assert code == 0, out
    for name in (
        "TestExample",
        "TestLiveNotFound",
        "TestLiveInvalidArgumentWithFieldViolations",
        "TestLiveUnauthenticated",
        "TestLiveDeadlineExceeded",
        "TestLiveWatchTaskResumedAfterACancelledConnection",
        "TestLiveWatchTaskReconnectsAfterConnectionLoss",
        "TestRunWorkflowRetriesWithOneRequestID",
    ):
        assert f"--- PASS: {name} " in out, f"{name} did not pass:\n{out}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_go_example_survives_a_server_restart(
    stubs: Stubs,
    workers: WorkerProcess,
    fake: FakeSources,
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    first = await asyncio.to_thread(
        start_server_process, server_env, tmp_path / "first", listen=listen
    )
    # Each call to the source takes 3 s: the run is still going when the server restarts.
    fake.state.configure("langflow", delay_s=3.0)
    assert GO is not None
    proc = await asyncio.create_subprocess_exec(
        GO,
        "run",
        "./cmd/example",
        cwd=CLIENT,
        env={**os.environ, "SPARK_ADDRESS": listen, "SPARK_DEMO_SOURCE_URL": fake.url("langflow")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    second: ServerProcess | None = None
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(600):
            while line := (await proc.stdout.readline()).decode(errors="replace"):
                lines.append(line.rstrip("\n"))
                # A worker may claim the task before it is marked QUEUED: PENDING -> RUNNING.
                if second is None and re.match(r"event \d+ state \w+ -> RUNNING", line):
                    # The server goes away mid-stream and comes back on the same address.
                    assert await asyncio.to_thread(first.stop) == 0, first.log()[-3000:]
                    second = await asyncio.to_thread(
                        start_server_process, server_env, tmp_path / "second", listen=listen
                    )
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        await asyncio.to_thread(first.stop)
        if second is not None:
            await asyncio.to_thread(second.stop)
    out = "\n".join(lines)
    assert code == 0, out
    assert second is not None, f"the run never reached RUNNING:\n{out}"
    assert re.search(r"stream interrupted \(Unavailable: .*\): resuming after sequence \d+", out), (
        out
    )
    assert "(server answering again)" in out, out
    task_id = re.search(r"^task (\S+) SUCCEEDED output", out, re.M)
    assert task_id, out
    # Every event printed once, in order: exactly the task's stored log.
    printed = [int(m) for m in re.findall(r"^event (\d+) ", out, re.M)]
    stored = await stubs.tasks.ListTaskEvents(
        ts.ListTaskEventsRequest(task_id=task_id.group(1), page_size=1000)
    )
    assert printed == [e.sequence for e in stored.events], out
    for step in (
        r"^source \S+ .* \(created\)",
        r"^workflow \S+ \"Echo\" \(created\)",
        r"^schedule \S+ \(created\)",
    ):
        assert re.search(step, out, re.M), out
