"""The ``spark`` command line against a live server (started by
tests/e2e/test_client_python.py); skips without SPARK_ADDRESS and SPARK_DEMO_SOURCE_URL."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from typer.testing import CliRunner

from spark_client.cli import app

ECHO_FLOW_ID = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a01"
MISSING = "123e4567-e89b-12d3-a456-426614174000"


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (tests/e2e/test_client_python.py sets it)")
    return value


def spark(address: str, *args: str, code: int = 0) -> Any:
    """Runs ``spark --address <address> *args``; checks its exit code; the result."""
    result = CliRunner().invoke(app, ["--address", address, *args], env={"SPARK_API_KEY": ""})
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result


def source_id(address: str, url: str) -> str:
    added = CliRunner().invoke(app, ["--address", address, "--json", "sources", "add", url])
    if added.exit_code == 0:
        return str(json.loads(added.stdout)["id"])
    assert "error: ALREADY_EXISTS: " in added.stderr, added.stderr  # made by another test
    listed = json.loads(spark(address, "--json", "sources", "list").stdout)
    return str(next(s["id"] for s in listed if s["url"] == url))


def test_cli_imports_runs_and_watches_a_workflow() -> None:
    address, url = env("SPARK_ADDRESS"), env("SPARK_DEMO_SOURCE_URL")
    source = source_id(address, url)
    assert source in spark(address, "sources", "list").stdout
    assert ECHO_FLOW_ID in spark(address, "workflows", "remote", source).stdout
    imported = spark(address, "--json", "workflows", "import", source, ECHO_FLOW_ID, "--tag", "cli")
    workflow = json.loads(imported.stdout)["id"]
    assert "Workflow" in spark(address, "workflows", "show", workflow).stdout

    run = spark(address, "workflows", "run", workflow, "--input", "Hello from the CLI", "--watch")
    assert "SUCCEEDED" in run.stdout, run.stdout  # the live display's last frame
    assert run.stdout.rstrip().splitlines()[-1] == "Hello from the CLI", run.stdout

    tasks = json.loads(spark(address, "--json", "tasks", "list", "--workflow", workflow).stdout)
    assert isinstance(tasks, list) and tasks, tasks
    assert all(t["workflowId"] == workflow for t in tasks)
    task = tasks[0]["id"]
    assert tasks[0]["state"] == "TASK_STATE_SUCCEEDED"
    assert "SUCCEEDED" in spark(address, "tasks", "logs", task).stdout
    watched = spark(address, "--json", "tasks", "watch", task)
    assert json.loads(watched.stdout)["outputText"] == "Hello from the CLI"


def test_cli_errors_are_one_line_with_an_exit_code() -> None:
    address = env("SPARK_ADDRESS")
    bad = spark(address, "tasks", "show", "not-a-uuid", code=2)
    assert bad.stderr.startswith("error: INVALID_ARGUMENT: "), bad.stderr
    assert "  id: " in bad.stderr, bad.stderr  # the field violation
    assert bad.stdout == ""
    missing = spark(address, "tasks", "show", MISSING, code=3)
    assert missing.stderr.startswith("error: NOT_FOUND: "), missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    spark(address, "workflows", "show", MISSING, code=3)
    spark(address, "schedules", "create", MISSING, code=2)  # neither --cron nor --every
    spark("127.0.0.1:1", "workers", "list", code=5)  # nothing listens there


def test_cli_workers_status_and_schedules() -> None:
    address = env("SPARK_ADDRESS")
    workers = spark(address, "workers", "list")
    assert "Workers" in workers.stdout, workers.stdout
    listed = json.loads(spark(address, "--json", "workers", "list").stdout)
    assert listed and all(w["name"] for w in listed), listed
    status = json.loads(spark(address, "--json", "status").stdout)
    assert status["reachable"] is True and status["workers"] >= 1, status
    preview = spark(address, "--json", "schedules", "preview", "--every", "60", "--count", "3")
    assert len(json.loads(preview.stdout)) == 3, preview.stdout
