"""``make bench``: scenarios of ../shared/reference/performance.md, each against a baseline
measured in the same run, alternating A/B rounds. Prints a table of ratios, writes JSON and
a PNG chart. Never fails on a number.

    python -m bench.run [--smoke] [--out bench/results]
"""

from __future__ import annotations

import os

# The embedded Postgres and Redis are started from this process, which also holds gRPC
# channels: gRPC's fork handlers in the child (before exec) crashed redis-server's start
# with SIGABRT during S8. Set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import json
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import redis
import redis.asyncio as aioredis
from rq import Queue
from sqlalchemy import text

from bench.harness import Env, Result, echo_workflow, pct, service, versions
from bench.peer_temporal import s8_temporal
from bench.rpc_load import s1_get_task, s2_run_workflow, s6_overload, s7_list_get
from spark_grpc._gen.spark.v1 import (
    schedule_pb2,
    schedule_service_pb2,
    task_service_pb2,
    workflow_service_pb2,
)

ROOT = Path(__file__).resolve().parents[1]


# S3: RunWorkflow -> job start, against bare RQ enqueue -> start (same worker class).


async def _ours_dispatch(env: Env, workflow_id: str, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        t0 = time.time()
        run = await env.stubs.workflows.RunWorkflow(
            workflow_service_pb2.RunWorkflowRequest(workflow_id=workflow_id, input_value="x")
        )
        while True:
            task = (
                await env.stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(id=run.task.id))
            ).task
            if task.state == 4:  # SUCCEEDED
                break
            await asyncio.sleep(0.002)
        latencies.append((task.start_time.ToDatetime(tzinfo=UTC).timestamp() - t0) * 1000)
    return latencies


