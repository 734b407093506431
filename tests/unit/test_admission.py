"""The admission limiter on its own: slots, the bounded wait, hand-over and cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from spark_grpc import admission as admission_module
from spark_grpc.admission import Admission, admits_all
from spark_grpc.errors import ResourceExhaustedError


@pytest.fixture
def closing() -> Iterator[list[Admission]]:
    """Admissions to close after the test (each samples the loop while open)."""
    made: list[Admission] = []
    yield made
    for admission in made:
        admission.close()


async def test_limit_then_a_bounded_line_then_refusal(closing: list[Admission]) -> None:
    admission = Admission(limit=2, wait_s=5.0, retry_after_s=1.0)
    closing.append(admission)
    await admission.acquire()
    await admission.acquire()
    assert admission.queue_limit == 200
    waiters = [asyncio.create_task(admission.acquire()) for _ in range(admission.queue_limit)]
    await asyncio.sleep(0)
    assert admission.waiting == admission.queue_limit
    with pytest.raises(ResourceExhaustedError) as err:
        await admission.acquire()  # the line is full
    assert err.value.reason == "SERVER_OVERLOADED"
    assert 0.5 <= err.value.retry_after_s <= 1.5
    admission.release()  # the first waiter gets the slot: first come, first served
    await waiters[0]
    assert not waiters[1].done() and admission.running == 2
    for waiter in waiters[1:]:
        admission.release()
        await waiter
    admission.release()
    admission.release()
    assert admission.running == 0 and admission.waiting == 0


async def test_a_wait_that_runs_out_is_refused_and_leaves_the_line(
    closing: list[Admission],
) -> None:
    admission = Admission(limit=1, wait_s=0.01)
    closing.append(admission)
    await admission.acquire()
    with pytest.raises(ResourceExhaustedError):
        await admission.acquire()
    assert admission.waiting == 0 and admission.rejected == 1
    admission.release()
    await admission.acquire()  # the slot is free again
    assert admission.running == 1


async def test_no_wait_refuses_at_once(closing: list[Admission]) -> None:
    admission = Admission(limit=1, wait_s=0)
    closing.append(admission)
    await admission.acquire()
    with pytest.raises(ResourceExhaustedError):
        await admission.acquire()


async def test_a_cancelled_waiter_gives_back_what_it_was_handed(
    closing: list[Admission],
) -> None:
    admission = Admission(limit=1, wait_s=5.0)
    closing.append(admission)
    await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0)
    admission.release()  # hands the slot to the waiter ...
    waiter.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.running == 0 and admission.waiting == 0
    pending = asyncio.create_task(admission.acquire())
    await pending
    other = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0)
    other.cancel()  # cancelled while waiting: leaves the line
    with pytest.raises(asyncio.CancelledError):
        await other
    assert admission.running == 1 and admission.waiting == 0


async def test_a_late_event_loop_refuses_new_calls(
    closing: list[Admission], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission_module, "MAX_LAG_S", 0.05)
    admission = Admission(limit=10, wait_s=5.0)
    closing.append(admission)
    await admission.acquire()
    for _ in range(6):  # the loop is busy: every tick runs late
        time.sleep(0.1)
        await asyncio.sleep(0)
    assert admission.lag_s > 0.05
    with pytest.raises(ResourceExhaustedError):
        await admission.acquire()
    await asyncio.sleep(0.1)  # the loop is idle again: calls are admitted
    await admission.acquire()
    assert admission.running == 2


def test_health_and_source_calls_take_no_slot() -> None:
    assert admits_all("/grpc.health.v1.Health/Check")
    assert admits_all("/spark.v1.WorkflowService/ImportWorkflow")
    assert not admits_all("/spark.v1.WorkflowService/RunWorkflow")
