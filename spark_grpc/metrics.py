"""Prometheus metrics of a server process, served on SPARK_METRICS_ADDRESS.

RPC counters and latency come from the error boundary; task, queue and scheduler figures
are read from Postgres and Redis every few seconds by the server, so one scrape of any
server shows the whole deployment (workers and schedulers need no port of their own).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from sqlalchemy import text

from spark_grpc.db.session import Database
from spark_grpc.domain.tasks import TaskState
from spark_grpc.tasks.queue import TaskQueue

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
REFRESH_S = 5.0


class Metrics:
    """One registry per server; handed to the interceptor and the refresh loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "spark_rpc_requests",
            "RPCs handled, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "spark_rpc_duration_seconds",
            "RPC latency (streams: their whole life).",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "spark_open_streams", "Open WatchTask / WatchTasks streams.", registry=self.registry
        )
        self.tasks = Gauge("spark_tasks", "Tasks by state.", ["state"], registry=self.registry)
        self.queue_depth = Gauge(
            "spark_queue_depth", "Jobs waiting in the Redis queue.", registry=self.registry
        )
        self.task_seconds = Histogram(
            "spark_task_duration_seconds",
            "Run time of finished attempts (start to finish).",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800),
            registry=self.registry,
        )
        self.lateness_seconds = Histogram(
            "spark_scheduler_lateness_seconds",
            "Fired schedule tasks: creation time minus the nominal fire time.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60),
            registry=self.registry,
        )

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """Counts one finished RPC."""
        self.rpcs.labels(method, code).inc()
        self.rpc_seconds.labels(method).observe(seconds)

    def serve(self, address: str) -> None:
        """Serves /metrics over HTTP (a thread of prometheus_client)."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        logger.info("metrics on http://%s/metrics", address)

    async def refresh_forever(
        self, db: Database, queue: TaskQueue, open_streams: Callable[[], int]
    ) -> None:
        """Reads the deployment-wide figures every REFRESH_S seconds."""
        since = datetime.now(UTC)
        while True:
            try:
                since = await self._refresh(db, queue, open_streams, since)
            except Exception as err:  # Postgres or Redis down: the next round retries
                logger.debug("metrics refresh failed: %s", type(err).__name__)
            await asyncio.sleep(REFRESH_S)

    async def _refresh(
        self, db: Database, queue: TaskQueue, open_streams: Callable[[], int], since: datetime
    ) -> datetime:
        self.open_streams.set(open_streams())
        async with db.connection() as conn:
            rows = await conn.execute(text("SELECT state, count(*) FROM tasks GROUP BY state"))
            counts: dict[str, int] = {row[0]: row[1] for row in rows}
            now = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
            finished = (
                await conn.execute(
                    text(
                        "SELECT extract(epoch FROM finish_time - start_time) FROM tasks "
                        "WHERE finish_time > :since AND finish_time <= :now "
                        "AND start_time IS NOT NULL"
                    ),
                    {"since": since, "now": now},
                )
            ).scalars()
            for seconds in finished:
                self.task_seconds.observe(float(seconds))
            late = (
                await conn.execute(
                    text(
                        "SELECT extract(epoch FROM create_time - "
                        "(context->>'nominal_fire_time')::timestamptz) FROM tasks "
                        "WHERE schedule_id IS NOT NULL AND create_time > :since "
                        "AND create_time <= :now AND context ? 'nominal_fire_time' "
                        "AND NOT context ? 'backfill'"
                    ),
                    {"since": since, "now": now},
                )
            ).scalars()
            for seconds in late:
                self.lateness_seconds.observe(max(0.0, float(seconds)))
        for state in TaskState:
            self.tasks.labels(state.value).set(counts.get(state.value, 0))
        self.queue_depth.set(await asyncio.to_thread(lambda: queue.queue.count))
        return now  # type: ignore[no-any-return]
