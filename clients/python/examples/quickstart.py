"""The five first things, against a live spark-grpc server and the demo source.

Adds the demo LangFlow as a source, imports its echo flow as a workflow, runs it, prints
its events as they stream in until the end, and creates a schedule for it. Safe to run
again: what exists already is found and reused.

    make run                                    # in one terminal (server + demo source)
    python clients/python/examples/quickstart.py

Environment: SPARK_ADDRESS (127.0.0.1:50051), SPARK_API_KEY, SPARK_TLS_CA (a CA file:
connect with TLS), SPARK_DEMO_SOURCE_URL (http://127.0.0.1:7860/langflow).
Exits 0 when the run SUCCEEDED.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

from grpclib.exceptions import GRPCError

from spark_client import (
    SparkClient,
    Tls,
    code_name,
    connect,
    run_workflow_idempotent,
    v1,
    watch_task,
)

ECHO_FLOW_ID = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a01"
SCHEDULE_NAME = "quickstart: weekday mornings"


async def add_source(spark: SparkClient, url: str) -> v1.Source:
    """1. Register the demo LangFlow (or find it: a source URL is unique)."""
    source = v1.Source(display_name="Demo LangFlow", type=v1.SourceType.LANGFLOW, url=url)
    try:
        created = await spark.sources.create_source(
            v1.CreateSourceRequest(source=source, request_id=str(uuid.uuid4()))
        )
        assert created.source is not None
        return created.source
    except GRPCError as err:
        if code_name(err) != "ALREADY_EXISTS":
            raise
    page = v1.ListSourcesRequest(type=v1.SourceType.LANGFLOW, page_size=100)
    while True:
        listed = await spark.sources.list_sources(page)
        for found in listed.sources:
            if found.url == url:
                return found
        if not listed.next_page_token:
            raise RuntimeError(f"CreateSource said {url} exists, but ListSources lacks it")
        page.page_token = listed.next_page_token


def describe(event: v1.TaskEvent) -> str:
    """One line for a task event."""
    if (change := event.state_change) is not None:
        before = f"{change.from_state.name} -> " if change.from_state else ""
        error = f" ({change.error.message})" if change.error and change.error.message else ""
        return f"state   {before}{change.to_state.name}{error}"
    if (chunk := event.output_chunk) is not None:
        return f"output  {chunk.text!r}"
    if (progress := event.progress) is not None:
        return f"progress {progress.fraction:.0%} {progress.message}"
    if (log := event.log) is not None:
        return f"log     {log.level.name} {log.message}"
    return "event"


async def main() -> int:
    address = os.environ.get("SPARK_ADDRESS", "127.0.0.1:50051")
    ca = os.environ.get("SPARK_TLS_CA")
    url = os.environ.get("SPARK_DEMO_SOURCE_URL", "http://127.0.0.1:7860/langflow")
    async with connect(
        address,
        api_key=os.environ.get("SPARK_API_KEY") or None,
        tls=Tls(ca_file=ca) if ca else None,
    ) as spark:
        source = await add_source(spark, url)
        print(f"source    {source.id} {source.display_name} ({source.url})")

        # 2. Import the echo flow; importing again updates the same workflow.
        imported = await spark.workflows.import_workflow(
            v1.ImportWorkflowRequest(
                source_id=source.id, remote_flow_id=ECHO_FLOW_ID, tags=["demo"]
            )
        )
        workflow = imported.workflow
        assert workflow is not None
        print(f"workflow  {workflow.id} {workflow.display_name} (created: {imported.created})")

        # 3. Run it: a task. The request id makes the retries of one run one task.
        task = await run_workflow_idempotent(
            spark.workflows,
            v1.RunWorkflowRequest(workflow_id=workflow.id, input_value="Hello from Python"),
        )
        print(f"task      {task.id} {task.state.name}")

        # 4. Watch its events to the end (reconnecting where it left off if need be).
        final = v1.TaskState.UNSPECIFIED
        async for event in watch_task(spark, task.id):
            print(f"  #{event.sequence:<3} {describe(event)}")
            if event.state_change is not None:
                final = event.state_change.to_state
        done = await spark.tasks.get_task(v1.GetTaskRequest(id=task.id))
        assert done.task is not None
        print(f"result    {final.name}: {done.task.output_text!r}")

        # 5. A schedule: weekdays at 09:00 in New York (reused when it exists).
        listed = await spark.schedules.list_schedules(
            v1.ListSchedulesRequest(workflow_id=workflow.id)
        )
        schedule = next((s for s in listed.schedules if s.display_name == SCHEDULE_NAME), None)
        if schedule is None:
            created = await spark.schedules.create_schedule(
                v1.CreateScheduleRequest(
                    schedule=v1.Schedule(
                        display_name=SCHEDULE_NAME,
                        workflow_id=workflow.id,
                        input_value="Good morning",
                        spec=v1.ScheduleSpec(
                            cron=v1.CronSpec(expression="0 9 * * 1-5", time_zone="America/New_York")
                        ),
                        overlap_policy=v1.OverlapPolicy.SKIP,
                    ),
                    request_id=str(uuid.uuid4()),
                )
            )
            schedule = created.schedule
        assert schedule is not None
        print(f"schedule  {schedule.id} next fire {schedule.next_fire_time}")
        return 0 if final == v1.TaskState.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
