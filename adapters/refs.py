"""Adapter names and `name@version` references."""

from __future__ import annotations

import re

from adapters.errors import AdapterNotFound, RegistryError

__all__ = ["NAME_PATTERN", "format_ref", "parse_ref", "validate_name"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate_name(name: str) -> str:
    """Names become directory names in the store and model names on the wire: keep them plain."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise RegistryError(
            f"invalid adapter name {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit (no '@' or '/')"
        )
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`"a@2"` -> `("a", 2)`; `"a"` -> `("a", None)` (the latest active version)."""
    if not isinstance(ref, str) or not ref:
        raise AdapterNotFound(f"invalid adapter reference {ref!r}: expected NAME or NAME@VERSION")
    name, sep, version = ref.partition("@")
    if not NAME_PATTERN.fullmatch(name):
        raise AdapterNotFound(
            f"invalid adapter reference {ref!r}: {name!r} is not a valid adapter name"
        )
    if not sep:
        return name, None
    if not version.isdigit() or not version.isascii() or int(version) < 1:
        raise AdapterNotFound(
            f"invalid adapter reference {ref!r}: version must be a positive integer"
        )
    return name, int(version)


def format_ref(name: str, version: int) -> str:
    return f"{name}@{version}"
