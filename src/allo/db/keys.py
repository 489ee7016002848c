"""Lookups by composite key (a channel account and an id within it)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute


def pairs_match(
    outer: InstrumentedAttribute[int],
    inner: InstrumentedAttribute[Any],
    pairs: set[tuple[int, Any]],
) -> ColumnElement[bool]:
    """(outer, inner) among `pairs`, as `outer = x AND inner = ANY(...)` per outer value.

    A row-value IN list is planned by PostgreSQL 15 as an index scan on the first column with
    the second as a filter, which grows with the table; this form uses the whole index.
    """
    grouped: dict[int, list[Any]] = defaultdict(list)
    for first, second in pairs:
        grouped[first].append(second)
    return or_(*(and_(outer == first, inner.in_(values)) for first, values in grouped.items()))
