"""The echo source S8 shares between our service and Temporal, in a process of its own.

It is the fake LangFlow of spark_grpc.demo.fake_sources (so our service imports and runs
its echo flow unchanged), plus one outer middleware that records, for every run request
(``POST /langflow/api/v1/run/...``), the wall-clock time the request arrived, keyed by the
run id the caller put in the body's ``input_value``. Its own process keeps the driver's
event loop from delaying the arrival stamps, and its CPU counts for neither side.

    python -m bench.echo_source     prints http://127.0.0.1:PORT once it listens

    POST /_bench/arrivals           answers {run_id: [arrival, ...]} and forgets them
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import defaultdict

from aiohttp import web

from spark_grpc.demo.fake_sources import FakeSourcesState, Handler, create_app

RUN_PREFIX = "/langflow/api/v1/run/"


def build_app() -> web.Application:
    """The fake sources' app with an arrival-recording middleware in front."""
    arrivals: defaultdict[str, list[float]] = defaultdict(list)

    @web.middleware
    async def record_arrival(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and request.path.startswith(RUN_PREFIX):
            arrived = time.time()  # headers parsed: the call has begun
            body = await request.json()  # aiohttp caches the body for the handler
            arrivals[str(body.get("input_value") or "")].append(arrived)
        return await handler(request)

    async def take_arrivals(_: web.Request) -> web.Response:
        taken = dict(arrivals)
        arrivals.clear()
        return web.json_response(taken)

    state = FakeSourcesState()
    app = create_app(state)
    app.middlewares.insert(0, record_arrival)  # before the app is frozen by the runner
    app.router.add_post("/_bench/arrivals", take_arrivals)
    return app


async def serve(host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM or SIGINT; print the base URL once listening."""
    runner = web.AppRunner(build_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)  # aiohttp sets TCP_NODELAY on its connections
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    print(json.dumps({"url": f"http://{bound_host}:{bound_port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
