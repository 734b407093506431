"""``spark``: the command line over the sync client (Typer + Rich).

Every command talks to the server over gRPC, so it works against a remote deployment.
Lists are tables (``--json``: a JSON array); errors are one line on stderr,
``error: <STATUS_CODE>: <message>`` (plus field violations), and the exit code says what
happened: 0 ok, 1 the task ended FAILED / TIMED_OUT / CANCELLED, 2 usage or
INVALID_ARGUMENT, 3 NOT_FOUND, 4 UNAUTHENTICATED / PERMISSION_DENIED, 5 UNAVAILABLE or
anything else (``spark status``: PostgreSQL or Redis unreachable too).

One module per noun; importing them registers their commands on :data:`app`.
"""

from __future__ import annotations

from . import schedules, sources, status, tasks, workflows
from ._base import app

__all__ = ["app"]

# The command modules register themselves on import; name them so none looks unused.
_COMMANDS = (schedules, sources, status, tasks, workflows)
