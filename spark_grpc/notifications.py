"""Webhook notifications: signed POSTs for tasks that reached a terminal state.

Deliveries are rows written by the terminal transition itself (spark_grpc.tasks.store), so
none is ever lost; the sweeper delivers the due ones, retrying with backoff, and records
every attempt on the row (the task's event log ends at its terminal event).

Signature (like Stripe's): ``X-Spark-Signature: t=<unix seconds>,v1=<hex>`` where hex is
HMAC-SHA256(secret, f"{t}." + body). Receivers check it and reject old timestamps.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from spark_grpc.db.session import Database

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
_BATCH = 50
_TIMEOUT_S = 10.0


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-Spark-Signature header value for a body sent at timestamp."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_secret(configured: str, encryption_keys: list[str]) -> bytes:
    """SPARK_WEBHOOK_SECRET, or (unset) a secret derived from the first encryption key,
    shown by `spark-grpc webhook-secret`."""
    if configured:
        return configured.encode()
    return hashlib.sha256(b"webhook:" + encryption_keys[0].encode()).hexdigest().encode()


def backoff(attempt: int) -> timedelta:
    """Wait after failed attempt ``attempt`` (1-based): 1 s doubling, at most 5 min."""
    return timedelta(seconds=min(300.0, 2.0 ** (attempt - 1)))


async def _post(http: httpx.AsyncClient, secret: bytes, row: Any) -> dict[str, Any]:
    body = json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()
    started = time.perf_counter()
    attempt: dict[str, Any] = {"time": datetime.now(UTC).isoformat(), "http_status": 0, "error": ""}
    try:
        response = await http.post(
            row.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "spark-grpc-webhooks",
                "X-Spark-Delivery": str(row.id),
                "X-Spark-Signature": sign(secret, int(time.time()), body),
            },
            timeout=_TIMEOUT_S,
        )
        attempt["http_status"] = response.status_code
        if not 200 <= response.status_code < 300:
            attempt["error"] = f"answered HTTP {response.status_code}"
    except httpx.HTTPError as err:
        attempt["error"] = f"{type(err).__name__}: {err}"[:500]
    attempt["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return attempt


async def deliver_due(db: Database, http: httpx.AsyncClient, secret: bytes) -> int:
    """Makes one attempt at every due delivery; returns how many were attempted."""
    async with db.connection() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT id, url, payload, attempt_count FROM webhook_deliveries "
                    "WHERE state = 'PENDING' AND next_attempt_time <= clock_timestamp() "
                    "ORDER BY next_attempt_time LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": _BATCH},
            )
        ).all()
        if not rows:
            return 0
        attempts = await asyncio.gather(*(_post(http, secret, row) for row in rows))
        updates = []
        for row, attempt in zip(rows, attempts, strict=True):
            count = row.attempt_count + 1
            if not attempt["error"]:
                state, when = "DELIVERED", None
            elif count >= MAX_ATTEMPTS:
                state, when = "FAILED", None
            else:
                state, when = "PENDING", (datetime.now(UTC) + backoff(count)).isoformat()
            updates.append(
                {
                    "id": str(row.id),
                    "state": state,
                    "next": when,
                    "attempt": attempt,
                    "count": count,
                }
            )
            if state != "DELIVERED":
                logger.warning(
                    "webhook %s to %s: %s (%s)", row.id, row.url, attempt["error"], state
                )
        await conn.execute(
            text(
                "UPDATE webhook_deliveries d SET state = u.state, next_attempt_time = u.next, "
                "attempt_count = u.count, attempts = d.attempts || jsonb_build_array(u.attempt), "
                "update_time = clock_timestamp() "
                "FROM jsonb_to_recordset(:u) AS u(id uuid, state text, next timestamptz, "
                "attempt jsonb, count int) WHERE d.id = u.id"
            ).bindparams(bindparam("u", type_=JSONB)),
            {"u": updates},
        )
    return len(rows)
