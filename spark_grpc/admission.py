"""Admission control: a bound on the unary RPCs one server process works on at once.

Without it a flood of RunWorkflow calls is accepted whole: every call queues in memory,
the event loop saturates, and callers get DEADLINE_EXCEEDED (or UNAVAILABLE when the
database pool's wait runs out) after the server spent work on them. With it, at most
``limit`` unary RPCs run; up to ``queue_limit`` more (200, or four per slot if that is
more) wait, first come first served, for at most ``wait_s`` seconds each, and every other
call is answered at once with RESOURCE_EXHAUSTED and a ``google.rpc.RetryInfo`` delay.

Why the limit is small (10 by default): it must keep the event loop's thread below
saturation. Once handlers use all of it, grpc.aio accepts new calls only slowly (one per
loop iteration, through its poller thread) and they queue inside grpcio, unseen by any
counter here: bench S6 measured handlers taking 0.15 s while callers waited 2-5 s, and a
limit of 16 or more then collapsed into DEADLINE_EXCEEDED for half the calls, while 8 or
12 kept every answer OK or RESOURCE_EXHAUSTED. Throughput stops growing at about ten calls
in flight on two cores anyway (the database round trips overlap; the CPU does not). The
waiting line is what absorbs bursts (a client sending 100 runs at once): waiting costs no
CPU, and a call that waited ``wait_s`` in vain is refused.

The loop's lag is measured too (a timer every ``TICK_S``): while two ticks in a row ran
more than ``MAX_LAG_S`` late, for instance because other processes take the CPU, a new
call is refused at once (unless none of ours is running: then the lag is not ours to shed).

Not counted: health checks (an orchestrator must get an answer), streams (they have their
own limit, SPARK_MAX_STREAMS_TOTAL; grpcio's ``maximum_concurrent_rpcs`` is not used
because it counts open streams, so long-lived WatchTask streams would starve every unary
call), and the calls that wait on a source's API (a slow source must not hold every slot;
they use no CPU while they wait and are bounded by the HTTP client's connection pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque

from spark_grpc.errors import ResourceExhaustedError

logger = logging.getLogger(__name__)

#: How often at most a server under overload says so in its log.
_WARN_EVERY_S = 10.0

#: How often the event loop's lag is sampled, and the lag that refuses new calls.
TICK_S = 0.02
MAX_LAG_S = 0.25

#: How many calls may wait for a slot: MIN_QUEUE, or QUEUE_FACTOR per slot if more.
MIN_QUEUE = 200
QUEUE_FACTOR = 4

#: Methods that take no slot (see the module's docstring).
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
EXEMPT_METHODS = frozenset(
    {
        "/spark.v1.SourceService/CheckSource",
        "/spark.v1.SourceService/ListRemoteFlows",
        "/spark.v1.SourceService/GetRemoteFlow",
        "/spark.v1.WorkflowService/ImportWorkflow",
    }
)


class Admission:
    """At most ``limit`` RPCs in flight, at most ``queue_limit`` more waiting up to
    ``wait_s`` each.

    ``limit`` 0 turns admission control off. ``retry_after_s`` is the delay sent in
    RetryInfo, with jitter (0.5x to 1.5x) so rejected clients do not come back together.
    """

    def __init__(self, limit: int, wait_s: float, retry_after_s: float = 1.0) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.queue_limit = max(MIN_QUEUE, QUEUE_FACTOR * limit)
        self.retry_after_s = retry_after_s
        self.running = 0
        self.rejected = 0
        self._warned_at = float("-inf")
        self._rejected_at_warning = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._lags: deque[float] = deque([0.0, 0.0], maxlen=2)
        self._tick: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def lag_s(self) -> float:
        """How late the event loop has been running lately: the smaller of the last two
        samples, so a single pause (a GC, say) does not count."""
        return min(self._lags)

    def close(self) -> None:
        """Stops sampling the loop's lag."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._tick is not None:
            self._lags.append(max(0.0, now - self._due))
        self._due = now + TICK_S
        self._tick = loop.call_at(self._due, self._sample)

    @property
    def waiting(self) -> int:
        """RPCs waiting for a slot now."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Takes a slot, waiting up to ``wait_s``; raises ResourceExhaustedError if none
        frees in time, the waiting line is full or the event loop runs late. Pair with
        ``release``."""
        if self._tick is None:
            self._sample()  # first call: start sampling the loop this server runs on
        if self.running and self.lag_s > MAX_LAG_S:
            raise self._overloaded()
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return
        if self.wait_s <= 0 or len(self._waiters) >= self.queue_limit:
            raise self._overloaded()
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()
        self._waiters.append(granted)
        timer = loop.call_later(self.wait_s, self._expire, granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self.release()  # the slot was handed over just as the caller went away
            else:
                self._forget(granted)
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        """Frees a slot: the longest-waiting RPC gets it, else the count goes down."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; running stays the same
                return
        self.running -= 1

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._forget(waiter)
            waiter.set_exception(self._overloaded())

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _overloaded(self) -> ResourceExhaustedError:
        self.rejected += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            logger.warning(
                "overloaded: %d call(s) refused with RESOURCE_EXHAUSTED since the last "
                "warning (%d running, %d waiting, event loop %.0f ms late; "
                "SPARK_MAX_CONCURRENT_RPCS=%d, SPARK_ADMISSION_WAIT_S=%g)",
                self.rejected - self._rejected_at_warning,
                self.running,
                len(self._waiters),
                self.lag_s * 1000,
                self.limit,
                self.wait_s,
            )
            self._warned_at, self._rejected_at_warning = now, self.rejected
        delay = self.retry_after_s * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not a secret
        return ResourceExhaustedError(
            f"the server is overloaded ({self.running} calls in progress, "
            f"{len(self._waiters)} waiting); retry in {delay:.1f} s or on another replica",
            retry_after_s=delay,
            reason="SERVER_OVERLOADED",
        )


def admits_all(method: str) -> bool:
    """True for methods admission control never refuses."""
    return method in EXEMPT_METHODS or method.startswith(EXEMPT_PREFIXES)
