"""The one error boundary, and per-RPC request ids and access logs.

Every handler is wrapped here, so:
- a :class:`~spark_grpc.errors.SparkError` becomes its status code with
  ``google.rpc.ErrorInfo`` (and ``BadRequest`` / ``RetryInfo`` where they apply) in the
  ``grpc-status-details-bin`` trailer;
- bytes that are not a valid request message become INVALID_ARGUMENT (grpc.aio would
  answer UNKNOWN);
- any other exception is logged with its traceback and becomes INTERNAL with a generic
  message and the request id; no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.trace import SpanKind

from spark_grpc.admission import Admission, admits_all
from spark_grpc.auth import Authorizer
from spark_grpc.errors import (
    DOMAIN,
    InvalidArgumentError,
    ResourceExhaustedError,
    SparkError,
)
from spark_grpc.logs import request_id_var
from spark_grpc.metrics import Metrics
from spark_grpc.tracing import context_from_metadata, tracer

logger = logging.getLogger(__name__)

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class _UndecodableRequest:
    """Stands in for a request whose bytes did not parse as the RPC's message."""


def _safe_deserializer(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # protobuf raises DecodeError, but also others on hostile bytes
            return _UndecodableRequest()

    return deserialize


def status_for(err: SparkError, request_id: str) -> status_pb2.Status:
    """The google.rpc.Status (with details) that a client receives for err."""
    status = status_pb2.Status(code=err.code.value[0], message=err.message)
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN)
    info.metadata.update(err.metadata)
    if request_id:
        info.metadata["request_id"] = request_id
    status.details.add().Pack(info)
    if isinstance(err, InvalidArgumentError) and err.violations:
        bad = error_details_pb2.BadRequest()
        for v in err.violations:
            bad.field_violations.add(field=v.field, description=v.description)
        status.details.add().Pack(bad)
    if isinstance(err, ResourceExhaustedError):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(err.retry_after_s * 1000))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


class ErrorBoundaryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every unary and server-streaming handler with the error boundary, and checks
    the caller (authorizer) before any handler runs. With ``admission``, a unary RPC
    first takes a slot of it (or is refused with RESOURCE_EXHAUSTED)."""

    def __init__(
        self,
        authorizer: Authorizer | None = None,
        metrics: Metrics | None = None,
        tracing: bool = False,
        admission: Admission | None = None,
    ) -> None:
        self._authorizer = authorizer
        self._metrics = metrics
        self._tracing = tracing
        self._admission = admission if admission is not None and admission.limit > 0 else None
        #: Wrapped handlers by method: grpc.aio asks for every call, and the registered
        #: handler of a method never changes, so each is wrapped once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        deserializer = _safe_deserializer(handler.request_deserializer)
        auth = self._authorizer
        if handler.unary_unary is not None:
            behavior = handler.unary_unary
            if self._tracing:
                behavior = _traced(method, behavior)
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(
                    method,
                    behavior,
                    auth,
                    self._metrics,
                    None if admits_all(method) else self._admission,
                ),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        # Streams written as async generators (ours) are wrapped; a library's stream that
        # writes through context.write (health's Watch) is left as it is.
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream, auth, self._metrics),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None and auth is not None:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_bidi(method, handler.stream_stream, auth),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


async def _abort_for(
    method: str, err: BaseException, context: grpc.aio.ServicerContext, request_id: str
) -> None:
    """Ends the RPC with the status err maps to. Raises (abort always raises)."""
    if isinstance(err, SparkError):
        spark_err = err
        level = logging.ERROR if err.code == grpc.StatusCode.INTERNAL else logging.INFO
        if err.reason == "SERVER_OVERLOADED":
            level = logging.DEBUG  # admission logs a summary; a line per refusal adds load
        logger.log(level, "%s failed: %s %s", method, err.code.name, err.reason)
    else:
        logger.error("%s raised an unexpected error", method, exc_info=err)
        spark_err = SparkError(f"internal error; quote request id {request_id} when reporting it")
    status = status_for(spark_err, request_id)
    await context.abort(
        spark_err.code,
        spark_err.message,
        trailing_metadata=(
            (_STATUS_DETAILS_KEY, status.SerializeToString()),
            ("x-request-id", request_id),
        ),
    )


def _undecodable(method: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"the request body is not a valid {method.rsplit('/', 1)[-1]}Request protobuf message",
        reason="UNDECODABLE_REQUEST",
    )


def _traced(
    method: str, behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """A server span per RPC, continuing the caller's traceparent if it sent one."""

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        parent = context_from_metadata(context.invocation_metadata())
        with tracer().start_as_current_span(method, context=parent, kind=SpanKind.SERVER):
            return await behavior(request, context)

    return handle


async def _authorize(
    auth: Authorizer | None, method: str, context: grpc.aio.ServicerContext
) -> None:
    if auth is not None:
        await auth.check(method, context.invocation_metadata(), context.peer())


def _wrap_unary(
    method: str,
    behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    auth: Authorizer | None,
    metrics: Metrics | None,
    admission: Admission | None = None,
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request_id = _request_id(context)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        code = "OK"
        admitted = False
        try:
            if admission is not None:
                await admission.acquire()  # first: refusing must stay cheap
                admitted = True
            await _authorize(auth, method, context)
            if isinstance(request, _UndecodableRequest):
                raise _undecodable(method)
            context.set_trailing_metadata((("x-request-id", request_id),))
            return await behavior(request, context)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as err:
            if _is_abort(err):  # a handler's own context.abort: already a status
                raise
            code = err.code.name if isinstance(err, SparkError) else "INTERNAL"
            await _abort_for(method, err, context, request_id)
            raise  # unreachable: abort raises
        finally:
            if admitted:
                assert admission is not None
                admission.release()
            elapsed = time.perf_counter() - started
            if metrics is not None:
                metrics.observe_rpc(method, code, elapsed)
            logger.debug("rpc %s %s in %.1f ms", method, code, elapsed * 1000)
            request_id_var.reset(token)

    return handle


def _wrap_stream(
    method: str,
    behavior: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]],
    auth: Authorizer | None,
    metrics: Metrics | None,
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        request_id = _request_id(context)
        # No reset: a stream's generator may be closed from another context (client
        # cancel), and grpc.aio runs every RPC in its own task and context anyway.
        request_id_var.set(request_id)
        started = time.perf_counter()
        code = "OK"
        try:
            await _authorize(auth, method, context)
            if isinstance(request, _UndecodableRequest):
                raise _undecodable(method)
            async for response in behavior(request, context):
                yield response
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as err:
            if _is_abort(err):
                code = "ABORTED"
                raise
            code = err.code.name if isinstance(err, SparkError) else "INTERNAL"
            await _abort_for(method, err, context, request_id)
        finally:
            if metrics is not None:
                metrics.observe_rpc(method, code, time.perf_counter() - started)

    return handle


def _wrap_bidi(
    method: str, behavior: Callable[[Any, grpc.aio.ServicerContext], Any], auth: Authorizer
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    """Bidirectional streams (reflection) get the caller check only."""

    async def handle(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        request_id = _request_id(context)
        try:
            await _authorize(auth, method, context)
        except SparkError as err:
            await _abort_for(method, err, context, request_id)
        async for response in behavior(requests, context):
            yield response

    return handle


def _is_abort(err: BaseException) -> bool:
    # grpc.aio signals context.abort() with this internal exception type.
    return type(err).__name__ == "AbortError"
