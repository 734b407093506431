"""Presence heartbeats: one Redis key per live process, refreshed on a period and expiring
on its own, so a killed process drops out of the listings without anyone cleaning up.

Worker processes announce themselves under ``spark:worker:`` (``spark_grpc.worker.runtime``,
read by ListWorkers) and schedulers under ``spark:scheduler:`` (read by GetSystemStatus).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

#: How often a live process refreshes its key.
INTERVAL_S = 5.0
#: How long a key outlives its latest refresh: a process silent this long is gone.
TTL_S = 15


async def read_presence(redis: aioredis.Redis, prefix: str) -> list[dict[str, Any]]:
    """The payloads of every live key under ``prefix``, by name. Raises Redis errors."""
    keys = [key async for key in redis.scan_iter(match=prefix + "*")]
    values = await redis.mget(keys) if keys else []
    found = [json.loads(value) for value in values if value]
    return sorted(found, key=lambda data: str(data.get("name", "")))


async def announce_presence(
    redis_url: str,
    key: str,
    payload: Callable[[], dict[str, Any]],
    *,
    interval_s: float = INTERVAL_S,
    ttl_s: int = TTL_S,
) -> None:
    """Writes ``payload()`` plus ``heartbeat_time`` (Unix seconds) to ``key`` every
    ``interval_s`` until cancelled, then deletes the key so the process drops out at once.
    Redis being down only skips beats: the key expires, and comes back with Redis."""
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        while True:
            data = {**payload(), "heartbeat_time": time.time()}
            try:
                await client.set(key, json.dumps(data), ex=ttl_s)
            except (aioredis.RedisError, OSError) as err:
                logger.debug("presence heartbeat of %s skipped: %s", key, type(err).__name__)
            await asyncio.sleep(interval_s)
    finally:
        with contextlib.suppress(aioredis.RedisError, OSError):
            await client.delete(key)
        with contextlib.suppress(aioredis.RedisError, OSError):
            await client.aclose()
