"""SourceService: register sources, probe them, list what they offer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
from sqlalchemy import delete, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from spark_grpc import defaults
from spark_grpc._gen.spark.v1 import source_pb2, source_service_pb2, source_service_pb2_grpc
from spark_grpc.db.idempotency import run_idempotent
from spark_grpc.db.keyset import keyset_page, keyset_position
from spark_grpc.db.models import SourceRow, WorkflowRow
from spark_grpc.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
)
from spark_grpc.services.convert import component_from_source, struct, timestamp
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.services.masks import mask_paths
from spark_grpc.sources import base as sources
from spark_grpc.sources.registry import adapter_for
from spark_grpc.validation import Validator, host_allowed

SOURCE_TYPES: dict[int, sources.SourceType] = {
    source_pb2.SOURCE_TYPE_LANGFLOW: sources.SourceType.LANGFLOW,
    source_pb2.SOURCE_TYPE_AUTOMAGIK_AGENTS: sources.SourceType.AUTOMAGIK_AGENTS,
    source_pb2.SOURCE_TYPE_AUTOMAGIK_HIVE: sources.SourceType.AUTOMAGIK_HIVE,
}
_TYPE_NUMBERS = {v.value: k for k, v in SOURCE_TYPES.items()}
FLOW_KINDS: dict[sources.RemoteFlowKind, int] = {
    sources.RemoteFlowKind.FLOW: source_pb2.REMOTE_FLOW_KIND_FLOW,
    sources.RemoteFlowKind.AGENT: source_pb2.REMOTE_FLOW_KIND_AGENT,
    sources.RemoteFlowKind.TEAM: source_pb2.REMOTE_FLOW_KIND_TEAM,
    sources.RemoteFlowKind.WORKFLOW: source_pb2.REMOTE_FLOW_KIND_WORKFLOW,
}
_UPDATABLE = ("display_name", "type", "url", "api_key", "enabled")


def source_to_proto(row: SourceRow) -> source_pb2.Source:
    """The client's view of a stored source: never the API key."""
    message = source_pb2.Source(
        id=str(row.id),
        display_name=row.display_name,
        type=_TYPE_NUMBERS.get(row.type, source_pb2.SOURCE_TYPE_UNSPECIFIED),  # type: ignore[arg-type]
        url=row.url,
        api_key_set=row.api_key_ciphertext is not None,
        enabled=row.enabled,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
    if row.health_check_time is not None:
        message.health.CopyFrom(
            source_pb2.SourceHealth(
                check_time=timestamp(row.health_check_time),
                reachable=bool(row.health_reachable),
                version=row.health_version or "",
                message=row.health_message or "",
            )
        )
    return message


def remote_flow_to_proto(
    source_id: str, flow: sources.RemoteFlow, *, light: bool = False
) -> source_pb2.RemoteFlow:
    """A remote flow as a client sees it; light leaves out components and graph."""
    return source_pb2.RemoteFlow(
        id=flow.id,
        source_id=source_id,
        name=flow.name,
        description=flow.description,
        kind=FLOW_KINDS[flow.kind],  # type: ignore[arg-type]
        folder_name=flow.folder_name,
        update_time=timestamp(flow.update_time),
        input_component_id=flow.input_component_id,
        output_component_id=flow.output_component_id,
        components=[] if light else [component_from_source(c) for c in flow.components],
        graph=None if light else struct(flow.graph),
        version=flow.version,
        tags=flow.tags,
    )


async def get_source_row(
    session: AsyncSession, source_id: uuid.UUID, *, lock: bool = False
) -> SourceRow:
    """The source with the id, or NotFoundError."""
    query = select(SourceRow).where(SourceRow.id == source_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(
            f"no source has id {source_id}",
            reason="SOURCE_NOT_FOUND",
            metadata={"source_id": str(source_id)},
        )
    return row


def _url_taken(url: str) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"a source with url {url} exists already; update that source instead",
        reason="SOURCE_URL_TAKEN",
        metadata={"url": url},
    )


class SourceServicer(source_service_pb2_grpc.SourceServiceServicer):
    """Implements spark.v1.SourceService."""

    def __init__(self, deps: ServiceDeps) -> None:
        self._deps = deps

    async def open_adapter(self, source_id: uuid.UUID) -> tuple[SourceRow, sources.SourceAdapter]:
        """The stored source and an adapter for it; read outside any transaction that
        would be held open across the source's HTTP call."""
        async with self._deps.db.session() as session:
            row = await get_source_row(session, source_id)
        api_key = self._deps.box.decrypt(row.api_key_ciphertext) if row.api_key_ciphertext else None
        connection = sources.SourceConnection(
            type=sources.SourceType(row.type), url=row.url, api_key=api_key
        )
        return row, adapter_for(connection, self._deps.http)

    def _check_host(self, v: Validator, url: str) -> None:
        if not v.violations and not host_allowed(url, self._deps.settings.source_host_allowlist):
            v.add(
                "source.url",
                "this host is not in SPARK_SOURCE_HOST_ALLOWLIST; ask the operator to add it",
            )

    async def CreateSource(
        self, request: source_service_pb2.CreateSourceRequest, context: grpc.aio.ServicerContext
    ) -> source_service_pb2.CreateSourceResponse:
        src = request.source
        v = Validator()
        v.text(
            "source.display_name",
            src.display_name,
            max_length=defaults.MAX_NAME_LENGTH,
            required=True,
        )
        v.enum("source.type", src.type, SOURCE_TYPES, required=True)
        url = v.url("source.url", src.url)
        self._check_host(v, url)
        v.text("source.api_key", src.api_key, max_length=defaults.MAX_API_KEY_LENGTH)
        v.request_id("request_id", request.request_id)
        v.raise_if_invalid()
        ciphertext = self._deps.box.encrypt(src.api_key) if src.api_key else None

        async def create(session: AsyncSession) -> source_service_pb2.CreateSourceResponse:
            row = SourceRow(
                id=uuid.uuid4(),
                display_name=src.display_name,
                type=SOURCE_TYPES[src.type].value,
                url=url,
                api_key_ciphertext=ciphertext,
                enabled=src.enabled if src.HasField("enabled") else True,
            )
            session.add(row)
            try:
                await session.flush()
            except sa_exc.IntegrityError:
                raise _url_taken(url) from None
            await session.refresh(row)
            return source_service_pb2.CreateSourceResponse(source=source_to_proto(row))

        return await run_idempotent(
            self._deps.db,
            "CreateSource",
            request,
            request.request_id,
            source_service_pb2.CreateSourceResponse,
            create,
        )

    async def GetSource(
        self, request: source_service_pb2.GetSourceRequest, context: grpc.aio.ServicerContext
    ) -> source_service_pb2.GetSourceResponse:
        v = Validator()
        source_id = v.uuid("id", request.id)
        v.raise_if_invalid()
        assert source_id is not None
        async with self._deps.db.session() as session:
            row = await get_source_row(session, source_id)
        return source_service_pb2.GetSourceResponse(source=source_to_proto(row))

    async def ListSources(
        self, request: source_service_pb2.ListSourcesRequest, context: grpc.aio.ServicerContext
    ) -> source_service_pb2.ListSourcesResponse:
        v = Validator()
        size = v.page_size("page_size", request.page_size)
        v.enum("type", request.type, SOURCE_TYPES, required=False)
        v.raise_if_invalid()
        filters: dict[str, Any] = {"type": request.type}
        if request.HasField("enabled"):
            filters["enabled"] = request.enabled
        position = self._deps.tokens.decode("sources", filters, request.page_token)
        query = select(SourceRow)
        if request.type:
            query = query.where(SourceRow.type == SOURCE_TYPES[request.type].value)
        if request.HasField("enabled"):
            query = query.where(SourceRow.enabled == request.enabled)
        query = keyset_page(query, SourceRow, position, size)
        async with self._deps.db.session() as session:
            rows = list((await session.execute(query)).scalars())
        response = source_service_pb2.ListSourcesResponse(
            sources=[source_to_proto(r) for r in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = self._deps.tokens.encode(
                "sources", filters, keyset_position(rows[size - 1])
            )
        return response

    async def UpdateSource(
        self, request: source_service_pb2.UpdateSourceRequest, context: grpc.aio.ServicerContext
    ) -> source_service_pb2.UpdateSourceResponse:
        src = request.source
        v = Validator()
        source_id = v.uuid("source.id", src.id)
        paths = mask_paths(v, request, src, _UPDATABLE, prefix="source")
        if "display_name" in paths:
            v.text(
                "source.display_name",
                src.display_name,
                max_length=defaults.MAX_NAME_LENGTH,
                required=True,
            )
        if "type" in paths:
            v.enum("source.type", src.type, SOURCE_TYPES, required=True)
        url = v.url("source.url", src.url) if "url" in paths else ""
        if url:
            self._check_host(v, url)
        if "api_key" in paths:
            v.text("source.api_key", src.api_key, max_length=defaults.MAX_API_KEY_LENGTH)
        if not paths:
            v.add("update_mask", "names no field to change")
        v.raise_if_invalid()
        assert source_id is not None
        async with self._deps.db.session() as session:
            row = await get_source_row(session, source_id, lock=True)
            if "display_name" in paths:
                row.display_name = src.display_name
            if "type" in paths:
                row.type = SOURCE_TYPES[src.type].value
            if "url" in paths:
                row.url = url
            if "api_key" in paths:
                row.api_key_ciphertext = (
                    self._deps.box.encrypt(src.api_key) if src.api_key else None
                )
            if "enabled" in paths:
                row.enabled = src.enabled
            row.update_time = func.clock_timestamp()
            try:
                await session.flush()
            except sa_exc.IntegrityError:
                raise _url_taken(url) from None
            await session.refresh(row)
        return source_service_pb2.UpdateSourceResponse(source=source_to_proto(row))

    async def DeleteSource(
        self, request: source_service_pb2.DeleteSourceRequest, context: grpc.aio.ServicerContext
    ) -> source_service_pb2.DeleteSourceResponse:
        v = Validator()
        source_id = v.uuid("id", request.id)
        v.raise_if_invalid()
        assert source_id is not None
        async with self._deps.db.session() as session:
            await get_source_row(session, source_id, lock=True)
            count = (
                await session.execute(
                    select(func.count())
                    .select_from(WorkflowRow)
                    .where(WorkflowRow.source_id == source_id)
                )
            ).scalar_one()
            if count and not request.force:
                raise FailedPreconditionError(
                    f"source {source_id} still has {count} workflow(s); delete them first or "
                    "set force to delete them with the source",
                    reason="SOURCE_HAS_WORKFLOWS",
                    metadata={"workflow_count": str(count)},
                )
            workflow_ids = list(
                (
                    await session.execute(
                        select(WorkflowRow.id).where(WorkflowRow.source_id == source_id)
                    )
                ).scalars()
            )
            from spark_grpc.services.workflows import (
                delete_workflow_schedules,
                delete_workflow_tasks,
            )

            await delete_workflow_schedules(session, workflow_ids, force=True)
            await delete_workflow_tasks(session, workflow_ids, force=True)
            await session.execute(delete(WorkflowRow).where(WorkflowRow.source_id == source_id))
            await session.execute(delete(SourceRow).where(SourceRow.id == source_id))
        return source_service_pb2.DeleteSourceResponse(deleted_workflow_count=count)

    async def CheckSource(
        self, request: source_service_pb2.CheckSourceRequest, context: grpc.aio.ServicerContext
    ) -> source_service_pb2.CheckSourceResponse:
        v = Validator()
        source_id = v.uuid("id", request.id)
        v.raise_if_invalid()
        assert source_id is not None
        _, adapter = await self.open_adapter(source_id)
        health = await adapter.check_health(timeout=self._deps.source_timeout(context))
        async with self._deps.db.session() as session:
            row = await get_source_row(session, source_id, lock=True)
            row.health_check_time = datetime.now(UTC)
            row.health_reachable = health.reachable
            row.health_version = health.version
            row.health_message = health.message
            row.update_time = func.clock_timestamp()
            await session.flush()
            await session.refresh(row)
        return source_service_pb2.CheckSourceResponse(source=source_to_proto(row))

    async def ListRemoteFlows(
        self, request: source_service_pb2.ListRemoteFlowsRequest, context: grpc.aio.ServicerContext
    ) -> source_service_pb2.ListRemoteFlowsResponse:
        v = Validator()
        source_id = v.uuid("source_id", request.source_id)
        size = v.page_size("page_size", request.page_size)
        v.enum("kind", request.kind, FLOW_KINDS.values(), required=False)
        v.raise_if_invalid()
        assert source_id is not None
        filters = {"source_id": str(source_id), "kind": request.kind}
        position = self._deps.tokens.decode("remote_flows", filters, request.page_token)
        if position is not None and not (len(position) == 1 and isinstance(position[0], str)):
            raise InvalidArgumentError(
                "invalid page_token", violations=[FieldViolation("page_token", "malformed")]
            )
        _, adapter = await self.open_adapter(source_id)
        flows = await adapter.list_remote_flows(timeout=self._deps.source_timeout(context))
        flows = sorted(
            (f for f in flows if not request.kind or FLOW_KINDS[f.kind] == request.kind),
            key=lambda f: f.id,
        )
        if position is not None:
            flows = [f for f in flows if f.id > position[0]]
        response = source_service_pb2.ListRemoteFlowsResponse(
            remote_flows=[remote_flow_to_proto(str(source_id), f, light=True) for f in flows[:size]]
        )
        if len(flows) > size:
            response.next_page_token = self._deps.tokens.encode(
                "remote_flows", filters, [flows[size - 1].id]
            )
        return response

    async def GetRemoteFlow(
        self, request: source_service_pb2.GetRemoteFlowRequest, context: grpc.aio.ServicerContext
    ) -> source_service_pb2.GetRemoteFlowResponse:
        v = Validator()
        source_id = v.uuid("source_id", request.source_id)
        remote_flow_id = v.identifier("remote_flow_id", request.remote_flow_id)
        v.raise_if_invalid()
        assert source_id is not None
        _, adapter = await self.open_adapter(source_id)
        flow = await adapter.get_remote_flow(
            remote_flow_id, timeout=self._deps.source_timeout(context)
        )
        return source_service_pb2.GetRemoteFlowResponse(
            remote_flow=remote_flow_to_proto(str(source_id), flow)
        )
