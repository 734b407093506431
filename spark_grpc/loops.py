"""The event loop every process runs on: uvloop when installed (SPARK_EVENT_LOOP=auto),
or the standard asyncio loop. grpc.aio, asyncpg, redis-py and httpx all run on either.

``make bench`` measures both (SPARK_EVENT_LOOP=asyncio against uvloop), so the choice
stays a measured one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

LoopChoice = Literal["auto", "uvloop", "asyncio"]


def loop_factory(choice: LoopChoice) -> Callable[[], asyncio.AbstractEventLoop]:
    """What creates a new loop for the setting (uvloop required when asked for by name)."""
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError("SPARK_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def new_event_loop(choice: LoopChoice) -> asyncio.AbstractEventLoop:
    """A new loop of the configured kind."""
    return loop_factory(choice)()


def run(coro: Coroutine[Any, Any, T], choice: LoopChoice) -> T:
    """``asyncio.run`` on the configured kind of loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(coro)
