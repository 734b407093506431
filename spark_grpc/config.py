"""Settings, read once from the environment (prefix ``SPARK_``) and passed explicitly.

pydantic-settings does the parsing and validation, so a bad value is a clear start-up
error naming the variable, not a crash later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from spark_grpc import defaults


class Settings(BaseSettings):
    """Every setting of every process. See the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="SPARK_", frozen=True, extra="ignore")

    listen_address: str = Field(
        default=defaults.LISTEN_ADDRESS,
        description="host:port the gRPC server binds; port 0 picks a free port.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of Postgres (postgresql+asyncpg://...). Empty: embedded.",
    )
    redis_url: str = Field(default="", description="Redis URL. Empty: embedded.")
    encryption_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated Fernet keys. The first encrypts; every key decrypts, so a key "
            "rotates by putting the new one first. Required outside the embedded default."
        ),
    )
    data_dir: Path = Field(
        default=Path(defaults.DATA_DIR),
        description="Where the embedded default keeps Postgres, Redis and its key.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object per line; text: for people."
    )
    max_message_bytes: int = Field(
        default=defaults.MAX_MESSAGE_BYTES,
        ge=1024,
        description="Largest gRPC message the server sends or accepts.",
    )
    grace_period_s: float = Field(
        default=defaults.GRACE_PERIOD_S,
        ge=0,
        description="On SIGTERM, how long in-flight RPCs may take before they are cut.",
    )
    reflection: bool = Field(default=True, description="Serve gRPC server reflection.")
    source_timeout_s: float = Field(
        default=defaults.SOURCE_TIMEOUT_S,
        gt=0,
        description="Longest call to a source's API from an RPC (list, get, check).",
    )
    lease_s: float = Field(
        default=defaults.LEASE_S,
        gt=0,
        description=(
            "How long a running task's lease lasts without a heartbeat; a task whose worker "
            "died is retried or failed this long after its last heartbeat."
        ),
    )
    sweep_interval_s: float = Field(
        default=defaults.SWEEP_INTERVAL_S,
        gt=0,
        description="How often the sweeper looks for tasks that should be in the queue.",
    )
    worker_concurrency: int = Field(
        default=defaults.WORKER_CONCURRENCY, ge=1, description="Worker processes per `worker`."
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="The asyncio loop of every process: auto picks uvloop when installed.",
    )
    worker_slots: int = Field(
        default=defaults.WORKER_SLOTS,
        ge=1,
        le=1000,
        description="Attempts each worker process runs at once (1: one task at a time).",
    )
    worker_drain_s: float = Field(
        default=defaults.WORKER_DRAIN_S,
        ge=0,
        description="On SIGTERM, how long a worker process lets its running attempts finish.",
    )
    inline_output_bytes: int = Field(
        default=defaults.INLINE_OUTPUT_BYTES,
        ge=1024,
        description="Answers larger than this are kept out of GetTask and sent as chunk events.",
    )
    stream_heartbeat_s: float = Field(
        default=defaults.STREAM_HEARTBEAT_S,
        gt=0,
        description="Idle WatchTask / WatchTasks streams carry a heartbeat this often.",
    )
    auth_mode: Literal["required", "open"] = Field(
        default="required",
        description=(
            "required: every RPC but health needs an API key or token; open: no checks, "
            "allowed only when listening on loopback (the embedded default)."
        ),
    )
    auth_cache_s: float = Field(
        default=defaults.AUTH_CACHE_S,
        ge=0,
        description="Verified keys are cached this long: a revoked key works at most this long.",
    )
    reflection_public: bool = Field(
        default=False, description="Serve reflection without a key (grpcurl without -H)."
    )
    rate_limit_per_s: float = Field(
        default=defaults.RATE_LIMIT_PER_S, ge=0, description="Calls per second per key; 0: off."
    )
    rate_limit_burst: float = Field(default=defaults.RATE_LIMIT_BURST, ge=1)
    max_concurrent_rpcs: int = Field(
        default=defaults.MAX_CONCURRENT_RPCS,
        ge=0,
        description=(
            "Unary RPCs a server process runs at once; 200 more (or 4 per slot) wait up "
            "to admission_wait_s, the rest get RESOURCE_EXHAUSTED with RetryInfo. 0: off."
        ),
    )
    admission_wait_s: float = Field(
        default=defaults.ADMISSION_WAIT_S,
        ge=0,
        description="How long a unary RPC beyond max_concurrent_rpcs waits for a slot.",
    )
    max_streams_total: int = Field(
        default=defaults.MAX_STREAMS_TOTAL, ge=1, description="Open Watch streams per server."
    )
    max_streams_per_connection: int = Field(
        default=defaults.MAX_STREAMS_PER_CONNECTION,
        ge=1,
        description="Concurrent HTTP/2 streams per client connection.",
    )
    jwt_public_key_file: Path | None = Field(
        default=None, description="PEM public key (RS256/ES256) of accepted bearer JWTs."
    )
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_scope_claim: str = "scope"
    tls_cert_file: Path | None = Field(default=None, description="Server certificate (PEM).")
    tls_key_file: Path | None = Field(default=None, description="Server private key (PEM).")
    tls_client_ca_file: Path | None = Field(
        default=None, description="CA of client certificates: setting it requires mTLS."
    )
    source_host_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts (or CIDR ranges) sources may point at; empty: any.",
    )
    webhook_secret: str = Field(
        default="",
        description=(
            "HMAC secret of webhook signatures; empty: derived from the first encryption "
            "key (see `spark-grpc webhook-secret`)."
        ),
    )
    tracing: Literal["off", "console", "otlp"] = Field(
        default="off",
        description="OpenTelemetry spans: off, console (stdout) or otlp (OTEL_EXPORTER_OTLP_*).",
    )
    metrics_address: str = Field(
        default="",
        description="host:port serving Prometheus /metrics; empty: off (dev: 127.0.0.1:9464).",
    )
    db_pool_size: int = Field(default=defaults.DB_POOL_SIZE, ge=1)
    db_connect_timeout_s: float = Field(default=defaults.DB_CONNECT_TIMEOUT_S, gt=0)
    db_health_interval_s: float = Field(default=defaults.DB_HEALTH_INTERVAL_S, gt=0)

    @field_validator("encryption_keys", "source_host_allowlist", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def embedded(self) -> bool:
        """True when the process should start or use the embedded Postgres and Redis."""
        return not self.database_url
