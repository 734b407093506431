"""The database handle: one async engine per process, and the translation of connection
failures into :class:`~spark_grpc.errors.DatabaseUnavailableError` at this layer, so no
service ever sees a driver exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from spark_grpc.config import Settings
from spark_grpc.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

# Errors that mean "Postgres is not there right now", as opposed to a bad query.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
_DB_ERRORS: tuple[type[BaseException], ...] = (sa_exc.SQLAlchemyError, *_CONNECTION_ERRORS)


def is_connection_error(err: BaseException) -> bool:
    """True when err (or what it wraps) says the database cannot be reached."""
    if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
        return True
    if isinstance(err, sa_exc.InterfaceError | sa_exc.OperationalError):
        return True
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, _CONNECTION_ERRORS):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def create_engine(settings: Settings, database_url: str) -> AsyncEngine:
    """An engine whose connection attempts and statements are bounded in time.

    Bounded connects are what make an RPC answer UNAVAILABLE quickly while Postgres is
    down, instead of hanging; pre-ping drops connections that died with a restart.
    """
    return create_async_engine(
        database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        pool_timeout=settings.db_connect_timeout_s,
        connect_args={
            "timeout": settings.db_connect_timeout_s,
            "command_timeout": 60,
            "server_settings": {"application_name": "spark-grpc"},
        },
    )


class Publisher(Protocol):
    """Sends events once the transaction that wrote them has committed."""

    async def publish(self, events: list[dict[str, Any]]) -> None: ...


#: Key in ``session.info`` where the data layer lists the events a transaction wrote.
EVENTS_KEY = "spark_events"


def record_events(conn: AsyncSession | AsyncConnection, events: list[dict[str, Any]]) -> None:
    """Notes events written in conn's transaction, to publish after it commits."""
    conn.info.setdefault(EVENTS_KEY, []).extend(events)


class Database:
    """Sessions over one engine, with connection errors translated, and events published
    after each commit (never inside the transaction: a slow Redis never holds locks)."""

    def __init__(self, engine: AsyncEngine, publisher: Publisher | None = None) -> None:
        self.engine = engine
        self.publisher = publisher
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        events: list[dict[str, Any]] = []
        try:
            async with self._sessions() as session:
                async with session.begin():
                    yield session
                events = session.info.pop(EVENTS_KEY, [])
        except _DB_ERRORS as err:
            if is_connection_error(err):
                logger.warning("database unavailable: %s", type(err).__name__)
                raise DatabaseUnavailableError(
                    "the database is unavailable; retry shortly"
                ) from err
            raise
        if events and self.publisher is not None:
            await self.publisher.publish(events)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in a transaction: the hot paths' lighter session (no ORM
        unit of work), with the same error translation and publishing after commit."""
        events: list[dict[str, Any]] = []
        try:
            async with self.engine.begin() as conn:
                # The data layer appends to this list; it is ours to publish, so nothing
                # needs the connection after an error (an invalidated connection raises
                # on any access, which would hide the original error or a cancel).
                conn.info[EVENTS_KEY] = events
                try:
                    yield conn
                finally:
                    # Connection info outlives the checkout: never leave events behind.
                    with contextlib.suppress(Exception):
                        conn.info.pop(EVENTS_KEY, None)
        except _DB_ERRORS as err:
            if is_connection_error(err):
                logger.warning("database unavailable: %s", type(err).__name__)
                raise DatabaseUnavailableError(
                    "the database is unavailable; retry shortly"
                ) from err
            raise
        if events and self.publisher is not None:
            await self.publisher.publish(events)

    async def ping(self, timeout: float) -> bool:
        """True when a trivial query answers within timeout seconds."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except _DB_ERRORS:
            return False

    async def close(self) -> None:
        """Closes every pooled connection."""
        await self.engine.dispose()
