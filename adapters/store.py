"""The immutable file store: stage, hash, fsync, rename into place; hash again on read.

Layout: `<store>/<name>/<version>-<sha12>/{adapter_config.json, adapter_model.safetensors}`,
files 0444 and directories 0555 once placed. Root ignores modes, so the recorded
sha256 of every file, checked on read, is the real guard against later changes.
Staging happens under `<store>/.staging/` so the final rename stays on one filesystem.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["copy_file", "fsync_dir", "make_readonly", "remove_tree", "sha256_file", "staging_dir", "sweep_staging"]

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def copy_file(src: Path, dst: Path) -> str:
    """Copy and fsync; returns the sha256 of the bytes written."""
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_dir(store: Path) -> Path:
    root = store / ".staging"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{uuid.uuid4().hex[:8]}-", dir=root))


def sweep_staging(store: Path, older_than_s: float = 24 * 3600) -> None:
    """Remove what a crashed `add` left in the staging area (never a live one: they are young)."""
    root = store / ".staging"
    cutoff = time.time() - older_than_s
    for p in root.iterdir() if root.is_dir() else ():
        try:
            if p.stat().st_mtime < cutoff:
                remove_tree(p)
        except OSError:
            pass


def make_readonly(path: Path) -> None:
    for p in path.iterdir():
        p.chmod(0o444)
    path.chmod(0o555)


def remove_tree(path: Path) -> None:
    """Remove a (read-only) version directory; missing is fine."""
    if not path.exists():
        return

    # Unlinking needs write permission on the directory only, not on the files.
    path.chmod(stat.S_IRWXU)
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), stat.S_IRWXU)
    shutil.rmtree(path)
