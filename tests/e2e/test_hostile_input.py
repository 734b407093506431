"""Hostile input: generated messages and raw bytes to every RPC (hypothesis).

Whatever arrives: no INTERNAL or UNKNOWN, no crash, no write on rejection, no secret in
any response, error or log line.
"""

from __future__ import annotations

import asyncio
import string
from typing import Any

import asyncpg
import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_grpc._gen.spark.v1 import (
    schedule_service_pb2,
    source_pb2,
    source_service_pb2,
    source_service_pb2_grpc,
    system_service_pb2,
    task_service_pb2,
    worker_service_pb2,
    workflow_service_pb2,
)
from tests.support import ServerProcess

SECRET = "sk-hypothesis-secret-7f3a"
MODULES = [
    source_service_pb2,
    workflow_service_pb2,
    task_service_pb2,
    schedule_service_pb2,
    worker_service_pb2,
    system_service_pb2,
]
METHODS = [
    (f"/{service.full_name}/{m.name}", m)
    for module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for m in service.methods
]
COUNT_ALL = (
    "SELECT (SELECT count(*) FROM sources) + (SELECT count(*) FROM workflows) + "
    "(SELECT count(*) FROM tasks) + (SELECT count(*) FROM schedules) + "
    "(SELECT count(*) FROM task_events)"
)
NASTY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "' OR 1=1 --",
            "'; DROP TABLE tasks; --",
            "%",
            "_",
            "\\",
            "😀" * 10,
            "00000000-0000-4000-8000-000000000000",
            "http://127.0.0.1:1",
            "ftp://x",
            "x" * 5000,
            "@daily",
            "61 * * * *",
            "America/New_York",
            "Mars/Base",
            "TASK_STATE_RUNNING",
        ]
    ),
    st.text(alphabet=string.printable, min_size=300, max_size=3000),
)
INT_TYPES = {descriptor.FieldDescriptor.TYPE_INT32, descriptor.FieldDescriptor.TYPE_INT64}


@st.composite
def messages(draw: Any, desc: descriptor.Descriptor, depth: int = 0) -> Message:
    msg = message_factory.GetMessageClass(desc)()
    if desc.full_name.startswith("google.protobuf.") and desc.name not in ("Struct",):
        if desc.name == "Timestamp":
            msg.seconds = draw(st.integers(-62135596800, 253402300799))
        elif desc.name == "Duration":
            msg.seconds = draw(st.integers(-315576000000, 315576000000))
        elif desc.name == "FieldMask":
            msg.paths.extend(draw(st.lists(NASTY_TEXT, max_size=3)))
        return msg
    for field in desc.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None:
            if depth >= 3:
                continue
            if field.message_type.full_name == "google.protobuf.Struct":
                getattr(msg, field.name).update(
                    draw(st.dictionaries(NASTY_TEXT, NASTY_TEXT, max_size=3))
                )
            elif field.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    getattr(msg, field.name).add().CopyFrom(
                        draw(messages(field.message_type, depth + 1))
                    )
            else:
                getattr(msg, field.name).CopyFrom(draw(messages(field.message_type, depth + 1)))
        elif field.type == descriptor.FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                getattr(msg, field.name).extend(draw(st.lists(NASTY_TEXT, max_size=3)))
            else:
                setattr(msg, field.name, draw(NASTY_TEXT))
        elif field.type == descriptor.FieldDescriptor.TYPE_BOOL:
            setattr(msg, field.name, draw(st.booleans()))
        elif field.type == descriptor.FieldDescriptor.TYPE_ENUM:
            value = draw(st.integers(-5, 40))
            if field.is_repeated:
                getattr(msg, field.name).extend([value])
            else:
                setattr(msg, field.name, value)
        elif field.type in INT_TYPES:
            bits = 31 if field.type == descriptor.FieldDescriptor.TYPE_INT32 else 63
            setattr(msg, field.name, draw(st.integers(-(2**bits), 2**bits - 1)))
        elif field.type == descriptor.FieldDescriptor.TYPE_DOUBLE:
            setattr(msg, field.name, draw(st.floats(allow_nan=True, allow_infinity=True)))
    return msg


CALLS = st.sampled_from(METHODS).flatmap(
    lambda pm: st.tuples(
        st.just(pm[0]),
        st.just(pm[1].server_streaming),
        st.one_of(
            messages(pm[1].input_type).map(lambda m: m.SerializeToString()),
            st.binary(max_size=64),
        ),
    )
)


def test_generated_requests_never_break_the_service(
    server: ServerProcess, database_url: str
) -> None:
    # Hypothesis drives examples synchronously: a sync gRPC channel (a real client too)
    # and asyncpg on a loop of its own (grpc.aio is bound to the session's loop).
    loop = asyncio.new_event_loop()
    channel = grpc.insecure_channel(server.address)
    pg: asyncpg.Connection = loop.run_until_complete(
        asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    )
    source_service_pb2_grpc.SourceServiceStub(channel).CreateSource(
        source_service_pb2.CreateSourceRequest(
            source=source_pb2.Source(
                display_name="secret", type=1, url="http://127.0.0.1:9/langflow", api_key=SECRET
            )
        )
    )
    seen_codes: dict[str, int] = {}

    def send(path: str, streaming: bool, payload: bytes) -> None:
        before = loop.run_until_complete(pg.fetchval(COUNT_ALL))
        responses: list[bytes] = []
        code = grpc.StatusCode.OK
        details = ""
        try:
            if streaming:
                responses.extend(channel.unary_stream(path)(payload, timeout=1))
            else:
                responses.append(channel.unary_unary(path)(payload, timeout=5))
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            details = (err.details() or "") + repr(err.trailing_metadata())  # type: ignore[attr-defined]
        seen_codes[code.name] = seen_codes.get(code.name, 0) + 1
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (path, details)
        assert SECRET not in details and all(SECRET.encode() not in r for r in responses)
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED):
            after = loop.run_until_complete(pg.fetchval(COUNT_ALL))
            assert after == before, f"{path} wrote despite {code.name}"

    @settings(
        max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(call=CALLS)
    def check(call: tuple[str, bool, bytes]) -> None:
        send(*call)

    try:
        check()
    finally:
        loop.run_until_complete(pg.close())
        channel.close()
        loop.close()
    assert SECRET not in server.log()
    assert seen_codes.get("INVALID_ARGUMENT", 0) > 50, seen_codes
