"""The RQ job function. A job carries only a task id; everything else is in Postgres."""

from __future__ import annotations

import asyncio
import uuid

from spark_grpc.config import Settings
from spark_grpc.worker import runtime
from spark_grpc.worker.executor import execute_task, start_task


def run_task(task_id: str) -> None:
    """Claims the next attempt of a task and starts it (RQ calls this in a worker process).

    In a non-forking worker the job returns once the claim is committed: the attempt runs
    on in one of the process's slots, under its lease. A forked job horse cannot outlive
    its job, so it runs the attempt to the end.
    """
    rt = runtime.current()
    if rt is not None:
        rt.take_slot()
        started = False
        try:
            started = rt.run(start_task(rt, uuid.UUID(task_id)))
        finally:
            if not started:
                rt.release_slot()
        return
    # A forking worker's job horse: no shared loop survives the fork, so build one.
    asyncio.run(_run_in_fresh_runtime(uuid.UUID(task_id)))


async def _run_in_fresh_runtime(task_id: uuid.UUID) -> None:
    import threading

    settings = Settings()
    rt = await asyncio.to_thread(
        runtime.WorkerRuntime.start, settings, f"fork-{threading.get_ident()}"
    )
    try:
        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(execute_task(rt, task_id), rt.loop)
        )
    finally:
        await asyncio.to_thread(rt.stop)
