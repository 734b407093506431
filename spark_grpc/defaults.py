"""Default values and fixed limits, each documented where it is defined."""

from __future__ import annotations

#: Where the server listens when SPARK_LISTEN_ADDRESS is unset: loopback only, so a first
#: run never exposes an unauthenticated service to the network.
LISTEN_ADDRESS = "127.0.0.1:50051"

#: The embedded default's data directory, relative to the working directory.
DATA_DIR = ".spark"

#: Largest gRPC message in either direction (16 MiB). grpcio's default receive limit is
#: 4 MiB; flow graphs of large LangFlow flows approach that, so we raise it and document it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: Seconds in-flight RPCs get to finish after SIGTERM.
GRACE_PERIOD_S = 10.0

#: Seconds an RPC waits at most on a source's API (shortened by the RPC's own deadline).
SOURCE_TIMEOUT_S = 30.0

#: Connections per process in the SQLAlchemy pool.
DB_POOL_SIZE = 10

#: How long opening a Postgres connection may take before the RPC answers UNAVAILABLE.
DB_CONNECT_TIMEOUT_S = 3.0

#: How often the server probes Postgres to drive the health status.
DB_HEALTH_INTERVAL_S = 1.0

#: A running task's lease; the worker renews it every third of this while the source call
#: runs. A task whose worker died is retried (or failed) once its lease expires.
LEASE_S = 30.0

#: The sweeper's period: re-queues due PENDING tasks and tasks of dead workers.
SWEEP_INTERVAL_S = 1.0

#: A PENDING task is left this long to the code path that created it before the sweeper
#: queues it instead, so the sweeper rarely races a RunWorkflow's own enqueue.
SWEEP_GRACE_S = 1.0

#: A QUEUED task whose job Redis no longer has is re-queued after this long.
QUEUED_CHECK_AFTER_S = 5.0

#: Worker processes started by `spark-grpc worker`.
WORKER_CONCURRENCY = 2

#: Attempts one worker process runs at once. A source call is mostly waiting on the
#: network, so a process takes its next job as soon as it has claimed the previous one.
WORKER_SLOTS = 8

#: On SIGTERM, how long a worker process waits for its running attempts before it stops
#: them (their leases then expire and the sweeper retries them elsewhere).
WORKER_DRAIN_S = 20.0

#: Answers larger than this (as JSON) stay out of GetTask; they are stored as output chunk
#: events of OUTPUT_CHUNK_BYTES each, so every response fits the message limit.
INLINE_OUTPUT_BYTES = 1024 * 1024
OUTPUT_CHUNK_BYTES = 256 * 1024

#: Redis pub/sub channel on which CancelTask tells workers to stop a running source call.
CANCEL_CHANNEL = "spark:task-cancel"

#: Longest input_value of a run.
MAX_INPUT_BYTES = 1024 * 1024

#: Most runs in one BatchRunWorkflows.
MAX_BATCH_RUNS = 1000

#: Heartbeat period of idle streams, below the idle timeouts of common proxies (60 s).
STREAM_HEARTBEAT_S = 15.0

#: Verified API keys are cached this long, which bounds how long a revoked key still works.
AUTH_CACHE_S = 10.0

#: Per-key rate limit: a token bucket refilled at this rate, holding at most the burst.
RATE_LIMIT_PER_S = 200.0
RATE_LIMIT_BURST = 400.0

#: Admission control: unary RPCs one server process runs at once (200 more may wait for a
#: slot, each at most ADMISSION_WAIT_S, then RESOURCE_EXHAUSTED). Small on purpose: it
#: must keep the event loop below saturation, or calls queue unseen inside grpcio until
#: their deadlines pass (spark_grpc/admission.py, bench S6). The wait lets a burst of a
#: second's worth of calls through.
MAX_CONCURRENT_RPCS = 10
ADMISSION_WAIT_S = 1.0
#: The retry delay RESOURCE_EXHAUSTED asks an overloaded server's callers for (jittered).
ADMISSION_RETRY_AFTER_S = 1.0

#: Open WatchTask / WatchTasks streams per server, and HTTP/2 streams per connection.
MAX_STREAMS_TOTAL = 2000
MAX_STREAMS_PER_CONNECTION = 200

#: List RPCs: page size when the request leaves it at 0, and the most a page returns.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

#: Idempotency keys (request_id) are kept this long at least (AIP-155 asks for a day).
REQUEST_ID_RETENTION_S = 48 * 3600

#: String limits, checked before anything is written.
MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_URL_LENGTH = 2048
MAX_API_KEY_LENGTH = 4096
MAX_ID_LENGTH = 256
MAX_REQUEST_ID_LENGTH = 128
MAX_TAG_LENGTH = 64
MAX_TAGS = 32
MAX_SEARCH_LENGTH = 200
