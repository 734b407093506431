"""WorkflowService against a real server process, a real Postgres and the fake sources."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
from google.protobuf import field_mask_pb2, struct_pb2

from spark_grpc._gen.spark.v1 import (
    component_pb2,
    source_pb2,
    workflow_pb2,
)
from spark_grpc._gen.spark.v1 import (
    source_service_pb2 as ss,
)
from spark_grpc._gen.spark.v1 import (
    workflow_service_pb2 as ws,
)
from spark_grpc.demo import fake_data
from spark_grpc.demo.fake_sources import FakeSources
from tests.e2e.test_sources_api import create_source
from tests.support import Stubs, error_info, expect_error, field_violations

BASIC = ws.WORKFLOW_VIEW_BASIC
FULL = ws.WORKFLOW_VIEW_FULL


async def import_echo(stubs: Stubs, source_id: str, **kwargs: object) -> ws.ImportWorkflowResponse:
    return await stubs.workflows.ImportWorkflow(
        ws.ImportWorkflowRequest(source_id=source_id, remote_flow_id=fake_data.FLOW_ECHO, **kwargs)
    )


async def test_import_stores_graph_and_components(stubs: Stubs, fake: FakeSources) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    imported = await import_echo(stubs, source.id, tags=["demo"])
    wf = imported.workflow
    assert imported.created
    assert wf.source_id == source.id and wf.remote_flow_id == fake_data.FLOW_ECHO
    assert wf.display_name and wf.folder_name
    assert wf.input_component_id.startswith("ChatInput-")
    assert wf.output_component_id.startswith("ChatOutput-")
    assert {c.id for c in wf.components} >= {wf.input_component_id, wf.output_component_id}
    assert len(wf.graph.fields["nodes"].list_value.values) == len(wf.components)
    assert wf.import_time.seconds > 0 and list(wf.tags) == ["demo"]

    got = (await stubs.workflows.GetWorkflow(ws.GetWorkflowRequest(id=wf.id))).workflow
    assert got == wf
    basic = (
        await stubs.workflows.GetWorkflow(ws.GetWorkflowRequest(id=wf.id, view=BASIC))
    ).workflow
    assert (
        not basic.components
        and not basic.HasField("graph")
        and basic.display_name == wf.display_name
    )


async def test_reimport_updates_in_place(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    first = (await import_echo(stubs, source.id, tags=["keep"])).workflow
    flow = next(f for f in fake.state.langflow_flows if f["id"] == fake_data.FLOW_ECHO)
    flow["name"] = "Echo v2"
    again = await import_echo(stubs, source.id)
    assert not again.created
    assert again.workflow.id == first.id
    assert again.workflow.display_name == "Echo v2"
    assert list(again.workflow.tags) == ["keep"], "tags kept when the re-import names none"
    assert again.workflow.update_time.ToDatetime() > first.update_time.ToDatetime()
    assert await pg.fetchval("SELECT count(*) FROM workflows") == 1


async def test_import_component_overrides_are_checked(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    err = await expect_error(
        import_echo(stubs, source.id, output_component_id="Nope-123"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "output_component_id" in field_violations(err)
    assert await pg.fetchval("SELECT count(*) FROM workflows") == 0

    flow = (
        await stubs.sources.GetRemoteFlow(
            ss.GetRemoteFlowRequest(source_id=source.id, remote_flow_id=fake_data.FLOW_ECHO)
        )
    ).remote_flow
    middle = next(c.id for c in flow.components if not c.is_input and not c.is_output)
    wf = (await import_echo(stubs, source.id, output_component_id=middle)).workflow
    assert wf.output_component_id == middle


async def test_import_unknown_flow_and_unknown_source(stubs: Stubs, fake: FakeSources) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    await expect_error(
        stubs.workflows.ImportWorkflow(
            ws.ImportWorkflowRequest(source_id=source.id, remote_flow_id="missing")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    err = await expect_error(
        stubs.workflows.ImportWorkflow(
            ws.ImportWorkflowRequest(
                source_id="00000000-0000-4000-8000-000000000000", remote_flow_id="x"
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert error_info(err).reason == "SOURCE_NOT_FOUND"


async def test_import_of_agents_and_hive(stubs: Stubs, fake: FakeSources) -> None:
    for kind, type_ in (
        ("agents", source_pb2.SOURCE_TYPE_AUTOMAGIK_AGENTS),
        ("hive", source_pb2.SOURCE_TYPE_AUTOMAGIK_HIVE),
    ):
        source = await create_source(stubs, fake.url(kind), type_=type_)
        flows = (
            await stubs.sources.ListRemoteFlows(ss.ListRemoteFlowsRequest(source_id=source.id))
        ).remote_flows
        for flow in flows:
            wf = (
                await stubs.workflows.ImportWorkflow(
                    ws.ImportWorkflowRequest(source_id=source.id, remote_flow_id=flow.id)
                )
            ).workflow
            assert wf.remote_flow_id == flow.id and wf.display_name == flow.name


async def test_import_request_id_does_not_call_the_source_twice(
    stubs: Stubs, fake: FakeSources
) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    first = await import_echo(stubs, source.id, request_id="import-1")
    calls = len(fake.state.requests("langflow"))
    again = await import_echo(stubs, source.id, request_id="import-1")
    assert again == first
    assert len(fake.state.requests("langflow")) == calls


async def test_concurrent_imports_of_one_flow_make_one_workflow(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    results = await asyncio.gather(*(import_echo(stubs, source.id) for _ in range(8)))
    assert len({r.workflow.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert await pg.fetchval("SELECT count(*) FROM workflows") == 1


def manual_workflow(source_id: str, remote_flow_id: str, **kwargs: object) -> workflow_pb2.Workflow:
    kwargs.setdefault("display_name", f"Manual {remote_flow_id}")
    return workflow_pb2.Workflow(source_id=source_id, remote_flow_id=remote_flow_id, **kwargs)


async def test_create_workflow_by_hand(stubs: Stubs, fake: FakeSources) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    graph = struct_pb2.Struct()
    graph.update({"nodes": [], "note": "hand-made"})
    created = (
        await stubs.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(
                workflow=manual_workflow(
                    source.id,
                    fake_data.FLOW_ECHO,
                    graph=graph,
                    components=[
                        component_pb2.Component(id="ChatInput-1", type="ChatInput", is_input=True)
                    ],
                    input_component_id="ChatInput-1",
                    tags=["a", "a", "b"],
                )
            )
        )
    ).workflow
    assert created.id and not created.HasField("import_time")
    assert list(created.tags) == ["a", "b"]
    assert created.graph == graph and created.components[0].id == "ChatInput-1"

    err = await expect_error(
        stubs.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(workflow=manual_workflow(source.id, fake_data.FLOW_ECHO))
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert error_info(err).metadata["remote_flow_id"] == fake_data.FLOW_ECHO

    await expect_error(
        stubs.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(
                workflow=manual_workflow("00000000-0000-4000-8000-000000000000", "x")
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    err = await expect_error(
        stubs.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(
                workflow=manual_workflow(
                    source.id,
                    "y",
                    input_component_id="Nope",
                    components=[component_pb2.Component(id="A")],
                )
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "workflow.input_component_id" in field_violations(err)


async def test_page_through_120_workflows_in_pages_of_50(stubs: Stubs, fake: FakeSources) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    created = []
    for i in range(120):
        wf = await stubs.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(workflow=manual_workflow(source.id, f"flow-{i:03}"))
        )
        created.append(wf.workflow.id)
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await stubs.workflows.ListWorkflows(
            ws.ListWorkflowsRequest(page_size=50, page_token=token)
        )
        pages.append([w.id for w in page.workflows])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [i for p in pages for i in p] == list(reversed(created))


async def test_list_filters(stubs: Stubs, fake: FakeSources) -> None:
    a = await create_source(stubs, fake.url("langflow"))
    b = await create_source(
        stubs, fake.url("agents"), type_=source_pb2.SOURCE_TYPE_AUTOMAGIK_AGENTS
    )
    w1 = (
        await stubs.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(
                workflow=manual_workflow(
                    a.id, "one", tags=["prod"], display_name="Support 100% bot"
                )
            )
        )
    ).workflow
    w2 = (
        await stubs.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(
                workflow=manual_workflow(b.id, "two", tags=["dev"], display_name="Sales bot")
            )
        )
    ).workflow

    async def ids(**kwargs: object) -> set[str]:
        page = await stubs.workflows.ListWorkflows(ws.ListWorkflowsRequest(**kwargs))
        return {w.id for w in page.workflows}

    assert await ids(source_id=a.id) == {w1.id}
    assert await ids(tag="dev") == {w2.id}
    assert await ids(remote_flow_id="two") == {w2.id}
    assert await ids(name_contains="BOT") == {w1.id, w2.id}
    assert await ids(name_contains="100%") == {w1.id}, "% is a literal, not a wildcard"
    assert await ids(name_contains="%") == {w1.id}
    assert await ids(name_contains="_") == set()
    listed = await stubs.workflows.ListWorkflows(ws.ListWorkflowsRequest(view=FULL))
    assert all(w.source_id for w in listed.workflows)


async def test_update_with_mask(stubs: Stubs, fake: FakeSources) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    wf = (await import_echo(stubs, source.id)).workflow
    updated = (
        await stubs.workflows.UpdateWorkflow(
            ws.UpdateWorkflowRequest(
                workflow=workflow_pb2.Workflow(
                    id=wf.id, display_name="New", tags=["x"], description="d"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name", "tags"]),
            )
        )
    ).workflow
    assert (updated.display_name, list(updated.tags), updated.description) == (
        "New",
        ["x"],
        wf.description,
    )
    assert updated.graph == wf.graph

    for paths, field in (
        (["source_id"], "update_mask.paths[0]"),
        (["bogus"], "update_mask.paths[0]"),
    ):
        err = await expect_error(
            stubs.workflows.UpdateWorkflow(
                ws.UpdateWorkflowRequest(
                    workflow=workflow_pb2.Workflow(id=wf.id, source_id=wf.id),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert field in field_violations(err)

    err = await expect_error(
        stubs.workflows.UpdateWorkflow(
            ws.UpdateWorkflowRequest(
                workflow=workflow_pb2.Workflow(id=wf.id, output_component_id="Nope"),
                update_mask=field_mask_pb2.FieldMask(paths=["output_component_id"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "workflow.output_component_id" in field_violations(err)
    after = (await stubs.workflows.GetWorkflow(ws.GetWorkflowRequest(id=wf.id))).workflow
    assert after.output_component_id == wf.output_component_id, "nothing written on rejection"

    # No mask: the fields that are set.
    renamed = (
        await stubs.workflows.UpdateWorkflow(
            ws.UpdateWorkflowRequest(
                workflow=workflow_pb2.Workflow(id=wf.id, description="only this")
            )
        )
    ).workflow
    assert renamed.description == "only this" and renamed.display_name == "New"


async def test_delete_workflow(stubs: Stubs, fake: FakeSources) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    wf = (await import_echo(stubs, source.id)).workflow
    await stubs.workflows.DeleteWorkflow(ws.DeleteWorkflowRequest(id=wf.id))
    await expect_error(
        stubs.workflows.GetWorkflow(ws.GetWorkflowRequest(id=wf.id)), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        stubs.workflows.DeleteWorkflow(ws.DeleteWorkflowRequest(id=wf.id)),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_sql_injection_is_stored_literally(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    evil = "x'); DROP TABLE workflows; --"
    wf = (
        await stubs.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(
                workflow=manual_workflow(source.id, evil, display_name=evil, tags=[evil[:60]])
            )
        )
    ).workflow
    assert wf.display_name == evil and wf.remote_flow_id == evil
    page = await stubs.workflows.ListWorkflows(
        ws.ListWorkflowsRequest(name_contains="'); DROP", tag=evil[:60])
    )
    assert [w.id for w in page.workflows] == [wf.id]
    assert await pg.fetchval("SELECT count(*) FROM workflows") == 1
