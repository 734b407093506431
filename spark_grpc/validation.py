"""Request validation: collect every bad field, then raise one INVALID_ARGUMENT.

Services validate before any write, so a rejected request changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from urllib.parse import urlsplit

from spark_grpc import defaults
from spark_grpc.errors import FieldViolation, InvalidArgumentError


class Validator:
    """Collects field violations for one request.

    Example:
        v = Validator()
        source_id = v.uuid("source_id", request.source_id)
        v.raise_if_invalid()
    """

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Records a violation."""
        self.violations.append(FieldViolation(field, description))

    def raise_if_invalid(self) -> None:
        """Raises InvalidArgumentError listing every violation, if there is any."""
        if self.violations:
            first = self.violations[0]
            more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
            raise InvalidArgumentError(
                f"invalid {first.field}: {first.description}{more}",
                violations=self.violations,
            )

    def uuid(self, field: str, value: str, *, required: bool = True) -> uuid.UUID | None:
        """A UUID string; None (with a violation if required) when empty or malformed."""
        if not value:
            if required:
                self.add(field, "required: give the resource's id (a UUID)")
            return None
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            self.add(
                field,
                f"must be a UUID such as 123e4567-e89b-12d3-a456-426614174000, got {_show(value)}",
            )
            return None
        return parsed

    def text(self, field: str, value: str, *, max_length: int, required: bool = False) -> str:
        """A string within limits; control characters other than newline and tab rejected."""
        if not value.strip():
            if required:
                self.add(field, "required: must not be empty")
            return value
        if len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters, got {len(value)}")
        elif any(ord(c) < 32 and c not in "\n\t" for c in value) or "\x00" in value:
            self.add(field, "must not contain control characters")
        return value

    def identifier(self, field: str, value: str, *, required: bool = True) -> str:
        """An opaque id of something outside the service (remote flow id, component id)."""
        value = self.text(field, value, max_length=defaults.MAX_ID_LENGTH, required=required)
        if value and value != value.strip():
            self.add(field, "must not start or end with white space")
        return value

    def url(self, field: str, value: str, *, required: bool = True) -> str:
        """An absolute http(s) URL; returned without a trailing slash."""
        if not value:
            if required:
                self.add(field, "required: the server's base URL, e.g. http://localhost:7860")
            return value
        if len(value) > defaults.MAX_URL_LENGTH:
            self.add(field, f"must be at most {defaults.MAX_URL_LENGTH} characters")
            return value
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError for a port out of range
        except ValueError:
            self.add(field, f"is not a valid URL: {_show(value)}")
            return value
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.add(field, f"must be an http:// or https:// URL with a host, got {_show(value)}")
        elif parts.username or parts.password:
            self.add(field, "must not carry credentials; put the API key in api_key")
        elif parts.query or parts.fragment:
            self.add(field, "must not have a query or a fragment")
        elif any(c.isspace() for c in value):
            self.add(field, "must not contain white space")
        return value.rstrip("/")

    def enum(self, field: str, value: int, allowed: Iterable[int], *, required: bool) -> int:
        """An enum value the contract defines (proto3 enums accept unknown numbers)."""
        allowed = set(allowed)
        if value == 0:
            if required:
                self.add(field, "required: choose one of the enum's values")
        elif value not in allowed:
            self.add(field, f"unknown enum value {value}")
        return value

    def page_size(self, field: str, value: int) -> int:
        """A page size: 0 means the default, larger than the maximum is clamped."""
        if value < 0:
            self.add(field, f"must not be negative (0 means {defaults.DEFAULT_PAGE_SIZE})")
            return defaults.DEFAULT_PAGE_SIZE
        if value == 0:
            return defaults.DEFAULT_PAGE_SIZE
        return min(value, defaults.MAX_PAGE_SIZE)

    def request_id(self, field: str, value: str) -> str:
        """An optional idempotency key."""
        if value:
            self.text(field, value, max_length=defaults.MAX_REQUEST_ID_LENGTH)
            if value != value.strip():
                self.add(field, "must not start or end with white space")
        return value

    def tags(self, field: str, values: Iterable[str]) -> list[str]:
        """Tags: each 1-64 printable characters, at most 32, duplicates removed."""
        tags = list(values)
        if len(tags) > defaults.MAX_TAGS:
            self.add(field, f"at most {defaults.MAX_TAGS} tags, got {len(tags)}")
        for i, tag in enumerate(tags):
            if not tag.strip() or tag != tag.strip():
                self.add(f"{field}[{i}]", "must be non-empty with no leading or trailing space")
            else:
                self.text(f"{field}[{i}]", tag, max_length=defaults.MAX_TAG_LENGTH)
        return list(dict.fromkeys(tags))


def _show(value: str) -> str:
    """The value for an error message, shortened so a huge input does not echo back whole."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def host_allowed(url: str, allowlist: list[str]) -> bool:
    """Whether url's host is in the allow-list (hostnames exactly, IPs by CIDR range).

    An empty list allows every host. Names are compared as written, not resolved: list
    the names users may use, or IP ranges for sources given by address.
    """
    if not allowlist:
        return True
    import ipaddress

    host = (urlsplit(url).hostname or "").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in allowlist:
        entry = raw.strip().lower()
        if address is not None and "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif host == entry or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False
