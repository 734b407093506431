"""WorkflowService: import flows from sources as workflows, and manage them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from sqlalchemy import delete, func, literal_column, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from spark_grpc import defaults
from spark_grpc._gen.spark.v1 import (
    component_pb2,
    workflow_pb2,
    workflow_service_pb2,
    workflow_service_pb2_grpc,
)
from spark_grpc.db.idempotency import cached_response, run_idempotent
from spark_grpc.db.keyset import keyset_page, keyset_position
from spark_grpc.db.models import WorkflowRow
from spark_grpc.domain.tasks import DEFAULT_TIMEOUT_S, RetryPolicy, TaskState
from spark_grpc.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
)
from spark_grpc.services.convert import (
    component_from_dict,
    component_from_source,
    component_to_dict,
    struct_to_dict,
    timestamp,
)
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.services.masks import mask_paths
from spark_grpc.services.runs import Runs, check_webhook, timeout
from spark_grpc.services.sources import SourceServicer, get_source_row
from spark_grpc.services.tasks import (
    STATE_NUMBERS,
    policy_from_proto,
    policy_to_proto,
)
from spark_grpc.validation import Validator

_UPDATABLE = (
    "display_name",
    "description",
    "tags",
    "input_component_id",
    "output_component_id",
    "graph",
    "components",
    "retry_policy",
    "timeout",
    "webhook_url",
)
_IMMUTABLE = ("source_id", "remote_flow_id", "id")
_VIEW = workflow_service_pb2.WorkflowView


@dataclass(frozen=True)
class WorkflowStats:
    """What the original showed on a workflow: its runs at a glance."""

    latest_state: str | None = None
    task_count: int = 0
    failed_task_count: int = 0


async def workflow_stats(
    session: AsyncSession, ids: list[uuid.UUID]
) -> dict[uuid.UUID, WorkflowStats]:
    """Stats of the given workflows, each from the (workflow_id, create_time) index."""
    if not ids:
        return {}
    rows = (
        await session.execute(
            text(
                "SELECT w.id, "
                "(SELECT t.state FROM tasks t WHERE t.workflow_id = w.id "
                " ORDER BY t.create_time DESC, t.id DESC LIMIT 1) AS latest, "
                "(SELECT count(*) FROM tasks t WHERE t.workflow_id = w.id) AS total, "
                "(SELECT count(*) FROM tasks t WHERE t.workflow_id = w.id "
                " AND t.state IN ('FAILED', 'TIMED_OUT')) AS failed "
                "FROM unnest(CAST(:ids AS uuid[])) AS w(id)"
            ),
            {"ids": ids},
        )
    ).all()
    return {r.id: WorkflowStats(r.latest, r.total, r.failed) for r in rows}


def workflow_to_proto(
    row: WorkflowRow, *, full: bool, stats: WorkflowStats | None = None
) -> workflow_pb2.Workflow:
    """A stored workflow as a client sees it; BASIC leaves out graph and components."""
    stats = stats or WorkflowStats()
    message = workflow_pb2.Workflow(
        id=str(row.id),
        display_name=row.display_name,
        description=row.description,
        source_id=str(row.source_id),
        remote_flow_id=row.remote_flow_id,
        input_component_id=row.input_component_id,
        output_component_id=row.output_component_id,
        tags=row.tags,
        folder_name=row.folder_name,
        flow_version=row.flow_version,
        import_time=timestamp(row.import_time),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        latest_run_state=STATE_NUMBERS[TaskState(stats.latest_state)]
        if stats.latest_state
        else None,
        task_count=stats.task_count,
        failed_task_count=stats.failed_task_count,
        retry_policy=policy_to_proto(RetryPolicy().merged(RetryPolicy.from_json(row.retry_policy))),
        webhook_url=row.webhook_url,
    )
    message.timeout.FromMilliseconds(int(row.timeout_s * 1000))
    if full:
        if row.graph is not None:
            message.graph.update(row.graph)
        message.components.extend(component_from_dict(c) for c in row.components)
    return message


def _validate_components(
    v: Validator, components: list[component_pb2.Component], field: str
) -> None:
    seen: set[str] = set()
    for i, component in enumerate(components):
        v.identifier(f"{field}[{i}].id", component.id)
        v.text(f"{field}[{i}].type", component.type, max_length=defaults.MAX_ID_LENGTH)
        if component.id in seen:
            v.add(f"{field}[{i}].id", f"duplicate component id {component.id!r}")
        seen.add(component.id)


def _validate_component_refs(v: Validator, component_ids: set[str], refs: dict[str, str]) -> None:
    """Input/output component ids must name one of the flow's components, if it has any."""
    for field, value in refs.items():
        if value:
            v.identifier(field, value)
            if component_ids and value not in component_ids:
                v.add(field, f"{value!r} is not a component of this flow")


