"""Retrying UNAVAILABLE, and running a workflow exactly once.

The sync (grpcio) client retries idempotent calls through a gRPC service config
(:data:`SERVICE_CONFIG`). grpclib has no service config: the async client retries the
same calls with :func:`retry` (:func:`spark_client.connect` wires it in), and
:func:`retry` is there for your own calls too. RunWorkflow is only ever retried with a
``request_id`` (:func:`run_workflow_idempotent`): the server answers a repeated id with the
task it already made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ._gen.spark import v1

__all__ = [
    "IDEMPOTENT_METHODS",
    "SERVICE_CONFIG",
    "Backoff",
    "is_transient",
    "retry",
    "run_workflow_idempotent",
    "run_workflow_idempotent_sync",
]

T = TypeVar("T")

IDEMPOTENT_PREFIXES = ("get_", "list_", "check_", "preview_")


def _idempotent_methods() -> dict[str, tuple[str, ...]]:
    """Get*, List*, Check* and Preview* of every generated service, read off the async
    stubs (``spark.v1.TaskService`` -> ``TaskServiceStub.list_task_events`` ->
    ``ListTaskEvents``), so a method added to the contract is covered by ``make gen``."""
    methods: dict[str, tuple[str, ...]] = {}
    for name in sorted(v1.__all__):
        stub = getattr(v1, name)
        if not (name.endswith("ServiceStub") and inspect.isclass(stub)):
            continue
        methods[f"spark.v1.{name.removesuffix('Stub')}"] = tuple(
            "".join(part.title() for part in attr.split("_"))
            for attr, fn in vars(stub).items()
            if attr.startswith(IDEMPOTENT_PREFIXES) and inspect.iscoroutinefunction(fn)
        )
    return methods


#: The calls that change nothing (or only refresh what they report), by service: retried
#: on UNAVAILABLE. Everything else is retried only where it carries a request id.
IDEMPOTENT_METHODS: dict[str, tuple[str, ...]] = _idempotent_methods()

IDEMPOTENT_ROUTES = frozenset(
    f"/{service}/{method}" for service, methods in IDEMPOTENT_METHODS.items() for method in methods
)


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to initial * multiplier**(n-1),
    capped at ``maximum`` seconds; at most ``attempts`` calls in all."""

    attempts: int = 5
    initial: float = 0.2
    maximum: float = 5.0
    multiplier: float = 2.0

    def delay(self, failures: int) -> float:
        cap = min(self.maximum, self.initial * self.multiplier ** max(failures - 1, 0))
        return random.uniform(0, cap)  # noqa: S311 - jitter, not cryptography


DEFAULT_BACKOFF = Backoff()

#: gRPC service config of the sync client: UNAVAILABLE is retried on every idempotent call.
SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [
                {"service": service, "method": method}
                for service, methods in IDEMPOTENT_METHODS.items()
                for method in methods
            ],
            "retryPolicy": {
                "maxAttempts": DEFAULT_BACKOFF.attempts,
                "initialBackoff": f"{DEFAULT_BACKOFF.initial}s",
                "maxBackoff": f"{DEFAULT_BACKOFF.maximum}s",
                "backoffMultiplier": DEFAULT_BACKOFF.multiplier,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def is_transient(err: BaseException) -> bool:
    """True for what a retry may cure: UNAVAILABLE, or the connection failing or dropping.

    A deadline is not transient (the caller's time is up), nor is any other status.
    """
    if isinstance(err, GRPCError):
        return err.status is Status.UNAVAILABLE
    if isinstance(err, grpc.RpcError) and isinstance(err, grpc.Call):
        return err.code() is grpc.StatusCode.UNAVAILABLE
    if isinstance(err, TimeoutError):
        return False
    return isinstance(err, StreamTerminatedError | OSError)


async def retry(call: Callable[[], Awaitable[T]], backoff: Backoff = DEFAULT_BACKOFF) -> T:
    """``await call()``, calling again after a transient failure (see :func:`is_transient`).

    Only for calls that are safe to repeat: reads, or writes with a request id.
    ``await retry(lambda: spark.tasks.get_task(v1.GetTaskRequest(id=task_id)))``
    """
    failures = 0
    while True:
        try:
            return await call()
        except Exception as err:
            failures += 1
            if failures >= backoff.attempts or not is_transient(err):
                raise
        await asyncio.sleep(backoff.delay(failures))


def _with_request_id(request: v1.RunWorkflowRequest) -> v1.RunWorkflowRequest:
    return dataclasses.replace(request, request_id=request.request_id or str(uuid.uuid4()))


async def run_workflow_idempotent(
    workflows: v1.WorkflowServiceStub,
    request: v1.RunWorkflowRequest,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> v1.Task:
    """Run a workflow once, however many attempts it takes: the request gets a request id
    (a new UUID unless it has one) and every retry sends the same id, so a retry after a
    lost answer returns the task the first attempt made instead of a second run."""
    request = _with_request_id(request)
    response = await retry(lambda: workflows.run_workflow(request), backoff)
    assert response.task is not None
    return response.task


def run_workflow_idempotent_sync(
    workflows: v1.WorkflowServiceSyncStub,
    request: v1.RunWorkflowRequest,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> v1.Task:
    """The sync :func:`run_workflow_idempotent` (RunWorkflow is not in the service config's
    retry list: only a call with a request id may be repeated)."""
    request = _with_request_id(request)
    failures = 0
    while True:
        try:
            response = workflows.run_workflow(request)
            break
        except grpc.RpcError as err:
            failures += 1
            if failures >= backoff.attempts or not is_transient(err):
                raise
        time.sleep(backoff.delay(failures))
    assert response.task is not None
    return response.task
