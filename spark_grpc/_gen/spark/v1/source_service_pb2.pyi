from google.protobuf import field_mask_pb2 as _field_mask_pb2
from spark_grpc._gen.spark.v1 import source_pb2 as _source_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSourceRequest(_message.Message):
    __slots__ = ("source", "request_id")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    source: _source_pb2.Source
    request_id: str
    def __init__(self, source: _Optional[_Union[_source_pb2.Source, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateSourceResponse(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: _source_pb2.Source
    def __init__(self, source: _Optional[_Union[_source_pb2.Source, _Mapping]] = ...) -> None: ...

class GetSourceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetSourceResponse(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: _source_pb2.Source
    def __init__(self, source: _Optional[_Union[_source_pb2.Source, _Mapping]] = ...) -> None: ...

class ListSourcesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "type", "enabled")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    type: _source_pb2.SourceType
    enabled: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., type: _Optional[_Union[_source_pb2.SourceType, str]] = ..., enabled: _Optional[bool] = ...) -> None: ...

class ListSourcesResponse(_message.Message):
    __slots__ = ("sources", "next_page_token")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[_source_pb2.Source]
    next_page_token: str
    def __init__(self, sources: _Optional[_Iterable[_Union[_source_pb2.Source, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateSourceRequest(_message.Message):
    __slots__ = ("source", "update_mask")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    source: _source_pb2.Source
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, source: _Optional[_Union[_source_pb2.Source, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateSourceResponse(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: _source_pb2.Source
    def __init__(self, source: _Optional[_Union[_source_pb2.Source, _Mapping]] = ...) -> None: ...

class DeleteSourceRequest(_message.Message):
    __slots__ = ("id", "force")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    force: bool
    def __init__(self, id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteSourceResponse(_message.Message):
    __slots__ = ("deleted_workflow_count",)
    DELETED_WORKFLOW_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_workflow_count: int
    def __init__(self, deleted_workflow_count: _Optional[int] = ...) -> None: ...

class CheckSourceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CheckSourceResponse(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: _source_pb2.Source
    def __init__(self, source: _Optional[_Union[_source_pb2.Source, _Mapping]] = ...) -> None: ...

class ListRemoteFlowsRequest(_message.Message):
    __slots__ = ("source_id", "page_size", "page_token", "kind")
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    source_id: str
    page_size: int
    page_token: str
    kind: _source_pb2.RemoteFlowKind
    def __init__(self, source_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kind: _Optional[_Union[_source_pb2.RemoteFlowKind, str]] = ...) -> None: ...

class ListRemoteFlowsResponse(_message.Message):
    __slots__ = ("remote_flows", "next_page_token")
    REMOTE_FLOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    remote_flows: _containers.RepeatedCompositeFieldContainer[_source_pb2.RemoteFlow]
    next_page_token: str
    def __init__(self, remote_flows: _Optional[_Iterable[_Union[_source_pb2.RemoteFlow, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRemoteFlowRequest(_message.Message):
    __slots__ = ("source_id", "remote_flow_id")
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    source_id: str
    remote_flow_id: str
    def __init__(self, source_id: _Optional[str] = ..., remote_flow_id: _Optional[str] = ...) -> None: ...

class GetRemoteFlowResponse(_message.Message):
    __slots__ = ("remote_flow",)
    REMOTE_FLOW_FIELD_NUMBER: _ClassVar[int]
    remote_flow: _source_pb2.RemoteFlow
    def __init__(self, remote_flow: _Optional[_Union[_source_pb2.RemoteFlow, _Mapping]] = ...) -> None: ...
