"""SourceService against a real server process, a real Postgres and the fake sources."""

from __future__ import annotations

import socket

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from spark_grpc._gen.spark.v1 import source_pb2
from spark_grpc._gen.spark.v1 import source_service_pb2 as ss
from spark_grpc.demo import fake_data
from spark_grpc.demo.fake_sources import FakeSources
from tests.support import ServerProcess, Stubs, error_info, expect_error, field_violations

LANGFLOW = source_pb2.SOURCE_TYPE_LANGFLOW
SECRET = "sk-very-secret-key-123"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def create_source(
    stubs: Stubs, url: str, *, api_key: str = "", type_: int = LANGFLOW, name: str = "LangFlow"
) -> source_pb2.Source:
    response = await stubs.sources.CreateSource(
        ss.CreateSourceRequest(
            source=source_pb2.Source(display_name=name, type=type_, url=url, api_key=api_key)
        )
    )
    return response.source


async def test_create_get_list_update_delete(stubs: Stubs, fake: FakeSources) -> None:
    created = await create_source(stubs, fake.url("langflow") + "/", api_key=SECRET)
    assert created.id and created.create_time.seconds > 0
    assert created.url == fake.url("langflow"), "trailing slash removed"
    assert created.api_key == "" and created.api_key_set
    assert created.enabled and not created.HasField("health")

    got = (await stubs.sources.GetSource(ss.GetSourceRequest(id=created.id))).source
    assert got == created

    updated = (
        await stubs.sources.UpdateSource(
            ss.UpdateSourceRequest(
                source=source_pb2.Source(id=created.id, display_name="Renamed", enabled=False),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name", "enabled"]),
            )
        )
    ).source
    assert (updated.display_name, updated.enabled, updated.url) == ("Renamed", False, created.url)
    assert updated.update_time.ToDatetime() > created.update_time.ToDatetime()
    assert updated.api_key_set, "a mask without api_key keeps the key"

    listed = (await stubs.sources.ListSources(ss.ListSourcesRequest())).sources
    assert [s.id for s in listed] == [created.id]

    await stubs.sources.DeleteSource(ss.DeleteSourceRequest(id=created.id))
    await expect_error(
        stubs.sources.GetSource(ss.GetSourceRequest(id=created.id)), grpc.StatusCode.NOT_FOUND
    )


async def test_api_key_is_never_returned_stored_in_clear_or_logged(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection, server: ServerProcess
) -> None:
    created = await create_source(stubs, fake.url("langflow"), api_key=SECRET)
    responses = [
        created,
        (await stubs.sources.GetSource(ss.GetSourceRequest(id=created.id))).source,
        *(await stubs.sources.ListSources(ss.ListSourcesRequest())).sources,
        (await stubs.sources.CheckSource(ss.CheckSourceRequest(id=created.id))).source,
        (
            await stubs.sources.UpdateSource(
                ss.UpdateSourceRequest(
                    source=source_pb2.Source(id=created.id, api_key=SECRET + "2"),
                    update_mask=field_mask_pb2.FieldMask(paths=["api_key"]),
                )
            )
        ).source,
    ]
    for message in responses:
        assert SECRET not in str(message) and message.api_key == ""
    stored = await pg.fetchval("SELECT api_key_ciphertext FROM sources WHERE id = $1", created.id)
    assert stored and SECRET.encode() not in bytes(stored)
    assert SECRET not in server.log()
    # The key does reach the source: the fake saw it (it masks it in its log).
    assert fake.state.requests("langflow")[-1]["headers"].get("x-api-key") == "***"


async def test_removing_the_api_key(stubs: Stubs, fake: FakeSources) -> None:
    created = await create_source(stubs, fake.url("langflow"), api_key=SECRET)
    updated = (
        await stubs.sources.UpdateSource(
            ss.UpdateSourceRequest(
                source=source_pb2.Source(id=created.id),
                update_mask=field_mask_pb2.FieldMask(paths=["api_key"]),
            )
        )
    ).source
    assert not updated.api_key_set


