"""indexes of failed tasks

ListTasks filtered to a rare failure state (TIMED_OUT, say) scanned the whole
(create_time, id) index backwards: 740 ms at 1M tasks (bench S7). GetWorkflow's failed count
read every task of the workflow. Both indexes are partial: a task enters them only when it
ends FAILED, TIMED_OUT or CANCELLED, so the path of a task that succeeds writes nothing more.
Built CONCURRENTLY, so a large tasks table stays writable while they build.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FAILURE_STATES = "state IN ('FAILED', 'TIMED_OUT', 'CANCELLED')"
_FAILED_STATES = "state IN ('FAILED', 'TIMED_OUT')"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_tasks_failure_state_create_time",
            "tasks",
            ["state", "create_time", "id"],
            unique=False,
            postgresql_where=sa.text(_FAILURE_STATES),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_tasks_workflow_id_failed",
            "tasks",
            ["workflow_id"],
            unique=False,
            postgresql_where=sa.text(_FAILED_STATES),
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_tasks_workflow_id_failed",
            table_name="tasks",
            postgresql_where=sa.text(_FAILED_STATES),
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.drop_index(
            "ix_tasks_failure_state_create_time",
            table_name="tasks",
            postgresql_where=sa.text(_FAILURE_STATES),
            postgresql_concurrently=True,
            if_exists=True,
        )
