"""The hand-written layer without a server: retries, error details, addresses."""

from __future__ import annotations

import asyncio

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from spark_client import (
    IDEMPOTENT_METHODS,
    SERVICE_CONFIG,
    Backoff,
    code_name,
    connect,
    error_info,
    field_violations,
    retry,
)
from spark_client._gen.google import rpc
from spark_client._gen.google.protobuf import Any
from spark_client.errors import StatusDetailsCodec

FAST = Backoff(attempts=3, initial=0.001, maximum=0.001)


def test_retry_retries_transient_failures_then_returns() -> None:
    failures = [GRPCError(Status.UNAVAILABLE, "down"), StreamTerminatedError("Connection lost")]
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "ok"

    assert asyncio.run(retry(call, FAST)) == "ok"
    assert calls == 3


@pytest.mark.parametrize(
    "error",
    [GRPCError(Status.NOT_FOUND, "no"), GRPCError(Status.DEADLINE_EXCEEDED), TimeoutError()],
)
def test_retry_gives_up_at_once_on_other_errors(error: Exception) -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        asyncio.run(retry(call, FAST))
    assert calls == 1


def test_retry_stops_after_the_last_attempt() -> None:
    async def call() -> None:
        raise GRPCError(Status.UNAVAILABLE, "down")

    with pytest.raises(GRPCError):
        asyncio.run(retry(call, FAST))


def test_status_details_decode_error_info_and_field_violations() -> None:
    status = rpc.Status(
        code=3,
        message="invalid id",
        details=[
            Any.pack(rpc.ErrorInfo(reason="INVALID_ARGUMENT", domain="spark.automagik.dev")),
            Any.pack(
                rpc.BadRequest(
                    field_violations=[rpc.BadRequestFieldViolation(field="id", description="uuid")]
                )
            ),
            Any(type_url="type.googleapis.com/unknown.Detail", value=b""),
        ],
    )
    details = StatusDetailsCodec().decode(Status.INVALID_ARGUMENT, None, bytes(status))
    err = GRPCError(Status.INVALID_ARGUMENT, "invalid id", details)
    assert code_name(err) == "INVALID_ARGUMENT"
    info = error_info(err)
    assert info is not None and info.reason == "INVALID_ARGUMENT"
    assert [(v.field, v.description) for v in field_violations(err)] == [("id", "uuid")]


def test_an_api_key_is_never_sent_in_plain_text_off_loopback() -> None:
    with pytest.raises(ValueError, match="plain text"):
        connect("spark.example.com:443", api_key="k")
    with pytest.raises(ValueError, match="host:port"):
        connect("no-port")


def test_idempotent_methods_are_read_off_the_generated_stubs() -> None:
    assert {"GetTask", "ListTasks", "ListTaskEvents"} <= set(
        IDEMPOTENT_METHODS["spark.v1.TaskService"]
    )
    assert "CheckSource" in IDEMPOTENT_METHODS["spark.v1.SourceService"]
    assert "PreviewSchedule" in IDEMPOTENT_METHODS["spark.v1.ScheduleService"]
    every = {m for methods in IDEMPOTENT_METHODS.values() for m in methods}
    assert not every & {"RunWorkflow", "CreateSource", "WatchTask", "CancelTask"}
    names = SERVICE_CONFIG["methodConfig"][0]["name"]
    assert {"service": "spark.v1.TaskService", "method": "GetTask"} in names
