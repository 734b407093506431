"""The ``spark`` command line against live servers (started by
tests/e2e/test_client_python.py).

Environment: SPARK_ADDRESS (a server in open mode, with workers), SPARK_DEMO_SOURCE_URL (a
LangFlow), SPARK_SCHEDULER_PID (a scheduler process on the same Redis), SPARK_DOWN_ADDRESS
(a server whose PostgreSQL and Redis are down), SPARK_SECURED_ADDRESS +
SPARK_SECURED_TLS_CA + SPARK_SECURED_API_KEY + SPARK_SECURED_READ_API_KEY (a server with
TLS and API keys required; a write and a read key). Tests whose variables are missing skip.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
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


def spark(address: str, *args: str, code: int = 0, environ: dict[str, str] | None = None) -> Any:
    """Runs ``spark --address <address> *args`` (no API key or CA from the environment
    unless ``environ`` gives them); checks its exit code; the result."""
    variables = {"SPARK_API_KEY": "", "SPARK_TLS_CA": "", **(environ or {})}
    result = CliRunner().invoke(app, ["--address", address, *args], env=variables)
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result


def timestamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


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
    assert status["reachable"] is True and status["workers"]["liveCount"] >= 1, status
    preview = spark(address, "--json", "schedules", "preview", "--every", "60", "--count", "3")
    assert len(json.loads(preview.stdout)) == 3, preview.stdout


def test_cli_sources_update_changes_only_the_fields_given() -> None:
    address = env("SPARK_ADDRESS")
    url = f"http://127.0.0.1:9/cli-update-{uuid.uuid4().hex[:8]}"
    added = json.loads(spark(address, "--json", "sources", "add", url, "--name", "before").stdout)
    source = added["id"]
    updated = spark(
        address, "--json", "sources", "update", source, "--name", "after",
        "--source-api-key", "k-123", "--disable",
    )  # fmt: skip
    assert json.loads(updated.stdout)["displayName"] == "after", updated.stdout
    listed = json.loads(spark(address, "--json", "sources", "list").stdout)
    mine = next(s for s in listed if s["id"] == source)
    assert mine["displayName"] == "after" and mine["url"] == url, mine
    assert mine["apiKeySet"] is True and mine["enabled"] is False, mine
    assert "k-123" not in json.dumps(listed)  # write-only
    text = spark(address, "sources", "update", source, "--clear-source-api-key", "--enable")
    assert f"source {source} updated (api_key, enabled)" in text.stdout, text.stdout
    listed = json.loads(spark(address, "--json", "sources", "list").stdout)
    mine = next(s for s in listed if s["id"] == source)
    assert not mine.get("apiKeySet") and mine["enabled"] is True, mine
    assert mine["displayName"] == "after", mine  # not in this mask: unchanged

    nothing = spark(address, "sources", "update", source, code=2)
    assert nothing.stderr.startswith("error: INVALID_ARGUMENT: nothing to change"), nothing.stderr
    bad = spark(address, "sources", "update", source, "--url", "ftp://nope", code=2)
    assert bad.stderr.startswith("error: INVALID_ARGUMENT: "), bad.stderr
    missing = spark(address, "sources", "update", MISSING, "--name", "x", code=3)
    assert missing.stderr.startswith("error: NOT_FOUND: "), missing.stderr
    spark(address, "sources", "delete", source)


def test_cli_schedules_update_changes_the_spec_and_the_next_fire_time() -> None:
    address, url = env("SPARK_ADDRESS"), env("SPARK_DEMO_SOURCE_URL")
    source = source_id(address, url)
    imported = spark(address, "--json", "workflows", "import", source, ECHO_FLOW_ID)
    workflow = json.loads(imported.stdout)["id"]
    created = spark(
        address, "--json", "schedules", "create", workflow, "--every", "3600", "--name", "cli",
        "--overlap", "buffer-one",
    )  # fmt: skip
    schedule = json.loads(created.stdout)
    assert schedule["overlapPolicy"] == "OVERLAP_POLICY_BUFFER_ONE", schedule
    cron = ("--cron", "30 9 * * *", "--tz", "Europe/Paris")
    spark(
        address, "schedules", "update", schedule["id"], *cron, "--input", "new input",
        "--overlap", "allow-all", "--jitter", "5",
    )  # fmt: skip
    shown = json.loads(spark(address, "--json", "schedules", "show", schedule["id"]).stdout)
    assert shown["spec"] == {"cron": {"expression": "30 9 * * *", "timeZone": "Europe/Paris"}}
    assert shown["inputValue"] == "new input" and shown["displayName"] == "cli", shown
    assert shown["overlapPolicy"] == "OVERLAP_POLICY_ALLOW_ALL" and shown["jitter"] == "5s"
    preview = spark(address, "--json", "schedules", "preview", *cron, "--count", "1")
    expected = timestamp(json.loads(preview.stdout)[0])
    assert timestamp(shown["nextFireTime"]) == expected, (shown, expected)
    assert timestamp(shown["nextFireTime"]) != timestamp(schedule["nextFireTime"])

    # Once, at a wall time in a zone: 03:04 in Paris in January is 02:04 UTC.
    once = ("--at", "2030-01-02T03:04", "--tz", "Europe/Paris")
    spark(address, "schedules", "update", schedule["id"], *once)
    shown = json.loads(spark(address, "--json", "schedules", "show", schedule["id"]).stdout)
    assert shown["spec"]["oneTime"], shown
    assert timestamp(shown["nextFireTime"]) == dt.datetime(2030, 1, 2, 2, 4, tzinfo=dt.timezone.utc)
    assert shown["inputValue"] == "new input", shown  # not in this mask: unchanged

    nothing = spark(address, "schedules", "update", schedule["id"], code=2)
    assert "nothing to change" in nothing.stderr, nothing.stderr
    two = spark(address, "schedules", "update", schedule["id"], "--every", "60", *once, code=2)
    assert "not --every and --at" in two.stderr, two.stderr
    spark(address, "schedules", "update", schedule["id"], "--at", "next tuesday", code=2)
    missing = spark(address, "schedules", "update", MISSING, "--every", "60", code=3)
    assert missing.stderr.startswith("error: NOT_FOUND: "), missing.stderr
    spark(address, "schedules", "delete", schedule["id"])


def test_cli_status_shows_database_redis_workers_and_a_live_scheduler() -> None:
    address, pid = env("SPARK_ADDRESS"), int(env("SPARK_SCHEDULER_PID"))
    deadline = time.monotonic() + 20
    while True:  # a scheduler's first heartbeat may come before its first tick
        status = json.loads(spark(address, "--json", "status").stdout)
        live = [s for s in status["schedulers"]["schedulers"] if s["pid"] == pid]
        if live and live[0]["lastTickTime"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status["reachable"] is True and status["server"]["version"], status
    database, redis = status["database"], status["redis"]
    assert database["reachable"] is True and database["error"] == "", database
    assert database["schemaRevision"] == database["schemaHeadRevision"] != "", database
    assert redis["reachable"] is True and redis["version"], redis
    assert status["workers"]["liveCount"] >= 1, status
    assert live[0]["lastTickError"] == "", live
    assert isinstance(status["sources"]["count"], int), status

    text = spark(address, "status").stdout
    for component in ("server", "database", "redis", "workers", "schedulers", "schedules"):
        assert component in text, text
    assert "up to date" in text and "UNREACHABLE" not in text, text


def test_cli_status_reports_postgres_and_redis_down_and_exits_5() -> None:
    address = env("SPARK_DOWN_ADDRESS")
    down = spark(address, "--json", "status", code=5)
    status = json.loads(down.stdout)
    assert status["reachable"] is True, status  # the server answers...
    assert status["database"]["reachable"] is False and status["database"]["error"], status
    assert status["redis"]["reachable"] is False and status["redis"]["error"], status
    assert down.stderr == "error: UNAVAILABLE: database and redis unreachable\n", down.stderr
    text = spark(address, "status", code=5)
    assert "UNREACHABLE" in text.stdout, text.stdout
    gone = spark("127.0.0.1:1", "--json", "status", code=5)  # nothing listens there
    assert json.loads(gone.stdout)["reachable"] is False, gone.stdout


def test_cli_api_key_and_tls_from_flags_or_environment() -> None:
    address, ca = env("SPARK_SECURED_ADDRESS"), env("SPARK_SECURED_TLS_CA")
    key, read_key = env("SPARK_SECURED_API_KEY"), env("SPARK_SECURED_READ_API_KEY")
    no_key = spark(address, "--tls-ca", ca, "status", code=4)
    assert no_key.stderr.startswith("error: UNAUTHENTICATED: "), no_key.stderr
    wrong = spark(address, "--tls-ca", ca, "--api-key", "spk_0000_wrong", "sources", "list", code=4)
    assert wrong.stderr.startswith("error: UNAUTHENTICATED: "), wrong.stderr
    # The right key and the CA, by flag or by environment.
    spark(address, "--tls-ca", ca, "--api-key", key, "sources", "list")
    environ = {"SPARK_API_KEY": key, "SPARK_TLS_CA": ca}
    status = json.loads(spark(address, "--json", "status", environ=environ).stdout)
    assert status["database"]["reachable"] is True, status
    # A read key reads (status needs only the read scope) but cannot write.
    read = {"SPARK_API_KEY": read_key, "SPARK_TLS_CA": ca}
    spark(address, "status", environ=read)
    denied = spark(address, "sources", "add", "http://127.0.0.1:9/x", environ=read, code=4)
    assert denied.stderr.startswith("error: PERMISSION_DENIED: "), denied.stderr
    # Without --tls-ca the client speaks plain text to a TLS server: it never answers.
    spark(address, "--api-key", key, "workers", "list", code=5)
