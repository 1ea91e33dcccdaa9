"""Frozen settings dataclasses given as a model keyword: the dataclass itself, a mapping of its fields, or None."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["settings_from"]

Settings = TypeVar("Settings")


def settings_from(cls: type[Settings], value: Settings | Mapping | None, name: str) -> Settings:
    """The ``cls`` instance that the keyword argument ``name`` stands for: ``value`` itself, a mapping of field names
    (from YAML, JSON or ``timm.create_model(..., name=dict(...))``; unknown keys raise ``ValueError`` naming them)
    or None (the defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a {cls.__name__}, a mapping or None, got {type(value)}")
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"unknown {name} keys {unknown}; {cls.__name__} has {fields}")
    return cls(**value)
