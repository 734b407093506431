"""Schedules: firing (shared by the scheduler and the Trigger / Backfill RPCs) and the
scheduler loop. The maths lives in ``spark_grpc.domain.schedules``."""
