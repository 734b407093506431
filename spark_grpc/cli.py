"""``spark-grpc``: the service's processes and admin commands.

This is the only place that configures logging; every command reads Settings once from
the environment and passes them on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from cryptography.fernet import Fernet
from pydantic import ValidationError

from spark_grpc.config import Settings
from spark_grpc.errors import ConfigurationError
from spark_grpc.logs import configure_logging

logger = logging.getLogger("spark_grpc.cli")

app = typer.Typer(
    name="spark-grpc",
    help="spark-grpc: workflow orchestration with a gRPC API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _settings(process: str) -> Settings:
    try:
        settings = Settings()
    except ValidationError as err:
        typer.echo(f"spark-grpc {process}: invalid setting: {err}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format, process)
    return settings


def _database_url(settings: Settings, process: str) -> str:
    if not settings.database_url:
        typer.echo(
            f"spark-grpc {process}: SPARK_DATABASE_URL is not set. Point it at Postgres "
            "(postgresql+asyncpg://user:password@host:5432/db), or run `spark-grpc dev` "
            "to start everything on an embedded Postgres and Redis.",
            err=True,
        )
        raise typer.Exit(2)
    return settings.database_url


@app.command()
def serve(
    ready_file: Annotated[
        Path | None, typer.Option(help="Write host:port here once serving (for scripts).")
    ] = None,
) -> None:
    """Run the gRPC server (SPARK_DATABASE_URL, SPARK_REDIS_URL, SPARK_ENCRYPTION_KEYS)."""
    settings = _settings("serve")
    database_url = _database_url(settings, "serve")
    _redis_url(settings, "serve")
    from spark_grpc.server import serve as run_server

    try:
        asyncio.run(run_server(settings, database_url, ready_file=ready_file))
    except ConfigurationError as err:
        typer.echo(f"spark-grpc serve: {err.message}", err=True)
        raise typer.Exit(2) from None


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations to SPARK_DATABASE_URL."""
    settings = _settings("migrate")
    from spark_grpc.db.migrate import upgrade

    upgrade(_database_url(settings, "migrate"), revision)
    logger.info("database migrated to %s", revision)


def _redis_url(settings: Settings, process: str) -> str:
    if not settings.redis_url:
        typer.echo(
            f"spark-grpc {process}: SPARK_REDIS_URL is not set. Point it at Redis "
            "(redis://host:6379/0), or run `spark-grpc dev`.",
            err=True,
        )
        raise typer.Exit(2)
    return settings.redis_url


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes (default SPARK_WORKER_CONCURRENCY).")
    ] = None,
    fork: Annotated[bool, typer.Option(help="Fork a process per job (RQ's Worker).")] = False,
    sweeper: Annotated[
        bool, typer.Option("--sweeper/--no-sweeper", help="Also run the sweeper.")
    ] = True,
) -> None:
    """Run task workers: N RQ processes and the sweeper (DB, Redis and keys required)."""
    settings = _settings("worker")
    _database_url(settings, "worker")
    _redis_url(settings, "worker")
    if not settings.encryption_keys:
        typer.echo("spark-grpc worker: SPARK_ENCRYPTION_KEYS is not set", err=True)
        raise typer.Exit(2)
    from spark_grpc.worker.process import supervise

    supervise(settings, concurrency or settings.worker_concurrency, fork=fork, sweeper=sweeper)


@app.command()
def scheduler() -> None:
    """Run the scheduler (any number of replicas; DB and Redis required)."""
    settings = _settings("scheduler")
    _database_url(settings, "scheduler")
    _redis_url(settings, "scheduler")
    from spark_grpc.schedules.scheduler import run_scheduler

    run_scheduler(settings)


@app.command("worker-process", hidden=True)
def worker_process(
    name: Annotated[str, typer.Option(help="The worker's name.")],
    fork: Annotated[bool, typer.Option(help="Fork a process per job.")] = False,
) -> None:
    """One RQ worker process (started by `spark-grpc worker`)."""
    settings = _settings("worker")
    from spark_grpc.worker.process import run_worker_process

    run_worker_process(settings, name, fork=fork)


@app.command()
def keygen() -> None:
    """Print a new encryption key for SPARK_ENCRYPTION_KEYS."""
    typer.echo(Fernet.generate_key().decode())


@app.command("demo-source")
def demo_source(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
) -> None:
    """Run the demo source: LangFlow, Agents and Hive look-alikes with echo flows."""
    _settings("demo-source")
    from spark_grpc.demo.fake_sources import main as run_fake

    run_fake(host, port)


@app.command()
def dev(
    demo_source: Annotated[
        bool, typer.Option("--demo-source/--no-demo-source", help="Also start the demo source.")
    ] = False,
    demo_port: Annotated[int, typer.Option(help="Port of the demo source.")] = 7860,
) -> None:
    """Run everything in one command: embedded Postgres and Redis (unless SPARK_DATABASE_URL
    and SPARK_REDIS_URL are set), migrations, and the server. Ctrl-C stops it all."""
    if "SPARK_LOG_FORMAT" not in os.environ:
        os.environ["SPARK_LOG_FORMAT"] = "text"  # a person is watching this terminal
    settings = _settings("dev")
    from spark_grpc.crypto import load_or_create_dev_key
    from spark_grpc.db.migrate import upgrade
    from spark_grpc.embedded import EmbeddedStack

    env = dict(os.environ)
    stack: EmbeddedStack | None = None
    if settings.embedded:
        stack = EmbeddedStack(settings.data_dir)
        logger.info("starting embedded Postgres and Redis in %s", settings.data_dir.resolve())
        stack.start()
        env["SPARK_DATABASE_URL"] = stack.postgres.url
        env["SPARK_REDIS_URL"] = stack.redis.url
    if not settings.encryption_keys:
        env["SPARK_ENCRYPTION_KEYS"] = load_or_create_dev_key(settings.data_dir)
    children: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(env["SPARK_DATABASE_URL"])
        exe = [sys.executable, "-m", "spark_grpc"]
        if demo_source:
            children.append(
                subprocess.Popen([*exe, "demo-source", "--port", str(demo_port)], env=env)
            )
            logger.info("demo source on http://127.0.0.1:%d/langflow", demo_port)
        children.append(subprocess.Popen([*exe, "serve"], env=env))
        children.append(subprocess.Popen([*exe, "worker"], env=env))
        children.append(subprocess.Popen([*exe, "scheduler"], env=env))
        _wait_for_children(children)
    finally:
        _stop_children(children)
        if stack is not None:
            stack.stop()
            logger.info("embedded Postgres and Redis stopped; data kept in %s", settings.data_dir)


def _wait_for_children(children: list[subprocess.Popen[bytes]]) -> None:
    """Blocks until Ctrl-C / SIGTERM, or until a child exits on its own (then fails)."""
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping:
        for child in children:
            if child.poll() is not None:
                logger.error("%s exited with %s; stopping", child.args, child.returncode)
                raise typer.Exit(1)
        time.sleep(0.2)  # a signal interrupts the sleep; the handler sets `stopping`


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
