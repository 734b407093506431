"""No-op RQ jobs for the bare-RQ baselines."""

from __future__ import annotations

import time

from rq import get_current_job


def record_start(key: str) -> None:
    """Stores when the job started."""
    job = get_current_job()
    assert job is not None
    job.connection.set(key, repr(time.time()), ex=600)


def count(key: str) -> None:
    """Counts a finished job."""
    job = get_current_job()
    assert job is not None
    job.connection.incr(key)
