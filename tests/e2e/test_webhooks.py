"""Webhooks: a signed POST when a task finishes, retried with backoff, attempts visible."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from spark_grpc._gen.spark.v1 import task_service_pb2 as ts
from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws
from spark_grpc.demo.fake_sources import FakeSources
from tests.e2e.test_tasks import echo_workflow, wait_terminal
from tests.support import Stubs, WorkerProcess


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append({"headers": dict(request.headers), "body": body})
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield r, f"http://{host}:{port}/hook"
    finally:
        await runner.cleanup()


def secret(env: dict[str, str]) -> bytes:
    out = subprocess.run(
        [sys.executable, "-m", "spark_grpc", "webhook-secret"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().encode()


async def test_signed_post_when_a_task_finishes_and_retries(
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    receiver: tuple[Receiver, str],
    server_env: dict[str, str],
) -> None:
    hook, url = receiver
    hook.fail_first = 2
    workflow_id = await echo_workflow(stubs, fake)
    run = await stubs.workflows.RunWorkflow(
        ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="notify me", webhook_url=url)
    )
    assert run.task.webhook_url == url
    done = await wait_terminal(stubs, run.task.id)
    async with asyncio.timeout(60):
        while len(hook.received) < 3:
            await asyncio.sleep(0.2)
    last = hook.received[-1]
    body = last["body"]
    payload = json.loads(body)
    assert payload["task_id"] == run.task.id and payload["state"] == "SUCCEEDED"
    assert payload["output_text"] == "notify me" and done.state == 4
    t, v1 = (part.split("=", 1)[1] for part in last["headers"]["X-Spark-Signature"].split(","))
    expected = hmac.new(secret(server_env), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected), "signature checks with the documented secret"
    async with asyncio.timeout(30):
        while True:
            deliveries = (
                await stubs.tasks.ListWebhookDeliveries(
                    ts.ListWebhookDeliveriesRequest(task_id=run.task.id)
                )
            ).deliveries
            if deliveries and deliveries[0].state == ts.WEBHOOK_DELIVERY_STATE_DELIVERED:
                break
            await asyncio.sleep(0.2)
    (delivery,) = deliveries
    assert [a.http_status for a in delivery.attempts] == [503, 503, 204]
    assert last["headers"]["X-Spark-Delivery"] == delivery.id
    # The task's own log ends at its terminal event: deliveries are recorded elsewhere.
    events = (
        await stubs.tasks.ListTaskEvents(ts.ListTaskEventsRequest(task_id=run.task.id))
    ).events
    assert events[-1].state_change.to_state == 4


async def test_workflow_webhook_is_validated_and_inherited(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, receiver: tuple[Receiver, str]
) -> None:
    import grpc
    from google.protobuf import field_mask_pb2

    from spark_grpc._gen.spark.v1 import workflow_pb2
    from tests.support import expect_error, field_violations

    hook, url = receiver
    workflow_id = await echo_workflow(stubs, fake)
    err = await expect_error(
        stubs.workflows.UpdateWorkflow(
            ws.UpdateWorkflowRequest(
                workflow=workflow_pb2.Workflow(id=workflow_id, webhook_url="ftp://nope"),
                update_mask=field_mask_pb2.FieldMask(paths=["webhook_url"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "workflow.webhook_url" in field_violations(err)
    await stubs.workflows.UpdateWorkflow(
        ws.UpdateWorkflowRequest(
            workflow=workflow_pb2.Workflow(id=workflow_id, webhook_url=url),
            update_mask=field_mask_pb2.FieldMask(paths=["webhook_url"]),
        )
    )
    run = await stubs.workflows.RunWorkflow(
        ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="x")
    )
    assert run.task.webhook_url == url
    await wait_terminal(stubs, run.task.id)
    async with asyncio.timeout(30):
        while not hook.received:
            await asyncio.sleep(0.2)
    assert json.loads(hook.received[0]["body"])["task_id"] == run.task.id
