"""Conversions between stored values and proto messages shared by the services."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from spark_grpc._gen.spark.v1 import component_pb2
from spark_grpc.sources import base as sources


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for an aware datetime, None for None."""
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    """A Struct for a JSON object, None for None."""
    if value is None:
        return None
    s = struct_pb2.Struct()
    s.update(value)
    return s


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    """A JSON object for a Struct."""
    return json_format.MessageToDict(value)


def component_to_dict(component: component_pb2.Component) -> dict[str, Any]:
    """The stored (JSONB) form of a component."""
    return json_format.MessageToDict(component, preserving_proto_field_name=True)


def component_from_dict(data: dict[str, Any]) -> component_pb2.Component:
    """A component from its stored form."""
    return json_format.ParseDict(data, component_pb2.Component(), ignore_unknown_fields=True)


def component_from_source(component: sources.Component) -> component_pb2.Component:
    """A component as a source adapter read it."""
    message = component_pb2.Component(
        id=component.id,
        type=component.type,
        display_name=component.display_name,
        is_input=component.is_input,
        is_output=component.is_output,
    )
    for param in component.params:
        p = message.tweakable_params.add(
            name=param.name, field_type=param.field_type, display_name=param.display_name
        )
        json_format.ParseDict(param.value, p.value)
    return message
