"""One small HTTP server that plays LangFlow, Automagik Agents and Automagik Hive.

It speaks the request and response shapes of the three real APIs under three prefixes of
one port, so a source URL is ``http://HOST:PORT/langflow``, ``.../agents`` or ``.../hive``.
Every run echoes its input back. Tests use it in-process (:func:`run_fake_sources`);
newcomers run it as a demo source (:func:`main`, ``spark-grpc demo-source``).

Echo rules:
    LangFlow   the answer is the input; the flow's EchoPrefix node's ``prefix`` (or a tweak
               ``{"EchoPrefix-xxxxx": {"prefix": "..."}}``) is put in front, and a tweak of
               the ChatInput's ``input_value`` replaces the input. ``?stream=true`` sends
               add_message (the user's message), one token event per word, add_message
               (the answer) and end.
    Agents     ``message`` is the input; the agent "shouty" answers in capitals.
    Hive       agents answer ``content``; teams ``content`` and ``coordinator_response``
               plus one member response per member; workflows ``content``,
               ``final_output`` and ``steps_completed``.

Well-known ids (not listed; they only change what a run does):
    LangFlow flow ``fail-flow``      500 {"detail": ...}, or an ``error`` event when streamed
    Agents agent ``fail-agent``      200 {"success": false, "message": ...}
    Hive agent ``fail-agent``        200 {"status": "ERROR", "content": ...}

Test controls, per prefix KIND (also reachable in-process through ``FakeSourcesState``):
    POST   /KIND/_fake/config     JSON with any of: require_api_key (str|null: 401 unless
                                  ``x-api-key`` or ``Authorization: Bearer`` matches),
                                  delay_s, fail_times + fail_status (the next N API requests
                                  answer that status), retry_after_s (sent with 429s),
                                  malformed (200 with a body that is not JSON), hang (never
                                  answer), big_output_bytes (runs answer about that much
                                  text), token_delay_s (a streamed LangFlow run sends its
                                  tokens this far apart), reset (true: back to defaults).
                                  Answers the config.
    GET    /KIND/_fake/config     the current config
    GET    /KIND/_fake/requests   the API requests received: method, path, query, headers
                                  (key values replaced by "***"), json or form body
    DELETE /KIND/_fake/requests   forget them
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aiohttp import web

from spark_grpc.demo import fake_data

logger = logging.getLogger(__name__)

KINDS = ("langflow", "agents", "hive")
_SECRET_HEADERS = {"x-api-key", "authorization"}


@dataclass
class FakeConfig:
    """How one fake source misbehaves; the defaults behave."""

    require_api_key: str | None = None
    delay_s: float = 0.0
    fail_times: int = 0
    fail_status: int = 500
    retry_after_s: float | str | None = None
    malformed: bool = False
    hang: bool = False
    big_output_bytes: int = 0
    token_delay_s: float = 0.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply the changes of a ``/_fake/config`` body.

        Raises:
            ValueError: an unknown setting.
        """
        if changes.get("reset"):
            for f in fields(self):
                setattr(self, f.name, getattr(FakeConfig(), f.name))
        names = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name == "reset":
                continue
            if name not in names:
                raise ValueError(f"unknown fake setting {name!r}; known: {sorted(names)}")
            setattr(self, name, value)


@dataclass
class FakeSourceState:
    """The config and the request log of one fake source."""

    config: FakeConfig = field(default_factory=FakeConfig)
    requests: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeSourcesState:
    """Everything the fake sources know; tests may read and change it directly."""

    sources: dict[str, FakeSourceState] = field(
        default_factory=lambda: {kind: FakeSourceState() for kind in KINDS}
    )
    langflow_folders: list[dict[str, Any]] = field(default_factory=fake_data.langflow_folders)
    langflow_flows: list[dict[str, Any]] = field(default_factory=fake_data.langflow_flows)
    agents: list[dict[str, Any]] = field(default_factory=fake_data.agents)
    hive: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            "agents": fake_data.hive_agents(),
            "teams": fake_data.hive_teams(),
            "workflows": fake_data.hive_workflows(),
        }
    )

    def configure(self, kind: str, **changes: Any) -> None:
        """Change how the fake source ``kind`` behaves (see the module docstring)."""
        self.sources[kind].config.update(changes)

    def requests(self, kind: str) -> list[dict[str, Any]]:
        """The API requests the fake source ``kind`` received, oldest first."""
        return self.sources[kind].requests


