"""Data and answers of the fake sources: small, friendly, and shaped like the real APIs.

LangFlow: two folders with three "echo" flows (ChatInput -> EchoPrefix -> ChatOutput),
plus one component (``is_component`` true) and one starter template outside any folder,
both of which an adapter must drop. Agents: two agents. Hive: two agents, one team and one
workflow; the agent "support" and the team "support" share an id on purpose, as AgentOS
allows.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

# Fixed ids so that tests and newcomers' scripts can name them.
FOLDER_MY_PROJECTS = "5b3c7f0e-7e51-4a52-9c8e-0d1f2a3b4c01"
FOLDER_SUPPORT = "5b3c7f0e-7e51-4a52-9c8e-0d1f2a3b4c02"
FLOW_ECHO = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a01"
FLOW_POLITE_ECHO = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a02"
FLOW_SUPPORT_GREETER = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a03"
FLOW_COMPONENT = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a04"
FLOW_TEMPLATE = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a05"

UPDATED_AT = "2025-01-15T09:30:00.000000"  # LangFlow sends naive UTC times


def _field(
    display_name: str,
    value: Any,
    *,
    field_type: str = "str",
    input_type: str = "MessageTextInput",
    show: bool = True,
    advanced: bool = False,
    password: bool = False,
) -> dict[str, Any]:
    return {
        "type": field_type,
        "_input_type": input_type,
        "display_name": display_name,
        "value": value,
        "show": show,
        "advanced": advanced,
        "password": password,
        "required": False,
        "list": False,
        "name": "",  # filled in by _node
    }


def _node(
    node_id: str, comp_type: str, display_name: str, fields: dict[str, dict[str, Any]], x: int
) -> dict[str, Any]:
    template: dict[str, Any] = {
        "_type": "Component",
        "code": {"type": "code", "show": True, "value": "# the component's Python source"},
    }
    for name, spec in fields.items():
        template[name] = {**spec, "name": name}
    return {
        "id": node_id,
        "type": "genericNode",
        "position": {"x": x, "y": 200},
        "data": {
            "id": node_id,
            "type": comp_type,
            "node": {
                "display_name": display_name,
                "description": f"{display_name} component",
                "base_classes": ["Message"],
                "template": template,
                "outputs": [{"name": "message", "types": ["Message"], "display_name": "Message"}],
            },
        },
    }


def _edge(source: str, target: str, target_field: str) -> dict[str, Any]:
    data_type = source.split("-", maxsplit=1)[0]
    return {
        "id": f"reactflow__edge-{source}-{target}",
        "source": source,
        "target": target,
        "sourceHandle": f'{{"dataType":"{data_type}","id":"{source}","name":"message"}}',
        "targetHandle": f'{{"fieldName":"{target_field}","id":"{target}","type":"str"}}',
        "data": {
            "sourceHandle": {"id": source, "name": "message", "output_types": ["Message"]},
            "targetHandle": {"id": target, "fieldName": target_field, "inputTypes": ["Message"]},
        },
    }


def echo_graph(suffix: str, prefix: str) -> dict[str, Any]:
    """A LangFlow graph ChatInput -> EchoPrefix -> ChatOutput; node ids end in ``suffix``."""
    chat_in, middle, chat_out = (
        f"ChatInput-{suffix}",
        f"EchoPrefix-{suffix}",
        f"ChatOutput-{suffix}",
    )
    nodes = [
        _node(
            chat_in,
            "ChatInput",
            "Chat Input",
            {
                "input_value": _field("Text", "", input_type="MultilineInput"),
                "sender": _field("Sender Type", "User", input_type="DropdownInput", advanced=True),
                "sender_name": _field("Sender Name", "User", advanced=True),
                "should_store_message": _field(
                    "Store Messages", True, field_type="bool", input_type="BoolInput"
                ),
            },
            x=0,
        ),
        _node(
            middle,
            "EchoPrefix",
            "Echo Prefix",
            {
                "input_text": _field("Input", "", input_type="HandleInput"),
                "prefix": _field("Prefix", prefix),
                "api_key": _field(
                    "API Key", "sk-demo-not-a-real-key", input_type="SecretStrInput", password=True
                ),
                "hidden_setting": _field("Hidden", "x", show=False),
            },
            x=400,
        ),
        _node(
            chat_out,
            "ChatOutput",
            "Chat Output",
            {
                "input_value": _field("Text", "", input_type="HandleInput"),
                "sender_name": _field("Sender Name", "AI", advanced=True),
            },
            x=800,
        ),
    ]
    edges = [_edge(chat_in, middle, "input_text"), _edge(middle, chat_out, "input_value")]
    return {"nodes": nodes, "edges": edges, "viewport": {"x": 0, "y": 0, "zoom": 1}}


def _flow(
    flow_id: str,
    name: str,
    description: str,
    folder_id: str | None,
    data: dict[str, Any],
    *,
    is_component: bool = False,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "id": flow_id,
        "name": name,
        "description": description,
        "data": data,
        "is_component": is_component,
        "folder_id": folder_id,
        "user_id": None if folder_id is None else "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "endpoint_name": None,
        "icon": None,
        "icon_bg_color": None,
        "gradient": None,
        "locked": False,
        "webhook": False,
        "tags": tags or [],
        "updated_at": UPDATED_AT,
    }


def langflow_folders() -> list[dict[str, Any]]:
    """The user's folders (``/api/v1/folders/``)."""
    return [
        {"id": FOLDER_MY_PROJECTS, "name": "My Projects", "description": "", "parent_id": None},
        {"id": FOLDER_SUPPORT, "name": "Support bots", "description": "", "parent_id": None},
    ]


