"""JSON Lines, as training reads and the exporters write it.

Why atomic: a training run started on a half-written export would train on a truncated set
without noticing; the rows go to a temporary file beside the target that replaces it only
when complete. UTF-8 with `ensure_ascii=False` keeps non-English text readable in the file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["dumps_line", "read_jsonl", "write_jsonl"]


def write_jsonl(rows: Iterable[Any], path: Path | str) -> int:
    """Write one JSON value per line, replacing `path` once all are written; the row count.

    A path that exists and is not a regular file (/dev/stdout, a pipe) is written in place.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        with path.open("w", encoding="utf-8") as fh:
            return _write(rows, fh)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("x", encoding="utf-8") as fh:  # "x": the umask's mode, never another file
            count = _write(rows, fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def dumps_line(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def _write(rows: Iterable[Any], fh: IO[str]) -> int:
    count = 0
    for row in rows:
        fh.write(dumps_line(row))
        count += 1
    return count


def read_jsonl(path: Path | str) -> Iterator[Any]:
    """The values of a JSON Lines file, in order; blank lines are not values.

    For files we wrote ourselves: training's loader (training/data.py) reads user data
    line by line instead, to report every bad line by number rather than stop at the first.
    """
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
