import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from spark_grpc._gen.spark.v1 import component_pb2 as _component_pb2
from spark_grpc._gen.spark.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Workflow(_message.Message):
    __slots__ = ("id", "display_name", "description", "source_id", "remote_flow_id", "graph", "components", "input_component_id", "output_component_id", "tags", "folder_name", "flow_version", "import_time", "create_time", "update_time", "latest_run_state", "task_count", "failed_task_count", "retry_policy", "timeout", "webhook_url")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    FOLDER_NAME_FIELD_NUMBER: _ClassVar[int]
    FLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LATEST_RUN_STATE_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    description: str
    source_id: str
    remote_flow_id: str
    graph: _struct_pb2.Struct
    components: _containers.RepeatedCompositeFieldContainer[_component_pb2.Component]
    input_component_id: str
    output_component_id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    folder_name: str
    flow_version: str
    import_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    latest_run_state: _task_pb2.TaskState
    task_count: int
    failed_task_count: int
    retry_policy: _task_pb2.RetryPolicy
    timeout: _duration_pb2.Duration
    webhook_url: str
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., source_id: _Optional[str] = ..., remote_flow_id: _Optional[str] = ..., graph: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., components: _Optional[_Iterable[_Union[_component_pb2.Component, _Mapping]]] = ..., input_component_id: _Optional[str] = ..., output_component_id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., folder_name: _Optional[str] = ..., flow_version: _Optional[str] = ..., import_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latest_run_state: _Optional[_Union[_task_pb2.TaskState, str]] = ..., task_count: _Optional[int] = ..., failed_task_count: _Optional[int] = ..., retry_policy: _Optional[_Union[_task_pb2.RetryPolicy, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., webhook_url: _Optional[str] = ...) -> None: ...
