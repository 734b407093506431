"""SystemService: the deployment at a glance (``spark status``).

Every probe is bounded in time and catches its own failure: a status call is what an
operator makes when something is down, so PostgreSQL or Redis being unreachable is
reported in the answer, never turned into a failed call. The probes run concurrently, so
the answer takes at most one probe timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from rq import Queue
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from spark_grpc import __version__
from spark_grpc._gen.spark.v1 import system_service_pb2, system_service_pb2_grpc
from spark_grpc.presence import read_presence
from spark_grpc.schedules.scheduler import PRESENCE_PREFIX as SCHEDULER_PRESENCE_PREFIX
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.services.workers import live_workers
from spark_grpc.tasks.queue import QUEUE_NAME

logger = logging.getLogger(__name__)

#: The longest a probe of PostgreSQL or Redis may take (shortened by the RPC's deadline).
PROBE_TIMEOUT_S = 2.0
#: Time kept back from the caller's deadline to build and send the answer.
_DEADLINE_MARGIN_S = 0.1
_MAX_ERROR_LENGTH = 300
_QUEUE_KEY = Queue.redis_queue_namespace_prefix + QUEUE_NAME


@dataclass
class _DatabaseProbe:
    status: system_service_pb2.DatabaseStatus
    active_schedules: int = 0
    next_fire_time: datetime | None = None


@dataclass
class _RedisProbe:
    status: system_service_pb2.RedisStatus
    workers: list[Any] = field(default_factory=list)
    schedulers: list[dict[str, Any]] = field(default_factory=list)


def describe_error(err: BaseException, timeout_s: float) -> str:
    """One line saying why a probe failed (the driver's error, not SQLAlchemy's wrapper)."""
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(err, sa_exc.DBAPIError) and err.orig is not None:
        err = err.orig
    message = " ".join(str(err).split()) or "no detail"
    line = f"{type(err).__name__}: {message}"
    return line if len(line) <= _MAX_ERROR_LENGTH else line[: _MAX_ERROR_LENGTH - 3] + "..."


class SystemServicer(system_service_pb2_grpc.SystemServiceServicer):
    """Implements spark.v1.SystemService."""

    def __init__(self, deps: ServiceDeps) -> None:
        self._deps = deps
        self._start_time = datetime.now(UTC)
        self._replica = f"{socket.gethostname()}.{os.getpid()}"
        self._schema_head: str | None = None

    async def GetSystemStatus(
        self,
        request: system_service_pb2.GetSystemStatusRequest,
        context: grpc.aio.ServicerContext,
    ) -> system_service_pb2.GetSystemStatusResponse:
        timeout_s = PROBE_TIMEOUT_S
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_s = max(0.01, min(timeout_s, float(remaining) - _DEADLINE_MARGIN_S))
        head = await self._head_revision()
        database, redis = await asyncio.gather(
            self._probe_database(timeout_s), self._probe_redis(timeout_s)
        )
        database.status.schema_head_revision = head
        now = datetime.now(UTC)
        response = system_service_pb2.GetSystemStatusResponse(
            server=system_service_pb2.ServerStatus(replica=self._replica, version=__version__),
            database=database.status,
            redis=redis.status,
            workers=system_service_pb2.WorkersStatus(
                live_count=len(redis.workers),
                busy_count=sum(bool(w.current_task_id) for w in redis.workers),
            ),
            schedulers=system_service_pb2.SchedulersStatus(
                active_schedule_count=database.active_schedules
            ),
        )
        response.check_time.FromDatetime(now)
        response.server.start_time.FromDatetime(self._start_time)
        response.server.uptime.FromTimedelta(now - self._start_time)
        if database.next_fire_time is not None:
            response.schedulers.next_fire_time.FromDatetime(database.next_fire_time)
        for data in redis.schedulers:
            scheduler = response.schedulers.schedulers.add(
                name=data["name"],
                host=data["host"],
                pid=data["pid"],
                last_tick_error=data.get("last_tick_error") or "",
                fired_task_count=data.get("fired", 0),
            )
            scheduler.start_time.FromDatetime(datetime.fromtimestamp(data["start_time"], UTC))
            scheduler.heartbeat_age.FromTimedelta(
                timedelta(seconds=max(0.0, time.time() - data["heartbeat_time"]))
            )
            if data.get("last_tick_time") is not None:
                scheduler.last_tick_time.FromDatetime(
                    datetime.fromtimestamp(data["last_tick_time"], UTC)
                )
        return response

    async def _head_revision(self) -> str:
        """The head of the migrations this server ships (read from disk once); empty
        when they cannot be read (an installation without the migrations folder)."""
        if self._schema_head is None:

            def read() -> str:
                # Imported here: Alembic is only needed for this, once per process.
                from alembic.script import ScriptDirectory

                from spark_grpc.db.migrate import alembic_config

                script = ScriptDirectory.from_config(alembic_config(""))
                return ",".join(sorted(script.get_heads()))

            try:
                self._schema_head = await asyncio.to_thread(read)
            except Exception:  # the rest of the status is still worth answering
                logger.warning("cannot read the migrations' head revision", exc_info=True)
                self._schema_head = ""
        return self._schema_head

    async def _probe_database(self, timeout_s: float) -> _DatabaseProbe:
        probe = _DatabaseProbe(system_service_pb2.DatabaseStatus())
        try:
            async with asyncio.timeout(timeout_s), self._deps.db.engine.connect() as conn:
                started = time.perf_counter()
                await conn.execute(text("SELECT 1"))
                latency = time.perf_counter() - started
                # A database that was never migrated is what this call should reveal, so
                # look before reading tables that may not exist.
                tables = (
                    await conn.execute(
                        text(
                            "SELECT to_regclass('alembic_version') IS NOT NULL AS migrated, "
                            "to_regclass('schedules') IS NOT NULL AS has_schedules"
                        )
                    )
                ).one()
                revision = ""
                if tables.migrated:
                    versions = await conn.execute(text("SELECT version_num FROM alembic_version"))
                    revision = ",".join(sorted(versions.scalars()))
                if tables.has_schedules:
                    row = (
                        await conn.execute(
                            text(
                                "SELECT count(*) AS active, min(next_fire_time) AS next_fire "
                                "FROM schedules WHERE state = 'ACTIVE'"
                            )
                        )
                    ).one()
                    probe.active_schedules, probe.next_fire_time = row.active, row.next_fire
        except Exception as err:  # any failure is the answer, not an error of this call
            probe.status.error = describe_error(err, timeout_s)
            probe.active_schedules, probe.next_fire_time = 0, None
            return probe
        probe.status.reachable = True
        probe.status.latency.FromTimedelta(timedelta(seconds=latency))
        probe.status.schema_revision = revision
        return probe

    async def _probe_redis(self, timeout_s: float) -> _RedisProbe:
        probe = _RedisProbe(system_service_pb2.RedisStatus())
        redis = self._deps.redis
        try:
            async with asyncio.timeout(timeout_s):
                started = time.perf_counter()
                await redis.ping()
                latency = time.perf_counter() - started
                info = await redis.info("server")
                depth = await redis.llen(_QUEUE_KEY)
                workers = await live_workers(redis)
                schedulers = await read_presence(redis, SCHEDULER_PRESENCE_PREFIX)
        except Exception as err:  # any failure is the answer, not an error of this call
            probe.status.error = describe_error(err, timeout_s)
            return probe
        probe.status.reachable = True
        probe.status.latency.FromTimedelta(timedelta(seconds=latency))
        probe.status.version = str(info.get("redis_version", ""))
        probe.status.queue_depth = int(depth)
        probe.workers, probe.schedulers = workers, schedulers
        return probe