def _bare_dispatch(queue: Queue, conn: redis.Redis, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        key = f"bench:start:{i}:{time.time_ns()}"
        t0 = time.time()
        queue.enqueue("bench.jobs.record_start", key, result_ttl=0)
        while (value := conn.get(key)) is None:
            time.sleep(0.0005)
        latencies.append((float(value) - t0) * 1000)
    return latencies


def _start_bare_worker(env: Env, queue_name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            "--worker-class",
            "rq.worker.SimpleWorker",
            "--url",
            env.env["SPARK_REDIS_URL"],
            "--quiet",
            queue_name,
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _ours_throughput(env: Env, workflow_id: str, n: int) -> float:
    t0 = time.time()
    await env.stubs.workflows.BatchRunWorkflows(
        workflow_service_pb2.BatchRunWorkflowsRequest(
            requests=[
                workflow_service_pb2.RunWorkflowRequest(workflow_id=workflow_id, input_value="x")
            ]
            * n
        )
    )
    import asyncpg

    conn = await asyncpg.connect(env.env["SPARK_DATABASE_URL"].replace("+asyncpg", ""))
    try:
        while (
            await conn.fetchval(
                "SELECT count(*) FROM tasks WHERE state NOT IN ('SUCCEEDED','FAILED')"
            )
            > 0
        ):
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    return n / (time.time() - t0)


def _bare_throughput(queue: Queue, conn: redis.Redis, n: int) -> float:
    key = f"bench:count:{time.time_ns()}"
    t0 = time.time()
    with conn.pipeline() as pipe:
        queue.enqueue_many(
            [Queue.prepare_data("bench.jobs.count", args=(key,), result_ttl=0) for _ in range(n)],
            pipeline=pipe,
        )
        pipe.execute()
    while int(conn.get(key) or 0) < n:
        time.sleep(0.002)
    return n / (time.time() - t0)


async def s3_dispatch(smoke: bool) -> list[Result]:
    rounds, n, batch = (1, 5, 20) if smoke else (3, 40, 200)
    latency = Result(
        "S3", "RunWorkflow -> job start (idle worker)", target="p50 within 2 ms of bare RQ"
    )
    rate = Result(
        "S3",
        "tasks/s, 1 worker process",
        unit="tasks/s",
        higher_is_better=True,
        target=">= 0.7x bare RQ",
    )
    async with service(workers=1) as env:
        workflow_id = await echo_workflow(env)
        conn = redis.Redis.from_url(env.env["SPARK_REDIS_URL"])
        queue = Queue("bench-baseline", connection=conn)
        bare = _start_bare_worker(env, "bench-baseline")
        try:
            await asyncio.to_thread(_bare_dispatch, queue, conn, 3)  # warm up both sides
            await _ours_dispatch(env, workflow_id, 3)
            for _ in range(rounds):
                latency.ours += await _ours_dispatch(env, workflow_id, n)
                latency.baseline += await asyncio.to_thread(_bare_dispatch, queue, conn, n)
                rate.ours.append(await _ours_throughput(env, workflow_id, batch))
                rate.baseline.append(await asyncio.to_thread(_bare_throughput, queue, conn, batch))
        finally:
            bare.terminate()
            bare.wait()
            conn.close()
    latency.notes = "ours: gRPC + Postgres commit + enqueue + claim; bare: enqueue + a no-op job"
    rate.notes = (
        "ours: a real HTTP call to the echo source and 3 commits per task, 1 process with "
        "the default SPARK_WORKER_SLOTS; bare: a no-op job, one at a time"
    )
    return [latency, rate]


# S4: event -> client latency, against raw Redis publish -> subscribe.


async def _raw_pubsub(url: str, n: int) -> list[float]:
    sub_client = aioredis.Redis.from_url(url)
    pub_client = aioredis.Redis.from_url(url)
    latencies: list[float] = []
    async with sub_client.pubsub() as pubsub:
        await pubsub.subscribe("bench:raw")
        await pubsub.get_message(timeout=1)

        async def publish() -> None:
            for _ in range(n):
                await pub_client.publish("bench:raw", json.dumps({"t": time.time()}))
                await asyncio.sleep(0.002)

        task = asyncio.create_task(publish())
        while len(latencies) < n:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            if message:
                latencies.append((time.time() - json.loads(message["data"])["t"]) * 1000)
        await task
    await sub_client.aclose()
    await pub_client.aclose()
    return latencies


async def _ours_events(env: Env, workflow_id: str, words: int) -> list[float]:
    # Tokens 2 ms apart, like the baseline's publishes: latency, not a burst's queueing.
    env.fake.state.configure("langflow", delay_s=0, token_delay_s=0.002)
    run = await env.stubs.workflows.RunWorkflow(
        workflow_service_pb2.RunWorkflowRequest(
            workflow_id=workflow_id, input_value=" ".join(f"w{i}" for i in range(words))
        )
    )
    latencies = []
    started = False
    async for message in env.stubs.tasks.WatchTask(
        task_service_pb2.WatchTaskRequest(task_id=run.task.id)
    ):
        if not message.HasField("event"):
            continue
        event = message.event
        if event.HasField("state_change") and event.state_change.to_state == 3:
            started = True  # live events from here on
        elif started:
            latencies.append(
                (time.time() - event.event_time.ToDatetime(tzinfo=UTC).timestamp()) * 1000
            )
    return latencies


async def s4_events(smoke: bool) -> list[Result]:
    rounds, n = (1, 20) if smoke else (3, 200)
    result = Result("S4", "event -> client latency", target="p50 within 1 ms of raw Redis pub/sub")
    async with service(workers=1) as env:
        workflow_id = await echo_workflow(env)
        for _ in range(rounds):
            result.ours += await _ours_events(env, workflow_id, n)
            result.baseline += await _raw_pubsub(env.env["SPARK_REDIS_URL"], n)
    result.notes = (
        "ours: from the event row's time (in the worker's transaction) to the client; "
        "tokens paced 2 ms apart on both sides"
    )
    return [result]


# S5: fan-out msg/s, against a raw grpc.aio stream of precomputed messages.


async def _fanout(address: str, method: str, request: bytes, watchers: int) -> float:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_stream(method)

        async def one() -> int:
            count = 0
            async for _ in call(request):
                count += 1
            return count

        t0 = time.time()
        counts = await asyncio.gather(*(one() for _ in range(watchers)))
        return sum(counts) / (time.time() - t0)


async def s5_fanout(smoke: bool) -> list[Result]:
    levels = [1, 10] if smoke else [1, 10, 100]
    words = 200 if smoke else 2000
    results = []
    async with service(workers=1) as env:
        workflow_id = await echo_workflow(env)
        run = await env.stubs.workflows.RunWorkflow(
            workflow_service_pb2.RunWorkflowRequest(
                workflow_id=workflow_id, input_value=" ".join(f"w{i}" for i in range(words))
            )
        )
        async for _ in env.stubs.tasks.WatchTask(
            task_service_pb2.WatchTaskRequest(task_id=run.task.id)
        ):
            pass  # wait for the end
        events = await env.stubs.tasks.ListTaskEvents(
            task_service_pb2.ListTaskEventsRequest(task_id=run.task.id, page_size=1000)
        )
        sample = task_service_pb2.WatchTaskResponse(event=events.events[len(events.events) // 2])
        total = (
            await env.stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(id=run.task.id))
        ).task.last_event_sequence
        raw = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.raw_stream",
                str(total),
                sample.SerializeToString().hex(),
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
        )
        assert raw.stdout is not None
        raw_address = raw.stdout.readline().decode().strip()
        try:
            ours_req = task_service_pb2.WatchTaskRequest(task_id=run.task.id).SerializeToString()
            for level in levels:
                result = Result(
                    "S5",
                    f"fan-out msg/s, {level} watcher(s)",
                    unit="msg/s",
                    higher_is_better=True,
                    target=">= 0.5x raw at 100 watchers",
                )
                for _ in range(1 if smoke else 3):
                    result.ours.append(
                        await _fanout(
                            env.server.address, "/spark.v1.TaskService/WatchTask", ours_req, level
                        )
                    )
                    result.baseline.append(
                        await _fanout(raw_address, "/bench.Raw/Stream", b"", level)
                    )
                result.notes = "ours replays a finished task's log from Postgres to every watcher"
                results.append(result)
        finally:
            raw.terminate()
            raw.wait()
    return results


# Schedules: fire-time lateness with 1,000 active schedules (absolute goal: p99 < 1 s).


async def lateness(smoke: bool) -> list[Result]:
    count, seconds = (50, 6) if smoke else (1000, 30)
    result = Result("L", f"schedule fire lateness, {count} active schedules", target="p99 < 1 s")
    async with service(workers=0) as env:
        workflow_id = await echo_workflow(env)
        for i in range(count):
            spec = schedule_pb2.ScheduleSpec(interval=schedule_pb2.IntervalSpec())
            spec.interval.interval.FromSeconds(10)
            spec.interval.phase.FromMilliseconds(int(i * 10_000 / count))
            await env.stubs.schedules.CreateSchedule(
                schedule_service_pb2.CreateScheduleRequest(
                    schedule=schedule_pb2.Schedule(
                        workflow_id=workflow_id, spec=spec, input_value="x"
                    )
                )
            )
        from tests.support import start_scheduler_process

        scheduler = (
            await asyncio.to_thread(
                start_scheduler_process,
                {**env.env, "SPARK_LOG_LEVEL": "INFO"},
                env.workdir / "sched",
            )
        ).process
        ready = time.time() + 1.0  # fires due before the scheduler ran are catch-up, not lateness
        await asyncio.sleep(seconds)
        scheduler.terminate()
        scheduler.wait()
        import asyncpg

        conn = await asyncpg.connect(env.env["SPARK_DATABASE_URL"].replace("+asyncpg", ""))
        try:
            rows = await conn.fetch(
                "SELECT extract(epoch FROM create_time - (context->>'nominal_fire_time')::timestamptz) AS late "
                "FROM tasks WHERE schedule_id IS NOT NULL "
                "AND (context->>'nominal_fire_time')::timestamptz > to_timestamp($1)",
                ready,
            )
        finally:
            await conn.close()
        result.ours = [float(r["late"]) * 1000 for r in rows]
        result.notes = f"{len(rows)} fires in {seconds} s; no baseline: the goal is absolute"
    return [result]


# The event loop, both ways: the same server on uvloop and on asyncio's own loop.


async def _rps(address: str, method: str, request: bytes, callers: int, n: int) -> float:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method)

        async def caller() -> None:
            for _ in range(n // callers):
                await call(request)

        await caller()  # warm up this channel
        t0 = time.time()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return n / (time.time() - t0)


async def event_loops(smoke: bool) -> list[Result]:
    from tests.support import start_server_process

    rounds, n = (1, 200) if smoke else (3, 2000)
    get = Result(
        "UV",
        "GetTask RPS, uvloop / asyncio loop",
        unit="req/s",
        higher_is_better=True,
        target="measure both ways",
    )
    run = Result(
        "UV",
        "RunWorkflow RPS, uvloop / asyncio loop",
        unit="req/s",
        higher_is_better=True,
        target="measure both ways",
    )
    async with service(workers=0, extra_env={"SPARK_EVENT_LOOP": "uvloop"}) as env:
        workflow_id = await echo_workflow(env)
        plain = await asyncio.to_thread(
            start_server_process,
            {**env.env, "SPARK_EVENT_LOOP": "asyncio"},
            env.workdir / "asyncio-server",
        )
        try:
            run_req = workflow_service_pb2.RunWorkflowRequest(
                workflow_id=workflow_id, input_value="x"
            )
            task = await env.stubs.workflows.RunWorkflow(run_req)
            get_req = task_service_pb2.GetTaskRequest(id=task.task.id).SerializeToString()
            for _ in range(rounds):
                for result, method, body in (
                    (get, "/spark.v1.TaskService/GetTask", get_req),
                    (run, "/spark.v1.WorkflowService/RunWorkflow", run_req.SerializeToString()),
                ):
                    result.ours.append(await _rps(env.server.address, method, body, 20, n))
                    result.baseline.append(await _rps(plain.address, method, body, 20, n))
        finally:
            await asyncio.to_thread(plain.stop)
    for result in (get, run):
        result.notes = "ours: SPARK_EVENT_LOOP=uvloop; baseline: asyncio; 20 callers"
    return [get, run]


SCENARIOS = {"s3": s3_dispatch, "s4": s4_events, "s5": s5_fanout, "lateness": lateness}
# RPC load with ghz: S1 GetTask, S2 RunWorkflow, S6 overload, S7 1k vs 1M (bench/rpc_load.py)
SCENARIOS.update(s1=s1_get_task, s2=s2_run_workflow, s6=s6_overload, s7=s7_list_get)
SCENARIOS["uvloop"] = event_loops
SCENARIOS["s8"] = s8_temporal  # Temporal's dev server as a peer (bench/peer_temporal.py)


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'id':<4} {'metric':<46} {'ours p50':>10} {'ours p99':>10} {'base p50':>10} {'base p99':>10} {'ratio':>7}  target",
    ]
    for r in rows:
        lines.append(
            f"{r['scenario']:<4} {r['metric'][:46]:<46} {r['ours_p50']:>10.2f} {r['ours_p99']:>10.2f} "
            f"{r['baseline_p50']:>10.2f} {r['baseline_p99']:>10.2f} {r['ratio']:>7.2f}  {r['target']}"
        )
    return "\n".join(lines)


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["ratio"] == r["ratio"]]  # not NaN
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.5 * len(shown)))
    labels = [f"{r['scenario']} {r['metric'][:40]}" for r in shown]
    ax.barh(
        labels,
        [r["ratio"] for r in shown],
        color=["tab:green" if r["higher_is_better"] else "tab:blue" for r in shown],
    )
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")  # ratios from 0.05 to 100 stay readable
    ax.set_xlabel("ours / baseline (p50); green: higher is better, blue: lower is better")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=sorted(SCENARIOS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    results: list[Result] = []
    crashed: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = "smoke" if args.smoke else "latest"
    for name in args.only:
        print(f"running {name} ...", flush=True)
        try:
            results += await SCENARIOS[name](args.smoke)
        except Exception:  # report the others; a crash still fails the run at the end
            traceback.print_exc()
            crashed.append(name)
        _write(args.out, stamp, results)  # a later crash keeps what was measured
    print(_table([r.summary() for r in results]))
    _write(args.out, stamp, results)
    _chart([r.summary() for r in results], args.out / f"{stamp}.png")
    print(f"wrote {args.out / (stamp + '.json')} and .png; versions: {versions()}")
    if crashed:
        sys.exit(f"scenarios that crashed (not a number: a bug): {', '.join(crashed)}")


def _write(out: Path, stamp: str, results: list[Result]) -> None:
    rows = [r.summary() for r in results]
    payload = {
        "time": datetime.now(UTC).isoformat(),
        "versions": versions(),
        "results": rows,
        "samples": {
            f"{r.scenario} {r.metric}": {"ours": r.ours, "baseline": r.baseline} for r in results
        },
    }
    (out / f"{stamp}.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    asyncio.run(main())


__all__ = ["pct", "text"]
