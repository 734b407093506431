"""Publishing events after their transaction commits (never inside it)."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

#: The one Redis pub/sub channel of task events; each server holds one subscription.
CHANNEL = "spark:events"

#: Event data larger than this is not sent live: the message says "read me from the
#: table" instead, so Redis never carries large output chunks.
MAX_LIVE_DATA_BYTES = 16 * 1024


def encode(event: dict[str, Any]) -> str:
    """The wire form of a committed event."""
    message = {
        "task_id": str(event["task_id"]),
        "sequence": event["sequence"],
        "kind": event["kind"],
        "event_time": event["event_time"].isoformat(),
        "workflow_id": str(event.get("workflow_id") or ""),
        "schedule_id": str(event.get("schedule_id") or ""),
    }
    data = json.dumps(event["data"], separators=(",", ":"), default=str)
    if len(data) <= MAX_LIVE_DATA_BYTES:
        return json.dumps(message)[:-1] + f',"data":{data}}}'
    return json.dumps(message)


class EventPublisher:
    """Sends committed events on Redis; failures are logged, never raised: streams catch
    up from the table when the live channel comes back."""

    def __init__(self, redis_url: str) -> None:
        self._redis = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2)

    async def publish(self, events: list[dict[str, Any]]) -> None:
        """Publishes events in one round trip."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.publish(CHANNEL, encode(event))
                await pipe.execute()
        except (aioredis.RedisError, OSError) as err:
            logger.warning("could not publish %d event(s): %s", len(events), type(err).__name__)

    async def close(self) -> None:
        """Closes the Redis connection."""
        await self._redis.aclose()
