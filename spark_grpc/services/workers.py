"""WorkerService: the live worker processes, from their presence heartbeats in Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
import redis.asyncio as aioredis

from spark_grpc._gen.spark.v1 import worker_service_pb2, worker_service_pb2_grpc
from spark_grpc.errors import UnavailableError
from spark_grpc.presence import read_presence
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.worker.runtime import PRESENCE_PREFIX


async def live_workers(redis: aioredis.Redis) -> list[worker_service_pb2.Worker]:
    """Every live worker process, by name. Raises Redis errors (callers decide what an
    unreachable Redis means for them)."""
    now = time.time()
    workers = []
    for data in await read_presence(redis, PRESENCE_PREFIX):
        worker = worker_service_pb2.Worker(
            name=data["name"],
            host=data["host"],
            pid=data["pid"],
            queues=data["queues"],
            state=(
                worker_service_pb2.WORKER_STATE_BUSY
                if data["current_task_id"]
                else worker_service_pb2.WORKER_STATE_IDLE
            ),
            current_task_id=data["current_task_id"],
            succeeded_task_count=data["succeeded"],
            failed_task_count=data["failed"],
        )
        worker.heartbeat_age.FromTimedelta(
            timedelta(seconds=max(0.0, now - data["heartbeat_time"]))
        )
        worker.start_time.FromDatetime(datetime.fromtimestamp(data["start_time"], UTC))
        workers.append(worker)
    return workers


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    """Implements spark.v1.WorkerService."""

    def __init__(self, deps: ServiceDeps) -> None:
        self._deps = deps

    async def ListWorkers(
        self, request: worker_service_pb2.ListWorkersRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.ListWorkersResponse:
        try:
            workers = await live_workers(self._deps.redis)
        except (aioredis.RedisError, OSError) as err:
            raise UnavailableError(
                "Redis is unavailable, so the workers cannot be listed; retry shortly",
                reason="REDIS_UNAVAILABLE",
            ) from err
        return worker_service_pb2.ListWorkersResponse(workers=workers)
