"""Automagik Agents adapter: each agent is a remote flow whose id is the agent's name.

API used (header ``x-api-key``):
    GET  /health                  {"status": "healthy", "version": ..., ...}
    GET  /api/v1/agents           [{"id": 6, "name": "simple", "description": ..., ...}]
    POST /api/v1/agent/{name}/run {"message_content", "session_name", "user_id",
                                   "session_origin"}
                                  -> {"message", "session_id", "success", "tool_calls", "usage"}

The Agents API has no endpoint for one agent, so :meth:`get_remote_flow` searches the list.
It does not stream; with ``stream=True`` the answer is reported as one "message" event.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from spark_grpc.errors import SourceNotFoundError, SourceResponseError
from spark_grpc.sources.base import (
    REASON_RUN_FAILED,
    OnEvent,
    RemoteFlow,
    RemoteFlowKind,
    RunEvent,
    RunResult,
    SourceAdapter,
    SourceType,
    as_dict,
    as_str,
    parse_time,
)

logger = logging.getLogger(__name__)

# The Agents API files sessions under a user. automagik-spark always ran agents as this one
# user; keeping it keeps sessions created by spark-grpc next to the ones spark created.
SPARK_USER_ID = "550e8400-e29b-41d4-a716-446655440000"
SESSION_ORIGIN = "automagik-spark"


def parse_agent(raw: dict[str, Any]) -> RemoteFlow:
    """Turn one agent of ``/api/v1/agents`` into a RemoteFlow (id = the agent's name)."""
    name = as_str(raw.get("name"))
    agent_type = as_str(raw.get("type"))
    return RemoteFlow(
        id=name,
        name=name,
        description=as_str(raw.get("description")),
        kind=RemoteFlowKind.AGENT,
        update_time=parse_time(raw.get("updated_at")),
        graph=raw,
        version=str(raw.get("version") or ""),
        tags=(agent_type,) if agent_type else (),
    )


def parse_agents(agents: Any) -> list[RemoteFlow] | None:
    """Parse the agent list; None when it is not a list (a bad response)."""
    if not isinstance(agents, list):
        return None
    return [parse_agent(a) for a in agents if isinstance(a, dict) and as_str(a.get("name"))]


class AutomagikAgentsAdapter(SourceAdapter):
    """Speaks to an Automagik Agents server."""

    label = "Automagik Agents"
    source_type = SourceType.AUTOMAGIK_AGENTS

    async def _probe_health(self, timeout: float) -> str:
        health = as_dict(await self._get_json("/health", timeout=timeout))
        if health.get("status") != "healthy":
            raise self._bad_shape("/health", '"status": "healthy"')
        return str(health.get("version") or "")

    async def list_remote_flows(self, *, timeout: float) -> list[RemoteFlow]:
        """List the agents."""
        async with self._deadline(timeout, "listing agents"):
            return await self._list(timeout)

    async def get_remote_flow(self, flow_id: str, *, timeout: float) -> RemoteFlow:
        """Find one agent by name."""
        async with self._deadline(timeout, f"fetching agent {flow_id!r}"):
            for flow in await self._list(timeout):
                if flow.id == flow_id:
                    return flow
        raise SourceNotFoundError(
            f"{self._where} has no agent {flow_id!r}; list the source's flows to see its agents",
            metadata=self._metadata(),
        )

    async def run(
        self,
        flow_id: str,
        *,
        input_value: str,
        tweaks: dict[str, Any],
        timeout: float,
        session_id: str = "",
        stream: bool = False,
        on_event: OnEvent | None = None,
    ) -> RunResult:
        """Send ``input_value`` to the agent; tweaks do not apply to agents."""
        path = f"/api/v1/agent/{quote(flow_id, safe='')}/run"
        body: dict[str, Any] = {
            "message_content": input_value,
            "user_id": SPARK_USER_ID,
            "session_origin": SESSION_ORIGIN,
        }
        if session_id:
            body["session_name"] = session_id
        async with self._deadline(timeout, f"running agent {flow_id!r}"):
            response = await self._request(
                "POST", path, json_body=body, timeout=timeout, not_found=f"agent {flow_id!r}"
            )
            output = self._json(response, path)
        if not isinstance(output, dict):
            raise self._bad_shape(path, "the run result object")
        text = as_str(output.get("message"))
        if output.get("success") is False:
            raise SourceResponseError(
                f"{self._where} reported that agent {flow_id!r} failed: "
                f"{text[:500] or 'no reason given'}",
                retryable=False,
                reason=REASON_RUN_FAILED,
                metadata=self._metadata(),
            )
        if stream and on_event is not None:
            await on_event(RunEvent(kind="message", text=text, data=output))
        return RunResult(output=output, text=text, session_id=as_str(output.get("session_id")))

    async def _list(self, timeout: float) -> list[RemoteFlow]:
        flows = parse_agents(await self._get_json("/api/v1/agents", timeout=timeout))
        if flows is None:
            raise self._bad_shape("/api/v1/agents", "the list of agents")
        return flows