STATE_KEY = web.AppKey("fake_sources_state", FakeSourcesState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _kind_of(request: web.Request) -> str:
    return request.path.lstrip("/").partition("/")[0]


def _key_matches(request: web.Request, key: str) -> bool:
    return request.headers.get("x-api-key") == key or (
        request.headers.get("authorization") == f"Bearer {key}"
    )


async def _record(request: web.Request) -> dict[str, Any]:
    headers = {
        name: "***" if name.lower() in _SECRET_HEADERS else value
        for name, value in request.headers.items()
    }
    entry: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "headers": headers,
        "json": None,
        "form": None,
    }
    if request.content_type == "application/json" and request.can_read_body:
        try:
            entry["json"] = await request.json()
        except ValueError:
            entry["json"] = {"_unparsable_body": await request.text()}
    elif request.content_type == "application/x-www-form-urlencoded":
        entry["form"] = dict(await request.post())
    return entry


@web.middleware
async def _misbehave(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every API request and apply the source's config before answering."""
    state = request.app[STATE_KEY]
    kind = _kind_of(request)
    if kind not in state.sources or request.path.startswith(f"/{kind}/_fake/"):
        return await handler(request)
    source = state.sources[kind]
    source.requests.append(await _record(request))
    config = source.config
    if config.hang:
        # Never answer; the handler ends when the client gives up (handler_cancellation)
        # or the server shuts down.
        await asyncio.Event().wait()
    if config.delay_s:
        await asyncio.sleep(config.delay_s)
    if config.fail_times > 0:
        config.fail_times -= 1
        headers = {}
        if config.fail_status == 429 and config.retry_after_s is not None:
            headers["Retry-After"] = str(config.retry_after_s)
        return web.json_response(
            {"detail": f"fake failure ({config.fail_times} more to come)"},
            status=config.fail_status,
            headers=headers,
        )
    if config.require_api_key is not None and not _key_matches(request, config.require_api_key):
        return web.json_response({"detail": "Invalid or missing API key"}, status=401)
    if config.malformed:
        return web.Response(
            text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
        )
    return await handler(request)


async def _set_config(request: web.Request) -> web.Response:
    config = request.app[STATE_KEY].sources[_kind_of(request)].config
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        config.update(body)
    except ValueError as exc:
        return web.json_response({"detail": str(exc)}, status=400)
    return web.json_response(asdict(config))


async def _get_config(request: web.Request) -> web.Response:
    return web.json_response(asdict(request.app[STATE_KEY].sources[_kind_of(request)].config))


async def _get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].sources[_kind_of(request)].requests)


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[STATE_KEY].sources[_kind_of(request)].requests.clear()
    return web.json_response([])


def _state(request: web.Request) -> FakeSourcesState:
    return request.app[STATE_KEY]


def _padded(request: web.Request, text: str) -> str:
    """Pad an answer to the configured big_output_bytes, for large-output tests."""
    size = _state(request).sources[_kind_of(request)].config.big_output_bytes
    return text + " " + "x" * (size - len(text) - 1) if size > len(text) else text


def _not_found(what: str) -> web.Response:
    return web.json_response({"detail": f"{what} not found"}, status=404)


# -- LangFlow ----------------------------------------------------------------------------


def _find_flow(state: FakeSourcesState, flow_id: str) -> dict[str, Any] | None:
    return next((f for f in state.langflow_flows if flow_id in (f["id"], f["endpoint_name"])), None)


