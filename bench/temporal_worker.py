"""S8's Temporal side: one workflow, one activity that makes the HTTP call our worker makes.

Runs as its own process so that its CPU and memory are attributable:

    python -m bench.temporal_worker ADDRESS ECHO_RUN_URL     prints "ready" once polling

The activity POSTs what our LangFlow adapter POSTs for a run (the same JSON body,
``?stream=true``) to the same echo source with one shared httpx client (the library and
connection limit our worker uses), reads the whole event stream and returns the answer.
The workflow runs that one activity. Both use the SDK's defaults (sandboxed workflows,
up to 100 concurrent activities and workflow tasks, eager activity dispatch).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import httpx

TASK_QUEUE = "s8-echo"
WORKFLOW = "EchoRun"

_http: list[httpx.AsyncClient] = []  # the shared client, set in main()
_url: list[str] = []


@activity.defn(name="call_echo")
async def call_echo(run_id: str) -> str:
    """One run: POST the run id as input_value to the echo source, return its answer."""
    body = {"input_value": run_id, "output_type": "chat", "input_type": "chat", "tweaks": {}}
    async with _http[0].stream("POST", _url[0], params={"stream": "true"}, json=body) as resp:
        resp.raise_for_status()
        raw = (await resp.aread()).decode()
    for chunk in reversed(raw.split("\n\n")):
        if chunk.strip():
            event = json.loads(chunk)
            if event.get("event") == "end":
                outputs = event["data"]["result"]["outputs"][0]["outputs"][0]
                return str(outputs["results"]["message"]["text"])
    raise RuntimeError("the echo stream ended without an end event")


@workflow.defn(name=WORKFLOW)
class EchoRun:
    @workflow.run
    async def run(self, run_id: str) -> str:
        return await workflow.execute_activity(
            call_echo, run_id, start_to_close_timeout=timedelta(seconds=30)
        )


async def main(address: str, url: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    _url.append(url)
    _http.append(httpx.AsyncClient(limits=httpx.Limits(max_connections=20)))
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(client, task_queue=TASK_QUEUE, workflows=[EchoRun], activities=[call_echo])
    async with worker:
        print("ready", flush=True)
        await stop.wait()
    await _http[0].aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
