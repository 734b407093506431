"""The source interface: what spark-grpc needs from LangFlow, Agents and Hive.

Each source type is one :class:`SourceAdapter` subclass in its own module; the registry maps
a :class:`SourceType` to it. Adapters speak HTTP through one shared ``httpx.AsyncClient``
(connection pooling is the caller's business) and through :meth:`SourceAdapter._request`,
the one place that turns transport failures and HTTP statuses into the
:class:`~spark_grpc.errors.SourceError` tree:

    connect error, DNS, reset        -> SourceUnreachableError   (retryable)
    no answer within ``timeout``     -> SourceTimeoutError       (retryable)
    401 / 403                        -> SourceAuthError
    404 for a named flow             -> SourceNotFoundError
    429                              -> SourceResponseError      (retryable, retry_after_s)
    5xx                              -> SourceResponseError      (retryable)
    other 4xx                        -> SourceResponseError
    body not JSON / wrong shape      -> SourceResponseError      (reason SOURCE_BAD_RESPONSE)

The API key is sent in headers only; it never appears in a log line or an error message,
and neither does any user:password part of the source URL.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import logging
import socket
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, NoReturn
from urllib.parse import urlsplit, urlunsplit

import httpx

from spark_grpc.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourceResponseError,
    SourceTimeoutError,
    SourceUnreachableError,
)

logger = logging.getLogger(__name__)

# ErrorInfo reasons set on SourceResponseError, beyond its default SOURCE_BAD_RESPONSE.
REASON_RATE_LIMITED = "SOURCE_RATE_LIMITED"
REASON_SERVER_ERROR = "SOURCE_SERVER_ERROR"
REASON_REQUEST_REJECTED = "SOURCE_REQUEST_REJECTED"
REASON_RUN_FAILED = "SOURCE_RUN_FAILED"
REASON_BAD_RESPONSE = "SOURCE_BAD_RESPONSE"


class SourceType(StrEnum):
    """The kinds of workflow source spark-grpc can drive."""

    LANGFLOW = "langflow"  # LangFlow flows
    AUTOMAGIK_AGENTS = "automagik-agents"  # Automagik Agents (one agent = one flow)
    AUTOMAGIK_HIVE = "automagik-hive"  # Automagik Hive / Agno AgentOS agents, teams, workflows


class RemoteFlowKind(StrEnum):
    """What a remote flow is on its source."""

    FLOW = "flow"  # a LangFlow flow graph
    AGENT = "agent"  # a single agent (Agents or Hive)
    TEAM = "team"  # a Hive team of agents
    WORKFLOW = "workflow"  # a Hive multi-step workflow


@dataclass(frozen=True)
class SourceConnection:
    """Where a source lives and how to authenticate to it.

    Attributes:
        type: which adapter speaks to it.
        url: base URL; adapters append their API paths. A trailing "/" is ignored.
        api_key: the key sent to the source, or None when it needs none.
    """

    type: SourceType
    url: str
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class HealthResult:
    """The outcome of a health check.

    Attributes:
        reachable: True when the source answered healthy and accepted the request.
        version: the source's version, empty when it does not say.
        message: short human text: "ok", "connection refused", "HTTP 401: check ...".
    """

    reachable: bool
    version: str
    message: str


@dataclass(frozen=True)
class ComponentParam:
    """One tweakable parameter of a flow component.

    Attributes:
        name: the key used in run tweaks.
        field_type: the source's type for it, e.g. "str", "int", "bool".
        display_name: the label the source's UI shows.
        value: its current value, JSON-compatible.
    """

    name: str
    field_type: str
    display_name: str
    value: Any


@dataclass(frozen=True)
class Component:
    """One node of a flow graph.

    Attributes:
        id: the node id, e.g. ``ChatInput-AbC12``; the key used in tweaks.
        type: the component type, e.g. ``ChatInput``.
        display_name: the label the source's UI shows.
        params: its tweakable parameters.
        is_input: whether it receives the run input.
        is_output: whether it produces the run output.
    """

    id: str
    type: str
    display_name: str
    params: tuple[ComponentParam, ...] = ()
    is_input: bool = False
    is_output: bool = False


@dataclass(frozen=True)
class RemoteFlow:
    """A runnable thing on a source: a LangFlow flow, an agent, a team or a workflow.

    Attributes:
        id: the id to pass to :meth:`SourceAdapter.run`; stable across calls.
        name: its name on the source.
        description: its description, empty when none.
        kind: what it is.
        folder_name: the folder or group it sits in, empty when none.
        update_time: when the source last changed it (aware UTC), None when unknown.
        graph: the flow graph (LangFlow ``data``) or the remote object's JSON; None in the
            light form some listings return.
        components: the graph's components (LangFlow only).
        input_component_id: the node that takes the input (ChatInput), empty when none.
        output_component_id: the node that gives the output (ChatOutput), empty when none.
        version: the remote version, empty when unknown.
        tags: the source's tags.
    """

    id: str
    name: str
    description: str
    kind: RemoteFlowKind
    folder_name: str = ""
    update_time: datetime | None = None
    graph: dict[str, Any] | None = None
    components: tuple[Component, ...] = ()
    input_component_id: str = ""
    output_component_id: str = ""
    version: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunResult:
    """The answer of one run.

    Attributes:
        output: the JSON the source returned, as parsed.
        text: the text answer extracted from it, empty when there is none.
        session_id: the source's session id, empty when none.
    """

    output: Any
    text: str
    session_id: str = ""


@dataclass(frozen=True)
class RunEvent:
    """Something a streaming run reported before its end.

    Attributes:
        kind: "token" (a piece of the answer), "message" (a whole chat message),
            "progress" (a step finished) or "log".
        text: the text carried, empty when none.
        data: the source's event payload, as parsed.
    """

    kind: Literal["token", "message", "progress", "log"]
    text: str
    data: dict[str, Any] = field(default_factory=dict)


OnEvent = Callable[[RunEvent], Awaitable[None]]


def redact_url(url: str) -> str:
    """Return ``url`` without any user:password part, query or fragment, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header: delay seconds or an HTTP date.

    Returns:
        seconds to wait (never negative), or None when absent or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def parse_time(value: Any) -> datetime | None:
    """Parse an ISO-8601 time from a source; naive times are UTC (LangFlow sends naive)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def as_dict(value: Any) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object, else an empty dict (for tolerant parsing)."""
    return value if isinstance(value, dict) else {}


