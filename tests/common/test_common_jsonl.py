from __future__ import annotations

from pathlib import Path

import pytest

from common.jsonl import read_jsonl, write_jsonl


def test_round_trip_utf8_unescaped(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": "grüß dich ✓"}]}, {"n": 1}]
    path = tmp_path / "sub" / "rows.jsonl"
    assert write_jsonl(iter(rows), path) == 2
    assert "grüß dich ✓" in path.read_text(encoding="utf-8")
    assert list(read_jsonl(path)) == rows


def test_replaces_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_jsonl([{"old": True}], path)

    def rows():
        yield {"new": 1}
        raise RuntimeError("the source failed half way")

    with pytest.raises(RuntimeError):
        write_jsonl(rows(), path)
    assert list(read_jsonl(path)) == [{"old": True}]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]  # no temporary file left


def test_blank_lines_are_not_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"b": 2}\n')
    assert list(read_jsonl(path)) == [{"a": 1}, {"b": 2}]
