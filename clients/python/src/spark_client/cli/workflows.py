"""``spark workflows``: list what a source offers, import, list, show, run and delete
workflows."""

from __future__ import annotations

import uuid
from typing import Any

import typer

from .. import v1
from ..retry import run_workflow_idempotent_sync
from ._base import (
    all_pages,
    connected,
    console,
    emit_json,
    enum_name,
    print_table,
    report_done,
    settings_of,
    show_message,
    workflows_app,
)
from .tasks import follow_task


@workflows_app.command("remote")
def workflows_remote(
    ctx: typer.Context, source_id: str, limit: int = typer.Option(1000, "--limit")
) -> None:
    """List the flows a source offers for import."""
    with connected(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.sources.list_remote_flows(
                v1.ListRemoteFlowsRequest(source_id=source_id, page_token=token)
            )
            return page.remote_flows, page.next_page_token

        flows = all_pages(fetch, limit)
    if settings_of(ctx).json:
        emit_json(flows)
        return
    print_table(
        "Remote flows",
        ("id", "name", "kind", "folder"),
        [(f.id, f.name, enum_name(f.kind), f.folder_name) for f in flows],
    )


@workflows_app.command("import")
def workflows_import(
    ctx: typer.Context,
    source_id: str,
    remote_flow_id: str,
    tag: list[str] = typer.Option([], "--tag", help="A tag (repeatable)."),  # noqa: B008
) -> None:
    """Import a remote flow as a workflow (again: update it in place)."""
    with connected(ctx) as spark:
        reply = spark.workflows.import_workflow(
            v1.ImportWorkflowRequest(
                source_id=source_id,
                remote_flow_id=remote_flow_id,
                tags=list(tag),
                request_id=str(uuid.uuid4()),
            )
        )
    workflow = reply.workflow
    if settings_of(ctx).json:
        emit_json(workflow)
    elif workflow is not None:
        verb = "imported" if reply.created else "updated"
        console().print(f"workflow {workflow.id} {verb} ({workflow.display_name})")


@workflows_app.command("list")
def workflows_list(
    ctx: typer.Context,
    source_id: str = typer.Option("", "--source"),
    tag: str = typer.Option("", "--tag"),
    name: str = typer.Option("", "--name", help="Name contains."),
    limit: int = typer.Option(1000, "--limit"),
) -> None:
    """List workflows."""
    with connected(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.workflows.list_workflows(
                v1.ListWorkflowsRequest(
                    page_token=token, source_id=source_id, tag=tag, name_contains=name
                )
            )
            return page.workflows, page.next_page_token

        workflows = all_pages(fetch, limit)
    if settings_of(ctx).json:
        emit_json(workflows)
        return
    print_table(
        "Workflows",
        ("id", "name", "source", "tags", "runs", "failed", "last run"),
        [
            (
                w.id,
                w.display_name,
                w.source_id,
                ",".join(w.tags),
                w.task_count,
                w.failed_task_count,
                enum_name(w.latest_run_state) if w.latest_run_state else "",
            )
            for w in workflows
        ],
    )


@workflows_app.command("show")
def workflows_show(ctx: typer.Context, workflow_id: str) -> None:
    """Show a workflow."""
    with connected(ctx) as spark:
        workflow = spark.workflows.get_workflow(v1.GetWorkflowRequest(id=workflow_id)).workflow
    show_message(ctx, workflow, "Workflow")


@workflows_app.command("run")
def workflows_run(
    ctx: typer.Context,
    workflow_id: str,
    input_value: str = typer.Option("", "--input", "-i", help="The input message."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow it to the end."),
) -> None:
    """Run a workflow (exactly once: the request carries a request id)."""
    with connected(ctx) as spark:
        task = run_workflow_idempotent_sync(
            spark.workflows, v1.RunWorkflowRequest(workflow_id=workflow_id, input_value=input_value)
        )
        if watch:
            follow_task(ctx, spark, task.id)
            return
    if settings_of(ctx).json:
        emit_json(task)
    else:
        console().print(f"task {task.id} {enum_name(task.state)}")


@workflows_app.command("delete")
def workflows_delete(
    ctx: typer.Context,
    workflow_id: str,
    force: bool = typer.Option(False, "--force", help="Delete its tasks too."),
) -> None:
    """Delete a workflow."""
    with connected(ctx) as spark:
        reply = spark.workflows.delete_workflow(
            v1.DeleteWorkflowRequest(id=workflow_id, force=force)
        )
    report_done(
        ctx,
        f"workflow {workflow_id} deleted ({reply.deleted_task_count} tasks)",
        {"id": workflow_id, "deletedTaskCount": reply.deleted_task_count},
    )
