"""What every servicer needs, built once by the server and passed explicitly."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import grpc
import httpx
import redis.asyncio as aioredis

from spark_grpc import defaults
from spark_grpc.config import Settings
from spark_grpc.crypto import SecretBox
from spark_grpc.db.session import Database
from spark_grpc.pagination import PageTokens
from spark_grpc.tasks.queue import TaskQueue

logger = logging.getLogger(__name__)

# Time kept back from a client's deadline so the server can still answer in time.
_DEADLINE_MARGIN_S = 0.05


@dataclass(frozen=True)
class ServiceDeps:
    """Shared handles of one server process."""

    settings: Settings
    db: Database
    box: SecretBox
    tokens: PageTokens
    http: httpx.AsyncClient
    queue: TaskQueue
    redis: aioredis.Redis

    async def announce_cancel(self, task_id: uuid.UUID) -> None:
        """Tells the worker running a task to stop its source call now (best effort: the
        worker's heartbeat notices the cancel within a third of the lease anyway)."""
        try:
            await self.redis.publish(defaults.CANCEL_CHANNEL, str(task_id))
        except (aioredis.RedisError, OSError) as err:
            logger.warning("could not announce the cancel of task %s: %s", task_id, err)

    def source_timeout(self, context: grpc.aio.ServicerContext) -> float:
        """Seconds a source call may take: the setting, shortened by the RPC's deadline."""
        remaining = context.time_remaining()
        limit = self.settings.source_timeout_s
        if remaining is None:
            return limit
        return max(0.001, min(limit, float(remaining) - _DEADLINE_MARGIN_S))
