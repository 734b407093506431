"""Live task events: published on Redis after each commit, fanned out in each server.

Postgres holds every event (``task_events``); Redis only carries them live. A stream that
misses a live event (Redis restarted, a slow reader's buffer overflowed) catches up from
the table, so nothing is lost.
"""
