"""Update masks (AIP-134): which fields an Update RPC changes."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import Message

from spark_grpc.validation import Validator


def mask_paths(
    v: Validator,
    request: Message,
    resource: Message,
    updatable: Iterable[str],
    *,
    prefix: str,
    immutable: Iterable[str] = (),
) -> set[str]:
    """The fields to update.

    With a non-empty ``update_mask``, its paths, each of which must be updatable. Without
    one, every updatable field that is set: present for message and optional fields,
    non-empty for repeated ones, non-default for scalars.
    """
    updatable = tuple(updatable)
    immutable = tuple(immutable)
    mask = getattr(request, "update_mask", None)
    if mask is not None and request.HasField("update_mask") and mask.paths:
        paths: set[str] = set()
        for i, raw in enumerate(mask.paths):
            path = raw.removeprefix(f"{prefix}.")
            if path in immutable:
                v.add(f"update_mask.paths[{i}]", f"{prefix}.{path} cannot change after create")
            elif path not in updatable:
                v.add(
                    f"update_mask.paths[{i}]",
                    f"unknown or read-only field {path!r}; updatable: {', '.join(updatable)}",
                )
            else:
                paths.add(path)
        return paths
    present: set[str] = set()
    for name in updatable:
        field = resource.DESCRIPTOR.fields_by_name[name]
        if field.is_repeated:
            if len(getattr(resource, name)):
                present.add(name)
        elif field.message_type is not None or field.has_presence:
            if resource.HasField(name):
                present.add(name)
        elif getattr(resource, name) != field.default_value:
            present.add(name)
    return present