def langflow_flows() -> list[dict[str, Any]]:
    """Every flow ``/api/v1/flows/`` returns, component and template included."""
    return [
        _flow(
            FLOW_ECHO,
            "Echo",
            "Answers with your message.",
            FOLDER_MY_PROJECTS,
            echo_graph("a1B2c", ""),
            tags=["demo"],
        ),
        _flow(
            FLOW_POLITE_ECHO,
            "Polite echo",
            "Repeats your message, politely.",
            FOLDER_MY_PROJECTS,
            echo_graph("d3E4f", "You said: "),
            tags=["demo"],
        ),
        _flow(
            FLOW_SUPPORT_GREETER,
            "Support greeter",
            "Greets a customer.",
            FOLDER_SUPPORT,
            echo_graph("g5H6i", "Thanks for writing! You said: "),
        ),
        _flow(
            FLOW_COMPONENT,
            "Echo Prefix",
            "A reusable component, not a flow.",
            FOLDER_MY_PROJECTS,
            {"nodes": [], "edges": []},
            is_component=True,
        ),
        _flow(
            FLOW_TEMPLATE,
            "Basic Prompting (starter template)",
            "A LangFlow starter project.",
            None,
            echo_graph("j7K8l", ""),
        ),
    ]


def agents() -> list[dict[str, Any]]:
    """The agents of ``/api/v1/agents`` (Automagik Agents); ``shouty`` answers in capitals."""
    return [
        {
            "id": 1,
            "name": "simple",
            "type": "simple",
            "model": "openai:gpt-4.1-mini",
            "description": "Echoes your message back.",
            "active": True,
        },
        {
            "id": 2,
            "name": "shouty",
            "type": "simple",
            "model": "openai:gpt-4.1-mini",
            "description": "Echoes your message back in capitals.",
            "active": True,
        },
    ]


_MODEL = {"name": "OpenAIChat", "model": "gpt-4o-mini", "provider": "OpenAI"}


def hive_agents() -> list[dict[str, Any]]:
    """The agents of Hive's ``/agents``."""
    return [
        {
            "id": "echo-agent",
            "name": "Echo Agent",
            "description": "Echoes your message.",
            "model": _MODEL,
            "tools": [],
            "instructions": "Repeat the user's message.",
        },
        {
            "id": "support",
            "name": "Support Agent",
            "description": "Answers customers.",
            "model": _MODEL,
            "tools": [],
            "instructions": "Be kind.",
        },
    ]


