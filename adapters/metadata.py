"""Checks on what the caller says about an adapter (tags, metrics, lineage, source kind)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from adapters.errors import AdapterRejected, RegistryError
from adapters.refs import parse_ref

__all__ = ["SOURCE_KINDS", "check_metadata"]

SOURCE_KINDS = ("trained", "imported")


def check_metadata(
    name: str, description: str, tags: Sequence[str], metrics: dict | None,
    lineage: dict | None, source_kind: str,
) -> dict:
    """Normalized metadata, or AdapterRejected; JSON-serializable so it can be stored."""
    if source_kind not in SOURCE_KINDS:
        raise AdapterRejected(name, "source-kind", f"source_kind must be one of {SOURCE_KINDS}", source_kind)
    if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
        raise AdapterRejected(name, "tags", "tags must be a list of non-empty strings", tags)
    meta: dict = {
        "description": str(description), "tags": list(dict.fromkeys(tags)),
        "source_kind": source_kind,
    }
    for key, value in (("metrics", metrics), ("lineage", lineage)):
        value = dict(value or {})
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise AdapterRejected(name, key, f"{key} must be JSON-serializable ({exc})") from None
        meta[key] = value
    parent = meta["lineage"].get("parent")
    if parent is not None:
        try:
            parse_ref(parent)
        except RegistryError as exc:
            raise AdapterRejected(name, "lineage", f"parent must be NAME@VERSION: {exc}", parent) from None
    return meta
