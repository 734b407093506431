"""Helpers shared by the tests: a real server process, stubs, and status-detail readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
import redis
from google.rpc import error_details_pb2, status_pb2
from rq import Worker

from spark_grpc._gen.spark.v1 import (
    schedule_service_pb2_grpc,
    source_service_pb2_grpc,
    task_service_pb2_grpc,
    workflow_service_pb2_grpc,
)


@dataclass
class ServerProcess:
    """A `spark-grpc serve` child process."""

    process: subprocess.Popen[bytes]
    address: str
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server_process(
    env: dict[str, str], workdir: Path, *, listen: str = "127.0.0.1:0", timeout: float = 30
) -> ServerProcess:
    """Starts `python -m spark_grpc serve` and waits until it reports its address."""
    ready = workdir / "ready"
    ready.unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "spark_grpc", "serve", "--ready-file", str(ready)],
            env={**os.environ, **env, "SPARK_LISTEN_ADDRESS": listen},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while not ready.exists() or not ready.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    return ServerProcess(process, ready.read_text().strip(), log_path)


@dataclass
class WorkerProcess:
    """A `spark-grpc worker` supervisor and its RQ worker processes."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def children(self) -> list[psutil.Process]:
        return [
            p
            for p in psutil.Process(self.process.pid).children()
            if "worker-process" in " ".join(p.cmdline())
        ]

    def stop(self, timeout: float = 40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                for child in self.children():
                    child.kill()
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker_process(
    env: dict[str, str], workdir: Path, *, concurrency: int = 2, extra: list[str] | None = None
) -> WorkerProcess:
    """Starts `python -m spark_grpc worker` and waits until its RQ workers registered."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "worker.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spark_grpc",
                "worker",
                "--concurrency",
                str(concurrency),
                *(extra or []),
            ],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, log_path)
    deadline = time.monotonic() + 30
    # Ready when RQ lists the supervisor's workers (names are host.supervisor_pid.slot).
    connection = redis.Redis.from_url(env["SPARK_REDIS_URL"])
    try:
        while (
            len(worker.children()) < concurrency
            or sum(f".{process.pid}." in w.name for w in Worker.all(connection=connection))
            < concurrency
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                worker.stop()
                raise RuntimeError(f"workers did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
    finally:
        connection.close()
    return worker


@dataclass
class SchedulerProcess:
    """A `spark-grpc scheduler` child process."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_scheduler_process(
    env: dict[str, str], workdir: Path, *, timeout: float = 30
) -> SchedulerProcess:
    """Starts `python -m spark_grpc scheduler` and waits for its "scheduler started" line."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "scheduler.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "spark_grpc", "scheduler"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    scheduler = SchedulerProcess(process, log_path)
    deadline = time.monotonic() + timeout
    while "scheduler started" not in log_path.read_bytes()[start:].decode(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            scheduler.stop()
            raise RuntimeError(f"scheduler did not start:\n{scheduler.log()}")
        time.sleep(0.05)
    return scheduler


class Stubs:
    """The generated stubs of every spark.v1 service on one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.sources = source_service_pb2_grpc.SourceServiceStub(channel)
        self.workflows = workflow_service_pb2_grpc.WorkflowServiceStub(channel)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        self.schedules = schedule_service_pb2_grpc.ScheduleServiceStub(channel)


def status_details(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a server sent in grpc-status-details-bin."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no status details in {err!r}")


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for any_ in status_details(err).details:
        info = error_details_pb2.ErrorInfo()
        if any_.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


def field_violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """field -> description of every BadRequest violation."""
    for any_ in status_details(err).details:
        bad = error_details_pb2.BadRequest()
        if any_.Unpack(bad):
            return {v.field: v.description for v in bad.field_violations}
    return {}


async def expect_error(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Awaits call and returns its error, asserting the status code."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
        return err
    raise AssertionError(f"expected {code.name}, the call succeeded")


def rq_worker_processes(redis_url: str) -> list[psutil.Process]:
    """Live `spark-grpc worker-process` processes that serve ``redis_url``, whichever
    supervisor started them (other test sessions on the machine use other Redis servers)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "worker-process" not in (proc.info["cmdline"] or []):
            continue
        try:
            if proc.environ().get("SPARK_REDIS_URL") == redis_url and proc.is_running():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def rq_worker_process_named(name: str) -> psutil.Process | None:
    """The live `spark-grpc worker-process --name <name>` process, if any."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if (
            "worker-process" in cmdline
            and "--name" in cmdline
            and cmdline[cmdline.index("--name") + 1 :][:1] == [name]
        ):
            return proc
    return None
