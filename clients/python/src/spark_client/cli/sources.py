"""``spark sources``: add, list, check, update and delete sources."""

from __future__ import annotations

import uuid
from typing import Any

import typer

from .. import v1
from .._gen.google.protobuf import FieldMask
from ._base import (
    EXIT_USAGE,
    all_pages,
    connected,
    console,
    emit_json,
    enum_name,
    fail,
    print_table,
    report_done,
    settings_of,
    sources_app,
)

SOURCE_TYPES = {
    "langflow": v1.SourceType.LANGFLOW,
    "automagik-agents": v1.SourceType.AUTOMAGIK_AGENTS,
    "automagik-hive": v1.SourceType.AUTOMAGIK_HIVE,
}


def source_type(name: str) -> v1.SourceType:
    """The --type value as an enum, or a usage error."""
    kind = SOURCE_TYPES.get(name)
    if kind is None:
        choices = " | ".join(SOURCE_TYPES)
        raise fail(f"error: INVALID_ARGUMENT: unknown --type {name!r} ({choices})", EXIT_USAGE)
    return kind


@sources_app.command("add")
def sources_add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="The source's base URL."),
    name: str = typer.Option("", "--name", help="Display name (default: the URL)."),
    kind_name: str = typer.Option(
        "langflow", "--type", help="langflow | automagik-agents | automagik-hive"
    ),
    source_api_key: str = typer.Option("", "--source-api-key", help="The source's API key."),
) -> None:
    """Add a source."""
    kind = source_type(kind_name)
    with connected(ctx) as spark:
        source = spark.sources.create_source(
            v1.CreateSourceRequest(
                source=v1.Source(
                    display_name=name or url, type=kind, url=url, api_key=source_api_key
                ),
                request_id=str(uuid.uuid4()),
            )
        ).source
    if settings_of(ctx).json:
        emit_json(source)
    elif source is not None:
        console().print(f"source {source.id} added ({source.display_name})")


@sources_app.command("list")
def sources_list(ctx: typer.Context, limit: int = typer.Option(1000, "--limit")) -> None:
    """List sources."""
    with connected(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.sources.list_sources(v1.ListSourcesRequest(page_token=token))
            return page.sources, page.next_page_token

        sources = all_pages(fetch, limit)
    if settings_of(ctx).json:
        emit_json(sources)
        return
    print_table(
        "Sources",
        ("id", "name", "type", "url", "enabled", "reachable"),
        [
            (
                s.id,
                s.display_name,
                enum_name(s.type),
                s.url,
                s.enabled is not False,
                s.health.reachable if s.health else "",
            )
            for s in sources
        ],
    )


@sources_app.command("check")
def sources_check(ctx: typer.Context, source_id: str) -> None:
    """Check that a source answers (and refresh its health)."""
    with connected(ctx) as spark:
        source = spark.sources.check_source(v1.CheckSourceRequest(id=source_id)).source
    if settings_of(ctx).json or source is None:
        emit_json(source or {})
        return
    health = source.health or v1.SourceHealth()
    state = "reachable" if health.reachable else "unreachable"
    detail = " ".join(x for x in (health.version, health.message) if x)
    console().print(f"source {source.id}: {state} {detail}".rstrip())


@sources_app.command("update")
def sources_update(
    ctx: typer.Context,
    source_id: str,
    name: str | None = typer.Option(None, "--name", help="New display name."),
    url: str | None = typer.Option(None, "--url", help="New base URL."),
    kind_name: str | None = typer.Option(
        None, "--type", help="langflow | automagik-agents | automagik-hive"
    ),
    source_api_key: str | None = typer.Option(
        None, "--source-api-key", help="New API key of the source."
    ),
    clear_api_key: bool = typer.Option(
        False, "--clear-source-api-key", help="Remove the stored API key."
    ),
    enabled: bool | None = typer.Option(
        None, "--enable/--disable", help="Whether its workflows may run."
    ),
) -> None:
    """Change a source: only the fields given (an update mask of exactly those)."""
    if source_api_key is not None and clear_api_key:
        raise fail(
            "error: INVALID_ARGUMENT: give --source-api-key or --clear-source-api-key, not both",
            EXIT_USAGE,
        )
    source = v1.Source(id=source_id)
    paths: list[str] = []
    if name is not None:
        source.display_name = name
        paths.append("display_name")
    if url is not None:
        source.url = url
        paths.append("url")
    if kind_name is not None:
        source.type = source_type(kind_name)
        paths.append("type")
    if source_api_key is not None or clear_api_key:
        source.api_key = source_api_key or ""  # empty in the mask: the stored key goes
        paths.append("api_key")
    if enabled is not None:
        source.enabled = enabled
        paths.append("enabled")
    if not paths:
        raise fail(
            "error: INVALID_ARGUMENT: nothing to change: give --name, --url, --type, "
            "--source-api-key, --clear-source-api-key, --enable or --disable",
            EXIT_USAGE,
        )
    with connected(ctx) as spark:
        updated = spark.sources.update_source(
            v1.UpdateSourceRequest(source=source, update_mask=FieldMask(paths=paths))
        ).source
    if settings_of(ctx).json:
        emit_json(updated)
    elif updated is not None:
        console().print(f"source {updated.id} updated ({', '.join(paths)})")


@sources_app.command("delete")
def sources_delete(
    ctx: typer.Context,
    source_id: str,
    force: bool = typer.Option(False, "--force", help="Delete its workflows too."),
) -> None:
    """Delete a source."""
    with connected(ctx) as spark:
        reply = spark.sources.delete_source(v1.DeleteSourceRequest(id=source_id, force=force))
    report_done(
        ctx,
        f"source {source_id} deleted ({reply.deleted_workflow_count} workflows)",
        {"id": source_id, "deletedWorkflowCount": reply.deleted_workflow_count},
    )
