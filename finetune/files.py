"""`/v1/files`: uploaded files kept in the data directory, each with its sha256.

Why our own store and not the adapter store: files are inputs (training data) and outputs
(a job's metrics CSV) of fine-tuning jobs, owned by the API key that made them; they are
never served. A file's bytes are written to a temporary name, hashed on the way, and
renamed into place before its row exists, so a row always points at complete bytes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from common.sqlite import write_transaction
from finetune.errors import FileNotFound, FineTuneError, TooLarge

__all__ = ["Caller", "FileRecord", "FileStore", "PURPOSES", "RESULTS_PURPOSE"]

PURPOSES = ("fine-tune",)  # what a client may upload
RESULTS_PURPOSE = "fine-tune-results"  # what a job writes (its metrics CSV)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Caller:
    """Who asks: an API key id (None when no keys exist), and whether it is an admin key.
    A key sees its own files and jobs; admin keys (and the keyless loopback mode) see all."""

    key_id: str | None
    admin: bool

    def sees(self, owner: str | None) -> bool:
        return self.admin or self.key_id is None or owner == self.key_id


@dataclass(frozen=True)
class FileRecord:
    id: str
    owner: str | None
    purpose: str
    filename: str
    bytes: int
    sha256: str
    created_at: float


_COLUMNS = "id, owner, purpose, filename, bytes, sha256, created_at"


class FileStore:
    def __init__(self, db: Database, root: Path, *, max_bytes: int) -> None:
        self.db, self.root, self.max_bytes = db, Path(root), max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, shared by the server's threads

    def path(self, record: FileRecord) -> Path:
        return self.root / record.id

    def create(self, caller: Caller, *, purpose: str, filename: str,
               read: Callable[[int], bytes], internal: bool = False) -> FileRecord:
        """Store what `read(n)` yields until it returns b"". `internal`: a job's own output
        (purpose fine-tune-results), which clients cannot upload."""
        if not internal and purpose not in PURPOSES:
            raise FineTuneError(f"purpose {purpose!r} is not supported here; use one of: "
                                f"{', '.join(PURPOSES)}", param="purpose")
        if not filename or len(filename) > 255:
            raise FineTuneError("file: a file name of 1 to 255 characters is required",
                                param="file")
        file_id = "file-" + secrets.token_hex(12)
        tmp = self.root / f".{file_id}.part"
        digest, size = hashlib.sha256(), 0
        try:
            with tmp.open("wb") as out:
                while chunk := read(_CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TooLarge(f"file is larger than the {self.max_bytes // 2**20} MiB "
                                       "limit (max_file_mib)", param="file",
                                       code="file_too_large")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size == 0:
                raise FineTuneError("file is empty", param="file")
            tmp.replace(self.root / file_id)
        finally:
            tmp.unlink(missing_ok=True)
        record = FileRecord(file_id, caller.key_id, purpose, Path(filename).name, size,
                            digest.hexdigest(), time.time())
        with self._lock, write_transaction(self.db):
            self.db.execute(f"INSERT INTO ft_files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [record.id, record.owner, record.purpose, record.filename,
                             record.bytes, record.sha256, record.created_at])
        return record

    def get(self, caller: Caller, file_id: str, *, param: str = "file_id") -> FileRecord:
        with self._lock:
            row = self.db.execute(f"SELECT {_COLUMNS} FROM ft_files WHERE id = ? AND "
                                  "deleted_at IS NULL", [file_id]).fetchone()
        if row is None or not caller.sees(row[1]):
            raise FileNotFound(f"No such File object: {file_id}", param=param,
                               code="file_not_found")
        return FileRecord(*row)

    def list(self, caller: Caller, *, purpose: str | None = None, after: str | None = None,
             limit: int = 10000, order: str = "desc") -> list[FileRecord]:
        with self._lock:
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM ft_files WHERE deleted_at IS NULL "
                                   "ORDER BY created_at, id").fetchall()
        found = [FileRecord(*r) for r in rows if caller.sees(r[1])
                 and (purpose is None or r[2] == purpose)]
        if order == "desc":
            found.reverse()
        if after is not None:
            ids = [f.id for f in found]
            found = found[ids.index(after) + 1:] if after in ids else []
        return found[:limit]

    def delete(self, caller: Caller, file_id: str) -> FileRecord:
        record = self.get(caller, file_id)
        with self._lock, write_transaction(self.db):
            self.db.execute("UPDATE ft_files SET deleted_at = ? WHERE id = ?",
                            [time.time(), file_id])
        self.path(record).unlink(missing_ok=True)
        return record

    def verify(self, record: FileRecord) -> Path:
        """The file's path once its bytes still hash to what was recorded."""
        path = self.path(record)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != record.sha256:
            raise FineTuneError(f"file {record.id} changed on disk since upload (sha256 "
                                "mismatch)", param="training_file", code="file_tampered")
        return path
