"""Every e2e test starts from empty tables and well-behaved fake sources."""

from __future__ import annotations

import asyncpg
import pytest

from spark_grpc.demo.fake_sources import FakeSources
from tests.conftest import reset_state


@pytest.fixture(autouse=True)
async def _clean(pg: asyncpg.Connection, fake: FakeSources) -> None:
    await reset_state(pg, fake)
