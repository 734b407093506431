"""Which adapter speaks to which source type.

Adding a source type is one new adapter module and one entry in ``ADAPTERS``.
"""

from __future__ import annotations

import httpx

from spark_grpc.sources.agents import AutomagikAgentsAdapter
from spark_grpc.sources.base import SourceAdapter, SourceConnection, SourceType
from spark_grpc.sources.hive import AutomagikHiveAdapter
from spark_grpc.sources.langflow import LangFlowAdapter

ADAPTERS: dict[SourceType, type[SourceAdapter]] = {
    SourceType.LANGFLOW: LangFlowAdapter,
    SourceType.AUTOMAGIK_AGENTS: AutomagikAgentsAdapter,
    SourceType.AUTOMAGIK_HIVE: AutomagikHiveAdapter,
}


def adapter_for(connection: SourceConnection, http: httpx.AsyncClient) -> SourceAdapter:
    """Build the adapter for ``connection``'s source type.

    Args:
        connection: the source to speak to.
        http: the shared HTTP client; the adapter does not close it.

    Raises:
        KeyError: no adapter is registered for the type (a programming error: every
            SourceType member has one).
    """
    return ADAPTERS[connection.type](connection, http)
