from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Component(_message.Message):
    __slots__ = ("id", "type", "display_name", "tweakable_params", "is_input", "is_output")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TWEAKABLE_PARAMS_FIELD_NUMBER: _ClassVar[int]
    IS_INPUT_FIELD_NUMBER: _ClassVar[int]
    IS_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    display_name: str
    tweakable_params: _containers.RepeatedCompositeFieldContainer[ComponentParameter]
    is_input: bool
    is_output: bool
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., display_name: _Optional[str] = ..., tweakable_params: _Optional[_Iterable[_Union[ComponentParameter, _Mapping]]] = ..., is_input: _Optional[bool] = ..., is_output: _Optional[bool] = ...) -> None: ...

class ComponentParameter(_message.Message):
    __slots__ = ("name", "field_type", "display_name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIELD_TYPE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    field_type: str
    display_name: str
    value: _struct_pb2.Value
    def __init__(self, name: _Optional[str] = ..., field_type: _Optional[str] = ..., display_name: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
