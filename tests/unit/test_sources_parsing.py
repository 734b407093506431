"""Parsing of source payloads: pure functions, no I/O."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import spark_grpc.sources as sources
from spark_grpc.demo import fake_data
from spark_grpc.sources import RemoteFlowKind, SourceConnection, SourceType, adapter_for
from spark_grpc.sources.agents import AutomagikAgentsAdapter, parse_agents
from spark_grpc.sources.base import parse_retry_after, parse_time, redact_url
from spark_grpc.sources.hive import (
    AutomagikHiveAdapter,
    extract_hive_text,
    parse_hive_object,
    split_flow_id,
)
from spark_grpc.sources.langflow import (
    LangFlowAdapter,
    extract_run_text,
    parse_components,
    parse_flow,
    select_flows,
    split_stream_events,
)

FOLDERS = {f["id"]: f["name"] for f in fake_data.langflow_folders()}


def test_public_api_is_exactly_what_is_meant() -> None:
    assert sorted(sources.__all__) == sorted(
        [
            "Component",
            "ComponentParam",
            "HealthResult",
            "OnEvent",
            "RemoteFlow",
            "RemoteFlowKind",
            "RunEvent",
            "RunResult",
            "SourceAdapter",
            "SourceConnection",
            "SourceType",
            "adapter_for",
        ]
    )


@pytest.mark.parametrize(
    ("source_type", "adapter_class"),
    [
        (SourceType.LANGFLOW, LangFlowAdapter),
        (SourceType.AUTOMAGIK_AGENTS, AutomagikAgentsAdapter),
        (SourceType.AUTOMAGIK_HIVE, AutomagikHiveAdapter),
    ],
)
def test_every_source_type_has_its_adapter(source_type: SourceType, adapter_class: type) -> None:
    adapter = adapter_for(SourceConnection(source_type, "http://x", None), httpx.AsyncClient())
    assert type(adapter) is adapter_class


def test_connection_repr_hides_the_api_key() -> None:
    assert "s3cret" not in repr(SourceConnection(SourceType.LANGFLOW, "http://x", "s3cret"))


# -- LangFlow -----------------------------------------------------------------------------


def test_components_detect_chat_input_and_output() -> None:
    components = parse_components(fake_data.echo_graph("a1B2c", "> "))

    assert [(c.id, c.type, c.is_input, c.is_output) for c in components] == [
        ("ChatInput-a1B2c", "ChatInput", True, False),
        ("EchoPrefix-a1B2c", "EchoPrefix", False, False),
        ("ChatOutput-a1B2c", "ChatOutput", False, True),
    ]
    assert components[0].display_name == "Chat Input"


def test_params_are_the_shown_typed_template_fields_without_code() -> None:
    middle = parse_components(fake_data.echo_graph("a1B2c", "> "))[1]
    params = {p.name: p for p in middle.params}

    # "code", "_type" and the hidden field are not tweakable params.
    assert set(params) == {"input_text", "prefix", "api_key"}
    assert params["prefix"].value == "> "
    assert params["prefix"].field_type == "str"
    assert params["prefix"].display_name == "Prefix"


def test_password_values_never_leave_the_flow() -> None:
    middle = parse_components(fake_data.echo_graph("a1B2c", ""))[1]
    api_key = next(p for p in middle.params if p.name == "api_key")
    assert api_key.value is None


def test_chat_nodes_are_found_by_id_prefix_when_the_type_is_missing() -> None:
    graph = {"nodes": [{"id": "ChatInput-zz", "data": {}}, {"id": "ChatOutput-yy", "data": {}}]}
    components = parse_components(graph)
    assert [(c.is_input, c.is_output) for c in components] == [(True, False), (False, True)]


def test_note_nodes_and_junk_are_not_components() -> None:
    graph = {
        "nodes": [
            {"id": "note-1", "type": "noteNode", "data": {"type": "note"}},
            "not a node",
            {"data": {"type": "NoId"}},
        ]
    }
    assert parse_components(graph) == ()
    assert parse_components(None) == ()


def test_listing_drops_components_and_templates() -> None:
    flows = select_flows(fake_data.langflow_flows(), FOLDERS)

    assert [f.name for f in flows] == ["Echo", "Polite echo", "Support greeter"]
    assert [f.folder_name for f in flows] == ["My Projects", "My Projects", "Support bots"]
    assert all(f.graph is None for f in flows)  # the light form


def test_flow_has_aware_utc_time_tags_and_chat_components() -> None:
    raw = fake_data.langflow_flows()[0]
    flow = parse_flow(raw, FOLDERS, full=True)

    assert flow.kind is RemoteFlowKind.FLOW
    assert flow.update_time == datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
    assert flow.tags == ("demo",)
    assert flow.input_component_id == "ChatInput-a1B2c"
    assert flow.output_component_id == "ChatOutput-a1B2c"
    assert flow.graph == raw["data"]


def test_flow_without_chat_components_has_empty_component_ids() -> None:
    raw: dict[str, Any] = {
        "id": "f",
        "name": "n",
        "data": {"nodes": []},
        "folder_id": None,
        "description": None,
    }
    flow = parse_flow(raw, {}, full=True)
    assert (flow.input_component_id, flow.output_component_id, flow.description) == ("", "", "")


def _run_result(text: str) -> dict[str, Any]:
    flow = fake_data.langflow_flows()[0]
    return fake_data.langflow_run_result(flow, "s1", "in", text)


def test_run_text_comes_from_results_message_text() -> None:
    assert extract_run_text(_run_result("hello")) == "hello"


@pytest.mark.parametrize(
    "strip",
    [
        ["results"],  # older LangFlow: outputs.message.message
        ["results", "outputs"],  # artifacts.message
        ["results", "outputs", "artifacts"],  # messages[0].message
    ],
)
def test_run_text_falls_back_like_langflow_clients(strip: list[str]) -> None:
    result = _run_result("hello")
    for key in strip:
        del result["outputs"][0]["outputs"][0][key]
    assert extract_run_text(result) == "hello"


def test_run_text_accepts_a_nested_message_object() -> None:
    result = _run_result("x")
    inner = result["outputs"][0]["outputs"][0]
    del inner["results"]
    inner["outputs"]["message"]["message"] = {"text": "nested"}
    assert extract_run_text(result) == "nested"


@pytest.mark.parametrize("result", [{}, {"outputs": []}, {"outputs": [{}]}, [], None])
def test_run_text_is_empty_when_there_is_none(result: Any) -> None:
    assert extract_run_text(result) == ""


def test_stream_events_split_on_blank_lines_and_keep_the_rest() -> None:
    buffer = '{"event": "token", "data": {"chunk": "a"}}\n\n{"event": "tok'
    events, rest = split_stream_events(buffer)
    assert events == [{"event": "token", "data": {"chunk": "a"}}]
    assert rest == '{"event": "tok'

    events, rest = split_stream_events(rest + 'en", "data": {"chunk": "b"}}\n\n')
    assert [e["data"]["chunk"] for e in events] == ["b"]
    assert rest == ""


def test_stream_event_that_is_not_json_is_an_error() -> None:
    with pytest.raises(ValueError):
        split_stream_events("<html>\n\n")


# -- shared helpers -----------------------------------------------------------------------


def test_retry_after_in_seconds_and_as_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0  # past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_times_are_aware_utc() -> None:
    assert parse_time("2025-01-15T09:30:00") == datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
    assert parse_time("2025-01-15T11:30:00+02:00") == datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
    assert parse_time("2025-01-15T09:30:00Z") == datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


def test_urls_in_messages_lose_their_credentials() -> None:
    assert redact_url("https://bob:pw@lf.example.com:7860/base/?token=x") == (
        "https://lf.example.com:7860/base"
    )


# -- Automagik Agents ----------------------------------------------------------------------


def test_agents_are_named_by_their_name() -> None:
    flows = parse_agents(fake_data.agents())
    assert flows is not None
    assert [(f.id, f.kind) for f in flows] == [
        ("simple", RemoteFlowKind.AGENT),
        ("shouty", RemoteFlowKind.AGENT),
    ]
    assert flows[0].description == "Echoes your message back."
    assert flows[0].graph == fake_data.agents()[0]
    assert parse_agents({"agents": []}) is None


# -- Automagik Hive ------------------------------------------------------------------------


def test_hive_ids_are_prefixed_by_kind_so_they_cannot_collide() -> None:
    agent = parse_hive_object(fake_data.hive_agents()[1], RemoteFlowKind.AGENT)
    team = parse_hive_object(fake_data.hive_teams()[0], RemoteFlowKind.TEAM)
    assert agent is not None and team is not None
    assert (agent.id, team.id) == ("agent:support", "team:support")
    assert split_flow_id("team:support") == (RemoteFlowKind.TEAM, "support")
    assert split_flow_id("support") == (None, "support")
    assert split_flow_id("odd:id") == (None, "odd:id")


def test_hive_objects_without_id_fall_back_to_kind_id_then_name() -> None:
    older = parse_hive_object({"agent_id": "genie", "name": "Genie"}, RemoteFlowKind.AGENT)
    assert older is not None and older.id == "agent:genie"
    assert parse_hive_object({}, RemoteFlowKind.AGENT) is None


def test_hive_text_per_kind() -> None:
    team = fake_data.hive_teams()[0]
    out = fake_data.hive_run_output("teams", team, "hi", "hi", "s")
    assert extract_hive_text(RemoteFlowKind.TEAM, out) == (
        "hi\n\n**echo-agent**: Echo Agent heard: hi\n**support**: Support Agent heard: hi"
    )

    workflow = fake_data.hive_workflows()[0]
    out = fake_data.hive_run_output("workflows", workflow, "hi", "done", "s")
    assert extract_hive_text(RemoteFlowKind.WORKFLOW, out) == "done"
    steps_only = copy.deepcopy(out)
    del steps_only["final_output"], steps_only["content"]
    assert extract_hive_text(RemoteFlowKind.WORKFLOW, steps_only) == (
        "**draft**: draft: hi\n**review**: review: hi"
    )

    assert extract_hive_text(RemoteFlowKind.AGENT, {"content": {"answer": 42}}) == (
        '{"answer": 42}'
    )
    assert extract_hive_text(RemoteFlowKind.AGENT, {}) == ""
