"""The gRPC server: servicers, health, reflection, the error boundary, graceful shutdown.

``build_server`` wires a server for given settings; ``serve`` runs one until SIGTERM or
SIGINT: health goes NOT_SERVING, in-flight RPCs get ``grace_period_s`` to finish, then
the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import httpx
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from spark_grpc import defaults
from spark_grpc._gen.spark.v1 import (
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    source_service_pb2,
    source_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
    workflow_service_pb2,
    workflow_service_pb2_grpc,
)
from spark_grpc.admission import Admission
from spark_grpc.auth import Authorizer, JwtVerifier, KeyVerifier, RateLimiter
from spark_grpc.config import Settings
from spark_grpc.crypto import SecretBox
from spark_grpc.db.idempotency import purge_expired
from spark_grpc.db.session import Database, create_engine
from spark_grpc.errors import ConfigurationError
from spark_grpc.events.hub import EventHub
from spark_grpc.events.publisher import EventPublisher
from spark_grpc.interceptors import ErrorBoundaryInterceptor
from spark_grpc.metrics import Metrics
from spark_grpc.pagination import PageTokens
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.services.schedules import ScheduleServicer
from spark_grpc.services.sources import SourceServicer
from spark_grpc.services.system import SystemServicer
from spark_grpc.services.tasks import TaskServicer
from spark_grpc.services.workers import WorkerServicer
from spark_grpc.services.workflows import WorkflowServicer
from spark_grpc.tasks.queue import TaskQueue

logger = logging.getLogger(__name__)

#: The services this server implements, by full name (what health and reflection list).
SERVICE_NAMES = (
    source_service_pb2.DESCRIPTOR.services_by_name["SourceService"].full_name,
    workflow_service_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    system_service_pb2.DESCRIPTOR.services_by_name["SystemService"].full_name,
)

# Keepalive suited to long-lived streams behind proxies: ping idle connections every 30 s,
# and accept client pings as often as every 10 s.
_SERVER_OPTIONS_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass
class SparkServer:
    """A built, not yet started server and what it owns."""

    server: grpc.aio.Server
    port: int
    deps: ServiceDeps
    health: health.aio.HealthServicer
    hub: EventHub
    metrics: Metrics
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Starts serving and the background watchers."""
        self.hub.start()
        await self.server.start()
        await self._set_health(serving=True)
        self._tasks.append(asyncio.create_task(self._watch_database(), name="db-health"))
        self._tasks.append(asyncio.create_task(self._purge_request_ids(), name="request-ids"))
        if self.deps.settings.metrics_address:
            self.metrics.serve(self.deps.settings.metrics_address)
            self._tasks.append(
                asyncio.create_task(
                    self.metrics.refresh_forever(
                        self.deps.db, self.deps.queue, lambda: len(self.hub.subscriptions())
                    ),
                    name="metrics",
                )
            )

    async def stop(self, grace: float | None) -> None:
        """Health NOT_SERVING, then in-flight RPCs get grace seconds, then everything closes."""
        await self.health.enter_graceful_shutdown()
        # Streams end first, with UNAVAILABLE and where to resume; unary RPCs get the grace.
        await self.hub.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop(grace)
        await self.deps.http.aclose()
        await self.deps.redis.aclose()
        self.deps.queue.close()
        await self.deps.db.close()

    async def _set_health(self, *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def _watch_database(self) -> None:
        """Every service depends on Postgres: NOT_SERVING while it does not answer."""
        interval = self.deps.settings.db_health_interval_s
        serving = True
        while True:
            await asyncio.sleep(interval)
            ok = await self.deps.db.ping(timeout=max(interval, 1.0))
            if ok != serving:
                serving = ok
                logger.warning("database %s", "reachable again" if ok else "unreachable")
                await self._set_health(serving=ok)

    async def _purge_request_ids(self) -> None:
        retention = timedelta(seconds=defaults.REQUEST_ID_RETENTION_S)
        while True:
            try:
                purged = await purge_expired(self.deps.db, retention)
                if purged:
                    logger.info("forgot %d expired request ids", purged)
            except Exception:  # the next round retries; never let this kill the server
                logger.warning("purging request ids failed", exc_info=True)
            await asyncio.sleep(3600)


def build_deps(settings: Settings, database_url: str) -> ServiceDeps:
    """The shared handles of one server process."""
    box = SecretBox(settings.encryption_keys)
    return ServiceDeps(
        settings=settings,
        db=Database(create_engine(settings, database_url), EventPublisher(settings.redis_url)),
        box=box,
        tokens=PageTokens(box),
        http=httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
        ),
        queue=TaskQueue(settings.redis_url),
        redis=aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=5
        ),
    )