async def _langflow_run(request: web.Request) -> web.StreamResponse:
    state, flow_id = _state(request), request.match_info["flow_id"]
    body = await request.json()
    input_value, tweaks = str(body.get("input_value") or ""), body.get("tweaks") or {}
    session_id = str(body.get("session_id") or uuid.uuid4())
    streaming = request.query.get("stream", "false").lower() == "true"
    if flow_id == "fail-flow":
        if not streaming:
            return web.json_response({"detail": "Error running graph: fake failure"}, status=500)
        flow: dict[str, Any] | None = None
    else:
        flow = _find_flow(state, flow_id)
        if flow is None:
            return _not_found(f"Flow identifier {flow_id}")
    if not streaming:
        assert flow is not None
        text = _padded(request, fake_data.echo_answer(flow, input_value, tweaks))
        return web.json_response(fake_data.langflow_run_result(flow, session_id, input_value, text))

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    async def send(event: str, data: dict[str, Any]) -> None:
        await response.write((json.dumps({"event": event, "data": data}) + "\n\n").encode())

    user_message = {
        "text": input_value,
        "sender": "User",
        "sender_name": "User",
        "session_id": session_id,
    }
    await send("add_message", user_message)
    if flow is None:
        await send("error", {"error": "Error running graph: fake failure"})
        return response
    text = _padded(request, fake_data.echo_answer(flow, input_value, tweaks))
    words = text.split(" ")
    token_delay_s = _state(request).sources["langflow"].config.token_delay_s
    for i, word in enumerate(words):
        if token_delay_s and i:
            await asyncio.sleep(token_delay_s)
        await send("token", {"chunk": word if i == len(words) - 1 else word + " ", "id": "msg-1"})
    await send(
        "add_message", {**user_message, "text": text, "sender": "Machine", "sender_name": "AI"}
    )
    await send(
        "end", {"result": fake_data.langflow_run_result(flow, session_id, input_value, text)}
    )
    return response


def _add_langflow_routes(app: web.Application) -> None:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def version(_: web.Request) -> web.Response:
        return web.json_response(
            {"version": "1.4.2", "main_version": "1.4.2", "package": "Langflow"}
        )

    async def folders(request: web.Request) -> web.Response:
        return web.json_response(_state(request).langflow_folders)

    async def flows(request: web.Request) -> web.Response:
        return web.json_response(_state(request).langflow_flows)

    async def flow(request: web.Request) -> web.Response:
        found = _find_flow(_state(request), request.match_info["flow_id"])
        return web.json_response(found) if found else _not_found("Flow")

    p = "/langflow"
    app.router.add_get(f"{p}/health", health)
    app.router.add_get(f"{p}/api/v1/version", version)
    app.router.add_get(f"{p}/api/v1/folders/", folders)
    app.router.add_get(f"{p}/api/v1/projects/", folders)
    app.router.add_get(f"{p}/api/v1/flows/", flows)
    app.router.add_get(f"{p}/api/v1/flows/{{flow_id}}", flow)
    app.router.add_post(f"{p}/api/v1/run/{{flow_id}}", _langflow_run)


# -- Automagik Agents ---------------------------------------------------------------------


def _add_agents_routes(app: web.Application) -> None:
    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "healthy",
                "version": "0.9.0",
                "timestamp": _now_iso(),
                "environment": "demo",
            }
        )

    async def list_agents(request: web.Request) -> web.Response:
        return web.json_response(_state(request).agents)

    async def run(request: web.Request) -> web.Response:
        name, body = request.match_info["name"], await request.json()
        message = str(body.get("message_content") or "")
        session_id = str(
            uuid.uuid5(uuid.NAMESPACE_URL, body.get("session_name") or str(uuid.uuid4()))
        )
        if name == "fail-agent":
            return web.json_response(
                {
                    "message": "the fake agent failed on purpose",
                    "session_id": session_id,
                    "success": False,
                }
            )
        if not any(a["name"] == name for a in _state(request).agents):
            return _not_found(f"Agent {name}")
        text = _padded(request, message.upper() if name == "shouty" else message)
        usage = {
            "framework": "pydantic_ai",
            "model": "openai:gpt-4.1-mini",
            "request_tokens": len(message.split()),
            "response_tokens": len(text.split()),
        }
        return web.json_response(
            {
                "message": text,
                "session_id": session_id,
                "success": True,
                "tool_calls": [],
                "tool_outputs": [],
                "usage": usage,
            }
        )

    app.router.add_get("/agents/health", health)
    app.router.add_get("/agents/api/v1/agents", list_agents)
    app.router.add_post("/agents/api/v1/agent/{name}/run", run)


