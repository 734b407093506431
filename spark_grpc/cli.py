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
from typing import Annotated, Any

import typer
from cryptography.fernet import Fernet
from pydantic import ValidationError

from spark_grpc import loops
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
    from spark_grpc.tracing import configure_tracing

    configure_tracing(settings.tracing, process)
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
        loops.run(run_server(settings, database_url, ready_file=ready_file), settings.event_loop)
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


keys_app = typer.Typer(help="Service API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _admin_db(process: str) -> Any:
    settings = _settings(process)
    from spark_grpc.db.session import Database, create_engine

    return Database(create_engine(settings, _database_url(settings, process)))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    scope: Annotated[
        str, typer.Option(help="read (Get, List, Watch, Preview) or write.")
    ] = "write",
) -> None:
    """Create a key; it is shown once and stored only as a hash."""
    from spark_grpc.auth import Scope, create_key

    if scope not in ("read", "write"):
        typer.echo("--scope must be read or write", err=True)
        raise typer.Exit(2)

    async def run() -> tuple[str, Any]:
        db = _admin_db("keys")
        try:
            return await create_key(db, name, Scope(scope))
        finally:
            await db.close()

    key, key_id = asyncio.run(run())
    typer.echo(f"created key {key_id} ({scope}) for {name!r}. Store it now, it is not shown again:")
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    from spark_grpc.auth import list_keys

    async def run() -> list[Any]:
        db = _admin_db("keys")
        try:
            return await list_keys(db)
        finally:
            await db.close()

    for row in asyncio.run(run()):
        state = f"revoked {row.revoke_time:%Y-%m-%d %H:%M}" if row.revoke_time else "active"
        used = f"{row.last_used_time:%Y-%m-%d %H:%M}" if row.last_used_time else "never"
        typer.echo(
            f"{row.id}  spk_{row.prefix}_…  {row.scope:<5}  {state:<24} "
            f"last used {used}  {row.name}"
        )


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id or its prefix.")]) -> None:
    """Revoke a key (within SPARK_AUTH_CACHE_S every server refuses it)."""
    from spark_grpc.auth import revoke_key

    async def run() -> bool:
        db = _admin_db("keys")
        try:
            return await revoke_key(db, key.removeprefix("spk_").split("_")[0])
        finally:
            await db.close()

    if not asyncio.run(run()):
        typer.echo(f"no active key matches {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key}")


@app.command("rotate-keys")
def rotate_keys() -> None:
    """Re-encrypt every stored secret with the first SPARK_ENCRYPTION_KEYS key."""
    settings = _settings("rotate-keys")
    from sqlalchemy import text

    from spark_grpc.crypto import SecretBox

    box = SecretBox(settings.encryption_keys)

    async def run() -> int:
        db = _admin_db("rotate-keys")
        try:
            async with db.session() as session:
                rows = (
                    await session.execute(
                        text(
                            "SELECT id, api_key_ciphertext FROM sources "
                            "WHERE api_key_ciphertext IS NOT NULL FOR UPDATE"
                        )
                    )
                ).all()
                for row in rows:
                    await session.execute(
                        text("UPDATE sources SET api_key_ciphertext = :c WHERE id = :id"),
                        {"c": box.rotate(bytes(row.api_key_ciphertext)), "id": row.id},
                    )
            return len(rows)
        finally:
            await db.close()

    typer.echo(f"re-encrypted {asyncio.run(run())} secret(s) with the first key")


@app.command("webhook-secret")
def webhook_secret_command() -> None:
    """Print the secret that signs webhook POSTs (give it to your receivers)."""
    settings = _settings("webhook-secret")
    from spark_grpc.notifications import webhook_secret

    if not settings.webhook_secret and not settings.encryption_keys:
        typer.echo("set SPARK_WEBHOOK_SECRET (or SPARK_ENCRYPTION_KEYS)", err=True)
        raise typer.Exit(2)
    typer.echo(webhook_secret(settings.webhook_secret, settings.encryption_keys).decode())


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

    try:
        run_fake(host, port)
    except OSError as err:
        typer.echo(
            f"spark-grpc demo-source: cannot listen on {host}:{port} ({err.strerror}); is "
            "another demo source running? Choose another port with --port.",
            err=True,
        )
        raise typer.Exit(2) from None


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
    # The embedded default runs open on loopback (the server says so loudly); set
    # SPARK_AUTH_MODE=required to try keys locally.
    os.environ.setdefault("SPARK_AUTH_MODE", "open")
    os.environ.setdefault("SPARK_METRICS_ADDRESS", "127.0.0.1:9464")
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
