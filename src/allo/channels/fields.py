"""Reading a network's JSON: a payload of the wrong shape is a ParseError naming the field."""

from __future__ import annotations

from typing import Any

from allo.channels.inbound import ParseError


def as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParseError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ParseError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def list_in(parent: dict[str, Any], key: str, where: str) -> list[Any]:
    """`parent[key]`, a list; none when the key is missing or null."""
    value = parent.get(key)
    return [] if value is None else as_list(value, f"{where}.{key}")
