"""Who may call: API keys and scopes, revocation, TLS and mTLS, rate limits."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from spark_grpc._gen.spark.v1 import (
    schedule_service_pb2,
    source_pb2,
    system_service_pb2,
    system_service_pb2_grpc,
    task_service_pb2,
    worker_service_pb2,
    workflow_service_pb2,
)
from spark_grpc._gen.spark.v1 import (
    source_service_pb2 as ss,
)
from spark_grpc.demo.fake_sources import FakeSources
from tests.support import (
    ServerProcess,
    Stubs,
    error_info,
    expect_error,
    field_violations,
    start_server_process,
    status_details,
)

SERVICES = [
    ss,
    workflow_service_pb2,
    task_service_pb2,
    schedule_service_pb2,
    worker_service_pb2,
    system_service_pb2,
]


def create_key(env: dict[str, str], scope: str, name: str = "test") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "spark_grpc", "keys", "create", "--name", name, "--scope", scope],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture
def secured_env(server_env: dict[str, str]) -> dict[str, str]:
    return {
        **server_env,
        "SPARK_AUTH_MODE": "required",
        "SPARK_REFLECTION_PUBLIC": "false",
        "SPARK_AUTH_CACHE_S": "1",
    }


@pytest.fixture
def secured(secured_env: dict[str, str], tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_server_process(secured_env, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


def every_method() -> list[tuple[str, type]]:
    methods = []
    for module in SERVICES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                request = getattr(module, m.input_type.name, None)
                if request is None:
                    from google.protobuf import message_factory

                    request = message_factory.GetMessageClass(m.input_type)
                methods.append((f"/{service.full_name}/{m.name}", request, m.server_streaming))
    return methods


async def test_without_a_key_every_rpc_but_health_is_unauthenticated(
    secured: ServerProcess,
) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        methods = every_method()
        assert len(methods) >= 30
        for path, request, streaming in methods:
            call = (channel.unary_stream if streaming else channel.unary_unary)(
                path, request_serializer=lambda m: m.SerializeToString()
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                if streaming:
                    async for _ in call(request()):
                        pass
                else:
                    await call(request())
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, path
            assert "authorization: Bearer" in (err.value.details() or "")
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            ):
                pass
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_read_key_reads_but_cannot_write(
    secured: ServerProcess, secured_env: dict[str, str]
) -> None:
    read = create_key(secured_env, "read")
    write = create_key(secured_env, "write")
    async with grpc.aio.insecure_channel(secured.address) as channel:
        stubs = Stubs(channel)
        as_read = (("authorization", f"Bearer {read}"),)
        as_write = (("x-api-key", write),)  # the original's header works too
        await stubs.sources.ListSources(ss.ListSourcesRequest(), metadata=as_read)
        system = system_service_pb2_grpc.SystemServiceStub(channel)
        status = await system.GetSystemStatus(
            system_service_pb2.GetSystemStatusRequest(), metadata=as_read
        )
        assert status.database.reachable
        err = await expect_error(
            stubs.workflows.RunWorkflow(
                workflow_service_pb2.RunWorkflowRequest(
                    workflow_id="00000000-0000-4000-8000-000000000000"
                ),
                metadata=as_read,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert error_info(err).reason == "INSUFFICIENT_SCOPE"
        created = await stubs.sources.CreateSource(
            ss.CreateSourceRequest(
                source=source_pb2.Source(display_name="a", type=1, url="http://auth.example")
            ),
            metadata=as_write,
        )
        assert created.source.id
        await expect_error(
            stubs.sources.ListSources(
                ss.ListSourcesRequest(), metadata=(("authorization", "Bearer spk_nope_nope"),)
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    assert read not in secured.log() and write not in secured.log()


async def test_a_revoked_key_stops_working_within_the_cache_bound(
    secured: ServerProcess, secured_env: dict[str, str]
) -> None:
    key = create_key(secured_env, "read")
    async with grpc.aio.insecure_channel(secured.address) as channel:
        stubs = Stubs(channel)
        md = (("authorization", f"Bearer {key}"),)
        await stubs.sources.ListSources(ss.ListSourcesRequest(), metadata=md)
        subprocess.run(
            [sys.executable, "-m", "spark_grpc", "keys", "revoke", key],
            env={**os.environ, **secured_env},
            check=True,
            capture_output=True,
        )
        await asyncio.sleep(1.2)  # SPARK_AUTH_CACHE_S=1 on this server: the documented bound
        await expect_error(
            stubs.sources.ListSources(ss.ListSourcesRequest(), metadata=md),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    listed = subprocess.run(
        [sys.executable, "-m", "spark_grpc", "keys", "list"],
        env={**os.environ, **secured_env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "revoked" in listed and key.split("_")[2] not in listed


def test_open_mode_is_refused_off_loopback(secured_env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spark_grpc", "serve"],
        env={
            **os.environ,
            **secured_env,
            "SPARK_AUTH_MODE": "open",
            "SPARK_LISTEN_ADDRESS": "0.0.0.0:0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "only allowed on a loopback" in result.stderr


async def test_rate_limit_answers_resource_exhausted_with_retry_info(
    secured_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**secured_env, "SPARK_RATE_LIMIT_PER_S": "5", "SPARK_RATE_LIMIT_BURST": "5"}
    proc = start_server_process(env, tmp_path)
    key = create_key(env, "read")
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stubs = Stubs(channel)
            md = (("authorization", f"Bearer {key}"),)
            results = await asyncio.gather(
                *(
                    stubs.sources.ListSources(ss.ListSourcesRequest(), metadata=md)
                    for _ in range(30)
                ),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
            assert 0 < len(errors) < 30
            assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in errors)
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in status_details(errors[0]).details)
            assert retry.retry_delay.ToTimedelta() > dt.timedelta(0)
    finally:
        proc.stop()


def _cert(
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    issuer: x509.Name | None = None,
    ca: bool = False,
) -> tuple[bytes, bytes, ec.EllipticCurvePrivateKey, x509.Name]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key, key, name


async def test_tls_and_mtls(secured_env: dict[str, str], tmp_path: Path) -> None:
    ca_pem, _, ca_key, ca_name = _cert("spark test CA", ca=True)
    server_pem, server_key, _, _ = _cert("localhost", ca_key, ca_name)
    client_pem, client_key, _, _ = _cert("client", ca_key, ca_name)
    for name, data in (("ca.pem", ca_pem), ("server.pem", server_pem), ("server.key", server_key)):
        (tmp_path / name).write_bytes(data)
    key = create_key(secured_env, "read")
    md = (("authorization", f"Bearer {key}"),)
    env = {
        **secured_env,
        "SPARK_TLS_CERT_FILE": str(tmp_path / "server.pem"),
        "SPARK_TLS_KEY_FILE": str(tmp_path / "server.key"),
    }
    proc = start_server_process(env, tmp_path)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        async with grpc.aio.secure_channel(proc.address, creds) as channel:
            await Stubs(channel).sources.ListSources(
                ss.ListSourcesRequest(), metadata=md, timeout=10
            )
        async with grpc.aio.insecure_channel(proc.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await Stubs(channel).sources.ListSources(
                    ss.ListSourcesRequest(), metadata=md, timeout=3
                )
    finally:
        proc.stop()
    mtls_dir = tmp_path / "mtls"
    mtls_dir.mkdir()
    proc = start_server_process(
        {**env, "SPARK_TLS_CLIENT_CA_FILE": str(tmp_path / "ca.pem")}, mtls_dir
    )
    try:
        with_cert = grpc.ssl_channel_credentials(
            ca_pem, private_key=client_key, certificate_chain=client_pem
        )
        async with grpc.aio.secure_channel(proc.address, with_cert) as channel:
            await Stubs(channel).sources.ListSources(
                ss.ListSourcesRequest(), metadata=md, timeout=10
            )
        async with grpc.aio.secure_channel(
            proc.address, grpc.ssl_channel_credentials(ca_pem)
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await Stubs(channel).sources.ListSources(
                    ss.ListSourcesRequest(), metadata=md, timeout=5
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.stop()


async def test_jwt_bearer_tokens_with_scopes(secured_env: dict[str, str], tmp_path: Path) -> None:
    import jwt

    signer = ec.generate_private_key(ec.SECP256R1())
    public = signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "jwt.pem").write_bytes(public)
    env = {
        **secured_env,
        "SPARK_JWT_PUBLIC_KEY_FILE": str(tmp_path / "jwt.pem"),
        "SPARK_JWT_AUDIENCE": "spark",
    }
    proc = start_server_process(env, tmp_path)

    def token(scope: str, **claims: object) -> str:
        body = {
            "sub": "svc-billing",
            "aud": "spark",
            "scope": scope,
            "exp": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
            **claims,
        }
        return jwt.encode(body, signer, algorithm="ES256")

    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stubs = Stubs(channel)
            reader = (("authorization", f"Bearer {token('spark.read')}"),)
            await stubs.sources.ListSources(ss.ListSourcesRequest(), metadata=reader)
            await expect_error(
                stubs.workflows.RunWorkflow(
                    workflow_service_pb2.RunWorkflowRequest(
                        workflow_id="00000000-0000-4000-8000-000000000000"
                    ),
                    metadata=reader,
                ),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            writer = (("authorization", f"Bearer {token('openid spark.write')}"),)
            await stubs.sources.CreateSource(
                ss.CreateSourceRequest(
                    source=source_pb2.Source(display_name="j", type=1, url="http://jwt.example")
                ),
                metadata=writer,
            )
            cases = [
                (token("spark.read", aud="other"), grpc.StatusCode.UNAUTHENTICATED),
                (token("spark.read", exp=0), grpc.StatusCode.UNAUTHENTICATED),
                (token(""), grpc.StatusCode.PERMISSION_DENIED),
            ]
            for bad, code in cases:
                md = (("authorization", f"Bearer {bad}"),)
                await expect_error(
                    stubs.sources.ListSources(ss.ListSourcesRequest(), metadata=md), code
                )
    finally:
        proc.stop()


async def test_source_host_allowlist(server_env: dict[str, str], tmp_path: Path) -> None:
    env = {**server_env, "SPARK_SOURCE_HOST_ALLOWLIST": ".allowed.example,10.0.0.0/8"}
    proc = start_server_process(env, tmp_path)
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stubs = Stubs(channel)
            for url in ("http://lf.allowed.example:7860", "http://10.1.2.3:7860"):
                await stubs.sources.CreateSource(
                    ss.CreateSourceRequest(
                        source=source_pb2.Source(display_name="ok", type=1, url=url)
                    )
                )
            for url in (
                "http://169.254.169.254",
                "http://evil.example",
                "http://allowed.example.evil.com",
            ):
                err = await expect_error(
                    stubs.sources.CreateSource(
                        ss.CreateSourceRequest(
                            source=source_pb2.Source(display_name="no", type=1, url=url)
                        )
                    ),
                    grpc.StatusCode.INVALID_ARGUMENT,
                )
                assert "SPARK_SOURCE_HOST_ALLOWLIST" in field_violations(err)["source.url"]
    finally:
        proc.stop()


async def test_encryption_key_rotation_without_downtime(
    server_env: dict[str, str], tmp_path: Path, fake: FakeSources
) -> None:
    from cryptography.fernet import Fernet

    old, new = server_env["SPARK_ENCRYPTION_KEYS"], Fernet.generate_key().decode()
    fake.state.configure("langflow", require_api_key="rotate-me")
    async with grpc.aio.insecure_channel(
        (proc := start_server_process(server_env, tmp_path / "a")).address
    ) as ch:
        source = (
            await Stubs(ch).sources.CreateSource(
                ss.CreateSourceRequest(
                    source=source_pb2.Source(
                        display_name="r", type=1, url=fake.url("langflow"), api_key="rotate-me"
                    )
                )
            )
        ).source
    proc.stop()
    both = {**server_env, "SPARK_ENCRYPTION_KEYS": f"{new},{old}"}
    out = subprocess.run(
        [sys.executable, "-m", "spark_grpc", "rotate-keys"],
        env={**os.environ, **both},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "re-encrypted" in out
    only_new = {**server_env, "SPARK_ENCRYPTION_KEYS": new}
    proc = start_server_process(only_new, tmp_path / "b")
    try:
        async with grpc.aio.insecure_channel(proc.address) as ch:
            checked = await Stubs(ch).sources.CheckSource(ss.CheckSourceRequest(id=source.id))
            assert checked.source.health.reachable, checked.source.health.message
    finally:
        proc.stop()
