"""Opaque keyset page tokens (AIP-158).

A token names the position after the last row of a page, the list it belongs to and a
fingerprint of its filters, signed so a forged or edited token is rejected. Seeking from a
position costs the same at row 10 and row 10 million, unlike OFFSET.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from spark_grpc.crypto import SecretBox
from spark_grpc.errors import FieldViolation, InvalidArgumentError

_VERSION = 1
_MAC_BYTES = 16


class PageTokens:
    """Encodes and checks page tokens for every List RPC."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box

    def encode(self, scope: str, filters: Mapping[str, Any], position: list[Any]) -> str:
        """A token for the page after position, valid only for scope and filters."""
        payload = json.dumps(
            {"v": _VERSION, "s": scope, "f": _fingerprint(filters), "p": position},
            separators=(",", ":"),
        ).encode()
        return base64.urlsafe_b64encode(payload + self._box.sign(payload)).decode().rstrip("=")

    def decode(
        self, scope: str, filters: Mapping[str, Any], token: str, *, field: str = "page_token"
    ) -> list[Any] | None:
        """The position a token names; None for an empty token.

        Raises:
            InvalidArgumentError: the token is malformed, forged, from another list or was
                made with other filters.
        """
        if not token:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _bad(field, "is not a page token this server issued") from None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not self._box.verify(payload, mac):
            raise _bad(field, "is not a page token this server issued (or it was altered)")
        try:
            data = json.loads(payload)
        except ValueError:
            raise _bad(field, "is not a page token this server issued") from None
        if not isinstance(data, dict) or data.get("v") != _VERSION or data.get("s") != scope:
            raise _bad(field, "belongs to another list; start again without a page token")
        if data.get("f") != _fingerprint(filters):
            raise _bad(
                field, "was issued for other filters; repeat the same filters or start again"
            )
        position = data.get("p")
        if not isinstance(position, list):
            raise _bad(field, "is not a page token this server issued")
        return position


def _fingerprint(filters: Mapping[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _bad(field: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"invalid {field}: {description}",
        violations=[FieldViolation(field, description)],
        reason="INVALID_PAGE_TOKEN",
    )