def is_loopback(address: str) -> bool:
    """True when a host:port listens on loopback only."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_authorizer(settings: Settings, deps: ServiceDeps) -> Authorizer:
    """The caller checks, from settings. Open mode is refused unless on loopback."""
    if settings.auth_mode == "open":
        if not is_loopback(settings.listen_address):
            raise ConfigurationError(
                f"SPARK_AUTH_MODE=open is only allowed on a loopback address, not "
                f"{settings.listen_address}; create API keys with `spark-grpc keys create`"
            )
        logger.warning(
            "AUTHENTICATION IS OFF (SPARK_AUTH_MODE=open): any local process may call every "
            "RPC. Set SPARK_AUTH_MODE=required and create keys before exposing this server."
        )
    jwt = None
    if settings.jwt_public_key_file is not None:
        jwt = JwtVerifier(
            settings.jwt_public_key_file.read_text(),
            settings.jwt_audience,
            settings.jwt_issuer,
            settings.jwt_scope_claim,
        )
    return Authorizer(
        mode=settings.auth_mode,
        keys=KeyVerifier(deps.db, settings.auth_cache_s),
        jwt=jwt,
        limiter=RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
        reflection_public=settings.reflection_public,
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (and mTLS with a client CA) from settings; None for plain text."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        if settings.tls_client_ca_file is not None:
            raise ConfigurationError(
                "SPARK_TLS_CLIENT_CA_FILE needs SPARK_TLS_CERT_FILE and _KEY_FILE"
            )
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ConfigurationError("set both SPARK_TLS_CERT_FILE and SPARK_TLS_KEY_FILE")
    ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def build_server(settings: Settings, deps: ServiceDeps) -> SparkServer:
    """A server with every servicer, health, reflection and the error boundary, bound to
    ``settings.listen_address`` (port 0 picks a free port; see ``SparkServer.port``)."""
    metrics = Metrics()
    server = grpc.aio.server(
        interceptors=[
            ErrorBoundaryInterceptor(
                build_authorizer(settings, deps),
                metrics,
                tracing=settings.tracing != "off",
                admission=Admission(
                    settings.max_concurrent_rpcs,
                    settings.admission_wait_s,
                    defaults.ADMISSION_RETRY_AFTER_S,
                ),
            )
        ],
        options=[
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
            ("grpc.so_reuseport", 0),
            *_SERVER_OPTIONS_KEEPALIVE,
        ],
    )
    sources = SourceServicer(deps)
    source_service_pb2_grpc.add_SourceServiceServicer_to_server(sources, server)  # type: ignore[no-untyped-call]
    workflow_service_pb2_grpc.add_WorkflowServiceServicer_to_server(  # type: ignore[no-untyped-call]
        WorkflowServicer(deps, sources), server
    )
    hub = EventHub(settings.redis_url)
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(deps, hub), server)  # type: ignore[no-untyped-call]
    schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(  # type: ignore[no-untyped-call]
        ScheduleServicer(deps), server
    )
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(deps), server)  # type: ignore[no-untyped-call]
    system_service_pb2_grpc.add_SystemServiceServicer_to_server(SystemServicer(deps), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    try:
        credentials = server_credentials(settings)
        if credentials is None:
            port = server.add_insecure_port(settings.listen_address)
        else:
            port = server.add_secure_port(settings.listen_address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigurationError(
            f"cannot listen on {settings.listen_address}: the address is in use or invalid "
            "(is another spark-grpc running? set SPARK_LISTEN_ADDRESS to another host:port)"
        )
    return SparkServer(
        server=server, port=port, deps=deps, health=health_servicer, hub=hub, metrics=metrics
    )


async def serve(
    settings: Settings,
    database_url: str,
    *,
    ready_file: Path | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Runs a server until SIGTERM or SIGINT, then shuts down gracefully."""
    deps = build_deps(settings, database_url)
    spark = build_server(settings, deps)
    await spark.start()
    host = settings.listen_address.rsplit(":", 1)[0]
    logger.info(
        "serving on %s:%d", host, spark.port, extra={"port": spark.port, "services": SERVICE_NAMES}
    )
    if ready_file is not None:
        await asyncio.to_thread(ready_file.write_text, f"{host}:{spark.port}\n")
    if on_ready is not None:
        on_ready(spark.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down: finishing in-flight RPCs for up to %.1f s", settings.grace_period_s)
    await spark.stop(settings.grace_period_s)
    logger.info("stopped")
