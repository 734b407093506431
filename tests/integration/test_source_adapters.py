"""The source adapters against the fake LangFlow / Agents / Hive server, over real HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from spark_grpc.demo import fake_data
from spark_grpc.demo.fake_sources import FakeSources, run_fake_sources
from spark_grpc.errors import (
    SourceAuthError,
    SourceNotFoundError,
    SourceResponseError,
    SourceTimeoutError,
    SourceUnreachableError,
)
from spark_grpc.sources import (
    RemoteFlowKind,
    RunEvent,
    SourceAdapter,
    SourceConnection,
    SourceType,
    adapter_for,
)

KEY = "test-key-123"
ECHO = fake_data.FLOW_ECHO
POLITE = fake_data.FLOW_POLITE_ECHO
KIND_OF = {
    SourceType.LANGFLOW: "langflow",
    SourceType.AUTOMAGIK_AGENTS: "agents",
    SourceType.AUTOMAGIK_HIVE: "hive",
}


@pytest_asyncio.fixture
async def fake_sources() -> AsyncIterator[FakeSources]:
    # A fresh server per test, rather than conftest's session-wide `fake`, so that a hung or
    # slowed source cannot reach into the next test.
    async with run_fake_sources() as server:
        yield server


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_adapter(
    fake_sources: FakeSources,
    http: httpx.AsyncClient,
    source_type: SourceType = SourceType.LANGFLOW,
    api_key: str | None = KEY,
) -> SourceAdapter:
    return adapter_for(
        SourceConnection(source_type, fake_sources.url(KIND_OF[source_type]), api_key), http
    )


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- LangFlow: listing and fetching ------------------------------------------------------


@pytest.mark.asyncio
async def test_health_reports_langflow_version(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    health = await make_adapter(fake_sources, http).check_health(timeout=5)
    assert (health.reachable, health.version, health.message) == (True, "1.4.2", "ok")


@pytest.mark.asyncio
async def test_listing_drops_components_and_templates(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    flows = await make_adapter(fake_sources, http).list_remote_flows(timeout=5)

    assert {f.id for f in flows} == {ECHO, POLITE, fake_data.FLOW_SUPPORT_GREETER}
    echo = next(f for f in flows if f.id == ECHO)
    assert (echo.name, echo.folder_name, echo.kind) == ("Echo", "My Projects", RemoteFlowKind.FLOW)
    assert (echo.input_component_id, echo.output_component_id) == (
        "ChatInput-a1B2c",
        "ChatOutput-a1B2c",
    )


@pytest.mark.asyncio
async def test_get_flow_returns_graph_and_components(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    flow = await make_adapter(fake_sources, http).get_remote_flow(POLITE, timeout=5)

    assert flow.graph is not None and len(flow.graph["nodes"]) == 3
    assert [c.type for c in flow.components] == ["ChatInput", "EchoPrefix", "ChatOutput"]
    assert flow.components[0].is_input and flow.components[2].is_output
    prefix = next(p for p in flow.components[1].params if p.name == "prefix")
    assert prefix.value == "You said: "


@pytest.mark.asyncio
async def test_unknown_flow_is_not_found(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(fake_sources, http)
    with pytest.raises(SourceNotFoundError, match="no-such-flow"):
        await adapter.get_remote_flow("no-such-flow", timeout=5)
    with pytest.raises(SourceNotFoundError):
        await adapter.run("no-such-flow", input_value="x", tweaks={}, timeout=5)


@pytest.mark.asyncio
async def test_component_is_not_fetched_as_a_flow(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    with pytest.raises(SourceNotFoundError, match="component"):
        await make_adapter(fake_sources, http).get_remote_flow(fake_data.FLOW_COMPONENT, timeout=5)


@pytest.mark.asyncio
async def test_projects_are_used_when_folders_are_gone() -> None:
    """LangFlow 1.5+ answers 404 on /api/v1/folders/; the flows are in /api/v1/projects/."""
    flows = fake_data.langflow_flows()

    def langflow_15(request: httpx.Request) -> httpx.Response:
        routes: dict[str, Any] = {
            "/api/v1/projects/": fake_data.langflow_folders(),
            "/api/v1/flows/": flows,
        }
        if request.url.path in routes:
            return httpx.Response(200, json=routes[request.url.path])
        return httpx.Response(404, json={"detail": "Not Found"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(langflow_15)) as http:
        adapter = adapter_for(SourceConnection(SourceType.LANGFLOW, "http://lf", None), http)
        listed = await adapter.list_remote_flows(timeout=5)
    assert len(listed) == 3


# -- errors ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_wrong_api_key_is_refused_and_right_one_accepted(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    fake_sources.state.configure("langflow", require_api_key=KEY)
    wrong = make_adapter(fake_sources, http, api_key="wrong-key-456")

    health = await wrong.check_health(timeout=5)
    assert not health.reachable
    assert health.message == "HTTP 401: check the source's API key"
    with pytest.raises(SourceAuthError) as caught:
        await wrong.list_remote_flows(timeout=5)
    assert caught.value.http_status == 401
    assert fake_sources.url("langflow") in caught.value.message
    assert "wrong-key-456" not in caught.value.message

    assert len(await make_adapter(fake_sources, http).list_remote_flows(timeout=5)) == 3
    assert fake_sources.state.requests("langflow")[-1]["headers"]["x-api-key"] == "***"


@pytest.mark.asyncio
async def test_source_down_is_unreachable(http: httpx.AsyncClient) -> None:
    adapter = adapter_for(SourceConnection(SourceType.LANGFLOW, closed_port_url(), KEY), http)

    health = await adapter.check_health(timeout=5)
    assert (health.reachable, health.message) == (False, "connection refused")
    with pytest.raises(SourceUnreachableError) as caught:
        await adapter.list_remote_flows(timeout=5)
    assert caught.value.retryable


@pytest.mark.asyncio
async def test_body_that_is_not_json_is_a_bad_response(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    fake_sources.state.configure("langflow", malformed=True)
    with pytest.raises(SourceResponseError) as caught:
        await make_adapter(fake_sources, http).list_remote_flows(timeout=5)
    assert caught.value.reason == "SOURCE_BAD_RESPONSE"
    assert not caught.value.retryable


@pytest.mark.asyncio
async def test_slow_source_times_out_within_the_budget(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    fake_sources.state.configure("langflow", delay_s=2.0)
    adapter = make_adapter(fake_sources, http)

    started = time.monotonic()
    with pytest.raises(SourceTimeoutError) as caught:
        await adapter.list_remote_flows(timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert caught.value.retryable
    health = await adapter.check_health(timeout=0.3)
    assert (health.reachable, health.message) == (False, "timed out")


@pytest.mark.asyncio
async def test_hanging_source_times_out(fake_sources: FakeSources, http: httpx.AsyncClient) -> None:
    fake_sources.state.configure("langflow", hang=True)
    with pytest.raises(SourceTimeoutError):
        await make_adapter(fake_sources, http).run(ECHO, input_value="x", tweaks={}, timeout=0.3)


@pytest.mark.asyncio
async def test_rate_limit_is_retryable_after_the_sources_delay(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    fake_sources.state.configure("langflow", fail_times=1, fail_status=429, retry_after_s=7)
    with pytest.raises(SourceResponseError) as caught:
        await make_adapter(fake_sources, http).run(ECHO, input_value="x", tweaks={}, timeout=5)
    assert caught.value.retryable
    assert caught.value.retry_after_s == 7.0
    assert caught.value.http_status == 429


@pytest.mark.asyncio
async def test_server_error_is_retryable(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    fake_sources.state.configure("langflow", fail_times=1, fail_status=500)
    with pytest.raises(SourceResponseError) as caught:
        await make_adapter(fake_sources, http).list_remote_flows(timeout=5)
    assert caught.value.retryable
    assert "500" in caught.value.message


@pytest.mark.asyncio
async def test_other_client_error_is_not_retryable(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    fake_sources.state.configure("langflow", fail_times=1, fail_status=422)
    with pytest.raises(SourceResponseError) as caught:
        await make_adapter(fake_sources, http).list_remote_flows(timeout=5)
    assert not caught.value.retryable


@pytest.mark.asyncio
async def test_source_that_fails_twice_then_succeeds(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    fake_sources.state.configure("langflow", fail_times=2, fail_status=503)
    adapter = make_adapter(fake_sources, http)
    for _ in range(2):
        with pytest.raises(SourceResponseError):
            await adapter.run(ECHO, input_value="hi", tweaks={}, timeout=5)
    result = await adapter.run(ECHO, input_value="hi", tweaks={}, timeout=5)
    assert result.text == "hi"


# -- LangFlow: runs ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_run_sends_input_and_tweaks_and_returns_the_answer(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    tweaks = {"EchoPrefix-a1B2c": {"prefix": ">> "}}
    result = await make_adapter(fake_sources, http).run(
        ECHO, input_value="hello", tweaks=tweaks, timeout=5, session_id="sess-1"
    )

    assert result.text == ">> hello"
    assert result.session_id == "sess-1"
    assert result.output["outputs"][0]["outputs"][0]["component_id"] == "ChatOutput-a1B2c"
    sent = fake_sources.state.requests("langflow")[-1]
    assert (sent["method"], sent["path"], sent["query"]) == (
        "POST",
        f"/langflow/api/v1/run/{ECHO}",
        {"stream": "false"},
    )
    assert sent["json"] == {
        "input_value": "hello",
        "output_type": "chat",
        "input_type": "chat",
        "tweaks": tweaks,
        "session_id": "sess-1",
    }


@pytest.mark.asyncio
async def test_streaming_run_forwards_tokens_in_order(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    events: list[RunEvent] = []

    async def collect(event: RunEvent) -> None:
        events.append(event)

    result = await make_adapter(fake_sources, http).run(
        POLITE, input_value="one two three", tweaks={}, timeout=5, stream=True, on_event=collect
    )

    tokens = [e.text for e in events if e.kind == "token"]
    assert tokens == ["You ", "said: ", "one ", "two ", "three"]
    assert [e.text for e in events if e.kind == "message"] == [
        "one two three",
        "You said: one two three",
    ]
    assert result.text == "You said: one two three"
    assert fake_sources.state.requests("langflow")[-1]["query"] == {"stream": "true"}


@pytest.mark.asyncio
async def test_failing_flow_reports_the_sources_error(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(fake_sources, http)
    with pytest.raises(SourceResponseError, match="fake failure") as caught:
        await adapter.run("fail-flow", input_value="x", tweaks={}, timeout=5)
    assert caught.value.http_status == 500

    with pytest.raises(SourceResponseError, match="fake failure") as caught:
        await adapter.run("fail-flow", input_value="x", tweaks={}, timeout=5, stream=True)
    assert caught.value.reason == "SOURCE_RUN_FAILED"
    assert not caught.value.retryable


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_ten_megabyte_answer_is_returned_whole(
    fake_sources: FakeSources, http: httpx.AsyncClient, stream: bool
) -> None:
    size = 10 * 1024 * 1024
    fake_sources.state.configure("langflow", big_output_bytes=size)
    result = await make_adapter(fake_sources, http).run(
        ECHO, input_value="big", tweaks={}, timeout=30, stream=stream
    )
    assert len(result.text) == size
    assert result.text.startswith("big ") and result.text.endswith("x")


# -- Automagik Agents --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_agents_list_get_and_run(fake_sources: FakeSources, http: httpx.AsyncClient) -> None:
    adapter = make_adapter(fake_sources, http, SourceType.AUTOMAGIK_AGENTS)

    health = await adapter.check_health(timeout=5)
    assert (health.reachable, health.version) == (True, "0.9.0")
    assert [f.id for f in await adapter.list_remote_flows(timeout=5)] == ["simple", "shouty"]
    shouty = await adapter.get_remote_flow("shouty", timeout=5)
    assert shouty.kind is RemoteFlowKind.AGENT
    assert shouty.description == "Echoes your message back in capitals."

    result = await adapter.run(
        "shouty", input_value="hi there", tweaks={}, timeout=5, session_id="my-session"
    )
    assert result.text == "HI THERE"
    assert result.session_id
    assert result.output["success"] is True
    sent = fake_sources.state.requests("agents")[-1]
    assert sent["path"] == "/agents/api/v1/agent/shouty/run"
    assert sent["json"]["message_content"] == "hi there"
    assert sent["json"]["session_name"] == "my-session"
    assert sent["json"]["session_origin"] == "automagik-spark"
    assert sent["headers"]["x-api-key"] == "***"


@pytest.mark.asyncio
async def test_agents_unknown_and_failing(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(fake_sources, http, SourceType.AUTOMAGIK_AGENTS)
    with pytest.raises(SourceNotFoundError):
        await adapter.get_remote_flow("nobody", timeout=5)
    with pytest.raises(SourceNotFoundError):
        await adapter.run("nobody", input_value="x", tweaks={}, timeout=5)
    with pytest.raises(SourceResponseError, match="failed on purpose") as caught:
        await adapter.run("fail-agent", input_value="x", tweaks={}, timeout=5)
    assert caught.value.reason == "SOURCE_RUN_FAILED"


# -- Automagik Hive ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_hive_lists_agents_teams_and_workflows_with_unique_ids(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(fake_sources, http, SourceType.AUTOMAGIK_HIVE)

    assert (await adapter.check_health(timeout=5)).reachable
    flows = await adapter.list_remote_flows(timeout=5)
    assert [(f.id, f.kind, f.folder_name) for f in flows] == [
        ("agent:echo-agent", RemoteFlowKind.AGENT, "Agents"),
        ("agent:support", RemoteFlowKind.AGENT, "Agents"),
        ("team:support", RemoteFlowKind.TEAM, "Teams"),
        ("workflow:release-notes", RemoteFlowKind.WORKFLOW, "Workflows"),
    ]
    team = await adapter.get_remote_flow("team:support", timeout=5)
    assert team.graph is not None and team.graph["mode"] == "coordinate"
    with pytest.raises(SourceNotFoundError):
        await adapter.get_remote_flow("team:nobody", timeout=5)


@pytest.mark.asyncio
async def test_hive_runs_each_kind_with_a_form(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(fake_sources, http, SourceType.AUTOMAGIK_HIVE)

    agent = await adapter.run(
        "agent:echo-agent", input_value="hi", tweaks={}, timeout=5, session_id="s-1"
    )
    assert (agent.text, agent.session_id) == ("hi", "s-1")
    sent = fake_sources.state.requests("hive")[-1]
    assert sent["path"] == "/hive/agents/echo-agent/runs"
    assert sent["form"] == {"message": "hi", "stream": "false", "session_id": "s-1"}
    assert sent["headers"]["x-api-key"] == "***"
    assert sent["headers"]["Authorization"] == "***"

    team = await adapter.run("team:support", input_value="hi", tweaks={}, timeout=5)
    assert team.text.startswith("hi\n\n**echo-agent**: Echo Agent heard: hi")
    assert fake_sources.state.requests("hive")[-1]["form"]["mode"] == "coordinate"

    workflow = await adapter.run("workflow:release-notes", input_value="v1", tweaks={}, timeout=5)
    assert workflow.text == "v1"
    assert workflow.output["steps_completed"][0]["step_id"] == "draft"


@pytest.mark.asyncio
async def test_hive_accepts_bare_ids_stored_by_automagik_spark(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(fake_sources, http, SourceType.AUTOMAGIK_HIVE)
    result = await adapter.run("release-notes", input_value="v2", tweaks={}, timeout=5)
    assert result.text == "v2"
    assert fake_sources.state.requests("hive")[-1]["path"] == "/hive/workflows/release-notes/runs"


@pytest.mark.asyncio
async def test_hive_failed_run_and_wrong_key(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(fake_sources, http, SourceType.AUTOMAGIK_HIVE)
    with pytest.raises(SourceResponseError, match="ERROR"):
        await adapter.run("agent:fail-agent", input_value="x", tweaks={}, timeout=5)

    fake_sources.state.configure("hive", require_api_key="other")
    with pytest.raises(SourceAuthError):
        await adapter.list_remote_flows(timeout=5)


# -- the fake's HTTP control API (for tests driving a separate server process) ------------


@pytest.mark.asyncio
async def test_fake_is_controlled_over_http(
    fake_sources: FakeSources, http: httpx.AsyncClient
) -> None:
    control = f"{fake_sources.url('agents')}/_fake"
    answer = await http.post(f"{control}/config", json={"fail_times": 1, "fail_status": 503})
    assert answer.json()["fail_times"] == 1

    adapter = make_adapter(fake_sources, http, SourceType.AUTOMAGIK_AGENTS)
    assert not (await adapter.check_health(timeout=5)).reachable
    assert (await adapter.check_health(timeout=5)).reachable

    logged = (await http.get(f"{control}/requests")).json()
    assert [r["path"] for r in logged] == ["/agents/health", "/agents/health"]
    await http.delete(f"{control}/requests")
    assert (await http.get(f"{control}/requests")).json() == []

    bad = await http.post(f"{control}/config", json={"no_such_setting": 1})
    assert bad.status_code == 400
    await http.post(f"{control}/config", json={"require_api_key": "x"})
    reset = await http.post(f"{control}/config", json={"reset": True})
    assert reset.json()["require_api_key"] is None
    assert json.loads((await http.get(f"{control}/config")).text)["fail_times"] == 0
