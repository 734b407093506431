"""Workflow sources (LangFlow, Automagik Agents, Automagik Hive) behind one interface.

Use :func:`adapter_for` to get the :class:`SourceAdapter` of a :class:`SourceConnection`;
every adapter health-checks, lists, fetches and runs remote flows, and raises only the
:class:`~spark_grpc.errors.SourceError` tree.
"""

from spark_grpc.sources.base import (
    Component,
    ComponentParam,
    HealthResult,
    OnEvent,
    RemoteFlow,
    RemoteFlowKind,
    RunEvent,
    RunResult,
    SourceAdapter,
    SourceConnection,
    SourceType,
)
from spark_grpc.sources.registry import adapter_for

__all__ = [
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