# -- Automagik Hive (AgentOS) --------------------------------------------------------------


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def _add_hive_routes(app: web.Application) -> None:
    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "success",
                "service": "Automagik Hive Multi-Agent System",
                "router": "health",
                "path": "/health",
                "utc": _now_iso(),
                "message": "System operational",
            }
        )

    def find(request: web.Request) -> tuple[str, dict[str, Any] | None]:
        kind = request.path.split("/")[2]
        item_id = request.match_info["item_id"]
        return kind, next((i for i in _state(request).hive[kind] if i["id"] == item_id), None)

    async def list_items(request: web.Request) -> web.Response:
        return web.json_response(_state(request).hive[request.path.split("/")[2]])

    async def get_item(request: web.Request) -> web.Response:
        kind, item = find(request)
        return web.json_response(item) if item else _not_found(kind[:-1].capitalize())

    async def run(request: web.Request) -> web.Response:
        form = await request.post()
        message, session_id = str(form.get("message") or ""), str(form.get("session_id") or "")
        if not message:
            return web.json_response(
                {"detail": [{"loc": ["body", "message"], "msg": "Field required"}]}, status=422
            )
        session_id = session_id or str(uuid.uuid4())
        kind, item = find(request)
        if kind == "agents" and request.match_info["item_id"] == "fail-agent":
            return web.json_response(
                {
                    "run_id": str(uuid.uuid4()),
                    "session_id": session_id,
                    "status": "ERROR",
                    "content": "fake failure",
                }
            )
        if item is None:
            return _not_found(kind[:-1].capitalize())
        text = _padded(request, message)
        return web.json_response(fake_data.hive_run_output(kind, item, message, text, session_id))

    app.router.add_get("/hive/api/v1/health", health)
    for kind in ("agents", "teams", "workflows"):
        app.router.add_get(f"/hive/{kind}", list_items)
        app.router.add_get(f"/hive/{kind}/{{item_id}}", get_item)
        app.router.add_post(f"/hive/{kind}/{{item_id}}/runs", run)


def create_app(state: FakeSourcesState | None = None) -> web.Application:
    """Build the fake sources' app.

    Args:
        state: the data and controls to serve; a fresh default state when None.
    """
    app = web.Application(middlewares=[_misbehave], client_max_size=64 * 1024**2)
    app[STATE_KEY] = state or FakeSourcesState()
    for kind in KINDS:
        app.router.add_post(f"/{kind}/_fake/config", _set_config)
        app.router.add_get(f"/{kind}/_fake/config", _get_config)
        app.router.add_get(f"/{kind}/_fake/requests", _get_requests)
        app.router.add_delete(f"/{kind}/_fake/requests", _clear_requests)
    _add_langflow_routes(app)
    _add_agents_routes(app)
    _add_hive_routes(app)
    return app


@dataclass(frozen=True)
class FakeSources:
    """A running fake sources server.

    Attributes:
        base_url: ``http://HOST:PORT``.
        state: its live state.
    """

    base_url: str
    state: FakeSourcesState

    def url(self, kind: str) -> str:
        """The source URL of ``kind`` ("langflow", "agents" or "hive")."""
        if kind not in KINDS:
            raise ValueError(f"unknown fake source {kind!r}; known: {', '.join(KINDS)}")
        return f"{self.base_url}/{kind}"


@asynccontextmanager
async def run_fake_sources(
    host: str = "127.0.0.1", port: int = 0, state: FakeSourcesState | None = None
) -> AsyncIterator[FakeSources]:
    """Serve the fake sources until the block exits.

    Args:
        host: the address to bind.
        port: the port; 0 picks a free one (see ``FakeSources.base_url``).
        state: the state to serve; a fresh default state when None.
    """
    state = state or FakeSourcesState()
    # handler_cancellation: a client that gives up on a slow answer ends its handler.
    runner = web.AppRunner(
        create_app(state), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield FakeSources(base_url=f"http://{bound_host}:{bound_port}", state=state)
    finally:
        await runner.cleanup()


def main(host: str = "127.0.0.1", port: int = 8899) -> None:
    """Serve the fake sources in the foreground until Ctrl-C."""

    async def serve() -> None:
        async with run_fake_sources(host, port) as fake:
            for kind in KINDS:
                # The demo's output is for the person who started it, not a log.
                print(f"fake {kind:<8} source: {fake.url(kind)}", flush=True)  # noqa: T201
            print("press Ctrl-C to stop", flush=True)  # noqa: T201
            await asyncio.Event().wait()

    with suppress(KeyboardInterrupt):
        asyncio.run(serve())
