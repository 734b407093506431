import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetSystemStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemStatusResponse(_message.Message):
    __slots__ = ("check_time", "server", "database", "redis", "workers", "schedulers")
    CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    REDIS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULERS_FIELD_NUMBER: _ClassVar[int]
    check_time: _timestamp_pb2.Timestamp
    server: ServerStatus
    database: DatabaseStatus
    redis: RedisStatus
    workers: WorkersStatus
    schedulers: SchedulersStatus
    def __init__(self, check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., server: _Optional[_Union[ServerStatus, _Mapping]] = ..., database: _Optional[_Union[DatabaseStatus, _Mapping]] = ..., redis: _Optional[_Union[RedisStatus, _Mapping]] = ..., workers: _Optional[_Union[WorkersStatus, _Mapping]] = ..., schedulers: _Optional[_Union[SchedulersStatus, _Mapping]] = ...) -> None: ...

class ServerStatus(_message.Message):
    __slots__ = ("replica", "version", "start_time", "uptime")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    replica: str
    version: str
    start_time: _timestamp_pb2.Timestamp
    uptime: _duration_pb2.Duration
    def __init__(self, replica: _Optional[str] = ..., version: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uptime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DatabaseStatus(_message.Message):
    __slots__ = ("reachable", "latency", "error", "schema_revision", "schema_head_revision")
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_REVISION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_HEAD_REVISION_FIELD_NUMBER: _ClassVar[int]
    reachable: bool
    latency: _duration_pb2.Duration
    error: str
    schema_revision: str
    schema_head_revision: str
    def __init__(self, reachable: _Optional[bool] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., error: _Optional[str] = ..., schema_revision: _Optional[str] = ..., schema_head_revision: _Optional[str] = ...) -> None: ...

class RedisStatus(_message.Message):
    __slots__ = ("reachable", "latency", "error", "version", "queue_depth")
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    reachable: bool
    latency: _duration_pb2.Duration
    error: str
    version: str
    queue_depth: int
    def __init__(self, reachable: _Optional[bool] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., error: _Optional[str] = ..., version: _Optional[str] = ..., queue_depth: _Optional[int] = ...) -> None: ...

class WorkersStatus(_message.Message):
    __slots__ = ("live_count", "busy_count")
    LIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BUSY_COUNT_FIELD_NUMBER: _ClassVar[int]
    live_count: int
    busy_count: int
    def __init__(self, live_count: _Optional[int] = ..., busy_count: _Optional[int] = ...) -> None: ...

class Scheduler(_message.Message):
    __slots__ = ("name", "host", "pid", "start_time", "heartbeat_age", "last_tick_time", "last_tick_error", "fired_task_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_FIELD_NUMBER: _ClassVar[int]
    LAST_TICK_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_TICK_ERROR_FIELD_NUMBER: _ClassVar[int]
    FIRED_TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    host: str
    pid: int
    start_time: _timestamp_pb2.Timestamp
    heartbeat_age: _duration_pb2.Duration
    last_tick_time: _timestamp_pb2.Timestamp
    last_tick_error: str
    fired_task_count: int
    def __init__(self, name: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., last_tick_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_tick_error: _Optional[str] = ..., fired_task_count: _Optional[int] = ...) -> None: ...

class SchedulersStatus(_message.Message):
    __slots__ = ("schedulers", "active_schedule_count", "next_fire_time")
    SCHEDULERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SCHEDULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    schedulers: _containers.RepeatedCompositeFieldContainer[Scheduler]
    active_schedule_count: int
    next_fire_time: _timestamp_pb2.Timestamp
    def __init__(self, schedulers: _Optional[_Iterable[_Union[Scheduler, _Mapping]]] = ..., active_schedule_count: _Optional[int] = ..., next_fire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
