"""Workers: RQ processes that run tasks by calling their workflow's source, and the
sweeper that keeps every task that should be queued in the queue."""
