"""Connecting: TLS (or plain text on loopback), an API key on every call, a default
deadline, keepalive for long-lived streams and retries of idempotent calls.

What the generated stubs do not do themselves:

* async (grpclib): the stubs take a channel, a default timeout and metadata; grpclib has
  no service config, so :class:`SparkClient` uses stub subclasses that send the calls of
  :data:`~spark_client.retry.IDEMPOTENT_METHODS` through :func:`~spark_client.retry.retry`,
  and a status-details codec that decodes ``google.rpc`` details with betterproto2.
* sync (grpcio): the stubs take only a channel, so the API key and the default deadline
  come from a client interceptor, and retries from the gRPC service config.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.protocol import H2Protocol

from ._gen.spark import v1
from .errors import StatusDetailsCodec
from .retry import IDEMPOTENT_ROUTES, SERVICE_CONFIG, retry

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "SparkClient",
    "SparkSyncClient",
    "Tls",
    "connect",
    "connect_sync",
]

#: Deadline, in seconds, of a unary call that does not set one. Streams get none.
DEFAULT_TIMEOUT = 30.0
#: The server's default SPARK_MAX_MESSAGE_BYTES (grpcio's own limit is 4 MiB).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Keepalive suited to long-lived streams: ping every 30 s while a call is open (the
# server accepts pings every 10 s or slower), drop the connection after 10 s of silence.
KEEPALIVE_TIME_S = 30.0
KEEPALIVE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Tls:
    """TLS settings. Without ``ca_file`` the system's trusted roots verify the server;
    ``cert_file`` + ``key_file`` present a client certificate (mTLS)."""

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    #: Check the server certificate against this name instead of the address's host.
    server_name: str | None = None


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _metadata(api_key: str | None, host: str, tls: Tls | None, insecure: bool) -> dict[str, str]:
    if api_key is None:
        return {}
    if tls is None and not insecure and not _is_loopback(host):
        raise ValueError(
            f"refusing to send an API key in plain text to {host}: pass tls=Tls(...) "
            "(or insecure=True if something else encrypts the connection)"
        )
    return {"authorization": f"Bearer {api_key}"}


_S = TypeVar("_S")


def _retrying(stub: type[_S]) -> type[_S]:
    """``stub`` with its idempotent calls retried on UNAVAILABLE (grpclib has no service
    config). Overrides betterproto2's ``ServiceStub._unary_unary`` (betterproto2 0.10)."""

    class Retrying(stub):  # type: ignore[valid-type, misc]
        async def _unary_unary(self, route: str, *args: Any, **kwargs: Any) -> Any:
            call = super()._unary_unary
            if route not in IDEMPOTENT_ROUTES:
                return await call(route, *args, **kwargs)
            return await retry(lambda: call(route, *args, **kwargs))

    Retrying.__name__ = Retrying.__qualname__ = stub.__name__
    return Retrying


_SourceStub = _retrying(v1.SourceServiceStub)
_WorkflowStub = _retrying(v1.WorkflowServiceStub)
_TaskStub = _retrying(v1.TaskServiceStub)
_ScheduleStub = _retrying(v1.ScheduleServiceStub)
_WorkerStub = _retrying(v1.WorkerServiceStub)
_SystemStub = _retrying(v1.SystemServiceStub)


class _Channel(Channel):
    """A grpclib channel whose close is complete when awaited. grpclib's ``close()`` only
    starts closing: a TLS socket then waits for the server's close_notify, which a gRPC
    server may never send, and a loop that ends meanwhile leaks the socket."""

    _open: tuple[asyncio.BaseTransport, asyncio.Event] | None = None

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        lost = asyncio.Event()
        made, connection_lost = protocol.connection_made, protocol.connection_lost

        def on_made(transport: asyncio.BaseTransport) -> None:
            self._open = transport, lost
            made(transport)

        def on_lost(exc: BaseException | None) -> None:
            connection_lost(exc)
            lost.set()

        protocol.connection_made = on_made  # type: ignore[method-assign]
        protocol.connection_lost = on_lost  # type: ignore[method-assign]
        return protocol

    async def aclose(self) -> None:
        opened, self._open = self._open, None
        self.close()
        if opened is not None and isinstance(opened[0], asyncio.Transport):
            opened[0].abort()  # closed now, not after a TLS goodbye that may never come
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(opened[1].wait(), 1.0)


