"""Running workflows: RunWorkflow and BatchRunWorkflows write tasks, then queue them.

    validate (in the caller's RPC, before anything is written)
      -> one transaction: look up the workflows, write the tasks PENDING with their first
         event (the shared task-writing function, also used by the scheduler)
      -> after commit: enqueue, then PENDING -> QUEUED

Concurrent RunWorkflow calls share that transaction and that enqueue (group commit, as
databases do with their log): a call waits only while up to ``MAX_WRITERS`` writes are
already in flight, then joins the next one. One caller alone never waits; under load each
transaction carries many runs, which is what lets one server accept several times more
runs per second (see ``make bench``, S2). A shared write that fails (an unknown workflow,
a reused request_id, a disabled source) is retried run by run, so every caller still gets
its own answer and its own error.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from spark_grpc import defaults
from spark_grpc._gen.spark.v1 import task_pb2, workflow_service_pb2
from spark_grpc.domain.tasks import MAX_TIMEOUT_S, RetryPolicy
from spark_grpc.errors import FailedPreconditionError, NotFoundError
from spark_grpc.services.convert import struct_to_dict
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.services.tasks import policy_from_proto, task_to_proto
from spark_grpc.tasks import store
from spark_grpc.tasks.queue import enqueue_after_commit
from spark_grpc.tracing import current_carrier
from spark_grpc.validation import Validator, host_allowed

#: Shared writes in flight at once; further RunWorkflow calls join the next write.
MAX_WRITERS = 4
#: Most runs one shared write carries.
MAX_GROUP = 200

RunRequest = workflow_service_pb2.RunWorkflowRequest


@dataclass(frozen=True)
class _Run:
    """A validated run request, with what was read from the caller's context."""

    request: RunRequest
    workflow_id: uuid.UUID
    override: RetryPolicy
    timeout_s: float | None
    trace: dict[str, str]


class Runs:
    """Validates runs and writes their tasks; shared by RunWorkflow and BatchRunWorkflows."""

    def __init__(self, deps: ServiceDeps) -> None:
        self._deps = deps
        self._waiting: list[tuple[_Run, asyncio.Future[task_pb2.Task]]] = []
        self._writers = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run_one(self, request: RunRequest) -> task_pb2.Task:
        """One run (RunWorkflow), written together with concurrent ones."""
        run = self._validate([request], batch=False)[0]
        future: asyncio.Future[task_pb2.Task] = asyncio.get_running_loop().create_future()
        self._waiting.append((run, future))
        if self._writers < MAX_WRITERS:
            self._writers += 1
            writer = asyncio.create_task(self._write_waiting())
            self._tasks.add(writer)  # the loop keeps only a weak reference
            writer.add_done_callback(self._tasks.discard)
        # Shielded: the write is shared, so one caller's cancel must not undo the others'.
        return await asyncio.shield(future)

    async def run_all(self, requests: list[RunRequest]) -> list[task_pb2.Task]:
        """A batch (BatchRunWorkflows): all written, or none."""
        return await self._write(self._validate(requests, batch=True))

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                try:
                    tasks = await self._write([run for run, _ in group])
                except Exception as err:
                    if len(group) == 1:
                        _settle(group[0][1], error=err)
                    else:  # find whose run failed: each caller gets its own answer
                        for run, future in group:
                            await self._write_alone(run, future)
                    continue
                except BaseException:  # cancelled (shutdown): so are the calls waiting
                    for _, future in group:
                        future.cancel()
                    raise
                for (_, future), task in zip(group, tasks, strict=True):
                    _settle(future, task)
        finally:
            self._writers -= 1

    async def _write_alone(self, run: _Run, future: asyncio.Future[task_pb2.Task]) -> None:
        try:
            task = (await self._write([run]))[0]
        except Exception as err:
            _settle(future, error=err)
            return
        _settle(future, task)

    def _validate(self, requests: list[RunRequest], *, batch: bool) -> list[_Run]:
        """Checks every run before anything is written (INVALID_ARGUMENT lists them all)."""
        v = Validator()
        runs: list[_Run] = []
        trace = current_carrier()
        for i, req in enumerate(requests):
            prefix = f"requests[{i}]." if batch else ""
            workflow_id = v.uuid(f"{prefix}workflow_id", req.workflow_id)
            if len(req.input_value.encode()) > defaults.MAX_INPUT_BYTES:
                v.add(f"{prefix}input_value", f"must be at most {defaults.MAX_INPUT_BYTES} bytes")
            elif "\x00" in req.input_value:
                v.add(f"{prefix}input_value", "must not contain NUL characters")
            for key in req.tweaks.fields:
                v.identifier(f"{prefix}tweaks", key)
            override = policy_from_proto(req.retry_policy, v, f"{prefix}retry_policy")
            timeout_s = timeout(v, req, f"{prefix}timeout") if req.HasField("timeout") else None
            if req.HasField("deadline_time") and req.deadline_time.ToDatetime(
                tzinfo=UTC
            ) <= datetime.now(UTC):
                v.add(f"{prefix}deadline_time", "must be in the future")
            v.request_id(f"{prefix}request_id", req.request_id)
            check_webhook(v, self._deps, f"{prefix}webhook_url", req.webhook_url)
            if workflow_id is not None:
                runs.append(_Run(req, workflow_id, override, timeout_s, trace))
        v.raise_if_invalid()
        return runs

    async def _write(self, runs: list[_Run]) -> list[task_pb2.Task]:
        """Writes the runs' tasks in one transaction, then queues them."""
        async with self._deps.db.connection() as conn:
            found = {
                r.id: r
                for r in (
                    await conn.execute(
                        text(
                            "SELECT w.id, w.retry_policy, w.timeout_s, w.webhook_url, s.enabled, "
                            "s.display_name "
                            "FROM workflows w JOIN sources s ON s.id = w.source_id "
                            "WHERE w.id = ANY(:ids)"
                        ),
                        {"ids": list({run.workflow_id for run in runs})},
                    )
                ).all()
            }
            new_tasks = [
                _new_task(i, run, found.get(run.workflow_id)) for i, run in enumerate(runs)
            ]
            written = await store.insert_tasks(conn, new_tasks)
        created = [(row.id, row.timeout_s) for row, is_new in written if is_new]
        queued = await enqueue_after_commit(self._deps.db, self._deps.queue, created)
        return [task_to_proto(queued.get(row.id, row)) for row, _ in written]


