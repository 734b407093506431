"""RPC load scenarios of ../shared/reference/performance.md: S1 (GetTask), S2 (RunWorkflow
and BatchRunWorkflows), S6 (overload) and S7 (Get/List with 1k vs 1M tasks stored).

Load comes from ghz (built from the Go module proxy at a pinned version into .venv/go-bin,
like the tests build grpcurl), reading the request types from protos/. Every scenario runs
its baseline in the same run, alternating A/B rounds, and records the server process's
CPU time per request (psutil user+system delta / requests), which survives a noisy box.

The four scenarios share one embedded stack and server (starting one costs more than a
smoke scenario's measurements): the first scenario starts it in a background task, which
``asyncio.run`` cancels at the end of ``bench.run``, and the stack stops then. S6 and S7
empty the tasks table (and Redis) first, so the order of the scenarios does not matter.

    python -m bench.run --only s1 s2 s6 s7 [--smoke]
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import psutil
import redis.asyncio as aioredis

from bench.harness import Env, Result, echo_workflow, pct, service
from spark_grpc._gen.spark.v1 import (
    source_pb2,
    source_service_pb2,
    workflow_service_pb2,
)
from spark_grpc.crypto import SecretBox
from spark_grpc.demo import fake_data
from spark_grpc.pagination import PageTokens
from spark_grpc.tasks.store import TASK_COLUMNS
from tests.support import ServerProcess, Stubs, start_server_process, start_worker_process

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
ECHO_PROTO = ROOT / "bench" / "echo.proto"
TASK_PROTO = PROTOS / "spark" / "v1" / "task_service.proto"
WORKFLOW_PROTO = PROTOS / "spark" / "v1" / "workflow_service.proto"

GHZ_MODULE = "github.com/bojand/ghz"
GHZ_VERSION = "v0.120.0"

#: Closed-loop load: ghz's default concurrency, every worker on one HTTP/2 connection.
CONCURRENCY = 50
CONNECTIONS = 1
#: Most latency samples a Result keeps per round (a stride over the sorted values, so
#: the percentiles survive); the JSON stays small.
MAX_SAMPLES = 4000

#: The RunWorkflow capacity S2 measured, for S6 when both run in one process.
_measured_capacity: list[float] = []


@dataclass
class Shared:
    """The stack the four scenarios share, and the workflow they run."""

    env: Env
    workflow_id: str


_shared: list[asyncio.Future[Shared]] = []
_keeper: list[asyncio.Task[None]] = []


async def _keep(ready: asyncio.Future[Shared]) -> None:
    """Holds the shared stack open until cancelled (asyncio.run cancels leftover tasks
    when the run's main coroutine returns), then stops it."""
    t0 = time.perf_counter()
    try:
        async with service(workers=0) as env:
            ready.set_result(Shared(env, await echo_workflow(env)))
            print(f"  stack up in {time.perf_counter() - t0:.1f} s", flush=True)
            await asyncio.Event().wait()
    except BaseException as err:
        if not ready.done():
            ready.set_exception(err)
        raise


async def shared() -> Shared:
    """The shared stack (no workers), started on first use."""
    if not _shared:
        ready: asyncio.Future[Shared] = asyncio.get_running_loop().create_future()
        _shared.append(ready)
        _keeper.append(asyncio.create_task(_keep(ready), name="rpc-load-stack"))
    return await _shared[0]


async def empty_tasks(env: Env) -> None:
    """No tasks and no queued jobs (nothing runs them: the shared stack has no workers)."""
    conn = await asyncpg.connect(_pg_dsn(env.env["SPARK_DATABASE_URL"]))
    try:
        await conn.execute("TRUNCATE tasks CASCADE")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(env.env["SPARK_REDIS_URL"])
    try:
        await client.flushdb()
    finally:
        await client.aclose()


# ghz: build, run, parse.


def _module_version(binary: Path) -> str:
    try:
        out = subprocess.run(
            ["go", "version", "-m", str(binary)], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    match = re.search(rf"^\s*mod\s+{re.escape(GHZ_MODULE)}\s+(\S+)", out, re.MULTILINE)
    return match.group(1) if match else ""


@functools.cache
def ghz_binary() -> str:
    """ghz at GHZ_VERSION in .venv/go-bin, built from the Go module proxy if missing (or
    another version is there)."""
    bin_dir = ROOT / ".venv" / "go-bin"
    path = bin_dir / "ghz"
    if shutil.which("go") is None:
        if path.exists():
            return str(path)
        raise RuntimeError("Go is not installed: ghz is built from the Go module proxy")
    if not path.exists() or _module_version(path) != GHZ_VERSION:
        subprocess.run(
            ["go", "install", f"{GHZ_MODULE}/cmd/ghz@{GHZ_VERSION}"],
            env={**os.environ, "GOBIN": str(bin_dir)},
            check=True,
            capture_output=True,
            timeout=900,
        )
    return str(path)


@dataclass(frozen=True)
class Target:
    """A method of a running server process, as ghz calls it."""

    address: str
    pid: int
    proto: Path
    call: str


@dataclass
class GhzRun:
    """What one ghz run saw, plus the server process's CPU time during it."""

    count: int
    seconds: float
    statuses: dict[str, int]
    errors: dict[str, int]
    ok_ms: list[float]
    server_cpu_s: float
    rss_peak_mib: float = 0.0
    rss_start_mib: float = 0.0
    #: When each OK call finished, in seconds from the run's start.
    ok_done_s: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses.get("OK", 0)

    @property
    def ok_per_s(self) -> float:
        """OK calls per second in the steady part of the run: completions after the first
        fifth of it (the ramp, where every caller still waits on its first answer) divided
        by the rest. ghz's own count / duration is biased low when latency is long."""
        if not self.ok_done_s or not self.seconds:
            return 0.0
        start = self.seconds / 5
        done = sum(1 for t in self.ok_done_s if start <= t <= self.seconds)
        return done / (self.seconds - start)

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s * 1e6 / self.count if self.count else float("nan")

    def p(self, q: float) -> float:
        return pct(self.ok_ms, q)


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process and its children so far."""
    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def _sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mib(pid))
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


def sampled(values: list[float], limit: int = MAX_SAMPLES) -> list[float]:
    """At most limit values, evenly strided over the sorted list (quantiles survive)."""
    ordered = sorted(values)
    if len(ordered) <= limit:
        return ordered
    step = (len(ordered) - 1) / (limit - 1)
    return [ordered[round(i * step)] for i in range(limit)]


async def ghz(
    target: Target,
    data: Any,
    *,
    concurrency: int = CONCURRENCY,
    connections: int = CONNECTIONS,
    seconds: float | None = None,
    total: int | None = None,
    rps: float | None = None,
    open_loop: bool = False,
    timeout_s: float = 20.0,
    stop: str = "ignore",
) -> GhzRun:
    """One ghz run against target: closed loop (concurrency callers, each waiting for its
    answer), or open loop at a fixed rate (``open_loop`` and ``rps``). ``stop``: what
    happens to calls in flight when the duration ends (ignore: not counted; wait: they
    finish and count)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        out_path = Path(out.name)
    args = [
        ghz_binary(),
        "--insecure",
        "--proto",
        str(target.proto),
        "-i",
        str(target.proto.parent if target.proto == ECHO_PROTO else PROTOS),
        "--call",
        target.call,
        "-d",
        json.dumps(data),
        "-c",
        str(concurrency),
        "--connections",
        str(connections),
        "-t",
        f"{timeout_s}s",
        "-O",
        "json",
        "-o",
        str(out_path),
    ]
    if seconds is not None:
        args += ["-z", f"{seconds}s", "--duration-stop", stop]
    else:
        args += ["-n", str(total or 200)]
    if rps:
        args += ["--rps", str(int(rps))]
    if open_loop:
        args += ["--async"]
    args.append(target.address)
    rss_peak = [rss_mib(target.pid)]
    rss_start = rss_peak[0]
    done = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(target.pid, rss_peak, done))
    cpu0 = cpu_seconds(target.pid)
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    cpu = cpu_seconds(target.pid) - cpu0
    done.set()
    await sampler
    try:
        if proc.returncode != 0 and not out_path.stat().st_size:
            raise RuntimeError(f"ghz failed ({proc.returncode}): {err.decode()[-2000:]}")
        report = json.loads(out_path.read_text())
    finally:
        out_path.unlink(missing_ok=True)
    details = report.get("details") or []
    ends = [_epoch(d["timestamp"]) for d in details]  # ghz stamps a call when it ends
    origin = min((e - d["latency"] / 1e9 for e, d in zip(ends, details, strict=True)), default=0)
    return GhzRun(
        count=int(report["count"]),
        seconds=report["total"] / 1e9,
        statuses=dict(report.get("statusCodeDistribution") or {}),
        errors=dict(report.get("errorDistribution") or {}),
        ok_ms=[d["latency"] / 1e6 for d in details if d.get("status") == "OK"],
        server_cpu_s=cpu,
        rss_peak_mib=rss_peak[0],
        rss_start_mib=rss_start,
        ok_done_s=[
            e - origin for e, d in zip(ends, details, strict=True) if d.get("status") == "OK"
        ],
    )


def _epoch(stamp: str) -> float:
    """An RFC 3339 time with up to nanoseconds (ghz's) as epoch seconds."""
    match = re.fullmatch(r"(.+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if match is None:
        raise ValueError(f"not a time: {stamp}")
    whole = datetime.fromisoformat(match.group(1) + match.group(3).replace("Z", "+00:00"))
    return whole.timestamp() + float("0." + (match.group(2) or "0"))


@contextmanager
def echo_server() -> Iterator[Target]:
    """bench/echo_server.py in its own process: the bare grpc.aio baseline."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.echo_server"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().decode().strip()
        yield Target(address, proc.pid, ECHO_PROTO, "bench.Echo.Echo")
    finally:
        proc.terminate()
        proc.wait()


def ours(server: ServerProcess, service_name: str, method: str) -> Target:
    proto = TASK_PROTO if service_name == "TaskService" else WORKFLOW_PROTO
    return Target(server.address, server.process.pid, proto, f"spark.v1.{service_name}.{method}")


def _status_note(run: GhzRun) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(run.statuses.items()))


def _pg_dsn(database_url: str) -> str:
    return database_url.replace("+asyncpg", "")


# S1: GetTask against a bare grpc.aio echo server.

ECHO_DATA = {"value": str(uuid.uuid4())}  # a request about the size of GetTask's


async def s1_get_task(smoke: bool) -> list[Result]:
    rounds, seconds = (1, 2.0) if smoke else (3, 5.0)
    rps = Result(
        "S1",
        f"GetTask RPS, ghz -c {CONCURRENCY}",
        unit="RPS",
        higher_is_better=True,
        target=">= 0.5x echo",
    )
    latency = Result(
        "S1", f"GetTask latency at -c {CONCURRENCY}", target="p50/p99 vs echo (queueing)"
    )
    serial = Result("S1", "GetTask latency, one caller (-c 1)", target="(reported)")
    cpu = Result("S1", "GetTask server CPU per request", unit="us", target="(reported)")
    stack = await shared()
    env, workflow_id = stack.env, stack.workflow_id
    batch = await env.stubs.workflows.BatchRunWorkflows(
        workflow_service_pb2.BatchRunWorkflowsRequest(
            requests=[
                workflow_service_pb2.RunWorkflowRequest(
                    workflow_id=workflow_id, input_value=f"s1 {i}"
                )
                for i in range(100)
            ]
        )
    )
    data = [{"id": t.id} for t in batch.tasks]  # ghz sends them round-robin
    target = ours(env.server, "TaskService", "GetTask")
    with echo_server() as echo:
        await ghz(echo, ECHO_DATA, seconds=1.0)  # warm up both (and build ghz)
        await ghz(target, data, seconds=1.0)
        for _ in range(rounds):
            base = await ghz(echo, ECHO_DATA, seconds=seconds)
            mine = await ghz(target, data, seconds=seconds)
            rps.baseline.append(base.ok_per_s)
            rps.ours.append(mine.ok_per_s)
            latency.baseline += sampled(base.ok_ms)
            latency.ours += sampled(mine.ok_ms)
            cpu.baseline.append(base.cpu_us_per_request)
            cpu.ours.append(mine.cpu_us_per_request)
            base1 = await ghz(echo, ECHO_DATA, concurrency=1, seconds=seconds / 2)
            mine1 = await ghz(target, data, concurrency=1, seconds=seconds / 2)
            serial.baseline += sampled(base1.ok_ms)
            serial.ours += sampled(mine1.ok_ms)
            if mine.ok != mine.count:
                rps.notes += f" non-OK: {_status_note(mine)};"
    common = (
        f"ghz {GHZ_VERSION}, {CONNECTIONS} connection, {seconds:g} s per round, {rounds} round(s)"
    )
    rps.notes = f"{common}; 100 task ids round-robin;{rps.notes}"
    latency.notes = "closed loop: latency = concurrency / throughput plus service time"
    serial.notes = "ghz -c 1: one call at a time"
    cpu.notes = "psutil user+system of the server process / requests; echo: the echo process"
    return [rps, latency, serial, cpu]


# S2: RunWorkflow (commit + enqueue) against echo, and a raw asyncpg INSERT + enqueue.

RAW_INSERT = (
    "INSERT INTO tasks (id, workflow_id, state, input_value, max_attempts, retry_policy, "
    "timeout_s, next_attempt_time) "
    "VALUES ($1, $2, 'PENDING', 'x', 3, '{}'::jsonb, 600, clock_timestamp())"
)


async def _raw_insert_enqueue(
    env: Env, workflow_id: str, seconds: float, concurrency: int = CONCURRENCY
) -> tuple[float, list[float], float]:
    """The floor of RunWorkflow's work without gRPC or the service's code: concurrency
    callers each INSERTing a task row (autocommit) then enqueueing a job the way RQ stores
    one (job hash + queue push, one pipeline). Returns (ops/s, latencies ms, CPU us/op of
    this process)."""
    pool = await asyncpg.create_pool(
        _pg_dsn(env.env["SPARK_DATABASE_URL"]), min_size=10, max_size=20
    )
    client = aioredis.Redis.from_url(env.env["SPARK_REDIS_URL"])
    wf = uuid.UUID(workflow_id)
    latencies: list[float] = []
    end = 0.0

    async def caller() -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            task_id = uuid.uuid4()
            async with pool.acquire() as conn:
                await conn.execute(RAW_INSERT, task_id, wf)
            job = f"bench-raw-{task_id}"
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    f"rq:job:{job}",
                    mapping={"func_name": "bench.jobs.count", "status": "queued", "data": b"x"},
                )
                pipe.rpush("rq:queue:bench-raw", job)
                await pipe.execute()
            latencies.append((time.perf_counter() - t0) * 1000)

    try:
        cpu0 = cpu_seconds(os.getpid())
        t0 = time.perf_counter()
        end = t0 + seconds
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(os.getpid()) - cpu0
    finally:
        await pool.close()
        await client.aclose()
    return len(latencies) / elapsed, latencies, cpu * 1e6 / max(1, len(latencies))


def _run_data(workflow_id: str, input_value: str = "x") -> dict[str, Any]:
    return {"workflow_id": workflow_id, "input_value": input_value}


BATCH = 100
BATCH_CONCURRENCY = 4


async def s2_run_workflow(smoke: bool) -> list[Result]:
    rounds, seconds = (1, 2.0) if smoke else (3, 5.0)
    vs_echo = Result(
        "S2",
        f"RunWorkflow RPS vs echo, -c {CONCURRENCY}",
        unit="RPS",
        higher_is_better=True,
        target=">= 0.3x echo",
    )
    vs_raw = Result(
        "S2",
        "RunWorkflow RPS vs raw INSERT+enqueue",
        unit="RPS",
        higher_is_better=True,
        target="(reported)",
    )
    latency = Result("S2", f"RunWorkflow latency at -c {CONCURRENCY} vs raw", target="(reported)")
    batch = Result(
        "S2",
        f"BatchRunWorkflows({BATCH}) tasks/s vs RunWorkflow",
        unit="tasks/s",
        higher_is_better=True,
        target=">= 5x RunWorkflow",
    )
    cpu = Result("S2", "RunWorkflow server CPU per call vs echo", unit="us", target="(reported)")
    cpu_batch = Result(
        "S2", "server CPU per task: batch vs RunWorkflow", unit="us", target="(reported)"
    )
    raw_cpu: list[float] = []
    stack = await shared()
    env, workflow_id = stack.env, stack.workflow_id
    run = ours(env.server, "WorkflowService", "RunWorkflow")
    run_batch = ours(env.server, "WorkflowService", "BatchRunWorkflows")
    batch_data = {"requests": [_run_data(workflow_id)] * BATCH}
    with echo_server() as echo:
        await ghz(echo, ECHO_DATA, seconds=1.0)
        await ghz(run, _run_data(workflow_id), seconds=1.0)
        await ghz(run_batch, batch_data, concurrency=BATCH_CONCURRENCY, total=4)
        await _raw_insert_enqueue(env, workflow_id, 0.5)
        for _ in range(rounds):
            base = await ghz(echo, ECHO_DATA, seconds=seconds)
            mine = await ghz(run, _run_data(workflow_id), seconds=seconds)
            raw_rate, raw_ms, raw_cpu_us = await _raw_insert_enqueue(env, workflow_id, seconds)
            many = await ghz(run_batch, batch_data, concurrency=BATCH_CONCURRENCY, seconds=seconds)
            vs_echo.baseline.append(base.ok_per_s)
            vs_echo.ours.append(mine.ok_per_s)
            vs_raw.baseline.append(raw_rate)
            vs_raw.ours.append(mine.ok_per_s)
            latency.baseline += sampled(raw_ms)
            latency.ours += sampled(mine.ok_ms)
            batch.baseline.append(mine.ok_per_s)
            batch.ours.append(many.ok_per_s * BATCH)
            cpu.baseline.append(base.cpu_us_per_request)
            cpu.ours.append(mine.cpu_us_per_request)
            cpu_batch.baseline.append(mine.cpu_us_per_request)
            cpu_batch.ours.append(many.cpu_us_per_request / BATCH)
            raw_cpu.append(raw_cpu_us)
            for name, r in (("RunWorkflow", mine), ("Batch", many)):
                if r.ok != r.count:
                    vs_echo.notes += f" {name} non-OK: {_status_note(r)};"
    _measured_capacity[:] = [statistics.median(vs_echo.ours)]
    vs_echo.notes = (
        f"ghz {GHZ_VERSION}, {CONNECTIONS} connection, {seconds:g} s per round, "
        f"{rounds} round(s); no workers (commit + enqueue only);{vs_echo.notes}"
    )
    vs_raw.notes = (
        f"raw: {CONCURRENCY} asyncio callers in the bench process, asyncpg pool of 20, one "
        "INSERT (autocommit) + RQ-shaped HSET/RPUSH pipeline per op; "
        f"its CPU {statistics.median(raw_cpu):.0f} us/op (bench process, client included)"
    )
    latency.notes = "baseline: the raw INSERT + enqueue's latency with as many callers"
    batch.notes = (
        f"ghz -c {BATCH_CONCURRENCY}, {BATCH} runs per call; baseline: RunWorkflow calls/s"
    )
    return [vs_echo, vs_raw, latency, batch, cpu, cpu_batch]


# S6: overload at a fixed rate of twice S2's capacity, against the same server without
# admission control.


async def _task_rows(conn: asyncpg.Connection, marker: str) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT input_value) AS d FROM tasks "
        "WHERE input_value LIKE $1",
        marker + "%",
    )
    assert row is not None
    return int(row["n"]), int(row["d"])


async def s6_overload(smoke: bool) -> list[Result]:
    rounds, seconds = (1, 4.0) if smoke else (3, 8.0)
    drain_timeout = 0.0 if smoke else 300.0  # smoke: no workers (they run ~10 tasks/s here)
    timeout_s = 5.0  # the callers' deadline
    ok_rate = Result(
        "S6",
        "overload: OK calls/s (admission vs none)",
        unit="calls/s",
        higher_is_better=True,
        target="~ capacity, none lost",
    )
    rss = Result(
        "S6",
        "overload: server RSS growth, MiB",
        unit="MiB",
        target="bounded (vs no admission)",
    )
    ok_latency = Result("S6", "overload: latency of OK calls", target="(reported)")
    refused = Result(
        "S6",
        "overload: RESOURCE_EXHAUSTED share",
        unit="%",
        higher_is_better=True,
        target="the excess, explicitly",
    )
    other = Result(
        "S6",
        "overload: other errors (DEADLINE/UNAVAILABLE..)",
        unit="calls",
        target="0",
    )
    lost = Result("S6", "overload: OK answers without a task row", unit="tasks", target="0")
    ghosts = Result(
        "S6",
        "overload: tasks written for calls that failed",
        unit="tasks",
        target="0 (caller cannot know)",
    )
    cpu = Result("S6", "overload: server CPU per call", unit="us", target="(reported)")
    notes: list[str] = []
    stack = await shared()
    env, workflow_id = stack.env, stack.workflow_id
    await empty_tasks(env)
    plain = await asyncio.to_thread(
        start_server_process,
        {**env.env, "SPARK_MAX_CONCURRENT_RPCS": "0"},
        env.workdir / "no-admission",
    )
    conn = await asyncpg.connect(_pg_dsn(env.env["SPARK_DATABASE_URL"]))
    try:
        limited = ours(env.server, "WorkflowService", "RunWorkflow")
        unlimited = ours(plain, "WorkflowService", "RunWorkflow")
        await ghz(limited, _run_data(workflow_id), seconds=1.0)
        await ghz(unlimited, _run_data(workflow_id), seconds=1.0)
        if _measured_capacity:
            capacity = _measured_capacity[0]
            notes.append(f"capacity {capacity:.0f}/s from S2 in this run")
        else:
            probe = await ghz(limited, _run_data(workflow_id), seconds=min(seconds, 3.0))
            capacity = probe.ok_per_s
            notes.append(f"capacity {capacity:.0f}/s (ghz -c {CONCURRENCY}, as S2)")
        rate = 2 * capacity
        for r in range(rounds):
            for label, target in (("admission", limited), ("none", unlimited)):
                marker = f"s6-{r}-{label}-"
                run = await ghz(
                    target,
                    _run_data(workflow_id, marker + "{{.RequestNumber}}"),
                    concurrency=CONCURRENCY,
                    connections=10,
                    seconds=seconds,
                    rps=rate,
                    open_loop=True,
                    timeout_s=timeout_s,
                    stop="wait",
                )
                rows, distinct = await _task_rows(conn, marker)
                exhausted = run.statuses.get("ResourceExhausted", 0)
                others = run.count - run.ok - exhausted
                mine = label == "admission"
                (ok_rate.ours if mine else ok_rate.baseline).append(run.ok_per_s)
                (rss.ours if mine else rss.baseline).append(run.rss_peak_mib - run.rss_start_mib)
                (ok_latency.ours if mine else ok_latency.baseline).extend(sampled(run.ok_ms))
                (refused.ours if mine else refused.baseline).append(
                    100 * exhausted / max(1, run.count)
                )
                (other.ours if mine else other.baseline).append(others)
                (lost.ours if mine else lost.baseline).append(max(0, run.ok - distinct))
                (ghosts.ours if mine else ghosts.baseline).append(max(0, distinct - run.ok))
                (cpu.ours if mine else cpu.baseline).append(run.cpu_us_per_request)
                notes.append(
                    f"r{r} {label}: sent {run.count} at {rate:.0f}/s -> {_status_note(run)}; "
                    f"{rows} rows ({distinct} distinct); RSS {run.rss_start_mib:.0f}->"
                    f"{run.rss_peak_mib:.0f} MiB; OK p99 {run.p(99):.0f} ms"
                )
                if others:
                    top = sorted(run.errors.items(), key=lambda kv: -kv[1])[:2]
                    notes.append(f"r{r} {label} errors: {top}")
        if drain_timeout:
            notes.append(await _drain(env, conn, drain_timeout))
        else:
            notes.append("smoke: accepted tasks not run (no workers)")
    finally:
        await conn.close()
        await asyncio.to_thread(plain.stop)
    for line in notes:
        print(f"  S6 {line}", flush=True)
    ok_rate.notes = "; ".join(notes)
    ok_rate.notes += (
        f"; ghz --async --rps 2x capacity, -c {CONCURRENCY}, 10 connections, {seconds:g} s, "
        f"deadline {timeout_s:g} s; baseline: a second server with SPARK_MAX_CONCURRENT_RPCS=0"
    )
    return [ok_rate, rss, ok_latency, refused, other, lost, ghosts, cpu]


async def _drain(env: Env, conn: asyncpg.Connection, timeout: float) -> str:
    """Cancels the baseline's tasks (only ours must all run), starts workers, waits until
    every task of ours is terminal, says how many succeeded."""
    await conn.execute(
        "UPDATE tasks SET state = 'CANCELLED' WHERE input_value LIKE 's6-%-none-%' "
        "AND state IN ('PENDING', 'QUEUED')"
    )
    worker = await asyncio.to_thread(
        start_worker_process, env.env, env.workdir / "drain", concurrency=2
    )
    t0 = time.monotonic()
    try:
        while True:
            rows = await conn.fetch(
                "SELECT state, count(*) AS n FROM tasks "
                "WHERE input_value LIKE 's6-%-admission-%' GROUP BY state"
            )
            states = {r["state"]: int(r["n"]) for r in rows}
            unfinished = sum(n for s, n in states.items() if s in ("PENDING", "QUEUED", "RUNNING"))
            if not unfinished or time.monotonic() - t0 > timeout:
                break
            await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(worker.stop)
    took = time.monotonic() - t0
    verdict = "all finished" if not unfinished else f"{unfinished} unfinished at the timeout"
    return f"ours run by 2 worker processes: {states} after {took:.0f} s ({verdict})"


# S7: GetTask and ListTasks with 1k vs 1M tasks stored (keyset pagination).

#: Copies a real task (made by RunWorkflow, so every column is valid) n times, spread over
#: 30 days, mostly finished: what a long-running install holds. 3% FAILED, 1% CANCELLED,
#: 1% QUEUED, and TIMED_OUT only for the 60 oldest tasks: a state whose rows are rare and
#: old, the worst case of a state filter walking the time index (the page holds 50 tasks
#: at 1k and at 1M alike, so the two sides do the same work but finding them).
FILL = """
INSERT INTO tasks (id, workflow_id, schedule_id, state, input_value, tweaks, output,
                   output_text, output_size_bytes, output_truncated, error, attempt,
                   max_attempts, retry_policy, timeout_s, next_attempt_time, worker_name,
                   job_id, context, last_sequence, create_time, start_time, finish_time,
                   update_time, webhook_url)
SELECT gen_random_uuid(), t.workflow_id, NULL,
       CASE WHEN g <= 60 THEN 'TIMED_OUT'  -- the 60 oldest: rare at 1M, a full page at 1k
            WHEN g % 100 < 94 THEN 'SUCCEEDED' WHEN g % 100 < 97 THEN 'FAILED'
            WHEN g % 100 < 98 THEN 'CANCELLED' WHEN g % 100 < 99 THEN 'SUCCEEDED'
            ELSE 'QUEUED' END,
       'input ' || g, '{}'::jsonb, jsonb_build_object('text', 'answer ' || g),
       'answer ' || g || repeat(' lorem ipsum', 8), 120, false,
       CASE WHEN g % 100 BETWEEN 94 AND 96
            THEN '{"kind": "SOURCE_ERROR", "message": "boom", "retryable": false}'::jsonb END,
       1, t.max_attempts, t.retry_policy, t.timeout_s, NULL, 'bench-worker',
       'spark-task-' || g, '{}'::jsonb, 4, ts, ts + interval '5 ms', ts + interval '80 ms',
       ts + interval '80 ms', ''
FROM tasks t,
     LATERAL generate_series($2::bigint, $3::bigint) AS g,
     LATERAL (SELECT now() - interval '30 days' * (1 - g::float8 / $4::bigint) AS ts) AS c
WHERE t.id = $1
"""


async def _fill(dsn: str, template_id: str, count: int) -> float:
    """Inserts count task rows in chunks, then VACUUM ANALYZE. Returns the seconds taken."""
    conn = await asyncpg.connect(dsn)
    t0 = time.perf_counter()
    try:
        chunk = 200_000
        for start in range(1, count + 1, chunk):
            await conn.execute(
                FILL, uuid.UUID(template_id), start, min(count, start + chunk - 1), count
            )
        await conn.execute("VACUUM ANALYZE tasks")
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def _workflow_on(stubs: Stubs, source_url: str) -> str:
    source = await stubs.sources.CreateSource(
        source_service_pb2.CreateSourceRequest(
            source=source_pb2.Source(
                display_name="bench", type=source_pb2.SOURCE_TYPE_LANGFLOW, url=source_url
            )
        )
    )
    wf = await stubs.workflows.ImportWorkflow(
        workflow_service_pb2.ImportWorkflowRequest(
            source_id=source.source.id, remote_flow_id=fake_data.FLOW_ECHO
        )
    )
    return wf.workflow.id


@dataclass
class _Store:
    """One database of the S7 comparison, its server and the requests to send it."""

    label: str
    server: ServerProcess
    dsn: str
    workflow_id: str = ""
    get_data: list[dict[str, str]] = field(default_factory=list)
    deep_token: str = ""
    deep_first_id: str = ""
    deep_position: tuple[Any, Any] = (None, None)


#: The filters ListTasks fingerprints into its page tokens, for a request without any.
_NO_FILTERS: dict[str, Any] = {
    "workflow_id": "",
    "schedule_id": "",
    "states": [],
    "after": "",
    "before": "",
}


async def _prepare_store(store: _Store, keys: str, count: int) -> float:
    """Fills a store's database and picks the requests: 200 random task ids, and a page
    token half-way through the list (made the way the server makes them)."""
    async with grpc.aio.insecure_channel(store.server.address) as channel:
        stubs = Stubs(channel)
        template = await stubs.workflows.RunWorkflow(
            workflow_service_pb2.RunWorkflowRequest(workflow_id=store.workflow_id)
        )
    took = await _fill(store.dsn, template.task.id, count)
    conn = await asyncpg.connect(store.dsn)
    try:
        ids = await conn.fetch(
            "SELECT id FROM tasks TABLESAMPLE BERNOULLI ($1) LIMIT 200",
            min(100.0, 100.0 * 400 / max(1, count)),
        )
        store.get_data = [{"id": str(r["id"])} for r in ids]
        middle = await conn.fetch(
            "SELECT id, create_time FROM tasks ORDER BY create_time DESC, id DESC "
            "OFFSET $1 LIMIT 2",
            count // 2,
        )
    finally:
        await conn.close()
    tokens = PageTokens(SecretBox([k for k in keys.split(",") if k]))
    position = [middle[0]["create_time"].isoformat(), str(middle[0]["id"])]
    store.deep_token = tokens.encode("tasks", _NO_FILTERS, position)
    store.deep_first_id = str(middle[1]["id"])
    store.deep_position = (middle[0]["create_time"], middle[0]["id"])
    return took


#: The queries TaskService.GetTask / ListTasks and WorkflowService.GetWorkflow issue (see
#: spark_grpc/services/tasks.py and workflows.py), with named parameters.
_LIST = f"SELECT {TASK_COLUMNS} FROM tasks WHERE TRUE"
_ORDER = " ORDER BY create_time DESC, id DESC LIMIT 51"
_DEEP = " AND (create_time, id) < (:pos_time, :pos_id)"
EXPLAINED = {
    "GetTask": f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = :id",
    "ListTasks first page": _LIST + _ORDER,
    "ListTasks deep page": _LIST + _DEEP + _ORDER,
    "ListTasks workflow_id deep": _LIST + " AND workflow_id = :workflow_id" + _DEEP + _ORDER,
    "ListTasks states=[FAILED]": _LIST + " AND state = ANY('{FAILED}')" + _ORDER,
    "ListTasks states=[RUNNING]": _LIST + " AND state = ANY('{RUNNING}')" + _ORDER,
    "ListTasks states=[TIMED_OUT] (rare, old)": _LIST + " AND state = ANY('{TIMED_OUT}')" + _ORDER,
    "ListTasks states=[FAILED,TIMED_OUT] deep": (
        _LIST + " AND state = ANY('{FAILED,TIMED_OUT}')" + _DEEP + _ORDER
    ),
    "GetWorkflow stats (workflow_stats)": (
        "SELECT w.id, "
        "(SELECT t.state FROM tasks t WHERE t.workflow_id = w.id "
        " ORDER BY t.create_time DESC, t.id DESC LIMIT 1) AS latest, "
        "(SELECT count(*) FROM tasks t WHERE t.workflow_id = w.id) AS total, "
        "(SELECT count(*) FROM tasks t WHERE t.workflow_id = w.id "
        " AND t.state IN ('FAILED', 'TIMED_OUT')) AS failed "
        "FROM unnest(ARRAY[:workflow_id]::uuid[]) AS w(id)"
    ),
}


def _positional(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """:name parameters as asyncpg's $n."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<!:):([a-z_]+)", number, sql), [params[n] for n in names]


async def explain(dsn: str, params: dict[str, Any]) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of each read, with its parameters bound."""
    conn = await asyncpg.connect(dsn)
    plans: dict[str, str] = {}
    try:
        params = {"id": await conn.fetchval("SELECT id FROM tasks LIMIT 1"), **params}
        for name, sql in EXPLAINED.items():
            query, args = _positional(sql, params)
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {query}", *args)
            plans[name] = "\n".join(r[0] for r in rows)
    finally:
        await conn.close()
    return plans


def _plan_verdict(plan: str) -> str:
    time_ms = re.search(r"Execution Time: ([\d.]+) ms", plan)
    scans = sorted(
        set(re.findall(r"(Seq Scan|Index Only Scan|Index Scan|Bitmap Heap Scan|Sort)", plan))
    )
    removed = sum(int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan))
    return f"{time_ms.group(1) if time_ms else '?'} ms, {'+'.join(scans)}" + (
        f", {removed} rows filtered out" if removed else ""
    )


async def s7_list_get(smoke: bool) -> list[Result]:
    big_count = 10_000 if smoke else 1_000_000
    small_count = 1_000
    rounds, calls = (1, 40) if smoke else (3, 300)
    results = {
        "get": Result(
            "S7", f"GetTask latency, {big_count:,} vs {small_count:,} stored", target="<= 1.5x"
        ),
        "first": Result("S7", "ListTasks first page (50) latency", target="<= 1.5x"),
        "deep": Result("S7", "ListTasks deep page (50) via page_token", target="<= 1.5x"),
        "rare": Result("S7", "ListTasks states=[TIMED_OUT] (rare, old)", target="<= 1.5x"),
        "workflow": Result("S7", "GetWorkflow latency (task stats)", target="(reported)"),
    }
    stack = await shared()
    env = stack.env
    await empty_tasks(env)
    small_server_task = asyncio.create_task(_small_server(env))
    small_server: ServerProcess | None = None
    try:
        big = _Store("big", env.server, _pg_dsn(env.env["SPARK_DATABASE_URL"]), stack.workflow_id)
        keys = env.env["SPARK_ENCRYPTION_KEYS"]
        fill_s = await _prepare_store(big, keys, big_count)
        print(f"  S7 inserted {big_count:,} tasks in {fill_s:.1f} s", flush=True)
        small_server, small_url = await small_server_task
        small = _Store("small", small_server, _pg_dsn(small_url))
        async with grpc.aio.insecure_channel(small_server.address) as channel:
            small.workflow_id = await _workflow_on(Stubs(channel), env.fake.url("langflow"))
        await _prepare_store(small, keys, small_count)
        plans = await explain(
            big.dsn,
            {
                "workflow_id": uuid.UUID(big.workflow_id),
                "pos_time": big.deep_position[0],
                "pos_id": big.deep_position[1],
            },
        )
        for name, plan in plans.items():
            print(f"  S7 EXPLAIN {name}: {_plan_verdict(plan)}", flush=True)
        _write_plans(plans, big_count)

        def requests(s: _Store) -> dict[str, tuple[Target, Any, int]]:
            """What to call, with what, how many times per round."""
            list_tasks = ours(s.server, "TaskService", "ListTasks")
            return {
                "get": (ours(s.server, "TaskService", "GetTask"), s.get_data, calls),
                "first": (list_tasks, {"page_size": 50}, calls),
                "deep": (list_tasks, {"page_size": 50, "page_token": s.deep_token}, calls),
                "rare": (
                    list_tasks,
                    {"page_size": 50, "states": ["TASK_STATE_TIMED_OUT"]},
                    calls // 2,
                ),
                # Counts the workflow's tasks: slow at 1M, so fewer calls.
                "workflow": (
                    ours(s.server, "WorkflowService", "GetWorkflow"),
                    {"id": s.workflow_id},
                    calls // 10,
                ),
            }

        await _check_deep_page(big)
        await _check_deep_page(small)
        cpu: dict[str, list[float]] = {"big": [], "small": []}
        for s in (small, big):  # warm both servers and caches up
            for target, data, n in requests(s).values():
                await ghz(target, data, concurrency=1, total=max(5, n // 10))
        for _ in range(rounds):
            for s in (small, big):
                for key, (target, data, n) in requests(s).items():
                    run = await ghz(target, data, concurrency=1, total=n)
                    if run.ok != run.count:
                        raise RuntimeError(f"S7 {key} on {s.label}: {_status_note(run)}")
                    result = results[key]
                    (result.ours if s is big else result.baseline).extend(run.ok_ms)
                    cpu[s.label].append(run.cpu_us_per_request)
    finally:
        if small_server is None:
            small_server_task.cancel()
            with suppress(BaseException):
                small_server, _ = await small_server_task
        if small_server is not None:
            await asyncio.to_thread(small_server.stop)
        await empty_tasks(env)
    verdicts = "; ".join(f"{k}: {_plan_verdict(v)}" for k, v in plans.items())
    results["get"].notes = (
        f"ghz -c 1, {calls} calls per round, {rounds} round(s), small/big alternating; "
        f"ours = {big_count:,} rows (filled in {fill_s:.0f} s), baseline = {small_count:,}; "
        f"task_events not filled: GetTask/ListTasks never read them; "
        f"server CPU/call big {statistics.median(cpu['big']):.0f} us vs small "
        f"{statistics.median(cpu['small']):.0f} us"
    )
    results["first"].notes = f"EXPLAIN ANALYZE at {big_count:,}: {verdicts}"
    results["deep"].notes = "token made with the server's key at row count/2"
    results["workflow"].notes = "GetWorkflow counts the workflow's tasks (workflow_stats)"
    return list(results.values())


async def _small_server(env: Env) -> tuple[ServerProcess, str]:
    """A second server on a database of its own in the same Postgres (for the 1k side)."""
    name = f"spark_small_{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(env.stack.postgres.create_database, name)
    url = env.stack.postgres.url.rsplit("/", 1)[0] + f"/{name}"
    small_env = {**env.env, "SPARK_DATABASE_URL": url}
    migrate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spark_grpc",
        "migrate",
        env={**os.environ, **small_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await migrate.communicate()
    if migrate.returncode:
        raise RuntimeError(f"migrate failed: {err.decode()[-2000:]}")
    server = await asyncio.to_thread(start_server_process, small_env, env.workdir / name)
    return server, url


async def _check_deep_page(s: _Store) -> None:
    """The crafted token is accepted and starts where it should."""
    from spark_grpc._gen.spark.v1 import task_service_pb2

    async with grpc.aio.insecure_channel(s.server.address) as channel:
        page = await Stubs(channel).tasks.ListTasks(
            task_service_pb2.ListTasksRequest(page_size=50, page_token=s.deep_token)
        )
    if not page.tasks or page.tasks[0].id != s.deep_first_id:
        raise RuntimeError(f"S7 deep page on {s.label} starts at the wrong row")


def _write_plans(plans: dict[str, str], count: int) -> None:
    path = Path(tempfile.gettempdir()) / f"spark-bench-s7-plans-{count}.txt"
    path.write_text("\n\n".join(f"== {k}\n{v}" for k, v in plans.items()))
    print(f"  S7 plans written to {path}", flush=True)


__all__ = ["s1_get_task", "s2_run_workflow", "s6_overload", "s7_list_get"]
