"""Automagik Hive (Agno AgentOS v2) adapter: agents, teams and workflows.

API used:
    GET  /api/v1/health              {"status": "success", "service": ..., "utc": ...}
    GET  /agents | /teams | /workflows           lists of {"id", "name", "description", ...}
    GET  /agents/{id} | /teams/{id} | /workflows/{id}
    POST /agents/{id}/runs           form: message, stream=false, session_id
    POST /teams/{id}/runs            form: message, stream=false, session_id, mode=coordinate
    POST /workflows/{id}/runs        form: message, stream=false, session_id

Remote flow ids: AgentOS ids are slugs chosen by the author, so an agent and a team may
share one. This adapter therefore names remote flows ``<kind>:<id>`` (``agent:researcher``,
``team:support``, ``workflow:release``). A bare id, as automagik-spark stored them, is still
accepted: it is looked up among agents, then teams, then workflows.

Authentication: Hive checks ``x-api-key``; a plain AgentOS checks ``Authorization: Bearer``.
The key is sent in both so that either kind of server accepts it.

Hive runs do not stream here; with ``stream=True`` the answer is reported as one "message"
event.
"""

from __future__ import annotations

import json
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

# kind -> (URL collection, folder name shown to users)
_COLLECTIONS: dict[RemoteFlowKind, tuple[str, str]] = {
    RemoteFlowKind.AGENT: ("agents", "Agents"),
    RemoteFlowKind.TEAM: ("teams", "Teams"),
    RemoteFlowKind.WORKFLOW: ("workflows", "Workflows"),
}
_FAILED_STATUSES = {"error", "failed", "cancelled"}


def make_flow_id(kind: RemoteFlowKind, remote_id: str) -> str:
    """The remote flow id of a Hive object: ``<kind>:<id>``."""
    return f"{kind.value}:{remote_id}"


def split_flow_id(flow_id: str) -> tuple[RemoteFlowKind | None, str]:
    """Split ``<kind>:<id>``; a bare id gives (None, id)."""
    prefix, sep, rest = flow_id.partition(":")
    if sep:
        for kind in _COLLECTIONS:
            if kind.value == prefix:
                return kind, rest
    return None, flow_id


def parse_hive_object(raw: dict[str, Any], kind: RemoteFlowKind) -> RemoteFlow | None:
    """Turn one agent, team or workflow JSON into a RemoteFlow; None when it has no id."""
    remote_id = (
        as_str(raw.get("id")) or as_str(raw.get(f"{kind.value}_id")) or as_str(raw.get("name"))
    )
    if not remote_id:
        return None
    return RemoteFlow(
        id=make_flow_id(kind, remote_id),
        name=as_str(raw.get("name")) or remote_id,
        description=as_str(raw.get("description")),
        kind=kind,
        folder_name=_COLLECTIONS[kind][1],
        update_time=parse_time(raw.get("updated_at")),
        graph=raw,
        version=str(raw.get("version") or ""),
        tags=(kind.value, "hive"),
    )


def _text(value: Any) -> str:
    # Structured outputs (an output_schema) come back as objects; show them as JSON.
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def extract_hive_text(kind: RemoteFlowKind, output: dict[str, Any]) -> str:
    """Find the text answer of a Hive run, per kind.

    Agents answer ``content``. Teams answer ``coordinator_response.content`` (Hive) or
    ``content`` (AgentOS), followed by each member's answer. Workflows answer
    ``final_output`` (Hive), ``content`` (AgentOS) or, failing both, their completed steps.
    """
    if kind is RemoteFlowKind.TEAM:
        text = _text(as_dict(output.get("coordinator_response")).get("content")) or _text(
            output.get("content")
        )
        members = [as_dict(m) for m in output.get("member_responses") or []]
        lines = [
            f"**{as_str(m.get('agent_id')) or as_str(m.get('agent_name')) or 'Agent'}**: "
            f"{_text(m.get('response')) or _text(m.get('content'))}"
            for m in members
        ]
        return "\n\n".join(part for part in (text, "\n".join(lines)) if part)
    if kind is RemoteFlowKind.WORKFLOW:
        text = _text(output.get("final_output")) or _text(output.get("content"))
        if text:
            return text
        steps = [as_dict(s) for s in output.get("steps_completed") or []]
        return "\n".join(
            f"**{as_str(s.get('step_id')) or 'Step'}**: {_text(s.get('output'))}"
            for s in steps
            if as_str(s.get("status")).lower() == "completed"
        )
    return _text(output.get("content"))


