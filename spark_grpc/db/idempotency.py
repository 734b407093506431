"""Idempotency keys (AIP-155): a create retried with the same request_id returns the first
response; the same request_id with a different request is INVALID_ARGUMENT."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import delete, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from spark_grpc.db.models import IdempotencyKeyRow
from spark_grpc.db.session import Database
from spark_grpc.errors import FieldViolation, InvalidArgumentError

ResponseT = TypeVar("ResponseT", bound=Message)


def fingerprint(request: Message) -> bytes:
    """A hash of the request without its request_id."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


async def _lookup(
    session: AsyncSession, method: str, request_id: str, request_hash: bytes
) -> bytes | None:
    row = (
        await session.execute(
            select(IdempotencyKeyRow.request_hash, IdempotencyKeyRow.response).where(
                IdempotencyKeyRow.method == method, IdempotencyKeyRow.request_id == request_id
            )
        )
    ).one_or_none()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise InvalidArgumentError(
            "request_id was already used for a different request; use a new request_id",
            violations=[FieldViolation("request_id", "already used for a different request")],
            reason="REQUEST_ID_REUSED",
        )
    return bytes(row.response)


async def cached_response(
    db: Database, method: str, request: Message, request_id: str, response_type: type[ResponseT]
) -> ResponseT | None:
    """The first response to (method, request_id), or None when there is none yet."""
    if not request_id:
        return None
    async with db.session() as session:
        cached = await _lookup(session, method, request_id, fingerprint(request))
    return None if cached is None else response_type.FromString(cached)


async def run_idempotent(
    db: Database,
    method: str,
    request: Message,
    request_id: str,
    response_type: type[ResponseT],
    create: Callable[[AsyncSession], Awaitable[ResponseT]],
) -> ResponseT:
    """Runs create in a transaction once per (method, request_id).

    The key is written in the same transaction as what create writes, so either both
    exist or neither does. Two concurrent calls with one key: the loser's insert violates
    the key's primary key, its transaction rolls back, and it returns the winner's response.
    """
    if not request_id:
        async with db.session() as session:
            return await create(session)
    first = await cached_response(db, method, request, request_id, response_type)
    if first is not None:
        return first
    request_hash = fingerprint(request)
    try:
        async with db.session() as session:
            response = await create(session)
            await session.execute(
                insert(IdempotencyKeyRow).values(
                    method=method,
                    request_id=request_id,
                    request_hash=request_hash,
                    response=response.SerializeToString(),
                )
            )
        return response
    except sa_exc.IntegrityError:
        async with db.session() as session:
            cached = await _lookup(session, method, request_id, request_hash)
        if cached is None:
            raise
        return response_type.FromString(cached)


async def purge_expired(db: Database, retention: timedelta) -> int:
    """Forgets keys older than retention; returns how many."""
    async with db.session() as session:
        result = await session.execute(
            delete(IdempotencyKeyRow).where(
                IdempotencyKeyRow.create_time < datetime.now(UTC) - retention
            )
        )
    return int(result.rowcount)  # type: ignore[attr-defined]
