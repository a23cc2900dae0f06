"""An adapter version's files on a node that serves it: checked in place, or fetched.

Scaled out, engine replicas may run on nodes that do not hold the registry's store. A
replica reads a version from where the registry stored it when that path exists on its
node (one node, or a shared filesystem); otherwise it asks the control plane for the bytes
and keeps them in a local cache directory. Either way every file is hashed against the
sha256 the registry recorded, before the engine reads it: fetched bytes are checked before
they are written, and the written files again before each load (a cache on disk can be
tampered with like a store). A version whose files do not match is never served.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from adapters.errors import AdapterTampered
from adapters.records import AdapterVersion, VerifyProblem
from adapters.store import sha256_file

__all__ = ["ReplicaFiles"]

Fetch = Callable[[AdapterVersion], dict[str, bytes]]


class ReplicaFiles:
    """`cache_dir`: where fetched versions are kept (None: only the registry's own paths)."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir
        self.fetched = 0  # versions fetched from the control plane

    def _cached_path(self, v: AdapterVersion) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{v.id}-{v.name}-{v.version}"

    def local(self, v: AdapterVersion) -> AdapterVersion:
        """`v` with the path its files have on this node."""
        if all((v.path / f).exists() for f in v.files):
            return v
        cached = self._cached_path(v)
        return v if cached is None else dataclasses.replace(v, path=cached)

    def verify(self, v: AdapterVersion, fetch: Fetch | None = None) -> None:
        """Raise AdapterTampered unless this node's copy of `v` matches its checksums,
        fetching it first when this node has none and `fetch` is given."""
        local = self.local(v)
        if local.path != v.path and fetch is not None and not all(
                (local.path / f).exists() for f in v.files):
            self._store(v, local.path, fetch(v))
        problems = []
        for f, expected in v.files.items():
            path = local.path / f
            actual = sha256_file(path) if path.exists() else None
            if actual != expected:
                problems.append(VerifyProblem(v.ref, f, expected, actual))
        if problems:
            raise AdapterTampered(v.ref, problems)

    def _store(self, v: AdapterVersion, target: Path, blobs: dict[str, bytes]) -> None:
        problems = [VerifyProblem(v.ref, f, expected, None if f not in blobs
                                  else hashlib.sha256(blobs[f]).hexdigest())
                    for f, expected in v.files.items()
                    if f not in blobs or hashlib.sha256(blobs[f]).hexdigest() != expected]
        if problems:
            raise AdapterTampered(v.ref, problems)
        staging = target.with_name(target.name + f".part-{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        for f in v.files:
            dest = staging / f
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(blobs[f])
        try:
            staging.rename(target)
        except OSError:  # another process cached it first; its copy is checked like ours
            for f in v.files:
                (staging / f).unlink(missing_ok=True)
        self.fetched += 1
