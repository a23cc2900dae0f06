"""Unpack a .tar.gz / .tgz / .zip adapter archive safely, or refuse it.

Refused: absolute paths, `..` components, backslashes or drive letters, links,
devices, FIFOs (anything not a regular file or a directory), too many members, a
member or a total over the size limits. Sizes are enforced on the bytes actually
written, not only on what the archive declares, so a lying zip cannot fill the disk.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from adapters.errors import AdapterRejected

__all__ = ["ArchiveLimits", "adapter_root", "extract_archive", "is_archive"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 1000
    max_member_bytes: int = 4 << 30
    max_total_bytes: int = 8 << 30


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".tar.gz", ".tgz", ".zip"))


def extract_archive(src: Path, dest: Path, adapter: str, limits: ArchiveLimits) -> None:
    """Extract into `dest` (an empty directory the caller owns and cleans up)."""
    name = src.name.lower()
    try:
        if name.endswith(".zip"):
            _extract_zip(src, dest, adapter, limits)
        else:
            _extract_tar(src, dest, adapter, limits)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise AdapterRejected(adapter, "archive-invalid", f"cannot read the archive ({exc})", src.name) from None


def adapter_root(dest: Path) -> Path:
    """The folder holding the adapter: the archive's top level, or its single top directory."""
    entries = [p for p in dest.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _safe_relpath(member: str, adapter: str) -> PurePosixPath:
    if "\\" in member or (len(member) > 1 and member[1] == ":"):
        raise AdapterRejected(adapter, "archive-path", "member name has a backslash or a drive letter", member)
    path = PurePosixPath(member)
    if path.is_absolute():
        raise AdapterRejected(adapter, "archive-path", "member has an absolute path", member)
    if ".." in path.parts:
        raise AdapterRejected(adapter, "archive-path", "member path escapes the archive with '..'", member)
    parts = [p for p in path.parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


class _Budget:
    def __init__(self, adapter: str, limits: ArchiveLimits) -> None:
        self.adapter, self.limits, self.total, self.members = adapter, limits, 0, 0

    def member(self, name: str, declared: int) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise AdapterRejected(self.adapter, "archive-limit", f"more than {self.limits.max_members} members", self.members)
        self._check(name, declared, declared)

    def _check(self, name: str, member_bytes: int, added: int) -> None:
        if member_bytes > self.limits.max_member_bytes:
            raise AdapterRejected(
                self.adapter, "archive-limit",
                f"member {name} is over the {self.limits.max_member_bytes}-byte limit", member_bytes,
            )
        if self.total + added > self.limits.max_total_bytes:
            raise AdapterRejected(
                self.adapter, "archive-limit",
                f"uncompressed contents are over the {self.limits.max_total_bytes}-byte limit",
                self.total + added,
            )

    def copy(self, name: str, src: IO[bytes], target: Path) -> None:
        written = 0
        with open(target, "wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                self._check(name, written, len(chunk))
                self.total += len(chunk)
                out.write(chunk)


def _target(dest: Path, rel: PurePosixPath) -> Path:
    target = dest.joinpath(*rel.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _extract_tar(src: Path, dest: Path, adapter: str, limits: ArchiveLimits) -> None:
    budget = _Budget(adapter, limits)
    with tarfile.open(src, "r:*") as tar:
        for m in tar:
            rel = _safe_relpath(m.name, adapter)
            if m.issym() or m.islnk():
                raise AdapterRejected(adapter, "archive-link", f"member is a link (to {m.linkname!r})", m.name)
            if not (m.isfile() or m.isdir()):
                raise AdapterRejected(adapter, "archive-member-type", "member is not a regular file or a directory (device, FIFO, ...)", m.name)
            budget.member(m.name, m.size if m.isfile() else 0)
            if m.isdir():
                dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                continue
            fh = tar.extractfile(m)
            if fh is None:
                raise AdapterRejected(adapter, "archive-member-type", "member has no file data", m.name)
            with fh:
                budget.copy(m.name, fh, _target(dest, rel))


def _extract_zip(src: Path, dest: Path, adapter: str, limits: ArchiveLimits) -> None:
    budget = _Budget(adapter, limits)
    with zipfile.ZipFile(src) as zf:
        for info in zf.infolist():
            rel = _safe_relpath(info.filename, adapter)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise AdapterRejected(adapter, "archive-link", "member is a symbolic link", info.filename)
            if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise AdapterRejected(adapter, "archive-member-type", "member is not a regular file or a directory", info.filename)
            budget.member(info.filename, 0 if info.is_dir() else info.file_size)
            if info.is_dir():
                dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as fh:
                budget.copy(info.filename, fh, _target(dest, rel))
