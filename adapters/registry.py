"""The adapter registry: validated, versioned, checksummed LoRA adapters in SQLite + a file store.

`add` stages the files under the store, validates the staged bytes (validation.py), checks
the base identity (identity.py), then renames the directory into place and inserts the rows
in one IMMEDIATE transaction, which also serializes version numbering across processes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from adapters.archive import ArchiveLimits, adapter_root, extract_archive, is_archive
from adapters.basemodel import BaseModel, load_base
from adapters.errors import (
    AdapterInUse,
    AdapterNotFound,
    AdapterRejected,
    AdapterTampered,
    RegistryError,
)
from adapters.identity import check_base_identity
from adapters.metadata import check_metadata
from adapters.migrations import migrations
from adapters.records import AdapterVersion, VerifyProblem
from adapters.refs import format_ref, parse_ref, validate_name
from adapters.store import (
    copy_file,
    fsync_dir,
    make_readonly,
    remove_tree,
    sha256_file,
    staging_dir,
    sweep_staging,
)
from adapters.validation import (
    STORED_FILES,
    WEIGHTS_FILE,
    AdapterInfo,
    check_source_files,
    validate_adapter,
)
from common.sqlite import open_db
from common.timeutil import utc_now_iso

__all__ = ["DeleteGuard", "Registry"]

DeleteGuard = Callable[[AdapterVersion], "str | None"]


class Registry:
    """One per process is plenty (thread-safe); cheap enough to build per CLI call."""

    def __init__(
        self,
        db_path: Path,
        store_dir: Path,
        base_model_dir: Path,
        *,
        max_rank: int = 64,
        archive_limits: ArchiveLimits | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.store_dir = Path(store_dir)
        self.base_model_dir = Path(base_model_dir)
        self.max_rank = max_rank
        self.archive_limits = archive_limits or ArchiveLimits()
        self._lock = threading.RLock()
        self._guards: list[DeleteGuard] = []
        self._hashes: dict[Path, tuple[tuple[int, ...], str]] = {}
        self._base: BaseModel | None = None
        (self.store_dir / ".staging").mkdir(parents=True, exist_ok=True)
        self.db = open_db(self.db_path, migrations)
        sweep_staging(self.store_dir)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, serialized across processes from its first statement."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if self.db.conn.in_transaction:
                    self.db.conn.execute("ROLLBACK")
                raise
            else:
                self.db.conn.execute("COMMIT")

    @property
    def base(self) -> BaseModel:
        """Described on first use, so listing and showing work without the base at hand."""
        if self._base is None:
            self._base = load_base(self.base_model_dir)
        return self._base

    def base_fingerprint(self) -> str:
        with self._lock:
            rows = self.db.execute("SELECT signature, fingerprint FROM adapter_base_fingerprints")
            return self.base.fingerprint(dict(rows.fetchall()))

    def add_delete_guard(self, fn: DeleteGuard) -> None:
        """`fn(version)` says why a version may not stop being served (archive or delete)."""
        self._guards.append(fn)

    def _check_guards(self, found: AdapterVersion, action: str) -> None:
        for guard in self._guards:
            reason = guard(found)
            if reason:
                raise AdapterInUse(f"cannot {action} {found.ref}: {reason}")

    # -- registration -------------------------------------------------------------------------

    def add(
        self,
        source: Path,
        name: str,
        *,
        description: str = "",
        tags: Sequence[str] = (),
        metrics: dict | None = None,
        lineage: dict | None = None,
        source_kind: str = "imported",
        force_base: bool = False,
    ) -> AdapterVersion:
        """Validate, copy into the store, record; the next version number for `name`."""
        try:
            validate_name(name)
        except RegistryError as exc:
            raise AdapterRejected(str(name), "name", str(exc)) from None
        meta = check_metadata(name, description, tags, metrics, lineage, source_kind)
        source = Path(source).expanduser()
        if not source.exists():
            raise AdapterRejected(name, "source", "no such file or directory", str(source))
        work = staging_dir(self.store_dir)
        try:
            if is_archive(source):
                unpacked = work / "unpacked"
                unpacked.mkdir()
                extract_archive(source, unpacked, name, self.archive_limits)
                src_dir = adapter_root(unpacked)
            elif source.is_dir():
                src_dir = source
            else:
                raise AdapterRejected(name, "source", "expected a peft adapter folder or a .tar.gz/.tgz/.zip of one", str(source))
            check_source_files(src_dir, name)
            stage = work / "version"
            stage.mkdir()
            files = {f: copy_file(src_dir / f, stage / f) for f in STORED_FILES}
            info = validate_adapter(stage, self.base, name, max_rank=self.max_rank)
            base_match = check_base_identity(
                info.base_name, self.base, self.base_fingerprint, name,
                meta["lineage"].get("base_fingerprint"), force_base,
            )
            fingerprint = self.base_fingerprint()
            for f, sha in files.items():  # the bytes on disk are the bytes we validated
                if sha256_file(stage / f) != sha:
                    raise RegistryError(f"adapter {name!r}: {f} changed while being stored; try again")
            for f in STORED_FILES:
                fd = os.open(stage / f, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            make_readonly(stage)
            fsync_dir(stage)
            return self._insert(name, stage, files, info, base_match, fingerprint, meta, str(source))
        finally:
            remove_tree(work)

    def _insert(
        self, name: str, stage: Path, files: dict[str, str], info: AdapterInfo, base_match: str,
        fingerprint: str, meta: dict, source: str,
    ) -> AdapterVersion:
        sizes = {f: (stage / f).stat().st_size for f in files}
        with self._write():
            row = self.db.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM adapters WHERE name = ?", [name]
            ).fetchone()
            version = int(row[0])
            rel = f"{name}/{version}-{files[WEIGHTS_FILE][:12]}"
            final = self.store_dir / rel
            final.parent.mkdir(exist_ok=True)
            os.rename(stage, final)
            try:
                adapter_id = self.db["adapters"].insert({
                    "name": name, "version": version, "status": "active", "path": rel,
                    "rank": info.rank, "alpha": info.alpha,
                    "target_modules": json.dumps(info.target_modules),
                    "size_bytes": sum(sizes.values()), "base_fingerprint": fingerprint,
                    "base_name": info.base_name, "base_match": base_match,
                    "source_kind": meta["source_kind"],
                    "source": source, "description": meta["description"],
                    "tags": json.dumps(meta["tags"]), "metrics": json.dumps(meta["metrics"]),
                    "lineage": json.dumps(meta["lineage"]), "parent": meta["lineage"].get("parent"),
                    "dataset_fingerprint": meta["lineage"].get("dataset_fingerprint"),
                    "peft_config": json.dumps(info.config), "created_at": utc_now_iso(),
                }).last_pk
                self.db["adapter_files"].insert_all(
                    {"adapter_id": adapter_id, "file": f, "sha256": sha, "size_bytes": sizes[f]}
                    for f, sha in files.items()
                )
                self.db["adapter_base_fingerprints"].insert(
                    {"signature": self.base.signature(), "fingerprint": fingerprint,
                     "base_path": str(self.base.path), "computed_at": utc_now_iso()},
                    ignore=True,
                )
            except BaseException:
                os.rename(final, stage)
                raise
        fsync_dir(final.parent)
        return self._version(self._row_by_id(adapter_id))

    # -- look-ups -----------------------------------------------------------------------------

    def get(self, ref: str, *, verify: bool = False) -> AdapterVersion:
        """Resolve and check the files. Every read compares them with the recorded sha256:
        re-hashed when their stat (size, mtime, ctime, inode) changed since this process last
        hashed them, or always with `verify=True`. A mismatch raises AdapterTampered."""
        found = self.resolve(ref)
        problems = self._check_files(found, full=verify)
        if problems:
            raise AdapterTampered(found.ref, problems)
        return found

    def check(self, version: AdapterVersion, *, full: bool = True) -> None:
        """Raise AdapterTampered unless `version`'s files match their recorded sha256s.

        Reads no SQL (the version carries its checksums), so a server can call it from a
        worker thread before every load. `full=False` re-hashes only files whose stat changed.
        """
        problems = self._check_files(version, full=full)
        if problems:
            raise AdapterTampered(version.ref, problems)

    def list(self, *, include_archived: bool = False) -> list[AdapterVersion]:
        statuses = ("active", "archived") if include_archived else ("active",)
        marks = ",".join("?" * len(statuses))
        with self._lock:
            rows = list(self.db.query(
                f"SELECT * FROM adapters WHERE status IN ({marks}) ORDER BY name, version",
                list(statuses),
            ))
            # One query for every version's checksums (the server re-lists every interval).
            files: dict[int, dict[str, str]] = {}
            for r in self.db.query(
                f"SELECT f.adapter_id, f.file, f.sha256 FROM adapter_files f JOIN adapters a "
                f"ON a.id = f.adapter_id WHERE a.status IN ({marks}) ORDER BY f.file",
                list(statuses),
            ):
                files.setdefault(r["adapter_id"], {})[r["file"]] = r["sha256"]
        return [self._version(r, files.get(r["id"], {})) for r in rows]

    def archive(self, ref: str) -> AdapterVersion:
        """Keep the version (lineage, experiments' history) but stop serving it."""
        found = self.resolve(ref)
        if found.status != "archived":
            self._check_guards(found, "archive")
            with self._write():
                self.db.execute(
                    "UPDATE adapters SET status = 'archived', archived_at = ? WHERE id = ?",
                    [utc_now_iso(), found.id],
                )
        return self._version(self._row_by_id(found.id))

    def delete(self, ref: str) -> None:
        """Remove the files; the row stays as a tombstone so the version number and the row
        id are never handed out again."""
        found = self.resolve(ref)
        self._check_guards(found, "delete")
        with self._write():
            self.db.execute(
                "UPDATE adapters SET status = 'deleted', deleted_at = ? WHERE id = ?",
                [utc_now_iso(), found.id],
            )
        remove_tree(found.path)
        for f in found.files:
            self._hashes.pop(found.path / f, None)

    def update_metrics(self, ref: str, metrics: dict) -> AdapterVersion:
        """Merge `metrics` into the version's metrics (e.g. an evaluation run afterwards)."""
        found = self.resolve(ref)
        try:
            json.dumps(metrics)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"metrics for {found.ref} must be JSON-serializable ({exc})") from None
        with self._write():
            row = self._row_by_id(found.id)
            merged = {**json.loads(row["metrics"]), **metrics}
            self.db.execute(
                "UPDATE adapters SET metrics = ? WHERE id = ?", [json.dumps(merged), found.id]
            )
        return self._version(self._row_by_id(found.id))

    def verify(self, ref: str | None = None) -> list[VerifyProblem]:
        """Re-hash every stored file (of one version, or of all active and archived ones)."""
        versions = [self.resolve(ref)] if ref else self.list(include_archived=True)
        problems: list[VerifyProblem] = []
        for v in versions:
            problems.extend(self._check_files(v, full=True))
        return problems

    # -- internals ----------------------------------------------------------------------------

    def resolve(self, ref: str) -> AdapterVersion:
        """Look up a reference without touching the files (listing, deleting, admin views)."""
        name, version = parse_ref(ref)
        with self._lock:
            if version is None:
                rows = list(self.db.query(
                    "SELECT * FROM adapters WHERE name = ? AND status = 'active' "
                    "ORDER BY version DESC LIMIT 1", [name],
                ))
                if not rows:
                    raise AdapterNotFound(self._why_missing(name))
            else:
                rows = list(self.db.query(
                    "SELECT * FROM adapters WHERE name = ? AND version = ?", [name, version]
                ))
                if not rows:
                    raise AdapterNotFound(f"no adapter {format_ref(name, version)}")
                if rows[0]["status"] == "deleted":
                    raise AdapterNotFound(f"adapter {format_ref(name, version)} was deleted")
            return self._version(rows[0])

    def _why_missing(self, name: str) -> str:
        rows = list(self.db.query(
            "SELECT version, status FROM adapters WHERE name = ? ORDER BY version DESC", [name]
        ))
        if not rows:
            return f"no adapter named {name!r}"
        archived = [r["version"] for r in rows if r["status"] == "archived"]
        if archived:
            return (f"adapter {name!r} has no active version (archived: "
                    + ", ".join(format_ref(name, v) for v in archived) + ")")
        return f"adapter {name!r} has no active version (all deleted)"

    def _row_by_id(self, adapter_id: int) -> dict:
        with self._lock:
            return next(self.db.query("SELECT * FROM adapters WHERE id = ?", [adapter_id]))

    def _version(self, row: dict, files: dict[str, str] | None = None) -> AdapterVersion:
        if files is None:
            with self._lock:
                files = {
                    r["file"]: r["sha256"]
                    for r in self.db.query(
                        "SELECT file, sha256 FROM adapter_files WHERE adapter_id = ? "
                        "ORDER BY file", [row["id"]],
                    )
                }
        return AdapterVersion(
            id=row["id"], name=row["name"], version=row["version"],
            path=self.store_dir / row["path"], status=row["status"], rank=row["rank"],
            alpha=row["alpha"], target_modules=json.loads(row["target_modules"]),
            size_bytes=row["size_bytes"], files=files, base_fingerprint=row["base_fingerprint"],
            base_name=row["base_name"], source_kind=row["source_kind"],
            description=row["description"], tags=json.loads(row["tags"]),
            metrics=json.loads(row["metrics"]), lineage=json.loads(row["lineage"]),
            created_at=row["created_at"], base_match=row["base_match"], source=row["source"],
            archived_at=row["archived_at"], peft_config=json.loads(row["peft_config"]),
        )

    def _check_files(self, v: AdapterVersion, *, full: bool) -> list[VerifyProblem]:
        problems = []
        for f, expected in v.files.items():
            path = v.path / f
            try:
                st = path.stat()
            except OSError:
                problems.append(VerifyProblem(v.ref, f, expected, None))
                continue
            key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            cached = self._hashes.get(path)
            if full or cached is None or cached[0] != key:
                cached = (key, sha256_file(path))
                self._hashes[path] = cached
            if cached[1] != expected:
                problems.append(VerifyProblem(v.ref, f, expected, cached[1]))
        return problems
