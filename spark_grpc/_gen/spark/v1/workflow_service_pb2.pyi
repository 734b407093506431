import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from spark_grpc._gen.spark.v1 import task_pb2 as _task_pb2
from spark_grpc._gen.spark.v1 import workflow_pb2 as _workflow_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKFLOW_VIEW_UNSPECIFIED: _ClassVar[WorkflowView]
    WORKFLOW_VIEW_BASIC: _ClassVar[WorkflowView]
    WORKFLOW_VIEW_FULL: _ClassVar[WorkflowView]
WORKFLOW_VIEW_UNSPECIFIED: WorkflowView
WORKFLOW_VIEW_BASIC: WorkflowView
WORKFLOW_VIEW_FULL: WorkflowView

class ImportWorkflowRequest(_message.Message):
    __slots__ = ("source_id", "remote_flow_id", "input_component_id", "output_component_id", "tags", "request_id")
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    source_id: str
    remote_flow_id: str
    input_component_id: str
    output_component_id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, source_id: _Optional[str] = ..., remote_flow_id: _Optional[str] = ..., input_component_id: _Optional[str] = ..., output_component_id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ImportWorkflowResponse(_message.Message):
    __slots__ = ("workflow", "created")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    workflow: _workflow_pb2.Workflow
    created: bool
    def __init__(self, workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class CreateWorkflowRequest(_message.Message):
    __slots__ = ("workflow", "request_id")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    workflow: _workflow_pb2.Workflow
    request_id: str
    def __init__(self, workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateWorkflowResponse(_message.Message):
    __slots__ = ("workflow",)
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    workflow: _workflow_pb2.Workflow
    def __init__(self, workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("id", "view")
    ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    id: str
    view: WorkflowView
    def __init__(self, id: _Optional[str] = ..., view: _Optional[_Union[WorkflowView, str]] = ...) -> None: ...

class GetWorkflowResponse(_message.Message):
    __slots__ = ("workflow",)
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    workflow: _workflow_pb2.Workflow
    def __init__(self, workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "source_id", "remote_flow_id", "tag", "name_contains", "view")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    NAME_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    source_id: str
    remote_flow_id: str
    tag: str
    name_contains: str
    view: WorkflowView
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., source_id: _Optional[str] = ..., remote_flow_id: _Optional[str] = ..., tag: _Optional[str] = ..., name_contains: _Optional[str] = ..., view: _Optional[_Union[WorkflowView, str]] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "next_page_token")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.Workflow]
    next_page_token: str
    def __init__(self, workflows: _Optional[_Iterable[_Union[_workflow_pb2.Workflow, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateWorkflowRequest(_message.Message):
    __slots__ = ("workflow", "update_mask")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    workflow: _workflow_pb2.Workflow
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateWorkflowResponse(_message.Message):
    __slots__ = ("workflow",)
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    workflow: _workflow_pb2.Workflow
    def __init__(self, workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ...) -> None: ...

class DeleteWorkflowRequest(_message.Message):
    __slots__ = ("id", "force")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    force: bool
    def __init__(self, id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteWorkflowResponse(_message.Message):
    __slots__ = ("deleted_task_count",)
    DELETED_TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_task_count: int
    def __init__(self, deleted_task_count: _Optional[int] = ...) -> None: ...

class RunWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "input_value", "tweaks", "timeout", "retry_policy", "deadline_time", "request_id", "webhook_url")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_VALUE_FIELD_NUMBER: _ClassVar[int]
    TWEAKS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    input_value: str
    tweaks: _struct_pb2.Struct
    timeout: _duration_pb2.Duration
    retry_policy: _task_pb2.RetryPolicy
    deadline_time: _timestamp_pb2.Timestamp
    request_id: str
    webhook_url: str
    def __init__(self, workflow_id: _Optional[str] = ..., input_value: _Optional[str] = ..., tweaks: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_policy: _Optional[_Union[_task_pb2.RetryPolicy, _Mapping]] = ..., deadline_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., webhook_url: _Optional[str] = ...) -> None: ...

class RunWorkflowResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class BatchRunWorkflowsRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RunWorkflowRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RunWorkflowRequest, _Mapping]]] = ...) -> None: ...

class BatchRunWorkflowsResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[_task_pb2.Task, _Mapping]]] = ...) -> None: ...
