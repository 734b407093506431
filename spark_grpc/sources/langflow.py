r"""LangFlow adapter: flows in folders, run with tweaks, optionally streamed.

API used (header ``x-api-key``):
    GET  /health                          {"status": "ok"}
    GET  /api/v1/version                  {"version": "1.4.2", ...}
    GET  /api/v1/folders/                 [{"id", "name", ...}]  (404 on newer: /api/v1/projects/)
    GET  /api/v1/flows/                   [{"id", "name", "data", "is_component", "folder_id"...}]
    GET  /api/v1/flows/{id}               one flow
    POST /api/v1/run/{id}?stream=false    {"input_value", "output_type", "input_type", "tweaks"}
    POST /api/v1/run/{id}?stream=true     events {"event": ..., "data": ...} separated by "\\n\\n"
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from spark_grpc.errors import SourceNotFoundError, SourceResponseError
from spark_grpc.sources.base import (
    REASON_BAD_RESPONSE,
    REASON_RUN_FAILED,
    Component,
    ComponentParam,
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


# -- pure parsing (no I/O) -------------------------------------------------------------


def parse_components(graph: dict[str, Any] | None) -> tuple[Component, ...]:
    """Read the components of a LangFlow flow graph (its ``data``).

    Params are the ``data.node.template`` entries a user can tweak: dicts with a type and
    ``show`` true; the component's ``code`` and private ``_`` keys are skipped, and values of
    password fields are dropped so that third-party keys stored in a flow never leave it.
    """
    components: list[Component] = []
    for raw_node in as_dict(graph).get("nodes") or []:
        node = as_dict(raw_node)
        node_id = as_str(node.get("id"))
        data = as_dict(node.get("data"))
        if not node_id or node.get("type") == "noteNode":
            continue  # notes are annotations on the canvas, not components
        inner = as_dict(data.get("node"))
        comp_type = as_str(data.get("type")) or node_id.split("-", 1)[0]
        components.append(
            Component(
                id=node_id,
                type=comp_type,
                display_name=as_str(inner.get("display_name")) or comp_type,
                params=_parse_params(as_dict(inner.get("template"))),
                is_input=comp_type == "ChatInput" or node_id.startswith("ChatInput-"),
                is_output=comp_type == "ChatOutput" or node_id.startswith("ChatOutput-"),
            )
        )
    return tuple(components)


def _parse_params(template: dict[str, Any]) -> tuple[ComponentParam, ...]:
    params: list[ComponentParam] = []
    for name, spec in template.items():
        if name.startswith("_") or name == "code" or not isinstance(spec, dict):
            continue
        field_type = as_str(spec.get("type")) or as_str(spec.get("_input_type"))
        if not field_type or spec.get("show") is not True:
            continue
        params.append(
            ComponentParam(
                name=name,
                field_type=field_type,
                display_name=as_str(spec.get("display_name")) or name,
                value=None if spec.get("password") else spec.get("value"),
            )
        )
    return tuple(params)


def parse_flow(raw: dict[str, Any], folder_names: dict[str, str], *, full: bool) -> RemoteFlow:
    """Turn one LangFlow flow JSON into a RemoteFlow.

    Args:
        raw: the flow as ``/api/v1/flows/`` returns it.
        folder_names: folder id -> name.
        full: keep the graph (otherwise only its components are kept).
    """
    graph = raw.get("data") if isinstance(raw.get("data"), dict) else None
    components = parse_components(graph)
    tags = raw.get("tags") or []
    return RemoteFlow(
        id=str(raw["id"]),
        name=as_str(raw.get("name")),
        description=as_str(raw.get("description")),
        kind=RemoteFlowKind.FLOW,
        folder_name=folder_names.get(str(raw.get("folder_id")), ""),
        update_time=parse_time(raw.get("updated_at")),
        graph=graph if full else None,
        components=components,
        input_component_id=next((c.id for c in components if c.is_input), ""),
        output_component_id=next((c.id for c in components if c.is_output), ""),
        tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
    )


def select_flows(flows: list[Any], folder_names: dict[str, str]) -> list[RemoteFlow]:
    """Keep the user's flows: drop components and flows outside the user's folders.

    Flows outside any folder of the user are LangFlow's starter templates and examples.
    """
    selected: list[RemoteFlow] = []
    for raw in flows:
        if not isinstance(raw, dict) or "id" not in raw or raw.get("is_component"):
            continue
        if str(raw.get("folder_id")) not in folder_names:
            continue
        selected.append(parse_flow(raw, folder_names, full=False))
    return selected


def extract_run_text(result: Any) -> str:
    """Find the text answer in a LangFlow run result, as LangFlow's own clients do.

    Looks in ``outputs[0].outputs[i]`` at ``results.message.text``, then
    ``outputs.message.message``, ``artifacts.message`` and ``messages[0].message``.
    """
    outputs = as_dict(result).get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return ""
    for raw_out in as_dict(outputs[0]).get("outputs") or []:
        out = as_dict(raw_out)
        candidates = (
            as_dict(as_dict(out.get("results")).get("message")).get("text"),
            as_dict(as_dict(out.get("outputs")).get("message")).get("message"),
            as_dict(out.get("artifacts")).get("message"),
            as_dict((out.get("messages") or [None])[0]).get("message"),
        )
        for candidate in candidates:
            # Some versions nest a whole Message object where others put its text.
            text = candidate.get("text") if isinstance(candidate, dict) else candidate
            if isinstance(text, str):
                return text
    return ""


def split_stream_events(buffer: str) -> tuple[list[dict[str, Any]], str]:
    """Split complete events off a LangFlow stream buffer.

    Returns:
        the parsed events and the unfinished rest of the buffer.

    Raises:
        ValueError: an event is not a JSON object.
    """
    *complete, rest = buffer.split("\n\n")
    events: list[dict[str, Any]] = []
    for chunk in complete:
        if not chunk.strip():
            continue
        event = json.loads(chunk)
        if not isinstance(event, dict):
            raise ValueError("stream event is not a JSON object")
        events.append(event)
    return events, rest


# -- the adapter ----------------------------------------------------------------------


class LangFlowAdapter(SourceAdapter):
    """Speaks to a LangFlow server."""

    label = "LangFlow"
    source_type = SourceType.LANGFLOW

    async def _probe_health(self, timeout: float) -> str:
        health = as_dict(await self._get_json("/health", timeout=timeout))
        if health.get("status") != "ok":
            raise self._bad_shape("/health", '"status": "ok"')
        version = await self._get_json("/api/v1/version", timeout=timeout)
        return as_str(as_dict(version).get("version"))

    async def list_remote_flows(self, *, timeout: float) -> list[RemoteFlow]:
        """List the user's flows, without components (is_component) and templates."""
        async with self._deadline(timeout, "listing flows"):
            folder_names = await self._folder_names(timeout)
            flows = await self._get_json("/api/v1/flows/", timeout=timeout)
            # Paginated LangFlow versions wrap the list in {"items": [...]}.
            if isinstance(flows, dict) and isinstance(flows.get("items"), list):
                flows = flows["items"]
            if not isinstance(flows, list):
                raise self._bad_shape("/api/v1/flows/", "the list of flows")
            return select_flows(flows, folder_names)

    async def get_remote_flow(self, flow_id: str, *, timeout: float) -> RemoteFlow:
        """Fetch one flow with its graph and components."""
        path = f"/api/v1/flows/{quote(flow_id, safe='')}"
        async with self._deadline(timeout, f"fetching flow {flow_id!r}"):
            raw = await self._get_json(path, timeout=timeout, not_found=f"flow {flow_id!r}")
            if not isinstance(raw, dict) or "id" not in raw:
                raise self._bad_shape(path, "the flow's id")
            if raw.get("is_component"):
                raise SourceNotFoundError(
                    f"{self._where}: {flow_id!r} is a component, not a flow; "
                    "pick a flow from the source's list",
                    metadata=self._metadata(),
                )
            return parse_flow(raw, await self._folder_names(timeout), full=True)

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
        """Run a flow with ``input_value`` through its chat input; see the base class."""
        path = f"/api/v1/run/{quote(flow_id, safe='')}"
        body: dict[str, Any] = {
            "input_value": input_value,
            "output_type": "chat",
            "input_type": "chat",
            "tweaks": tweaks,
        }
        if session_id:
            body["session_id"] = session_id
        streamed_text = ""
        async with self._deadline(timeout, f"running flow {flow_id!r}"):
            if stream:
                output, streamed_text = await self._run_streamed(
                    path, body, flow_id, timeout, on_event
                )
            else:
                response = await self._request(
                    "POST",
                    path,
                    params={"stream": "false"},
                    json_body=body,
                    timeout=timeout,
                    not_found=f"flow {flow_id!r}",
                )
                output = self._json(response, path)
        if not isinstance(output, dict):
            raise self._bad_shape(path, "the run result object")
        return RunResult(
            output=output,
            text=extract_run_text(output) or streamed_text,
            session_id=as_str(output.get("session_id")),
        )

    async def _folder_names(self, timeout: float) -> dict[str, str]:
        # LangFlow 1.5 renamed folders to projects; older servers only know folders.
        try:
            folders = await self._get_json(
                "/api/v1/folders/", timeout=timeout, not_found="folders endpoint"
            )
        except SourceNotFoundError:
            folders = await self._get_json("/api/v1/projects/", timeout=timeout)
        if not isinstance(folders, list):
            raise self._bad_shape("/api/v1/folders/", "the list of folders")
        return {
            str(f["id"]): as_str(f.get("name"))
            for f in folders
            if isinstance(f, dict) and "id" in f
        }

    async def _run_streamed(
        self,
        path: str,
        body: dict[str, Any],
        flow_id: str,
        timeout: float,
        on_event: OnEvent | None,
    ) -> tuple[Any, str]:
        """Run with stream=true; return the end event's result and the tokens joined."""
        tokens: list[str] = []
        async with self._stream(
            "POST",
            path,
            params={"stream": "true"},
            json_body=body,
            timeout=timeout,
            not_found=f"flow {flow_id!r}",
        ) as response:
            # Pieces are joined only once an event boundary arrives, so that a large event
            # spread over many pieces is not re-scanned for every piece.
            pending: list[str] = []
            async for piece in response.aiter_text():
                edge = pending[-1][-1:] if pending else ""
                pending.append(piece)
                if "\n\n" not in edge + piece:
                    continue
                try:
                    events, rest = split_stream_events("".join(pending))
                except ValueError as exc:
                    raise self._bad_shape(path, "a JSON event in the stream") from exc
                pending = [rest] if rest else []
                for event in events:
                    result = await self._handle_event(event, tokens, on_event, path)
                    if result is not None:
                        return result, "".join(tokens)
        raise SourceResponseError(
            f"{self._where} ended the stream of flow {flow_id!r} without an end event; "
            "check the source's logs",
            retryable=True,
            reason=REASON_BAD_RESPONSE,
            metadata=self._metadata(),
        )

    async def _handle_event(
        self, event: dict[str, Any], tokens: list[str], on_event: OnEvent | None, path: str
    ) -> dict[str, Any] | None:
        """Forward one stream event; return the run result when it is the end event."""
        kind, data = event.get("event"), as_dict(event.get("data"))
        if kind == "token":
            chunk = as_str(data.get("chunk"))
            tokens.append(chunk)
            if on_event is not None:
                await on_event(RunEvent(kind="token", text=chunk, data=data))
        elif kind == "add_message":
            if on_event is not None:
                await on_event(RunEvent(kind="message", text=as_str(data.get("text")), data=data))
        elif kind == "end_vertex":
            if on_event is not None:
                await on_event(RunEvent(kind="progress", text="", data=data))
        elif kind == "error":
            reason = as_str(data.get("error")) or as_str(data.get("text")) or "unknown error"
            raise SourceResponseError(
                f"{self._where} reported an error while running the flow: {reason[:500]}",
                retryable=False,
                reason=REASON_RUN_FAILED,
                metadata=self._metadata(),
            )
        elif kind == "end":
            # Some versions end without a result; the tokens are then the answer.
            result = data.get("result")
            return result if isinstance(result, dict) else {"outputs": []}
        return None
