"""What every benchmark shares: one embedded stack, the service's processes, the fake
source, clients, and percentile maths. Benchmarks never fail on a number."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.fernet import Fernet

from spark_grpc.demo.fake_sources import FakeSources, run_fake_sources
from spark_grpc.embedded import EmbeddedStack
from tests.support import (
    ServerProcess,
    Stubs,
    WorkerProcess,
    start_server_process,
    start_worker_process,
)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of values, nearest-rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Result:
    """One scenario: ours against its baseline, measured in the same run."""

    scenario: str
    metric: str
    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    unit: str = "ms"
    higher_is_better: bool = False
    target: str = ""
    notes: str = ""

    def summary(self) -> dict[str, Any]:
        ours = statistics.median(self.ours) if self.ours else float("nan")
        base = statistics.median(self.baseline) if self.baseline else float("nan")
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "unit": self.unit,
            "ours_p50": ours,
            "ours_p99": pct(self.ours, 99),
            "baseline_p50": base,
            "baseline_p99": pct(self.baseline, 99),
            "ratio": ours / base if base else float("nan"),
            "higher_is_better": self.higher_is_better,
            "target": self.target,
            "notes": self.notes,
            "n_ours": len(self.ours),
            "n_baseline": len(self.baseline),
        }


def versions() -> dict[str, str]:
    """The versions a result depends on."""
    import grpc as g
    import rq

    def pkg(name: str) -> str:
        from importlib.metadata import version

        try:
            return version(name)
        except Exception:
            return "?"

    return {
        "python": platform.python_version(),
        "grpcio": g.__version__,
        "rq": rq.__version__,
        "redis-py": pkg("redis"),
        "asyncpg": pkg("asyncpg"),
        "sqlalchemy": pkg("sqlalchemy"),
        "nproc": str(os.cpu_count()),
        "machine": platform.machine(),
    }


@dataclass
class Env:
    """A running service: embedded Postgres and Redis, server, workers, fake source."""

    stack: EmbeddedStack
    env: dict[str, str]
    server: ServerProcess
    workers: WorkerProcess | None
    fake: FakeSources
    channel: grpc.aio.Channel
    stubs: Stubs
    workdir: Path


@asynccontextmanager
async def service(
    *, workers: int = 1, extra_env: dict[str, str] | None = None
) -> AsyncIterator[Env]:
    """Starts everything in a temporary directory and stops it afterwards."""
    with tempfile.TemporaryDirectory(prefix="spark-bench-") as tmp:
        root = Path(tmp)
        stack = EmbeddedStack(root / "data")
        await asyncio.to_thread(stack.start)
        try:
            env = {
                "SPARK_DATABASE_URL": stack.postgres.url,
                "SPARK_REDIS_URL": stack.redis.url,
                "SPARK_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
                "SPARK_LOG_LEVEL": "WARNING",
                "SPARK_AUTH_MODE": "open",
                **(extra_env or {}),
            }
            subprocess.run(
                [sys.executable, "-m", "spark_grpc", "migrate"],
                env={**os.environ, **env},
                check=True,
                capture_output=True,
            )
            server = await asyncio.to_thread(start_server_process, env, root)
            worker = (
                await asyncio.to_thread(start_worker_process, env, root, concurrency=workers)
                if workers
                else None
            )
            try:
                async with (
                    run_fake_sources() as fake,
                    grpc.aio.insecure_channel(server.address) as ch,
                ):
                    yield Env(stack, env, server, worker, fake, ch, Stubs(ch), root)
            finally:
                if worker is not None:
                    await asyncio.to_thread(worker.stop)
                await asyncio.to_thread(server.stop)
        finally:
            await asyncio.to_thread(stack.stop)


async def echo_workflow(env: Env) -> str:
    """A workflow on the fake LangFlow's echo flow."""
    from spark_grpc._gen.spark.v1 import source_pb2, source_service_pb2, workflow_service_pb2
    from spark_grpc.demo import fake_data

    source = await env.stubs.sources.CreateSource(
        source_service_pb2.CreateSourceRequest(
            source=source_pb2.Source(
                display_name="bench",
                type=source_pb2.SOURCE_TYPE_LANGFLOW,
                url=env.fake.url("langflow"),
            )
        )
    )
    wf = await env.stubs.workflows.ImportWorkflow(
        workflow_service_pb2.ImportWorkflowRequest(
            source_id=source.source.id, remote_flow_id=fake_data.FLOW_ECHO
        )
    )
    return wf.workflow.id


def now() -> float:
    """Wall-clock seconds (comparable across processes on this machine)."""
    return time.time()
