"""The model catalog: every adapter name the OpenAI API serves, held in memory.

Why in memory: the request path used to ask SQLite (and `stat` the adapter files) for every
request; vLLM's own server does one dictionary lookup there, and with several replicas a
database round trip per request would not scale. The catalog is rebuilt from the registry
off the event loop (start-up and the reconcile loop) and updated at once by admin writes
made in this process, so a version registered through the admin API is servable at once and
one registered by the CLI within one reconcile interval. Replacing the two dicts is one
assignment, so readers never see a half-built catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from adapters import AdapterVersion, Registry
from server.errors import ModelNotFound

__all__ = ["ModelCatalog"]


@dataclass(frozen=True)
class _Snapshot:
    names: dict[str, AdapterVersion] = field(default_factory=dict)  # "name" and "name@v"
    versions: dict[int, AdapterVersion] = field(default_factory=dict)  # by id, archived too
    why_not: dict[str, str] = field(default_factory=dict)  # known but not servable, and why


def _build(versions: Iterable[AdapterVersion]) -> _Snapshot:
    versions = list(versions)
    names: dict[str, AdapterVersion] = {}
    why_not: dict[str, str] = {}
    archived: dict[str, list[str]] = {}
    for v in sorted(versions, key=lambda v: (v.name, v.version)):
        if v.status == "active":
            names[v.ref] = v
            names[v.name] = v  # sorted by version: the latest active one wins
        else:
            why_not[v.ref] = f"{v.ref} is {v.status}"
            archived.setdefault(v.name, []).append(v.ref)
    for name, refs in archived.items():
        if name not in names:
            why_not[name] = f"adapter {name!r} has no active version (archived: {', '.join(refs)})"
    return _Snapshot(names, {v.id: v for v in versions}, why_not)


class ModelCatalog:
    def __init__(self, base_id: str, registry: Registry) -> None:
        self.base_id = base_id
        self.registry = registry
        self._snap = _Snapshot()

    def refresh(self) -> None:
        """Re-read the registry (SQLite): call it from a worker thread, never the event loop."""
        self._snap = _build(self.registry.list(include_archived=True))

    def lookup(self, model: str) -> AdapterVersion | None:
        """The version `model` names, None for the base model; ModelNotFound otherwise."""
        if model == self.base_id:
            return None
        snap = self._snap
        found = snap.names.get(model)
        if found is None:
            raise ModelNotFound(model, snap.why_not.get(model))
        return found

    def active(self) -> list[AdapterVersion]:
        return sorted({v.id: v for v in self._snap.names.values()}.values(),
                      key=lambda v: (v.name, v.version))

    def is_active(self, version_id: int) -> bool:
        v = self._snap.versions.get(version_id)
        return v is not None and v.status == "active"

    def put(self, version: AdapterVersion) -> None:
        """A write made in this process (register, archive): visible at once."""
        self._snap = _build([*self._others(version), version])

    def drop(self, version: AdapterVersion) -> None:
        """A delete made in this process."""
        self._snap = _build(self._others(version))

    def _others(self, version: AdapterVersion) -> list[AdapterVersion]:
        return [v for v in self._snap.versions.values() if v.id != version.id]