async def _get_row(
    session: AsyncSession, workflow_id: uuid.UUID, *, lock: bool = False
) -> WorkflowRow:
    query = select(WorkflowRow).where(WorkflowRow.id == workflow_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(
            f"no workflow has id {workflow_id}",
            reason="WORKFLOW_NOT_FOUND",
            metadata={"workflow_id": str(workflow_id)},
        )
    return row


class WorkflowServicer(workflow_service_pb2_grpc.WorkflowServiceServicer):
    """Implements spark.v1.WorkflowService."""

    def __init__(self, deps: ServiceDeps, sources: SourceServicer) -> None:
        self._deps = deps
        self._sources = sources
        self._runs = Runs(deps)

    def _check_webhook(self, v: Validator, field: str, url: str) -> None:
        check_webhook(v, self._deps, field, url)

    async def ImportWorkflow(
        self, request: workflow_service_pb2.ImportWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_service_pb2.ImportWorkflowResponse:
        v = Validator()
        source_id = v.uuid("source_id", request.source_id)
        remote_flow_id = v.identifier("remote_flow_id", request.remote_flow_id)
        tags = v.tags("tags", request.tags)
        v.request_id("request_id", request.request_id)
        for field in ("input_component_id", "output_component_id"):
            v.identifier(field, getattr(request, field), required=False)
        v.raise_if_invalid()
        assert source_id is not None
        # A retry must not call the source again: answer from the first call when we can.
        cached = await cached_response(
            self._deps.db,
            "ImportWorkflow",
            request,
            request.request_id,
            workflow_service_pb2.ImportWorkflowResponse,
        )
        if cached is not None:
            return cached
        write = await self._prepare_import(request, source_id, remote_flow_id, tags, context)
        return await run_idempotent(
            self._deps.db,
            "ImportWorkflow",
            request,
            request.request_id,
            workflow_service_pb2.ImportWorkflowResponse,
            write,
        )

    async def _prepare_import(
        self,
        request: workflow_service_pb2.ImportWorkflowRequest,
        source_id: uuid.UUID,
        remote_flow_id: str,
        tags: list[str],
        context: grpc.aio.ServicerContext,
    ) -> Callable[[AsyncSession], Awaitable[workflow_service_pb2.ImportWorkflowResponse]]:
        """Reads the flow from its source (no transaction open meanwhile) and returns the
        write to run in one."""
        _, adapter = await self._sources.open_adapter(source_id)
        flow = await adapter.get_remote_flow(
            remote_flow_id, timeout=self._deps.source_timeout(context)
        )
        components = [component_from_source(c) for c in flow.components]
        input_id = request.input_component_id or flow.input_component_id
        output_id = request.output_component_id or flow.output_component_id
        v = Validator()
        _validate_component_refs(
            v,
            {c.id for c in components},
            {
                "input_component_id": request.input_component_id,
                "output_component_id": request.output_component_id,
            },
        )
        v.raise_if_invalid()
        values: dict[str, Any] = {
            "display_name": (flow.name or flow.id)[: defaults.MAX_NAME_LENGTH],
            "description": flow.description[: defaults.MAX_DESCRIPTION_LENGTH],
            "graph": flow.graph,
            "components": [component_to_dict(c) for c in components],
            "input_component_id": input_id,
            "output_component_id": output_id,
            "folder_name": flow.folder_name,
            "flow_version": flow.version,
            "import_time": datetime.now(UTC),
        }
        if tags:
            values["tags"] = tags

        async def write(session: AsyncSession) -> workflow_service_pb2.ImportWorkflowResponse:
            await get_source_row(session, source_id)  # deleted meanwhile: NOT_FOUND
            statement: Any = (
                insert(WorkflowRow)
                .values(
                    id=uuid.uuid4(), source_id=source_id, remote_flow_id=remote_flow_id, **values
                )
                .on_conflict_do_update(
                    constraint="uq_workflows_source_remote_flow",
                    set_={**values, "update_time": func.clock_timestamp()},
                )
                # xmax = 0 only on a freshly inserted row: tells create from update.
                .returning(WorkflowRow.id, literal_column("(xmax = 0)").label("created"))
            )
            result = (await session.execute(statement)).one()
            row = await _get_row(session, result.id)
            await session.refresh(row)
            stats = await workflow_stats(session, [row.id])
            return workflow_service_pb2.ImportWorkflowResponse(
                workflow=workflow_to_proto(row, full=True, stats=stats.get(row.id)),
                created=bool(result.created),
            )

        return write

    async def CreateWorkflow(
        self, request: workflow_service_pb2.CreateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_service_pb2.CreateWorkflowResponse:
        wf = request.workflow
        v = Validator()
        v.text(
            "workflow.display_name",
            wf.display_name,
            max_length=defaults.MAX_NAME_LENGTH,
            required=True,
        )
        v.text("workflow.description", wf.description, max_length=defaults.MAX_DESCRIPTION_LENGTH)
        source_id = v.uuid("workflow.source_id", wf.source_id)
        remote_flow_id = v.identifier("workflow.remote_flow_id", wf.remote_flow_id)
        tags = v.tags("workflow.tags", wf.tags)
        _validate_components(v, list(wf.components), "workflow.components")
        _validate_component_refs(
            v,
            {c.id for c in wf.components},
            {
                "workflow.input_component_id": wf.input_component_id,
                "workflow.output_component_id": wf.output_component_id,
            },
        )
        v.request_id("request_id", request.request_id)
        policy = policy_from_proto(wf.retry_policy, v, "workflow.retry_policy")
        timeout_s = (
            timeout(v, wf, "workflow.timeout") if wf.HasField("timeout") else DEFAULT_TIMEOUT_S
        )
        self._check_webhook(v, "workflow.webhook_url", wf.webhook_url)
        v.raise_if_invalid()
        assert source_id is not None

        async def create(session: AsyncSession) -> workflow_service_pb2.CreateWorkflowResponse:
            await get_source_row(session, source_id)
            row = WorkflowRow(
                id=uuid.uuid4(),
                source_id=source_id,
                remote_flow_id=remote_flow_id,
                display_name=wf.display_name,
                description=wf.description,
                graph=struct_to_dict(wf.graph) if wf.HasField("graph") else None,
                components=[component_to_dict(c) for c in wf.components],
                input_component_id=wf.input_component_id,
                output_component_id=wf.output_component_id,
                tags=tags,
                folder_name=wf.folder_name,
                flow_version=wf.flow_version,
                retry_policy=policy.to_json(),
                webhook_url=wf.webhook_url.rstrip("/") if wf.webhook_url else "",
                timeout_s=timeout_s,
            )
            session.add(row)
            try:
                await session.flush()
            except sa_exc.IntegrityError:
                raise AlreadyExistsError(
                    f"source {source_id} already has a workflow for remote flow "
                    f"{remote_flow_id!r}; update or re-import that workflow instead",
                    reason="WORKFLOW_EXISTS",
                    metadata={"source_id": str(source_id), "remote_flow_id": remote_flow_id},
                ) from None
            await session.refresh(row)
            return workflow_service_pb2.CreateWorkflowResponse(
                workflow=workflow_to_proto(row, full=True)
            )

        return await run_idempotent(
            self._deps.db,
            "CreateWorkflow",
            request,
            request.request_id,
            workflow_service_pb2.CreateWorkflowResponse,
            create,
        )

    async def GetWorkflow(
        self, request: workflow_service_pb2.GetWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_service_pb2.GetWorkflowResponse:
        v = Validator()
        workflow_id = v.uuid("id", request.id)
        v.enum("view", request.view, _VIEW.values(), required=False)
        v.raise_if_invalid()
        assert workflow_id is not None
        async with self._deps.db.session() as session:
            row = await _get_row(session, workflow_id)
            stats = await workflow_stats(session, [workflow_id])
        return workflow_service_pb2.GetWorkflowResponse(
            workflow=workflow_to_proto(
                row, full=request.view != _VIEW.WORKFLOW_VIEW_BASIC, stats=stats.get(workflow_id)
            )
        )

    async def ListWorkflows(
        self, request: workflow_service_pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> workflow_service_pb2.ListWorkflowsResponse:
        v = Validator()
        size = v.page_size("page_size", request.page_size)
        source_id = v.uuid("source_id", request.source_id, required=False)
        v.identifier("remote_flow_id", request.remote_flow_id, required=False)
        v.text("tag", request.tag, max_length=defaults.MAX_TAG_LENGTH)
        v.text("name_contains", request.name_contains, max_length=defaults.MAX_SEARCH_LENGTH)
        v.enum("view", request.view, _VIEW.values(), required=False)
        v.raise_if_invalid()
        filters = {
            "source_id": request.source_id,
            "remote_flow_id": request.remote_flow_id,
            "tag": request.tag,
            "name_contains": request.name_contains,
        }
        position = self._deps.tokens.decode("workflows", filters, request.page_token)
        query = select(WorkflowRow)
        if source_id is not None:
            query = query.where(WorkflowRow.source_id == source_id)
        if request.remote_flow_id:
            query = query.where(WorkflowRow.remote_flow_id == request.remote_flow_id)
        if request.tag:
            query = query.where(WorkflowRow.tags.contains([request.tag]))
        if request.name_contains:
            query = query.where(
                WorkflowRow.display_name.icontains(request.name_contains, autoescape=True)
            )
        query = keyset_page(query, WorkflowRow, position, size)
        async with self._deps.db.session() as session:
            rows = list((await session.execute(query)).scalars())
            stats = await workflow_stats(session, [r.id for r in rows[:size]])
        full = request.view == _VIEW.WORKFLOW_VIEW_FULL
        response = workflow_service_pb2.ListWorkflowsResponse(
            workflows=[workflow_to_proto(r, full=full, stats=stats.get(r.id)) for r in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = self._deps.tokens.encode(
                "workflows", filters, keyset_position(rows[size - 1])
            )
        return response

    async def UpdateWorkflow(
        self, request: workflow_service_pb2.UpdateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_service_pb2.UpdateWorkflowResponse:
        wf = request.workflow
        v = Validator()
        workflow_id = v.uuid("workflow.id", wf.id)
        paths = mask_paths(v, request, wf, _UPDATABLE, prefix="workflow", immutable=_IMMUTABLE)
        if "display_name" in paths:
            v.text(
                "workflow.display_name",
                wf.display_name,
                max_length=defaults.MAX_NAME_LENGTH,
                required=True,
            )
        if "description" in paths:
            v.text(
                "workflow.description", wf.description, max_length=defaults.MAX_DESCRIPTION_LENGTH
            )
        tags = v.tags("workflow.tags", wf.tags) if "tags" in paths else []
        if "components" in paths:
            _validate_components(v, list(wf.components), "workflow.components")
        for field in ("input_component_id", "output_component_id"):
            if field in paths:
                v.identifier(f"workflow.{field}", getattr(wf, field), required=False)
        policy = policy_from_proto(wf.retry_policy, v, "workflow.retry_policy")
        timeout_s = timeout(v, wf, "workflow.timeout") if "timeout" in paths else DEFAULT_TIMEOUT_S
        if "webhook_url" in paths:
            self._check_webhook(v, "workflow.webhook_url", wf.webhook_url)
        if not paths and not v.violations:
            v.add("update_mask", "names no field to change")
        v.raise_if_invalid()
        assert workflow_id is not None
        async with self._deps.db.session() as session:
            row = await _get_row(session, workflow_id, lock=True)
            if "display_name" in paths:
                row.display_name = wf.display_name
            if "description" in paths:
                row.description = wf.description
            if "tags" in paths:
                row.tags = tags
            if "graph" in paths:
                row.graph = struct_to_dict(wf.graph) if wf.HasField("graph") else None
            if "components" in paths:
                row.components = [component_to_dict(c) for c in wf.components]
            if "input_component_id" in paths:
                row.input_component_id = wf.input_component_id
            if "output_component_id" in paths:
                row.output_component_id = wf.output_component_id
            # The references must hold against the components as they are after the update.
            _validate_component_refs(
                v,
                {str(c.get("id", "")) for c in row.components},
                {
                    f"workflow.{f}": getattr(row, f)
                    for f in ("input_component_id", "output_component_id")
                    if f in paths
                },
            )
            v.raise_if_invalid()
            if "retry_policy" in paths:
                row.retry_policy = policy.to_json()
            if "timeout" in paths:
                row.timeout_s = timeout_s
            if "webhook_url" in paths:
                row.webhook_url = wf.webhook_url
            row.update_time = func.clock_timestamp()
            await session.flush()
            await session.refresh(row)
            stats = await workflow_stats(session, [row.id])
        return workflow_service_pb2.UpdateWorkflowResponse(
            workflow=workflow_to_proto(row, full=True, stats=stats.get(row.id))
        )

    async def DeleteWorkflow(
        self, request: workflow_service_pb2.DeleteWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_service_pb2.DeleteWorkflowResponse:
        v = Validator()
        workflow_id = v.uuid("id", request.id)
        v.raise_if_invalid()
        assert workflow_id is not None
        async with self._deps.db.session() as session:
            await _get_row(session, workflow_id, lock=True)
            await delete_workflow_schedules(session, [workflow_id], force=request.force)
            deleted = await delete_workflow_tasks(session, [workflow_id], force=request.force)
            await session.execute(delete(WorkflowRow).where(WorkflowRow.id == workflow_id))
        return workflow_service_pb2.DeleteWorkflowResponse(deleted_task_count=deleted)

    async def RunWorkflow(
        self, request: workflow_service_pb2.RunWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_service_pb2.RunWorkflowResponse:
        return workflow_service_pb2.RunWorkflowResponse(task=await self._runs.run_one(request))

    async def BatchRunWorkflows(
        self,
        request: workflow_service_pb2.BatchRunWorkflowsRequest,
        context: grpc.aio.ServicerContext,
    ) -> workflow_service_pb2.BatchRunWorkflowsResponse:
        if not 1 <= len(request.requests) <= defaults.MAX_BATCH_RUNS:
            raise InvalidArgumentError(
                f"requests must hold 1 to {defaults.MAX_BATCH_RUNS} runs, "
                f"got {len(request.requests)}",
                violations=[FieldViolation("requests", f"1 to {defaults.MAX_BATCH_RUNS} runs")],
            )
        tasks = await self._runs.run_all(list(request.requests))
        return workflow_service_pb2.BatchRunWorkflowsResponse(tasks=tasks)


async def delete_workflow_tasks(
    session: AsyncSession, workflow_ids: list[uuid.UUID], *, force: bool
) -> int:
    """Deletes the tasks (and, by cascade, the events) of workflows about to be deleted.

    Without force, any task is FAILED_PRECONDITION; with it, a RUNNING task still is.
    """
    counts = (
        await session.execute(
            text(
                "SELECT count(*) AS total, count(*) FILTER (WHERE state = 'RUNNING') AS running "
                "FROM tasks WHERE workflow_id = ANY(:ids)"
            ),
            {"ids": workflow_ids},
        )
    ).one()
    if counts.total and not force:
        raise FailedPreconditionError(
            f"{counts.total} task(s) belong to this workflow; set force to delete them with it",
            reason="WORKFLOW_HAS_TASKS",
            metadata={"task_count": str(counts.total)},
        )
    if counts.running:
        raise FailedPreconditionError(
            f"{counts.running} task(s) of this workflow are RUNNING; cancel them first",
            reason="WORKFLOW_HAS_RUNNING_TASKS",
            metadata={"running_task_count": str(counts.running)},
        )
    await session.execute(
        text("DELETE FROM tasks WHERE workflow_id = ANY(:ids)"), {"ids": workflow_ids}
    )
    return int(counts.total)


async def delete_workflow_schedules(
    session: AsyncSession, workflow_ids: list[uuid.UUID], *, force: bool
) -> int:
    """Deletes the schedules of workflows about to be deleted; without force, any schedule
    is FAILED_PRECONDITION."""
    count = (
        await session.execute(
            text("SELECT count(*) FROM schedules WHERE workflow_id = ANY(:ids)"),
            {"ids": workflow_ids},
        )
    ).scalar_one()
    if count and not force:
        raise FailedPreconditionError(
            f"{count} schedule(s) fire this workflow; set force to delete them with it",
            reason="WORKFLOW_HAS_SCHEDULES",
            metadata={"schedule_count": str(count)},
        )
    await session.execute(
        text("DELETE FROM schedules WHERE workflow_id = ANY(:ids)"), {"ids": workflow_ids}
    )
    return int(count)
