"""Tasks: the shared code that stores them, moves them between states, and queues them.

Every path that creates a task (RunWorkflow, BatchRunWorkflows, schedules) calls
:func:`store.insert_tasks` inside its own transaction and :func:`queue.enqueue_after_commit`
once that transaction has committed.
"""
