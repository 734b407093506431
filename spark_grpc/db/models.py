"""The tables. Alembic reads ``Base.metadata``; the schema is only ever made by migrations.

Every listed table has a ``(create_time, id)`` index so keyset pages cost the same at row
10 and at row 10 million.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

# Deterministic constraint names, so migrations and `alembic check` agree on every machine.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; the metadata migrations are checked against."""

    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    # clock_timestamp(), not now(): rows of one transaction get distinct, ordered times.
    return func.clock_timestamp()


class SourceRow(Base):
    """A registered LangFlow / Agents / Hive server."""

    __tablename__ = "sources"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    api_key_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    health_check_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    health_reachable: Mapped[bool | None] = mapped_column(Boolean)
    health_version: Mapped[str | None] = mapped_column(Text)
    health_message: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        Index("ix_sources_create_time_id", "create_time", "id"),
        Index("ix_sources_type", "type"),
    )


class WorkflowRow(Base):
    """A runnable copy of a remote flow."""

    __tablename__ = "workflows"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    source_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("sources.id", ondelete="RESTRICT")
    )
    remote_flow_id: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    graph: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    components: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    input_component_id: Mapped[str] = mapped_column(String(256), server_default="")
    output_component_id: Mapped[str] = mapped_column(String(256), server_default="")
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    folder_name: Mapped[str] = mapped_column(Text, server_default="")
    flow_version: Mapped[str] = mapped_column(Text, server_default="")
    import_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retry_policy: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    timeout_s: Mapped[float] = mapped_column(Float, server_default="600")
    webhook_url: Mapped[str] = mapped_column(Text, server_default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        UniqueConstraint("source_id", "remote_flow_id", name="uq_workflows_source_remote_flow"),
        Index("ix_workflows_create_time_id", "create_time", "id"),
        Index("ix_workflows_tags", "tags", postgresql_using="gin"),
    )


class IdempotencyKeyRow(Base):
    """A remembered request_id: the request's fingerprint and the first response."""

    __tablename__ = "idempotency_keys"

    method: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    response: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (Index("ix_idempotency_keys_create_time", "create_time"),)


class TaskRow(Base):
    """One run of a workflow; attempts live on the row, never as new rows."""

    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("workflows.id", ondelete="RESTRICT")
    )
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    state: Mapped[str] = mapped_column(String(16))
    input_value: Mapped[str] = mapped_column(Text, server_default="")
    tweaks: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    output: Mapped[Any | None] = mapped_column(JSONB)
    output_text: Mapped[str] = mapped_column(Text, server_default="")
    output_size_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")
    output_truncated: Mapped[bool] = mapped_column(Boolean, server_default="false")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    attempt: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer)
    retry_policy: Mapped[dict[str, Any]] = mapped_column(JSONB)
    timeout_s: Mapped[float] = mapped_column(Float)
    deadline_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker_name: Mapped[str] = mapped_column(Text, server_default="")
    lease_expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    job_id: Mapped[str] = mapped_column(Text, server_default="")
    request_id: Mapped[str | None] = mapped_column(String(128))
    request_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Receives a signed POST when the task reaches a terminal state; empty for none.
    webhook_url: Mapped[str] = mapped_column(Text, server_default="")
    #: What must follow the task through a re-enqueue (trace context, request metadata).
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    last_sequence: Mapped[int] = mapped_column(BigInteger, server_default="0")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finish_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        Index("ix_tasks_create_time_id", "create_time", "id"),
        Index("ix_tasks_workflow_id_create_time", "workflow_id", "create_time", "id"),
        Index(
            "ix_tasks_schedule_id_create_time",
            "schedule_id",
            "create_time",
            "id",
            postgresql_where=text("schedule_id IS NOT NULL"),
        ),
        Index(
            "uq_tasks_request_id",
            "request_id",
            unique=True,
            postgresql_where=text("request_id IS NOT NULL"),
        ),
        # The sweeper's two questions, each answered from a small partial index.
        Index(
            "ix_tasks_pending_due",
            "next_attempt_time",
            postgresql_where=text("state = 'PENDING'"),
        ),
        Index(
            "ix_tasks_running_lease",
            "lease_expire_time",
            postgresql_where=text("state = 'RUNNING'"),
        ),
        Index("ix_tasks_queued_update", "update_time", postgresql_where=text("state = 'QUEUED'")),
        # "Is this schedule's previous run still going?" (overlap policies), per tick.
        Index(
            "ix_tasks_schedule_unfinished",
            "schedule_id",
            postgresql_where=text(
                "schedule_id IS NOT NULL AND state IN ('PENDING', 'QUEUED', 'RUNNING')"
            ),
        ),
        # ListTasks filtered to a failure state, which may be rare (PENDING, QUEUED and
        # RUNNING have the sweeper's partial indexes; SUCCEEDED is dense in the time index).
        # Partial: a task enters it only when it fails, so a successful run writes nothing.
        Index(
            "ix_tasks_failure_state_create_time",
            "state",
            "create_time",
            "id",
            postgresql_where=text("state IN ('FAILED', 'TIMED_OUT', 'CANCELLED')"),
        ),
        # A workflow's failed-task count (GetWorkflow, ListWorkflows) without reading its
        # other tasks.
        Index(
            "ix_tasks_workflow_id_failed",
            "workflow_id",
            postgresql_where=text("state IN ('FAILED', 'TIMED_OUT')"),
        ),
    )