class AutomagikHiveAdapter(SourceAdapter):
    """Speaks to an Automagik Hive (or Agno AgentOS) server."""

    label = "Automagik Hive"
    source_type = SourceType.AUTOMAGIK_HIVE

    def _auth_headers(self) -> dict[str, str]:
        key = self.connection.api_key
        return {"x-api-key": key, "authorization": f"Bearer {key}"} if key else {}

    async def _probe_health(self, timeout: float) -> str:
        health = as_dict(await self._get_json("/api/v1/health", timeout=timeout))
        if health.get("status") not in ("success", "ok"):
            raise self._bad_shape("/api/v1/health", '"status": "success"')
        return str(health.get("version") or "")

    async def list_remote_flows(self, *, timeout: float) -> list[RemoteFlow]:
        """List agents, then teams, then workflows."""
        async with self._deadline(timeout, "listing agents, teams and workflows"):
            flows: list[RemoteFlow] = []
            for kind in _COLLECTIONS:
                flows.extend(await self._list_kind(kind, timeout))
            return flows

    async def get_remote_flow(self, flow_id: str, *, timeout: float) -> RemoteFlow:
        """Fetch one agent, team or workflow by its ``<kind>:<id>`` (or bare) id."""
        async with self._deadline(timeout, f"fetching {flow_id!r}"):
            return await self._resolve(flow_id, timeout)

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
        """Run an agent, team or workflow; tweaks do not apply to Hive."""
        async with self._deadline(timeout, f"running {flow_id!r}"):
            kind, remote_id = split_flow_id(flow_id)
            if kind is None:  # a bare id: find out what it names
                flow = await self._resolve(flow_id, timeout)
                kind, remote_id = flow.kind, split_flow_id(flow.id)[1]
            collection = _COLLECTIONS[kind][0]
            path = f"/{collection}/{quote(remote_id, safe='')}/runs"
            form = {"message": input_value, "stream": "false"}
            if session_id:
                form["session_id"] = session_id
            if kind is RemoteFlowKind.TEAM:
                form["mode"] = "coordinate"
            response = await self._request(
                "POST", path, form=form, timeout=timeout, not_found=f"{kind.value} {remote_id!r}"
            )
            output = self._json(response, path)
        if not isinstance(output, dict):
            raise self._bad_shape(path, "the run result object")
        text = extract_hive_text(kind, output)
        if as_str(output.get("status")).lower() in _FAILED_STATUSES:
            raise SourceResponseError(
                f"{self._where} reported that {kind.value} {remote_id!r} ended with status "
                f"{output.get('status')}: {text[:500] or 'no details'}",
                retryable=False,
                reason=REASON_RUN_FAILED,
                metadata=self._metadata(),
            )
        if stream and on_event is not None:
            await on_event(RunEvent(kind="message", text=text, data=output))
        return RunResult(output=output, text=text, session_id=as_str(output.get("session_id")))

    async def _list_kind(self, kind: RemoteFlowKind, timeout: float) -> list[RemoteFlow]:
        path = f"/{_COLLECTIONS[kind][0]}"
        raw = await self._get_json(path, timeout=timeout)
        if not isinstance(raw, list):
            raise self._bad_shape(path, f"the list of {path[1:]}")
        flows = (parse_hive_object(r, kind) for r in raw if isinstance(r, dict))
        return [f for f in flows if f is not None]

    async def _resolve(self, flow_id: str, timeout: float) -> RemoteFlow:
        kind, remote_id = split_flow_id(flow_id)
        if kind is not None:
            path = f"/{_COLLECTIONS[kind][0]}/{quote(remote_id, safe='')}"
            raw = await self._get_json(
                path, timeout=timeout, not_found=f"{kind.value} {remote_id!r}"
            )
            flow = parse_hive_object(raw, kind) if isinstance(raw, dict) else None
            if flow is None:
                raise self._bad_shape(path, f"the {kind.value}'s id")
            return flow
        for each_kind in _COLLECTIONS:  # a bare id from automagik-spark: first match wins
            for flow in await self._list_kind(each_kind, timeout):
                if split_flow_id(flow.id)[1] == remote_id:
                    return flow
        raise SourceNotFoundError(
            f"{self._where} has no agent, team or workflow {flow_id!r}; list the source's "
            "flows to see what it has",
            metadata=self._metadata(),
        )