def hive_teams() -> list[dict[str, Any]]:
    """The teams of Hive's ``/teams``; the team "support" shares its id with an agent."""
    return [
        {
            "id": "support",
            "name": "Support Team",
            "description": "Two agents that coordinate.",
            "mode": "coordinate",
            "model": _MODEL,
            "members": [
                {"agent_id": "echo-agent", "name": "Echo Agent"},
                {"agent_id": "support", "name": "Support Agent"},
            ],
        },
    ]


def hive_workflows() -> list[dict[str, Any]]:
    """The workflows of Hive's ``/workflows``."""
    return [
        {
            "id": "release-notes",
            "name": "Release notes",
            "description": "Drafts, then reviews.",
            "steps": [{"name": "draft"}, {"name": "review"}],
        },
    ]


# -- run answers ------------------------------------------------------------------------


def echo_answer(flow: dict[str, Any], input_value: str, tweaks: dict[str, Any]) -> str:
    """Apply the flow's EchoPrefix prefix and the simple tweaks to the input."""
    prefix = ""
    for node in flow["data"].get("nodes", []):
        node_id, template = node["id"], node["data"]["node"]["template"]
        tweak = tweaks.get(node_id)
        tweak = tweak if isinstance(tweak, dict) else {}
        if node["data"]["type"] == "ChatInput" and "input_value" in tweak:
            input_value = str(tweak["input_value"])
        if node["data"]["type"] == "EchoPrefix":
            prefix = str(tweak.get("prefix", template["prefix"]["value"]))
    return prefix + input_value


def langflow_run_result(
    flow: dict[str, Any], session_id: str, input_value: str, text: str
) -> dict[str, Any]:
    """A run result shaped like LangFlow's ``RunResponse``."""
    out_id = next((n["id"] for n in flow["data"]["nodes"] if n["data"]["type"] == "ChatOutput"), "")
    message = {
        "text": text,
        "sender": "Machine",
        "sender_name": "AI",
        "session_id": session_id,
        "timestamp": "2025-01-15 09:30:00 UTC",
        "flow_id": flow["id"],
        "files": [],
    }
    return {
        "session_id": session_id,
        "outputs": [
            {
                "inputs": {"input_value": input_value},
                "outputs": [
                    {
                        "results": {"message": message},
                        "artifacts": {
                            "message": text,
                            "sender": "Machine",
                            "sender_name": "AI",
                            "files": [],
                            "type": "object",
                        },
                        "outputs": {"message": {"message": text, "type": "text"}},
                        "logs": {"message": []},
                        "messages": [
                            {
                                "message": text,
                                "sender": "Machine",
                                "sender_name": "AI",
                                "session_id": session_id,
                                "component_id": out_id,
                            }
                        ],
                        "timedelta": None,
                        "duration": None,
                        "component_display_name": "Chat Output",
                        "component_id": out_id,
                        "used_frozen_result": False,
                    }
                ],
            }
        ],
    }


def hive_run_output(
    kind: str, item: dict[str, Any], message: str, text: str, session_id: str
) -> dict[str, Any]:
    """A Hive run answer for ``kind`` ("agents", "teams" or "workflows")."""
    base: dict[str, Any] = {
        "run_id": str(uuid.uuid4()),
        "session_id": session_id,
        "content": text,
        "content_type": "str",
        "created_at": int(time.time()),
    }
    if kind == "agents":
        return {
            **base,
            "agent_id": item["id"],
            "status": "COMPLETED",
            "metrics": {"input_tokens": len(message.split())},
        }
    if kind == "teams":
        members = [
            {"agent_id": m["agent_id"], "content": f"{m['name']} heard: {message}"}
            for m in item.get("members", [])
        ]
        return {
            **base,
            "team_id": item["id"],
            "status": "completed",
            "coordinator_response": {"content": text},
            "member_responses": members,
        }
    steps = [
        {"step_id": s["name"], "status": "completed", "output": f"{s['name']}: {message}"}
        for s in item.get("steps", [])
    ]
    return {
        **base,
        "workflow_id": item["id"],
        "status": "completed",
        "final_output": text,
        "steps_completed": steps,
    }
