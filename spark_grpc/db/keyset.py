"""Keyset (seek) pagination over ``(create_time, id)``, newest first."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, tuple_

from spark_grpc.errors import FieldViolation, InvalidArgumentError


def _malformed() -> InvalidArgumentError:
    return InvalidArgumentError(
        "invalid page_token: malformed",
        violations=[FieldViolation("page_token", "malformed; start again without it")],
        reason="INVALID_PAGE_TOKEN",
    )


def keyset_page(
    query: Select[Any], model: Any, position: list[Any] | None, size: int
) -> Select[Any]:
    """Rows after position, newest first, plus one to tell whether another page follows."""
    if position is not None:
        try:
            after_time = datetime.fromisoformat(position[0])
            after_id = uuid.UUID(position[1])
        except (TypeError, ValueError, IndexError):
            raise _malformed() from None
        if len(position) != 2:
            raise _malformed()
        query = query.where(tuple_(model.create_time, model.id) < tuple_(after_time, after_id))
    return query.order_by(model.create_time.desc(), model.id.desc()).limit(size + 1)


def keyset_position(row: Any) -> list[Any]:
    """What a page token stores for the last row of a page."""
    return [row.create_time.isoformat(), str(row.id)]