class Xid8(UserDefinedType[int]):
    """Postgres's 64-bit transaction id (never wraps around)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


# Teach the dialect's reflection the type, so `alembic check` compares it instead of
# warning that it does not know it.
postgresql_base.ischema_names["xid8"] = Xid8


class TaskEventRow(Base):
    """The ordered, persisted history of a task: sequence 1, 2, 3 ... per task.

    ``xid`` is the writing transaction's id. The cross-task feed (WatchTasks) reads state
    changes in ``(xid, task_id, sequence)`` order and only below the oldest transaction
    still open, so a reader resuming from a cursor can never skip a row that commits late.
    """

    __tablename__ = "task_events"

    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    xid: Mapped[int] = mapped_column(Xid8(), server_default=text("pg_current_xact_id()"))

    __table_args__ = (
        Index(
            "ix_task_events_feed",
            "xid",
            "task_id",
            "sequence",
            postgresql_where=text("kind = 'state_change'"),
        ),
    )


class ScheduleRow(Base):
    """Fires a workflow at the times of a spec; ``next_fire_time`` is always true."""

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("workflows.id", ondelete="RESTRICT")
    )
    display_name: Mapped[str] = mapped_column(String(200), server_default="")
    #: The spec as stored: {"cron": {...}} | {"interval": {...}} | {"one_time": {...}}.
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    jitter_s: Mapped[float] = mapped_column(Float, server_default="0")
    input_value: Mapped[str] = mapped_column(Text, server_default="")
    tweaks: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    state: Mapped[str] = mapped_column(String(16))
    overlap_policy: Mapped[str] = mapped_column(String(16))
    catchup_window_s: Mapped[float] = mapped_column(Float)
    pause_note: Mapped[str] = mapped_column(Text, server_default="")
    #: The nominal next fire time (what users see) and the actual one (plus jitter),
    #: which the scheduler claims on.
    next_fire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_fire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_fire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: A fire time held back by BUFFER_ONE until the running task ends.
    buffered_fire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    missed_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    overlap_skipped_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    fired_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    request_id: Mapped[str | None] = mapped_column(String(128))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        Index("ix_schedules_create_time_id", "create_time", "id"),
        Index("ix_schedules_workflow_id", "workflow_id"),
        Index("ix_schedules_due", "next_fire_at", postgresql_where=text("state = 'ACTIVE'")),
        Index(
            "ix_schedules_buffered",
            "buffered_fire_time",
            postgresql_where=text("buffered_fire_time IS NOT NULL"),
        ),
    )


class ApiKeyRow(Base):
    """A service API key: only a hash of its secret is stored; the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    #: The public part of the key (``spk_<prefix>_<secret>``), to find the row.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    last_used_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDeliveryRow(Base):
    """A signed POST owed to a webhook for a task that reached a terminal state.

    Written in the same statement as the terminal transition, so no outcome is ever
    without its notification; delivered (and retried with backoff) by the sweeper.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(16))
    attempt_count: Mapped[int] = mapped_column(Integer, server_default="0")
    #: One object per attempt: time, http_status, error, duration_ms.
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    next_attempt_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        Index("ix_webhook_deliveries_task_id", "task_id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_time",
            postgresql_where=text("state = 'PENDING'"),
        ),
    )
