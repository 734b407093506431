"""Reading the details the server attaches to an error status.

Every spark error carries a ``google.rpc.ErrorInfo`` (reason, domain, metadata with the
request id) and bad input a ``google.rpc.BadRequest`` with field violations, packed into
the ``grpc-status-details-bin`` trailer as a ``google.rpc.Status``. They are decoded with
the betterproto2 classes generated from the vendored google/rpc protos, so the client
needs no protobuf runtime. Works with both the async (grpclib) and sync (grpcio) errors.
"""

from __future__ import annotations

from typing import Any

import betterproto2
import grpc
from grpclib.const import Status
from grpclib.encoding.base import StatusDetailsCodecBase
from grpclib.exceptions import GRPCError

from ._gen.google import rpc

__all__ = [
    "StatusDetailsCodec",
    "code_name",
    "error_info",
    "field_violations",
    "status_details",
    "unpack_status_details",
]

_DETAILS_KEY = "grpc-status-details-bin"


def unpack_status_details(data: bytes) -> list[betterproto2.Message]:
    """The messages packed in a serialized ``google.rpc.Status`` (unknown types skipped)."""
    found: list[betterproto2.Message] = []
    for packed in rpc.Status.parse(data).details:
        try:
            message = packed.unpack()
        except TypeError:  # a detail type this client does not know
            continue
        if message is not None:
            found.append(message)
    return found


class StatusDetailsCodec(StatusDetailsCodecBase):
    """grpclib codec that fills ``GRPCError.details`` with the unpacked detail messages."""

    def encode(self, status: Status, message: str | None, details: Any) -> bytes:
        raise NotImplementedError("a client never sends status details")

    def decode(self, status: Status, message: str | None, data: bytes) -> Any:
        return unpack_status_details(data)


def status_details(err: BaseException) -> list[betterproto2.Message]:
    """The detail messages of an async (``GRPCError``) or sync (``grpc.RpcError``) error."""
    if isinstance(err, GRPCError):
        return [d for d in err.details or () if isinstance(d, betterproto2.Message)]
    if isinstance(err, grpc.Call):
        for key, value in err.trailing_metadata() or ():
            if key == _DETAILS_KEY and isinstance(value, bytes):
                return unpack_status_details(value)
    return []


def error_info(err: BaseException) -> rpc.ErrorInfo | None:
    """The error's ``ErrorInfo`` (``reason``, ``domain``, ``metadata``), if it has one."""
    return next((d for d in status_details(err) if isinstance(d, rpc.ErrorInfo)), None)


def field_violations(err: BaseException) -> list[rpc.BadRequestFieldViolation]:
    """The ``BadRequest`` field violations of an INVALID_ARGUMENT error (``field``,
    ``description``), in the order the server reported them."""
    return [
        violation
        for detail in status_details(err)
        if isinstance(detail, rpc.BadRequest)
        for violation in detail.field_violations
    ]


def code_name(err: BaseException) -> str | None:
    """The canonical code of a gRPC error, as in the spec ("NOT_FOUND"), for either client;
    None when ``err`` is not a gRPC status error. grpclib raises ``TimeoutError`` when the
    client's own deadline passes first: that is "DEADLINE_EXCEEDED" too."""
    if isinstance(err, TimeoutError):
        return "DEADLINE_EXCEEDED"
    if isinstance(err, GRPCError):
        return err.status.name
    if isinstance(err, grpc.RpcError) and isinstance(err, grpc.Call):
        return err.code().name
    return None
