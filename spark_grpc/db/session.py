"""The database handle: one async engine per process, and the translation of connection
failures into :class:`~spark_grpc.errors.DatabaseUnavailableError` at this layer, so no
service ever sees a driver exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import asyncpg
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
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


def _translate(err: BaseException) -> None:
    """Raises DatabaseUnavailableError for a connection failure; otherwise returns, and the
    caller re-raises err as it is."""
    if is_connection_error(err):
        logger.warning("database unavailable: %s", type(err).__name__)
        raise DatabaseUnavailableError("the database is unavailable; retry shortly") from err


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
    down, instead of hanging. Connections that died with a restart are dropped by a ping,
    but only for a connection idle longer than PING_IDLE_S: under load every checkout
    would otherwise pay a round trip (measured: ~30% of GetTask's server CPU). A restart
    that lands while a connection is busy fails that one statement; the error invalidates
    the whole pool, so the next checkouts reconnect.
    """
    engine = create_async_engine(
        database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_connect_timeout_s,
        connect_args={
            "timeout": settings.db_connect_timeout_s,
            "command_timeout": 60,
            "server_settings": {"application_name": "spark-grpc"},
        },
    )
    event.listen(engine.sync_engine, "checkin", _note_checkin)
    event.listen(engine.sync_engine, "checkout", _ping_if_idle)
    return engine


#: A pooled connection idle longer than this is pinged before use.
PING_IDLE_S = 1.0
_CHECKIN_KEY = "spark_checkin_time"


def _note_checkin(dbapi_connection: Any, record: Any) -> None:
    record.info[_CHECKIN_KEY] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    idle_since = record.info.get(_CHECKIN_KEY)
    if idle_since is None or time.monotonic() - idle_since < PING_IDLE_S:
        return  # new, or in use a moment ago
    try:
        dbapi_connection.ping()
    except Exception as err:
        # The pool throws this connection away and checks out (or opens) another.
        raise sa_exc.DisconnectionError(f"stale pooled connection: {err}") from err


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
        # Same pool, no transaction: a single-statement read needs no BEGIN and COMMIT.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
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
            _translate(err)
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
            _translate(err)
            raise
        if events and self.publisher is not None:
            await self.publisher.publish(events)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection outside any transaction, for reads of one statement each
        (GetTask, event pages): two round trips fewer than ``connection()``. Nothing it
        runs may write."""
        try:
            async with self._autocommit.connect() as conn:
                yield conn
        except _DB_ERRORS as err:
            _translate(err)
            raise

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