def _settle(
    future: asyncio.Future[task_pb2.Task],
    task: task_pb2.Task | None = None,
    *,
    error: Exception | None = None,
) -> None:
    if future.done():
        return  # its caller is gone (cancelled)
    if error is not None:
        future.set_exception(error)
    elif task is not None:
        future.set_result(task)


def _new_task(index: int, run: _Run, workflow: Any) -> store.NewTask:
    req = run.request
    if workflow is None:
        raise NotFoundError(
            f"no workflow has id {run.workflow_id}",
            reason="WORKFLOW_NOT_FOUND",
            metadata={"workflow_id": str(run.workflow_id), "index": str(index)},
        )
    if not workflow.enabled:
        raise FailedPreconditionError(
            f"the source {workflow.display_name!r} of workflow {run.workflow_id} is "
            "disabled; enable it with UpdateSource first",
            reason="SOURCE_DISABLED",
            metadata={"workflow_id": str(run.workflow_id)},
        )
    return store.NewTask(
        workflow_id=run.workflow_id,
        input_value=req.input_value,
        tweaks=struct_to_dict(req.tweaks),
        retry_policy=RetryPolicy()
        .merged(RetryPolicy.from_json(workflow.retry_policy))
        .merged(run.override),
        timeout_s=run.timeout_s or workflow.timeout_s,
        deadline_time=req.deadline_time.ToDatetime(tzinfo=UTC)
        if req.HasField("deadline_time")
        else None,
        request_id=req.request_id or None,
        request_hash=_fingerprint(req) if req.request_id else None,
        webhook_url=req.webhook_url or workflow.webhook_url,
        # Stored on the row, so a re-enqueue by the sweeper keeps the trace.
        context={"trace": run.trace} if run.trace else {},
    )


def _fingerprint(request: RunRequest) -> bytes:
    copy = RunRequest()
    copy.CopyFrom(request)
    copy.request_id = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


def timeout(v: Validator, message: Any, field: str) -> float:
    """A per-attempt timeout: 1 s to 24 h."""
    seconds = float(message.timeout.ToTimedelta().total_seconds())
    if not 1 <= seconds <= MAX_TIMEOUT_S:
        v.add(field, "must be between 1 s and 24 h")
    return seconds


def check_webhook(v: Validator, deps: ServiceDeps, field: str, url: str) -> None:
    """An optional http(s) URL, within the source host allow-list."""
    if url:
        v.url(field, url, required=False)
        if not host_allowed(url, deps.settings.source_host_allowlist):
            v.add(field, "this host is not in SPARK_SOURCE_HOST_ALLOWLIST")


__all__ = ["Runs", "check_webhook", "timeout"]
