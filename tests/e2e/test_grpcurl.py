"""grpcurl, built from the Go module proxy at a pinned version, through reflection
against a live server: what a person types is what CI runs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from spark_grpc.demo import fake_data
from spark_grpc.demo.fake_sources import FakeSources
from tests.support import ServerProcess, WorkerProcess

GRPCURL_VERSION = "v1.9.3"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def grpcurl() -> str:
    if shutil.which("go") is None:
        pytest.skip("Go is not installed: grpcurl is built from the Go module proxy")
    bin_dir = ROOT / ".venv" / "go-bin"
    path = bin_dir / "grpcurl"
    if not path.exists():
        subprocess.run(
            ["go", "install", f"github.com/fullstorydev/grpcurl/cmd/grpcurl@{GRPCURL_VERSION}"],
            env={**os.environ, "GOBIN": str(bin_dir)},
            check=True,
            capture_output=True,
            timeout=600,
        )
    return str(path)


async def call(
    grpcurl: str, address: str, method: str, body: dict[str, object] | None = None
) -> tuple[int, str]:
    args = [grpcurl, "-plaintext", "-max-time", "60"]
    if body is not None:
        args += ["-d", json.dumps(body)]
    args += [address, method] if method else [address, "list"]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def objects(text: str) -> list[dict[str, object]]:
    """grpcurl prints one pretty JSON object per message."""
    decoder, i, found = json.JSONDecoder(), 0, []
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = decoder.raw_decode(text, i)
        found.append(obj)
    return found


async def test_grpcurl_walkthrough(
    grpcurl: str, server: ServerProcess, workers: WorkerProcess, fake: FakeSources
) -> None:
    a = server.address
    code, out = await call(grpcurl, a, "")
    assert code == 0 and {
        "spark.v1.SourceService",
        "spark.v1.TaskService",
        "grpc.health.v1.Health",
    } <= set(out.split())
    code, out = await call(
        grpcurl,
        a,
        "spark.v1.SourceService/CreateSource",
        {
            "source": {
                "display_name": "LF",
                "type": "SOURCE_TYPE_LANGFLOW",
                "url": fake.url("langflow"),
                "api_key": "k",
            }
        },
    )
    assert code == 0, out
    source = objects(out)[0]["source"]
    assert "apiKey" not in source and source["apiKeySet"] is True
    code, out = await call(
        grpcurl,
        a,
        "spark.v1.SourceService/ListRemoteFlows",
        {"source_id": source["id"], "page_size": 2},
    )
    assert code == 0 and objects(out)[0]["nextPageToken"]
    code, out = await call(
        grpcurl,
        a,
        "spark.v1.WorkflowService/ImportWorkflow",
        {"source_id": source["id"], "remote_flow_id": fake_data.FLOW_ECHO},
    )
    workflow_id = objects(out)[0]["workflow"]["id"]
    code, out = await call(
        grpcurl,
        a,
        "spark.v1.WorkflowService/RunWorkflow",
        {"workflow_id": workflow_id, "input_value": "hi grpcurl"},
    )
    task_id = objects(out)[0]["task"]["id"]

    code, out = await call(grpcurl, a, "spark.v1.TaskService/WatchTask", {"task_id": task_id})
    assert code == 0, out  # the stream ends OK on the terminal event
    events = [o["event"] for o in objects(out) if "event" in o]
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["stateChange"]["toState"] == "TASK_STATE_SUCCEEDED"
    code, out = await call(
        grpcurl,
        a,
        "spark.v1.TaskService/WatchTask",
        {"task_id": task_id, "after_sequence": len(events) - 2},
    )
    assert [int(o["event"]["sequence"]) for o in objects(out)] == [len(events) - 1, len(events)]

    code, out = await call(grpcurl, a, "spark.v1.WorkflowService/GetWorkflow", {"id": "not-a-uuid"})
    assert code != 0 and "InvalidArgument" in out and "field_violations" in out
    code, out = await call(
        grpcurl,
        a,
        "spark.v1.WorkflowService/GetWorkflow",
        {"id": "123e4567-e89b-12d3-a456-426614174000"},
    )
    assert code != 0 and "NotFound" in out
    code, out = await call(
        grpcurl,
        a,
        "spark.v1.ScheduleService/PreviewSchedule",
        {
            "spec": {"cron": {"expression": "30 2 * * *", "time_zone": "America/New_York"}},
            "from_time": "2026-03-05T00:00:00Z",
            "count": 5,
        },
    )
    assert "2026-03-08T03:30:00-04:00" in objects(out)[0]["localTimes"]
    code, out = await call(
        grpcurl, a, "grpc.health.v1.Health/Check", {"service": "spark.v1.TaskService"}
    )
    assert objects(out)[0]["status"] == "SERVING"
