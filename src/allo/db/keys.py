"""Lookups by composite key (a channel account and an id within it), and by lists of values."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, and_, any_, bindparam, or_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute


def among(column: InstrumentedAttribute[Any], values: Collection[Any]) -> ColumnElement[bool]:
    """`column = ANY(:values)`, the values bound as one array.

    An IN list becomes one bind parameter per value: a statement of a different length for
    every batch, which psycopg splits and converts anew each time and can never prepare.
    One array keeps the statement the same whatever the batch.
    """
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


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
    return or_(*(and_(outer == first, among(inner, values)) for first, values in grouped.items()))
