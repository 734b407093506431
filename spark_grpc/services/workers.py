"""WorkerService: the live worker processes, from their presence heartbeats in Redis."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import grpc
import redis.asyncio as aioredis

from spark_grpc._gen.spark.v1 import worker_service_pb2, worker_service_pb2_grpc
from spark_grpc.errors import UnavailableError
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.worker.runtime import PRESENCE_PREFIX


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    """Implements spark.v1.WorkerService."""

    def __init__(self, deps: ServiceDeps) -> None:
        self._deps = deps

    async def ListWorkers(
        self, request: worker_service_pb2.ListWorkersRequest, context: grpc.aio.ServicerContext
    ) -> worker_service_pb2.ListWorkersResponse:
        try:
            keys = [k async for k in self._deps.redis.scan_iter(match=PRESENCE_PREFIX + "*")]
            values = await self._deps.redis.mget(keys) if keys else []
        except (aioredis.RedisError, OSError) as err:
            raise UnavailableError(
                "Redis is unavailable, so the workers cannot be listed; retry shortly",
                reason="REDIS_UNAVAILABLE",
            ) from err
        now = time.time()
        response = worker_service_pb2.ListWorkersResponse()
        for raw in sorted(v for v in values if v):
            data = json.loads(raw)
            worker = response.workers.add(
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
        response.workers.sort(key=lambda w: w.name)
        return response