class SparkClient:
    """The six async services over one grpclib channel.

    ``sources``, ``workflows``, ``tasks``, ``schedules``, ``workers`` and ``system`` are the
    generated stubs with the API key and the default deadline set (a call may pass its own
    ``timeout=``), and their idempotent calls retried. ``streams`` is a TaskService stub
    without a deadline, for WatchTask / WatchTasks (see :mod:`spark_client.watch`). Use
    as ``async with``, or :meth:`aclose` it.
    """

    def __init__(
        self, channel: _Channel, *, metadata: dict[str, str], default_timeout: float | None
    ) -> None:
        self.channel = channel
        self.metadata = metadata
        self.default_timeout = default_timeout
        md = metadata or None
        self.sources: v1.SourceServiceStub = _SourceStub(
            channel, timeout=default_timeout, metadata=md
        )
        self.workflows: v1.WorkflowServiceStub = _WorkflowStub(
            channel, timeout=default_timeout, metadata=md
        )
        self.tasks: v1.TaskServiceStub = _TaskStub(channel, timeout=default_timeout, metadata=md)
        self.schedules: v1.ScheduleServiceStub = _ScheduleStub(
            channel, timeout=default_timeout, metadata=md
        )
        self.workers: v1.WorkerServiceStub = _WorkerStub(
            channel, timeout=default_timeout, metadata=md
        )
        self.system: v1.SystemServiceStub = _SystemStub(
            channel, timeout=default_timeout, metadata=md
        )
        self.streams = v1.TaskServiceStub(channel, metadata=md)

    def close(self) -> None:
        self.channel.close()

    async def aclose(self) -> None:
        """Closes the channel and its socket."""
        await self.channel.aclose()

    async def __aenter__(self) -> SparkClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _ssl_context(tls: Tls) -> ssl.SSLContext:
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
    )
    if tls.cert_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def connect(
    address: str,
    *,
    api_key: str | None = None,
    tls: Tls | None = None,
    default_timeout: float | None = DEFAULT_TIMEOUT,
    insecure: bool = False,
) -> SparkClient:
    """An async client for the server at ``address`` ("host:port").

    Plain text unless ``tls`` is given; an ``api_key`` goes with every call as
    ``authorization: Bearer <key>`` and is refused in plain text off loopback unless
    ``insecure``. Unary calls get ``default_timeout`` seconds unless they pass ``timeout=``
    (None: no default). Nothing connects until the first call. Call it from async code.
    """
    host, port = _split_address(address)
    metadata = _metadata(api_key, host, tls, insecure)
    config = Configuration(
        _keepalive_time=KEEPALIVE_TIME_S,
        _keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        _keepalive_permit_without_calls=False,
        _http2_max_pings_without_data=0,
        ssl_target_name_override=tls.server_name if tls else None,
    )
    channel = _Channel(
        host,
        port,
        ssl=_ssl_context(tls) if tls else None,
        config=config,
        status_details_codec=StatusDetailsCodec(),
    )
    return SparkClient(channel, metadata=metadata, default_timeout=default_timeout)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _Defaults(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds the API key to every call and the default deadline to unary calls."""

    def __init__(self, metadata: dict[str, str], default_timeout: float | None) -> None:
        self._metadata = list(metadata.items())
        self._timeout = default_timeout

    def _details(self, details: grpc.ClientCallDetails, timeout: float | None) -> _CallDetails:
        return _CallDetails(
            method=details.method,
            timeout=timeout,
            metadata=[*(details.metadata or ()), *self._metadata],
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
            compression=details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        timeout = details.timeout if details.timeout is not None else self._timeout
        return continuation(self._details(details, timeout), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, details.timeout), request)


class SparkSyncClient:
    """The six sync services over one grpcio channel (see :func:`connect_sync`). Use as
    ``with``, or :meth:`close` it."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.sources = v1.SourceServiceSyncStub(channel)
        self.workflows = v1.WorkflowServiceSyncStub(channel)
        self.tasks = v1.TaskServiceSyncStub(channel)
        self.schedules = v1.ScheduleServiceSyncStub(channel)
        self.workers = v1.WorkerServiceSyncStub(channel)
        self.system = v1.SystemServiceSyncStub(channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> SparkSyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def connect_sync(
    address: str,
    *,
    api_key: str | None = None,
    tls: Tls | None = None,
    default_timeout: float | None = DEFAULT_TIMEOUT,
    insecure: bool = False,
) -> SparkSyncClient:
    """A sync (grpcio) client; the same arguments as :func:`connect`. Idempotent calls are
    retried on UNAVAILABLE by the channel's service config
    (:data:`~spark_client.retry.SERVICE_CONFIG`); streams get no default deadline."""
    host, _ = _split_address(address)
    metadata = _metadata(api_key, host, tls, insecure)
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", int(KEEPALIVE_TIME_S * 1000)),
        ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if tls is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls.ca_file),
            private_key=_read(tls.key_file),
            certificate_chain=_read(tls.cert_file),
        )
        channel = grpc.secure_channel(address, credentials, options=options)
    return SparkSyncClient(grpc.intercept_channel(channel, _Defaults(metadata, default_timeout)))
