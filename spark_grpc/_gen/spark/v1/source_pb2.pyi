import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from spark_grpc._gen.spark.v1 import component_pb2 as _component_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SourceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_TYPE_UNSPECIFIED: _ClassVar[SourceType]
    SOURCE_TYPE_LANGFLOW: _ClassVar[SourceType]
    SOURCE_TYPE_AUTOMAGIK_AGENTS: _ClassVar[SourceType]
    SOURCE_TYPE_AUTOMAGIK_HIVE: _ClassVar[SourceType]

class RemoteFlowKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REMOTE_FLOW_KIND_UNSPECIFIED: _ClassVar[RemoteFlowKind]
    REMOTE_FLOW_KIND_FLOW: _ClassVar[RemoteFlowKind]
    REMOTE_FLOW_KIND_AGENT: _ClassVar[RemoteFlowKind]
    REMOTE_FLOW_KIND_TEAM: _ClassVar[RemoteFlowKind]
    REMOTE_FLOW_KIND_WORKFLOW: _ClassVar[RemoteFlowKind]
SOURCE_TYPE_UNSPECIFIED: SourceType
SOURCE_TYPE_LANGFLOW: SourceType
SOURCE_TYPE_AUTOMAGIK_AGENTS: SourceType
SOURCE_TYPE_AUTOMAGIK_HIVE: SourceType
REMOTE_FLOW_KIND_UNSPECIFIED: RemoteFlowKind
REMOTE_FLOW_KIND_FLOW: RemoteFlowKind
REMOTE_FLOW_KIND_AGENT: RemoteFlowKind
REMOTE_FLOW_KIND_TEAM: RemoteFlowKind
REMOTE_FLOW_KIND_WORKFLOW: RemoteFlowKind

class Source(_message.Message):
    __slots__ = ("id", "display_name", "type", "url", "api_key", "api_key_set", "enabled", "health", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    API_KEY_SET_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    type: SourceType
    url: str
    api_key: str
    api_key_set: bool
    enabled: bool
    health: SourceHealth
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., type: _Optional[_Union[SourceType, str]] = ..., url: _Optional[str] = ..., api_key: _Optional[str] = ..., api_key_set: _Optional[bool] = ..., enabled: _Optional[bool] = ..., health: _Optional[_Union[SourceHealth, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SourceHealth(_message.Message):
    __slots__ = ("check_time", "reachable", "version", "message")
    CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    check_time: _timestamp_pb2.Timestamp
    reachable: bool
    version: str
    message: str
    def __init__(self, check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reachable: _Optional[bool] = ..., version: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RemoteFlow(_message.Message):
    __slots__ = ("id", "source_id", "name", "description", "kind", "folder_name", "update_time", "input_component_id", "output_component_id", "components", "graph", "version", "tags")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FOLDER_NAME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    INPUT_COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    source_id: str
    name: str
    description: str
    kind: RemoteFlowKind
    folder_name: str
    update_time: _timestamp_pb2.Timestamp
    input_component_id: str
    output_component_id: str
    components: _containers.RepeatedCompositeFieldContainer[_component_pb2.Component]
    graph: _struct_pb2.Struct
    version: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., source_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., kind: _Optional[_Union[RemoteFlowKind, str]] = ..., folder_name: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input_component_id: _Optional[str] = ..., output_component_id: _Optional[str] = ..., components: _Optional[_Iterable[_Union[_component_pb2.Component, _Mapping]]] = ..., graph: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...