async def test_duplicate_url_is_already_exists(stubs: Stubs, fake: FakeSources) -> None:
    await create_source(stubs, fake.url("langflow"))
    err = await expect_error(
        create_source(stubs, fake.url("langflow") + "/"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert error_info(err).reason == "SOURCE_URL_TAKEN"


async def test_request_id_makes_create_idempotent(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    request = ss.CreateSourceRequest(
        source=source_pb2.Source(display_name="A", type=LANGFLOW, url=fake.url("langflow")),
        request_id="7d1b1c3e-create-once",
    )
    first = await stubs.sources.CreateSource(request)
    again = await stubs.sources.CreateSource(request)
    assert again == first
    assert await pg.fetchval("SELECT count(*) FROM sources") == 1

    different = ss.CreateSourceRequest()
    different.CopyFrom(request)
    different.source.display_name = "B"
    err = await expect_error(
        stubs.sources.CreateSource(different), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "request_id" in field_violations(err)
    assert await pg.fetchval("SELECT count(*) FROM sources") == 1


async def test_list_filters_and_pages(stubs: Stubs) -> None:
    ids = []
    for i in range(7):
        source = await create_source(
            stubs,
            f"http://source-{i}.example:7860",
            type_=LANGFLOW if i % 2 == 0 else source_pb2.SOURCE_TYPE_AUTOMAGIK_HIVE,
        )
        ids.append(source.id)
    seen: list[str] = []
    token = ""
    while True:
        page = await stubs.sources.ListSources(ss.ListSourcesRequest(page_size=3, page_token=token))
        assert len(page.sources) <= 3
        seen += [s.id for s in page.sources]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids)), "newest first, each once"

    langflow = await stubs.sources.ListSources(ss.ListSourcesRequest(type=LANGFLOW))
    assert {s.id for s in langflow.sources} == set(ids[0::2])

    await stubs.sources.UpdateSource(
        ss.UpdateSourceRequest(
            source=source_pb2.Source(id=ids[0], enabled=False),
            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
        )
    )
    disabled = await stubs.sources.ListSources(ss.ListSourcesRequest(enabled=False))
    assert [s.id for s in disabled.sources] == [ids[0]]

    first = await stubs.sources.ListSources(ss.ListSourcesRequest(page_size=2))
    err = await expect_error(
        stubs.sources.ListSources(
            ss.ListSourcesRequest(page_size=2, page_token=first.next_page_token, type=LANGFLOW)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_token" in field_violations(err)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "eyJ2IjoxfQ",
        "A" * 40,
        "%%%",
        "eyJ2IjoxLCJzIjoic291cmNlcyIsImYiOiIwIiwicCI6W119AAAAAAAAAAAAAAAAAAAAAA",
    ],
)
async def test_forged_page_tokens_are_invalid_argument(stubs: Stubs, token: str) -> None:
    err = await expect_error(
        stubs.sources.ListSources(ss.ListSourcesRequest(page_token=token)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_token" in field_violations(err)


async def test_page_size_negative_rejected_and_large_clamped(stubs: Stubs) -> None:
    err = await expect_error(
        stubs.sources.ListSources(ss.ListSourcesRequest(page_size=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_size" in field_violations(err)
    await create_source(stubs, "http://one.example")
    page = await stubs.sources.ListSources(ss.ListSourcesRequest(page_size=2_000_000_000))
    assert len(page.sources) == 1 and not page.next_page_token


async def test_check_source_reachable_records_version(stubs: Stubs, fake: FakeSources) -> None:
    created = await create_source(stubs, fake.url("langflow"))
    checked = (await stubs.sources.CheckSource(ss.CheckSourceRequest(id=created.id))).source
    assert checked.health.reachable
    assert checked.health.version
    assert checked.health.check_time.seconds > 0
    again = (await stubs.sources.GetSource(ss.GetSourceRequest(id=created.id))).source
    assert again.health == checked.health, "the result is stored"


async def test_check_source_down_and_unauthorised_are_results_not_errors(
    stubs: Stubs, fake: FakeSources
) -> None:
    down = await create_source(stubs, closed_port_url())
    health = (await stubs.sources.CheckSource(ss.CheckSourceRequest(id=down.id))).source.health
    assert not health.reachable and health.message

    fake.state.configure("agents", require_api_key="right")
    wrong = await create_source(
        stubs, fake.url("agents"), api_key="wrong", type_=source_pb2.SOURCE_TYPE_AUTOMAGIK_AGENTS
    )
    health = (await stubs.sources.CheckSource(ss.CheckSourceRequest(id=wrong.id))).source.health
    assert not health.reachable and "401" in health.message


async def test_list_remote_flows_drops_components_and_templates(
    stubs: Stubs, fake: FakeSources
) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    flows = (
        await stubs.sources.ListRemoteFlows(ss.ListRemoteFlowsRequest(source_id=source.id))
    ).remote_flows
    ids = [f.id for f in flows]
    assert fake_data.FLOW_ECHO in ids
    assert fake_data.FLOW_COMPONENT not in ids and fake_data.FLOW_TEMPLATE not in ids
    assert ids == sorted(ids)
    assert all(
        f.kind == source_pb2.REMOTE_FLOW_KIND_FLOW and f.source_id == source.id for f in flows
    )

    one = await stubs.sources.ListRemoteFlows(
        ss.ListRemoteFlowsRequest(source_id=source.id, page_size=1)
    )
    assert len(one.remote_flows) == 1 and one.next_page_token
    rest = await stubs.sources.ListRemoteFlows(
        ss.ListRemoteFlowsRequest(
            source_id=source.id, page_size=100, page_token=one.next_page_token
        )
    )
    assert [f.id for f in one.remote_flows] + [f.id for f in rest.remote_flows] == ids


async def test_get_remote_flow_detects_chat_input_and_output(
    stubs: Stubs, fake: FakeSources
) -> None:
    source = await create_source(stubs, fake.url("langflow"))
    flow = (
        await stubs.sources.GetRemoteFlow(
            ss.GetRemoteFlowRequest(source_id=source.id, remote_flow_id=fake_data.FLOW_ECHO)
        )
    ).remote_flow
    assert flow.input_component_id.startswith("ChatInput-")
    assert flow.output_component_id.startswith("ChatOutput-")
    by_id = {c.id: c for c in flow.components}
    assert by_id[flow.input_component_id].is_input
    assert by_id[flow.output_component_id].is_output
    assert any(c.tweakable_params for c in flow.components)
    assert "nodes" in flow.graph.fields

    await expect_error(
        stubs.sources.GetRemoteFlow(
            ss.GetRemoteFlowRequest(source_id=source.id, remote_flow_id="no-such-flow")
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_agents_and_hive_remote_flows(stubs: Stubs, fake: FakeSources) -> None:
    agents = await create_source(
        stubs, fake.url("agents"), type_=source_pb2.SOURCE_TYPE_AUTOMAGIK_AGENTS
    )
    flows = (
        await stubs.sources.ListRemoteFlows(ss.ListRemoteFlowsRequest(source_id=agents.id))
    ).remote_flows
    assert flows and all(f.kind == source_pb2.REMOTE_FLOW_KIND_AGENT for f in flows)

    hive = await create_source(stubs, fake.url("hive"), type_=source_pb2.SOURCE_TYPE_AUTOMAGIK_HIVE)
    flows = (
        await stubs.sources.ListRemoteFlows(ss.ListRemoteFlowsRequest(source_id=hive.id))
    ).remote_flows
    kinds = {f.kind for f in flows}
    assert {
        source_pb2.REMOTE_FLOW_KIND_AGENT,
        source_pb2.REMOTE_FLOW_KIND_TEAM,
        source_pb2.REMOTE_FLOW_KIND_WORKFLOW,
    } <= kinds
    assert len({f.id for f in flows}) == len(flows), "ids unique across kinds"
    teams = await stubs.sources.ListRemoteFlows(
        ss.ListRemoteFlowsRequest(source_id=hive.id, kind=source_pb2.REMOTE_FLOW_KIND_TEAM)
    )
    assert teams.remote_flows and all(
        f.kind == source_pb2.REMOTE_FLOW_KIND_TEAM for f in teams.remote_flows
    )


async def test_remote_flow_errors_map_to_clear_statuses(stubs: Stubs, fake: FakeSources) -> None:
    source = await create_source(stubs, fake.url("langflow"), api_key="wrong")
    request = ss.ListRemoteFlowsRequest(source_id=source.id)

    fake.state.configure("langflow", require_api_key="right")
    err = await expect_error(
        stubs.sources.ListRemoteFlows(request), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert error_info(err).reason == "SOURCE_UNAUTHENTICATED"
    assert "wrong" not in (err.details() or "")

    fake.state.configure("langflow", reset=True, malformed=True)
    err = await expect_error(
        stubs.sources.ListRemoteFlows(request), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert error_info(err).reason == "SOURCE_BAD_RESPONSE"

    fake.state.configure("langflow", reset=True, delay_s=5)
    err = await expect_error(
        stubs.sources.ListRemoteFlows(request, timeout=0.5), grpc.StatusCode.DEADLINE_EXCEEDED
    )

    down = await create_source(stubs, closed_port_url())
    err = await expect_error(
        stubs.sources.ListRemoteFlows(ss.ListRemoteFlowsRequest(source_id=down.id)),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert error_info(err).reason == "SOURCE_UNREACHABLE"


async def test_delete_source_with_workflows_needs_force(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws

    source = await create_source(stubs, fake.url("langflow"))
    await stubs.workflows.ImportWorkflow(
        ws.ImportWorkflowRequest(source_id=source.id, remote_flow_id=fake_data.FLOW_ECHO)
    )
    err = await expect_error(
        stubs.sources.DeleteSource(ss.DeleteSourceRequest(id=source.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error_info(err).reason == "SOURCE_HAS_WORKFLOWS"
    assert await pg.fetchval("SELECT count(*) FROM workflows") == 1

    deleted = await stubs.sources.DeleteSource(ss.DeleteSourceRequest(id=source.id, force=True))
    assert deleted.deleted_workflow_count == 1
    assert await pg.fetchval("SELECT count(*) FROM workflows") == 0
    assert await pg.fetchval("SELECT count(*) FROM sources") == 0
