"""The worker processes: ``spark-grpc worker --concurrency N`` supervises N RQ worker
processes and runs the sweeper.

Each RQ worker is non-forking by default (a fork costs ~15 ms a job on 2 cores) and runs
up to ``SPARK_WORKER_SLOTS`` attempts at once: its job claims the task and returns, the
attempt runs on in the process's event loop, and the worker takes its next job from Redis
only while a slot is free, so jobs wait in Redis (where any worker can take them), never
inside a busy process. ``--fork`` uses RQ's forking Worker instead, one attempt per
process at a time, for jobs that must not share a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
from rq import Queue, SimpleWorker, Worker
from rq.job import Job

from spark_grpc import loops
from spark_grpc.config import Settings
from spark_grpc.db.session import Database, create_engine
from spark_grpc.events.publisher import EventPublisher
from spark_grpc.notifications import deliver_due, webhook_secret
from spark_grpc.tasks.queue import QUEUE_NAME, TaskQueue, redis_connection
from spark_grpc.worker import runtime
from spark_grpc.worker.sweeper import run_sweeper

logger = logging.getLogger(__name__)


class SlotWorker(SimpleWorker):
    """RQ's SimpleWorker that takes a job only while its runtime has a free slot."""

    runtime: runtime.WorkerRuntime

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        while not self.runtime.wait_for_slot(timeout=1.0):
            self.heartbeat()  # all slots busy: stay listed as alive, stop if asked
            if self._stop_requested:
                return None
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)


def run_worker_process(settings: Settings, name: str, *, fork: bool) -> None:
    """One RQ worker process, until SIGTERM (lets its running attempts finish first)."""
    rt = runtime.WorkerRuntime.start(settings, name) if not fork else None
    runtime.set_current(rt)
    connection = redis_connection(settings.redis_url)
    queues = [Queue(QUEUE_NAME, connection=connection)]
    worker: Worker | SimpleWorker
    if rt is None:
        worker = Worker(queues, connection=connection, name=name)
    else:
        worker = SlotWorker(queues, connection=connection, name=name)
        worker.runtime = rt
    logger.info("worker %s ready to take tasks from %s", name, QUEUE_NAME)
    try:
        # RQ logs two INFO lines per job; ours (task started, succeeded) say more.
        worker.work(logging_level="WARNING", with_scheduler=False)
    finally:
        if rt is not None:
            rt.stop()
        connection.close()


def supervise(settings: Settings, concurrency: int, *, fork: bool, sweeper: bool = True) -> None:
    """Starts and watches the worker processes and runs the sweeper until SIGTERM/SIGINT."""
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        host = socket.gethostname()
        children: dict[int, subprocess.Popen[bytes]] = {}

        generations: dict[int, int] = {}

        def spawn(slot: int) -> None:
            # A new name per spawn: RQ refuses a name whose dead owner it still lists
            # (for worker_ttl + 60 s), which would keep a replaced slot from serving.
            generations[slot] = generations.get(slot, -1) + 1
            name = f"{host}.{os.getpid()}.{slot}.{generations[slot]}"
            args = [sys.executable, "-m", "spark_grpc", "worker-process", "--name", name]
            if fork:
                args.append("--fork")
            # Own process group: a terminal's Ctrl-C reaches the supervisor, which stops
            # the children in order.
            children[slot] = subprocess.Popen(args, start_new_session=True)
            logger.info("worker process %s started (pid %d)", name, children[slot].pid)

        for slot in range(concurrency):
            spawn(slot)
        db = Database(
            create_engine(settings, settings.database_url), EventPublisher(settings.redis_url)
        )
        queue = TaskQueue(settings.redis_url)
        http = httpx.AsyncClient(follow_redirects=False)
        secret = webhook_secret(settings.webhook_secret, settings.encryption_keys)
        sweep = (
            asyncio.create_task(
                run_sweeper(
                    db,
                    queue,
                    settings.sweep_interval_s,
                    stop,
                    webhooks=lambda: deliver_due(db, http, secret),
                )
            )
            if sweeper
            else None
        )
        try:
            while not stop.is_set():
                for slot, child in list(children.items()):
                    if child.poll() is not None:
                        logger.error(
                            "worker process %d exited with %s; restarting",
                            child.pid,
                            child.returncode,
                        )
                        spawn(slot)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + settings.worker_drain_s + 15
            for child in children.values():
                remaining = max(0.1, deadline - time.monotonic())
                try:
                    await asyncio.to_thread(child.wait, remaining)
                except subprocess.TimeoutExpired:
                    child.kill()
            if sweep is not None:
                await sweep
            queue.close()
            await http.aclose()
            await db.close()
            logger.info("workers stopped")

    loops.run(main(), settings.event_loop)