def as_str(value: Any) -> str:
    """Return ``value`` if it is a string, else an empty string (for tolerant parsing)."""
    return value if isinstance(value, str) else ""


def _error_detail(response: httpx.Response) -> str:
    # FastAPI sources answer {"detail": ...}; a short excerpt helps the user act. Only that
    # field is used: an arbitrary body could echo request headers.
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    if isinstance(detail, str) and detail:
        return f" ({detail[:200]})"
    return ""


class SourceAdapter(ABC):
    """Speaks to one source. Subclasses implement one source type's API.

    Args:
        connection: where the source is and its API key.
        http: the shared client; the adapter neither configures nor closes it.
    """

    #: Human name used in messages, e.g. "LangFlow".
    label: ClassVar[str] = "source"
    #: The type this adapter speaks, for error metadata.
    source_type: ClassVar[SourceType]

    def __init__(self, connection: SourceConnection, http: httpx.AsyncClient) -> None:
        self.connection = connection
        self._http = http
        self._base = connection.url.rstrip("/")
        self._where = f"{self.label} at {redact_url(connection.url)}"

    # -- the interface -------------------------------------------------------------------

    async def check_health(self, *, timeout: float) -> HealthResult:
        """Ask the source whether it is up and which version it runs.

        Never raises for an unreachable or erroring source.

        Args:
            timeout: total seconds for the whole check.

        Returns:
            reachable=False with a short message when the source cannot be used.
        """
        try:
            async with self._deadline(timeout, "the health check"):
                version = await self._probe_health(timeout)
        except SourceError as exc:
            logger.info("health check of %s failed: %s", self._where, exc.message)
            return HealthResult(reachable=False, version="", message=_short_message(exc))
        return HealthResult(reachable=True, version=version, message="ok")

    @abstractmethod
    async def list_remote_flows(self, *, timeout: float) -> list[RemoteFlow]:
        """List the runnable flows of the source (graph and components may be omitted).

        Args:
            timeout: total seconds for the whole call.

        Raises:
            SourceError: a subclass saying why the source could not be listed.
        """

    @abstractmethod
    async def get_remote_flow(self, flow_id: str, *, timeout: float) -> RemoteFlow:
        """Fetch one remote flow in full, graph and components included.

        Args:
            flow_id: the id :meth:`list_remote_flows` gave.
            timeout: total seconds for the whole call.

        Raises:
            SourceNotFoundError: the source has no such flow.
            SourceError: another subclass saying why it could not be fetched.
        """

    @abstractmethod
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
        """Run a remote flow once and wait for its answer.

        Args:
            flow_id: the id :meth:`list_remote_flows` gave.
            input_value: the input text.
            tweaks: per-component parameter overrides ``{component_id: {param: value}}``;
                sources without components ignore them.
            timeout: total seconds for the whole run.
            session_id: the source's conversation session to continue, empty for a new one.
            stream: ask the source to stream; events go to ``on_event`` as they arrive.
            on_event: awaited for each event of a streaming run.

        Raises:
            SourceNotFoundError: the source has no such flow.
            SourceError: another subclass saying why the run failed.
        """

    # -- helpers for subclasses ----------------------------------------------------------

    @abstractmethod
    async def _probe_health(self, timeout: float) -> str:
        """Do the health requests; return the version. Raise SourceError when unhealthy."""

    def _auth_headers(self) -> dict[str, str]:
        """Headers that carry the API key; most sources use ``x-api-key``."""
        key = self.connection.api_key
        return {"x-api-key": key} if key else {}

    @asynccontextmanager
    async def _deadline(self, timeout: float, action: str) -> AsyncIterator[None]:
        """Bound a whole multi-request call to ``timeout`` seconds.

        httpx timeouts bound each phase of one request; this bounds the sum, so a slow
        source cannot stretch a call past what the caller allowed.
        """
        try:
            async with asyncio.timeout(timeout):
                yield
        except TimeoutError as exc:
            raise SourceTimeoutError(
                f"{self._where} did not finish {action} within {timeout:g} s; "
                "check that the source is not overloaded, or allow a longer timeout",
                metadata=self._metadata(),
            ) from exc

    def _metadata(self) -> dict[str, str]:
        return {"source_type": self.source_type.value, "source_url": redact_url(self._base)}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        not_found: str | None = None,
    ) -> httpx.Response:
        """Send one request and map failures to the SourceError tree.

        Args:
            method: HTTP method.
            path: path appended to the source URL, starting with "/".
            timeout: httpx timeout for each phase of this request.
            params: query parameters.
            json_body: JSON body, if any.
            form: form-urlencoded body, if any.
            not_found: what a 404 means, e.g. "flow 'abc'"; None means a 404 is an error
                of the source (a wrong URL), not a missing flow.

        Returns:
            the response, status 2xx.
        """
        logger.debug("%s %s%s", method, self._where, path)
        try:
            response = await self._http.request(
                method,
                self._base + path,
                params=params,
                json=json_body,
                data=form,
                headers={"accept": "application/json", **self._auth_headers()},
                timeout=timeout,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self._raise_transport(exc, path)
        self._check_status(response, path, not_found)
        return response

    @asynccontextmanager
    async def _stream(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        not_found: str | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Like :meth:`_request`, but yield the response before its body is read."""
        try:
            request = self._http.build_request(
                method,
                self._base + path,
                params=params,
                json=json_body,
                headers={"accept": "application/json", **self._auth_headers()},
                timeout=timeout,
            )
            response = await self._http.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self._raise_transport(exc, path)
        try:
            if response.status_code >= 400:
                await response.aread()  # so the error detail can be read
            self._check_status(response, path, not_found)
            try:
                yield response
            except httpx.HTTPError as exc:
                self._raise_transport(exc, path)
        finally:
            await response.aclose()

    async def _get_json(
        self, path: str, *, timeout: float, not_found: str | None = None, **kwargs: Any
    ) -> Any:
        """GET ``path`` and return its JSON body."""
        response = await self._request("GET", path, timeout=timeout, not_found=not_found, **kwargs)
        return self._json(response, path)

    def _json(self, response: httpx.Response, path: str) -> Any:
        """Parse a response body as JSON, or raise SourceResponseError."""
        try:
            return response.json()
        except ValueError as exc:
            raise SourceResponseError(
                f"{self._where} answered {path} with a body that is not JSON; "
                f"check that the URL points at a {self.label} server",
                http_status=response.status_code,
                retryable=False,
                reason=REASON_BAD_RESPONSE,
                metadata=self._metadata(),
            ) from exc

    def _bad_shape(self, path: str, expected: str) -> SourceResponseError:
        """The error for a JSON body that is not what the source's API documents."""
        return SourceResponseError(
            f"{self._where} answered {path} with {expected} missing; "
            f"check that the URL points at a supported {self.label} version",
            retryable=False,
            reason=REASON_BAD_RESPONSE,
            metadata=self._metadata(),
        )

    def _raise_transport(self, exc: Exception, path: str) -> NoReturn:
        if isinstance(exc, httpx.TimeoutException):
            raise SourceTimeoutError(
                f"{self._where} did not answer {path} in time; check that the source is not "
                "overloaded, or allow a longer timeout",
                metadata=self._metadata(),
            ) from exc
        if isinstance(exc, httpx.DecodingError):
            raise SourceResponseError(
                f"{self._where} answered {path} with a body that cannot be decoded ({exc})",
                retryable=False,
                reason=REASON_BAD_RESPONSE,
                metadata=self._metadata(),
            ) from exc
        if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
            raise SourceUnreachableError(
                f"{self._where} cannot be called: its URL is not valid ({exc}); fix the "
                "source's URL",
                retryable=False,
                metadata=self._metadata(),
            ) from exc
        # ConnectError (refused, DNS), ReadError (reset), RemoteProtocolError...
        raise SourceUnreachableError(
            f"{self._where} could not be reached ({describe_transport_error(exc)}); check "
            "the URL and that the source is running",
            metadata=self._metadata(),
        ) from exc

    def _check_status(self, response: httpx.Response, path: str, not_found: str | None) -> None:
        status = response.status_code
        if status < 400:
            return
        detail = _error_detail(response)
        kwargs: dict[str, Any] = {"http_status": status, "metadata": self._metadata()}
        if status in (401, 403):
            raise SourceAuthError(
                f"{self._where} answered {status}{detail}: check the source's API key",
                **kwargs,
            )
        if status == 404 and not_found is not None:
            raise SourceNotFoundError(
                f"{self._where} has no {not_found} (answered 404); list the source's flows "
                "to see what it has",
                **kwargs,
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            wait = f" in {retry_after:g} s" if retry_after is not None else " later"
            raise SourceResponseError(
                f"{self._where} answered 429{detail}: it is rate limiting; retry{wait}",
                retryable=True,
                retry_after_s=retry_after,
                reason=REASON_RATE_LIMITED,
                **kwargs,
            )
        if status >= 500:
            raise SourceResponseError(
                f"{self._where} answered {status} to {path}{detail}: the source failed; "
                "retry later or check the source's logs",
                retryable=True,
                reason=REASON_SERVER_ERROR,
                **kwargs,
            )
        raise SourceResponseError(
            f"{self._where} answered {status} to {path}{detail}: it rejected the request; "
            "check the URL and the source's version",
            retryable=False,
            reason=REASON_REQUEST_REJECTED,
            **kwargs,
        )


def describe_transport_error(exc: BaseException) -> str:
    """A few words for a connection failure, e.g. "connection refused", "host not found".

    httpx reports a refused connection as "All connection attempts failed"; the OSError
    underneath says what happened.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return "host not found"
        if isinstance(seen, ConnectionRefusedError) or (
            isinstance(seen, OSError) and seen.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(seen, ConnectionResetError):
            return "connection reset"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host not found"
    return text or type(exc).__name__


def _short_message(exc: SourceError) -> str:
    """The short form of an error for :class:`HealthResult.message`."""
    if isinstance(exc, SourceUnreachableError):
        if isinstance(exc.__cause__, httpx.InvalidURL | httpx.UnsupportedProtocol):
            return f"invalid URL: {exc.__cause__}"
        return describe_transport_error(exc.__cause__ or exc)
    if isinstance(exc, SourceTimeoutError):
        return "timed out"
    if isinstance(exc, SourceAuthError):
        return f"HTTP {exc.http_status}: check the source's API key"
    if exc.http_status is not None and exc.http_status >= 400:
        return f"HTTP {exc.http_status}"
    if exc.reason == REASON_BAD_RESPONSE:
        return "unexpected answer: is the URL right for this source type?"
    return exc.message
